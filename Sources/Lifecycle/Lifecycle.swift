import Foundation
import Logging
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

// The service lifecycle of `cdc run`, in one place: how a loop is asked to stop, how it sleeps and
// backs off, how it runs on a thread of its own under a ServiceGroup, and how it reports that it is
// alive (``LoopHealth``) so that readiness, /healthz and the systemd watchdog can be told the truth.

/// The version `cdc --version` and `cdc_build_info` report.
public enum BuildInfo {
    public static let version = "0.10.0"
}

// MARK: Stopping

/// A flag a service sets to ask its blocking loop to stop after its current unit of work.
public final class StopSignal: Sendable {
    private let flag = Atomic<Bool>(false)

    public init() {}

    /// Asks the loop to finish what it is doing (e.g. write and confirm its batch) and return.
    public func stop() { flag.store(true, ordering: .releasing) }

    /// True once ``stop()`` was called.
    public var isStopped: Bool { flag.load(ordering: .acquiring) }

    /// Sleeps up to `seconds`, waking early when stopped; `health`, when given, keeps beating meanwhile
    /// (a loop waiting for its next retry is alive, not hung).
    public func sleep(seconds: Double, health: LoopHealth? = nil) {
        var left = seconds
        while left > 0, !isStopped {
            let step = min(left, 0.1)
            usleep(UInt32(step * 1_000_000))
            left -= step
            health?.beat()
        }
    }
}

/// Exponential backoff between retries: `initial`, doubling up to `maximum`; ``reset()`` after success.
public struct Backoff: Sendable {
    public let initial: Double
    public let maximum: Double
    public private(set) var current: Double

    public init(initial: Double, maximum: Double) {
        self.initial = initial
        self.maximum = maximum
        current = initial
    }

    /// The delay to wait now; the next one doubles.
    public mutating func next() -> Double {
        let delay = current
        current = min(current * 2, maximum)
        return delay
    }

    public mutating func reset() { current = initial }
}

/// Runs `body` on a thread of its own until it returns; `stop` is set when the task is cancelled (a
/// ServiceGroup cancels the other services when one fails) and, unless `stopOnShutdown` is false, on
/// graceful shutdown after `onShutdown`, so a blocking loop that polls `stop` ends either way. With
/// `stopOnShutdown` false, `onShutdown` alone decides what graceful shutdown means (e.g. drain first).
public func runUntilStopped<T: Sendable>(name: String, stop: StopSignal, stopOnShutdown: Bool = true,
                                         onShutdown: @escaping @Sendable () -> Void = {},
                                         _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withTaskCancellationHandler {
        try await withGracefulShutdownHandler {
            try await runOnDedicatedThread(name: name, body)
        } onGracefulShutdown: {
            onShutdown()
            if stopOnShutdown { stop.stop() }
        }
    } onCancel: {
        stop.stop()
    }
}

/// Runs `body` on a new thread (not Swift's cooperative pool: libpq and LMDB calls block) and returns
/// its result.
public func runOnDedicatedThread<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    let work = DedicatedWork(body)
    return try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            // The body (and whatever it captured) is released before the caller resumes, so no
            // deinit runs on this thread after the caller has gone on (e.g. to exit the process).
            continuation.resume(with: work.run())
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// A body run once on a dedicated thread, dropped as soon as it has run.
private final class DedicatedWork<T: Sendable>: @unchecked Sendable {
    private var body: (@Sendable () throws -> T)?

    init(_ body: @escaping @Sendable () throws -> T) { self.body = body }

    func run() -> Result<T, Error> {
        let result = Result { try body!() }
        body = nil
        return result
    }
}

/// Seconds on the monotonic clock (CLOCK_MONOTONIC), for ages that must not jump with the wall clock.
@inline(__always)
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

// MARK: Health

