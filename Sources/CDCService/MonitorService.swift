import EventLog
import Foundation
import Lifecycle
import Logging
import Metrics
import PGClient
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What the services of one `cdc run` share: their health, and the positions of the projector and the
/// history index (which only their own threads know).
public final class RunContext: Sendable {
    public let health: ServiceHealth
    private let projection = Atomic<Int64>(-1)
    private let history = Atomic<Int64>(-1)

    public init(health: ServiceHealth) { self.health = health }

    /// The last log record applied to the warehouse; nil until the projector has loaded.
    public var projectionPosition: UInt64? {
        get { let v = projection.load(ordering: .relaxed); return v < 0 ? nil : UInt64(v) }
        set { projection.store(newValue.map { Int64($0) } ?? -1, ordering: .relaxed) }
    }

    /// The last log record in the history index; nil until the indexer has opened it.
    public var historyPosition: UInt64? {
        get { let v = history.load(ordering: .relaxed); return v < 0 ? nil : UInt64(v) }
        set { history.store(newValue.map { Int64($0) } ?? -1, ordering: .relaxed) }
    }
}

/// Watches `cdc run` from the outside of its loops, once a second on a thread of its own: the log's
/// head and size, the projection and history-index lag, the slot (every 5 s, on an ordinary
/// connection to the source), the process. It feeds the gauges, the conditions readiness depends on
/// (WAL retained above `[source] max_retained_wal`, a slot whose WAL is unreserved or lost, projection
/// lag above `[metrics] max_projection_lag`) and the one-line summary STATUS= shows.
public struct MonitorService: Service, CustomStringConvertible {
    let config: Config
    let context: RunContext
    let logger: Logger
    var interval: Double = 1
    var slotInterval: Double = 5

    public init(config: Config, context: RunContext, logger: Logger) {
        self.config = config
        self.context = context
        self.logger = logger
    }

    public var description: String { "MonitorService(slot: \(config.source.slot), log: \(config.log.path))" }

    public func run() async throws {
        let stop = StopSignal()
        let monitor = self
        try await runUntilStopped(name: "cdc-monitor", stop: stop) { monitor.loop(stop: stop) }
    }

    final class Gauges {
        let head = Gauge(label: "cdc_log_head_seq")
        let size = Gauge(label: "cdc_log_size_bytes")
        let retained = Gauge(label: "cdc_slot_retained_wal_bytes")
        let limit = Gauge(label: "cdc_slot_retained_wal_limit_bytes")
        let active = Gauge(label: "cdc_slot_active")
        /// Created once the server reports a safe_wal_size (NULL without max_slot_wal_keep_size).
        var safe: Gauge?
        let walStatus = Dictionary(uniqueKeysWithValues: ["reserved", "extended", "unreserved", "lost"].map {
            ($0, Gauge(label: "cdc_slot_wal_status", dimensions: [("status", $0)]))
        })
        let projectionLagSeconds: Gauge?
        let projectionLagRecords: Gauge?
        let projectionLast: Gauge?
        let historyLag = Gauge(label: "cdc_history_index_lag_records")
        let loops: [(LoopHealth, Gauge)]
        let cpu = FloatingPointCounter(label: "process_cpu_seconds_total")
        let rss = Gauge(label: "process_resident_memory_bytes")
        let fds = Gauge(label: "process_open_fds")
        let maxFDs = Gauge(label: "process_max_fds")
        let start = Gauge(label: "process_start_time_seconds")
        var cpuSeen = 0.0

        init(_ health: ServiceHealth) {
            let projecting = health.projection != nil
            projectionLagSeconds = projecting ? Gauge(label: "cdc_projection_lag_seconds") : nil
            projectionLagRecords = projecting ? Gauge(label: "cdc_projection_lag_records") : nil
            projectionLast = projecting ? Gauge(label: "cdc_projection_last_seq") : nil
            loops = health.loops.map { ($0, Gauge(label: "cdc_loop_seconds_since_iteration", dimensions: [("loop", $0.name)])) }
            Gauge(label: "cdc_build_info", dimensions: [("version", BuildInfo.version)]).record(1)
        }
    }

