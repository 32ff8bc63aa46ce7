import EventLog
import Foundation
import Lifecycle
import Logging
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the log's history index (``HistoryIndex``) up to the head while `cdc run` captures.
///
/// Runs on a thread of its own at low CPU priority (nice 10) and writes only the index's own LMDB
/// environment, so capture never waits for it; when it falls behind, `cdc log history` reads the
/// records after its end. A failure is logged and retried later: the index is derived data.
public struct HistoryIndexService: Service, CustomStringConvertible {
    let logPath: String
    let logger: Logger
    let context: RunContext
    /// Pause between polls of the head when the index is caught up.
    var idle: Double = 0.5

    public init(logPath: String, context: RunContext, logger: Logger) {
        self.logPath = logPath
        self.context = context
        self.logger = logger
    }

    public var description: String { "HistoryIndexService(log: \(logPath))" }

    public func run() async throws {
        let stop = StopSignal()
        let service = self
        try await runUntilStopped(name: "cdc-history-index", stop: stop) { service.loop(stop: stop) }
    }

    /// Catches the index up in batches, polling the head when caught up, until `stop`.
    func loop(stop: StopSignal) {
        // On Linux the nice value is per thread: 0 names the calling thread.
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        let health = context.health.history
        health.set(.running)
        defer { health.set(.stopped) }
        var index: HistoryIndex?
        var backoff = Backoff(initial: 1, maximum: 30)
        let retries = RateLimitedLog(interval: 60)
        var paused = false
        while !stop.isStopped {
            health.beat()
            do {
                if index == nil {
                    guard EventLog.exists(at: logPath) else { stop.sleep(seconds: idle, health: health); continue }
                    index = try HistoryIndex.open(log: try EventLog.openForReading(path: logPath))
                    if index == nil || index!.readOnly {
                        logger.warning("history index not writable: cdc log history will read the log", metadata: ["cdc.log": "\(logPath)"])
                        // Idle until cdc stops, not done: a service of the group that returns ends
                        // `cdc run` ("a service has finished unexpectedly"), which on a read-only log
                        // could beat capture's own one-line error about it.
                        while !stop.isStopped { stop.sleep(seconds: 1, health: health) }
                        return
                    }
                }
                health.doing("indexing log records")
                let read = try index!.catchUp(limit: 50_000)
                context.historyPosition = try index!.indexedThrough()
                health.doing("")
                if paused {
                    paused = false
                    health.set(.running)
                    retries.reset(key: "history")
                    logger.notice("history index writable again: indexing resumed", metadata: ["cdc.log": "\(logPath)"])
                }
                backoff.reset()
                if read == 0 { stop.sleep(seconds: idle, health: health) }
            } catch let error as EventLogError where error.code == .storage {
                // A full (read-only, failing) disk: the index waits, capture and projection go on.
                let code = "history_index_" + (error.storageFault?.kind.rawValue ?? "io_error")
                let remedy = error.storageFault?.remedy ?? "check the filesystem"
                if !paused {
                    paused = true
                    retries.log(logger, .error, key: "history", "\(error.message): history index paused, retrying — \(remedy)", metadata: ["cdc.problem": "\(code)"])
                } else {
                    retries.log(logger, .warning, key: "history", "history index still paused: \(error.message)", metadata: ["cdc.problem": "\(code)"])
                }
                health.set(.paused(code: code, message: "\(error.message) — \(remedy); `cdc log history` reads the log meanwhile"))
                stop.sleep(seconds: backoff.next(), health: health)
            } catch {
                retries.log(logger, .warning, key: "history", "history index update failed; retrying", metadata: ["cdc.error": "\(error)"])
                index = nil
                stop.sleep(seconds: 5, health: health)
            }
        }
    }
}