/// What one loop that must make progress (capture, projection, history index) is doing, and when it
/// last iterated. The loop calls ``beat()`` every iteration (cheap: one atomic store) and ``set(_:)`` when
/// its phase changes; the watchdog, /healthz, /readyz and STATUS= read it from other threads.
public final class LoopHealth: Sendable {
    /// What a loop is doing.
    public enum Phase: Sendable, Equatable {
        /// Starting up (connecting, loading); the text says what it waits for.
        case starting(String)
        /// Doing its job.
        case running
        /// Waiting to retry after a failure it expects to pass: `code` is the failure's stable code.
        case retrying(code: String, message: String)
        /// Deliberately not making progress until a condition clears (e.g. a full disk).
        case paused(code: String, message: String)
        /// Finished.
        case stopped
    }

    /// The loop's name in metrics, health reports and STATUS= (`capture`, `projection`, `history_index`).
    public let name: String
    private let lastBeat = Atomic<UInt64>(0)
    private let state = Mutex<(phase: Phase, activity: String)>((.starting("starting"), ""))

    public init(name: String, starting: String) {
        self.name = name
        state.withLock { $0.phase = .starting(starting) }
        beat()
    }

    /// The loop iterated.
    @inline(__always)
    public func beat() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        lastBeat.store(UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec), ordering: .relaxed)
    }

    /// Records a new phase (and beats).
    public func set(_ phase: Phase) {
        state.withLock { $0.phase = phase }
        beat()
    }

    /// Names what the loop is about to block on (e.g. "writing a batch to the warehouse"), for the
    /// message that reports a stall ("" when done); beats too.
    public func doing(_ activity: String) {
        state.withLock { $0.activity = activity }
        beat()
    }

    public var phase: Phase { state.withLock { $0.phase } }
    public var activity: String { state.withLock { $0.activity } }

    /// Seconds since the last ``beat()``.
    public var secondsSinceBeat: Double {
        let last = Double(lastBeat.load(ordering: .relaxed)) / 1e9
        return max(0, monotonicSeconds() - last)
    }
}

/// A problem found by a health check, with a stable code (for alerts, scripts and tests) and a message
/// an operator can act on.
public struct HealthProblem: Sendable, Equatable, Codable {
    public var code: String
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
}

/// The health of `cdc run` as a whole: its loops, and the facts readiness depends on that the
/// monitor refreshes (slot state, projection lag). One instance per process, shared by the services,
/// the watchdog, the HTTP endpoints and STATUS=.
public final class ServiceHealth: Sendable {
    public let capture = LoopHealth(name: "capture", starting: "connecting to the source")
    public let history = LoopHealth(name: "history_index", starting: "opening the history index")
    /// Present when `cdc run` projects into a warehouse.
    public let projection: LoopHealth?
    /// A loop that has not iterated for this long is stalled.
    public let stallThreshold: Double

    /// Facts the monitor refreshes: slot and projection conditions that make the service not ready.
    private let conditions = Mutex<[HealthProblem]>([])
    private let loaded = Atomic<Bool>(false)
    private let summary = Mutex<String>("")

    public init(projecting: Bool, stallThreshold: Double) {
        projection = projecting ? LoopHealth(name: "projection", starting: "connecting to the warehouse") : nil
        self.stallThreshold = stallThreshold
    }

    /// The stall threshold: max(WatchdogSec/2, 5 s) under a systemd watchdog, else 30 s.
    public static func stallThreshold(watchdogMicroseconds: UInt64?) -> Double {
        guard let usec = watchdogMicroseconds, usec > 0 else { return 30 }
        return max(Double(usec) / 2e6, 5)
    }

    public var loops: [LoopHealth] { [capture] + (projection.map { [$0] } ?? []) + [history] }

    /// Loops that have not iterated within the stall threshold (a loop that stopped is not stalled).
    public func stalls() -> [HealthProblem] {
        loops.compactMap { loop in
            let age = loop.secondsSinceBeat
            guard age > stallThreshold, loop.phase != .stopped else { return nil }
            let activity = loop.activity
            return HealthProblem(code: "loop_stalled",
                                 message: "\(loop.name) loop has not iterated for \(String(format: "%.1f", age)) s" + (activity.isEmpty ? "" : " (\(activity))"))
        }
    }