    func loop(stop: StopSignal) {
        let gauges = Gauges(context.health)
        gauges.limit.record(Int64(clamping: config.source.maxRetainedWAL))
        if let start = ProcessStats.startTime() { gauges.start.record(start) }
        var slot: SlotStatus?
        var slotError: String?
        var source: PGConnection?
        var lastSlotPoll = -Double.infinity
        let warnings = RateLimitedLog(interval: 300)
        var log: EventLog?
        while !stop.isStopped {
            let now = monotonicSeconds()
            if now - lastSlotPoll >= slotInterval {
                lastSlotPoll = now
                do {
                    if source == nil {
                        source = try PGConnection(conninfo: config.source.url,
                                                  overrides: SessionSettings.sqlOverrides(applicationName: "cdc-monitor", connectTimeout: 5))
                    }
                    slot = try SlotStatus.query(source!, slot: config.source.slot)
                    slotError = slot == nil ? "replication slot \"\(config.source.slot)\" does not exist on the source" : nil
                } catch {
                    source = nil
                    slotError = "cannot read pg_replication_slots: \(error)"
                }
            }
            if log == nil { log = try? EventLog.openForReading(path: config.log.path) }
            let position = try? log?.position()
            var problems: [HealthProblem] = []
            if let slot {
                gauges.retained.record(Int64(clamping: slot.retainedWALBytes ?? 0))
                gauges.active.record(slot.active ? 1 : 0)
                if let safe = slot.safeWALSize {
                    if gauges.safe == nil { gauges.safe = Gauge(label: "cdc_slot_safe_wal_size_bytes") }
                    gauges.safe?.record(safe)
                }
                for (status, gauge) in gauges.walStatus { gauge.record(slot.walStatus == status ? 1 : 0) }
                let found = slot.problems(limit: config.source.maxRetainedWAL)
                for problem in found {
                    warnings.log(logger, .warning, key: problem.code, "\(problem.message)", metadata: ["cdc.problem": "\(problem.code)"])
                }
                problems += found
            }
            if let position {
                gauges.head.record(Int64(clamping: position.head))
                if let size = log?.dataFileSize()?.bytes { gauges.size.record(Int64(clamping: size)) }
                if let indexed = context.historyPosition {
                    gauges.historyLag.record(Int64(clamping: position.head > indexed ? position.head - indexed : 0))
                }
            }
            var projectionText = ""
            if context.health.projection != nil, let applied = context.projectionPosition, let position, let log {
                let behind = position.head > applied ? position.head - applied : 0
                let lag = behind == 0 ? 0 : Self.lagSeconds(log: log, after: applied, head: position.head)
                gauges.projectionLagRecords?.record(Int64(clamping: behind))
                gauges.projectionLagSeconds?.record(lag)
                gauges.projectionLast?.record(Int64(clamping: applied))
                if let max = config.metrics?.maxProjectionLag, lag > max {
                    problems.append(HealthProblem(code: "projection_lagging", message: "the warehouse is \(String(format: "%.1f", lag)) s behind the log (\(behind) records), above [metrics] max_projection_lag (\(max) s)"))
                }
                projectionText = "; projection \(behind) records behind (\(String(format: "%.1f", lag)) s)"
            }
            for (loop, gauge) in gauges.loops { gauge.record(loop.secondsSinceBeat) }
            if let stats = ProcessStats.read() {
                if stats.cpuSeconds > gauges.cpuSeen { gauges.cpu.increment(by: stats.cpuSeconds - gauges.cpuSeen); gauges.cpuSeen = stats.cpuSeconds }
                gauges.rss.record(stats.residentBytes)
                gauges.fds.record(stats.openFDs)
                gauges.maxFDs.record(stats.maxFDs)
            }
            context.health.setConditions(problems)
            var summary = position.map { "head \($0.head) at \($0.resumeLSN)" } ?? "log unreadable"
            if let retained = slot?.retainedWALBytes { summary += ", slot retains \(byteSize(retained))" }
            if let slotError { summary += ", \(slotError)" }
            context.health.setSummary(summary + projectionText)
            stop.sleep(seconds: interval)
        }
    }

    /// Now minus the commit time of the first record after `applied` that has one (the oldest
    /// transaction not yet in the warehouse), in seconds.
    static func lagSeconds(log: EventLog, after applied: UInt64, head: UInt64) -> Double {
        var seq = applied + 1
        while seq <= min(head, applied + 16) {
            if let record = try? log.record(seq), let time = record.header.commitTime {
                return max(0, Date().timeIntervalSince1970 - Double(time) / 1e6)
            }
            seq += 1
        }
        return 0
    }
}

/// The process's CPU time, memory and descriptors, from /proc (Linux).
enum ProcessStats {
    static func read() -> (cpuSeconds: Double, residentBytes: Int64, openFDs: Int64, maxFDs: Int64)? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command name: state is field 3; utime 14, stime 15 (clock ticks).
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        var resident: Int64 = 0
        if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
            let parts = statm.split(separator: " ")
            if parts.count > 1, let pages = Int64(parts[1]) { resident = pages * Int64(sysconf(Int32(_SC_PAGESIZE))) }
        }
        let fds = Int64((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0)
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        return ((utime + stime) / ticks, resident, fds, Int64(clamping: limit.rlim_cur))
    }

    /// Seconds since 1970 at which this process started.
    static func startTime() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")"),
              let system = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
              let btimeLine = system.split(separator: "\n").first(where: { $0.hasPrefix("btime ") }),
              let boot = Double(btimeLine.dropFirst(6)) else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19, let start = Double(fields[19]) else { return nil }
        return boot + start / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