    /// The projector connected to the warehouse and loaded its state (at least once).
    public func projectionLoaded() { loaded.store(true, ordering: .relaxed) }

    /// True once capture streams and, when projecting, the projector has connected and loaded once.
    public var started: Bool {
        capture.phase == .running && (projection == nil || loaded.load(ordering: .relaxed))
    }

    /// Replaces the conditions the monitor found (slot, lag); they count against readiness.
    public func setConditions(_ problems: [HealthProblem]) { conditions.withLock { $0 = problems } }
    public var currentConditions: [HealthProblem] { conditions.withLock { $0 } }

    /// One line on what the service is doing (the monitor's words), for STATUS=.
    public func setSummary(_ text: String) { summary.withLock { $0 = text } }
    public var currentSummary: String { summary.withLock { $0 } }

    /// Why the service is not ready (empty when it is): loops not running, stalls, the monitor's conditions.
    public func readinessProblems() -> [HealthProblem] {
        var problems: [HealthProblem] = []
        switch capture.phase {
        case .running: break
        case .starting(let what): problems.append(.init(code: "capture_not_streaming", message: "capture is starting: \(what)"))
        case .retrying(let code, let message): problems.append(.init(code: "capture_not_streaming", message: "capture is reconnecting (\(code)): \(message)"))
        case .paused(let code, let message): problems.append(.init(code: code, message: "capture is paused: \(message)"))
        case .stopped: problems.append(.init(code: "capture_not_streaming", message: "capture has stopped"))
        }
        if let projection {
            switch projection.phase {
            case .running: break
            case .starting(let what): problems.append(.init(code: "projection_not_loaded", message: "the projector is starting: \(what)"))
            case .retrying(let code, let message): problems.append(.init(code: "warehouse_unreachable", message: "the projector is retrying the warehouse (\(code)): \(message)"))
            case .paused(let code, let message): problems.append(.init(code: code, message: "projection is paused: \(message)"))
            case .stopped: problems.append(.init(code: "projection_not_loaded", message: "projection has stopped"))
            }
        }
        if case .paused(let code, let message) = history.phase {
            problems.append(.init(code: code, message: "the history index is paused: \(message)"))
        }
        problems += stalls()
        problems += currentConditions
        return problems
    }
}

// MARK: Logging

/// Lets a repeated warning through at most once per `interval` per key, counting what it held back, so
/// a source down for an hour does not fill the journal with the same line every few seconds.
public final class RateLimitedLog: Sendable {
    private let interval: Double
    private let state = Mutex<[String: (last: Double, suppressed: Int)]>([:])

    public init(interval: Double = 60) { self.interval = interval }

    /// Logs `message` at `level` unless the same `key` was logged less than `interval` ago; the line
    /// that gets through says how many were held back (`cdc.repeated`).
    /// The line names the caller's module and source position, as a direct `logger.log` would.
    public func log(_ logger: Logger, _ level: Logger.Level, key: String, _ message: @autoclosure () -> Logger.Message,
                    metadata: Logger.Metadata = [:], file: String = #fileID, function: String = #function, line: UInt = #line) {
        let now = monotonicSeconds()
        let suppressed: Int? = state.withLock { entries in
            if let entry = entries[key], now - entry.last < interval {
                entries[key] = (entry.last, entry.suppressed + 1)
                return nil
            }
            let held = entries[key]?.suppressed ?? 0
            entries[key] = (now, 0)
            return held
        }
        guard let suppressed else { return }
        var metadata = metadata
        if suppressed > 0 { metadata["cdc.repeated"] = "\(suppressed)" }
        logger.log(level: level, message(), metadata: metadata, file: file, function: function, line: line)
    }

    /// Forgets `key`, so the next failure after a recovery is logged at once.
    public func reset(key: String) { _ = state.withLock { $0.removeValue(forKey: key) } }
}
