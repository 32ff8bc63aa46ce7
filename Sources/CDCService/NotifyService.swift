import Foundation
import Lifecycle
import Logging
import ServiceLifecycle
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// systemd's notification protocol (sd_notify(3)) without libsystemd: `KEY=VALUE` lines in one
/// datagram to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
/// socket).
public final class SystemdNotifier: Sendable {
    private let descriptor: Int32
    private let address: [UInt8]
    /// After STOPPING=1 nothing but STATUS= is sent.
    private let stopping = Mutex<Bool>(false)

    /// The notifier `$NOTIFY_SOCKET` names, or nil when it is unset (not under systemd) or unusable.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> SystemdNotifier? {
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty, path.hasPrefix("/") || path.hasPrefix("@") else { return nil }
        var bytes = Array(path.utf8)
        if bytes[0] == UInt8(ascii: "@") { bytes[0] = 0 }
        guard bytes.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        return SystemdNotifier(descriptor: fd, address: bytes)
    }

    private init(descriptor: Int32, address: [UInt8]) {
        self.descriptor = descriptor
        self.address = address
    }

    deinit { close(descriptor) }

    /// Sends `lines` (e.g. `["READY=1"]`) in one datagram; false when the send failed.
    @discardableResult
    public func send(_ lines: [String]) -> Bool {
        stopping.withLock { stopping in
            if stopping && !lines.allSatisfy({ $0.hasPrefix("STATUS=") }) { return false }
            if lines.contains("STOPPING=1") { stopping = true }
            return transmit(lines.joined(separator: "\n"))
        }
    }

    private func transmit(_ text: String) -> Bool {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { path in
            for (i, byte) in address.enumerated() { path[i] = byte }
        }
        // An abstract address's length counts its bytes exactly; a path's may include the NUL.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + address.count + (address.first == 0 ? 0 : 1))
        let bytes = Array(text.utf8)
        let sent = withUnsafePointer(to: &addr) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
                bytes.withUnsafeBytes { buffer in
                    sendto(descriptor, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL), sockaddrPointer, length)
                }
            }
        }
        return sent == bytes.count
    }
}

/// Tells systemd how `cdc run` is doing (`Type=notify`): `READY=1` once capture streams and, with a
/// warehouse, the projector has loaded; `STATUS=` lines on every change and every 5 s; `WATCHDOG=1`
/// every `$WATCHDOG_USEC/2` while no loop is stalled (a hung loop stops the pings and systemd restarts
/// the service; a loop that is retrying keeps iterating, so it is not hung); `STOPPING=1` on graceful
/// shutdown.
public struct NotifyService: Service, CustomStringConvertible {
    let notifier: SystemdNotifier
    let context: RunContext
    let logger: Logger
    /// Half the watchdog timeout, when systemd's watchdog applies to this process.
    let pingInterval: Double?

    public init(notifier: SystemdNotifier, context: RunContext, logger: Logger,
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.notifier = notifier
        self.context = context
        self.logger = logger
        pingInterval = Self.watchdogMicroseconds(environment).map { Double($0) / 2e6 }
    }

    public var description: String { "NotifyService" }

    /// `$WATCHDOG_USEC`, when it is set and `$WATCHDOG_PID` (if set) names this process.
    public static func watchdogMicroseconds(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> UInt64? {
        guard let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0 else { return nil }
        if let pid = environment["WATCHDOG_PID"], Int32(pid) != getpid() { return nil }
        return usec
    }

    public func run() async throws {
        let stop = StopSignal()
        let service = self
        try await runUntilStopped(name: "cdc-notify", stop: stop, onShutdown: {
            service.notifier.send(["STOPPING=1", "STATUS=stopping: finishing the current batches"])
        }) {
            service.loop(stop: stop)
        }
    }

    func loop(stop: StopSignal) {
        var ready = false
        var lastStatus = ""
        var lastStatusTime = -Double.infinity
        var lastPing = -Double.infinity
        while !stop.isStopped {
            let now = monotonicSeconds()
            if !ready, context.health.started {
                ready = true
                notifier.send(["READY=1"])
                logger.info("ready", metadata: ["cdc.notify": "READY=1"])
            }
            let stalls = context.health.stalls()
            let status = Self.statusLine(context.health, stalls: stalls)
            if status != lastStatus || now - lastStatusTime >= 5 {
                notifier.send(["STATUS=" + status])
                lastStatus = status
                lastStatusTime = now
            }
            if let pingInterval, ready, stalls.isEmpty, now - lastPing >= pingInterval {
                notifier.send(["WATCHDOG=1"])
                lastPing = now
            }
            stop.sleep(seconds: 0.1)
        }
    }

    /// One line on what cdc is doing, as `systemctl status cdc` shows it.
    static func statusLine(_ health: ServiceHealth, stalls: [HealthProblem]) -> String {
        if !stalls.isEmpty { return "stalled: " + stalls.map(\.message).joined(separator: "; ") }
        var line: String
        switch health.capture.phase {
        case .starting(let what): line = "starting: \(what)"
        case .running: line = "streaming: \(health.currentSummary)"
        case .retrying(_, let message): line = "reconnecting to the source: \(message)"
        case .paused(let code, let message): line = "capture paused (\(code)): \(message)"
        case .stopped: line = "capture stopped"
        }
        if let projection = health.projection {
            switch projection.phase {
            case .starting(let what): line += "; projection starting: \(what)"
            case .retrying(let code, let message): line += "; retrying the warehouse (\(code)): \(message); capture continues"
            case .paused(let code, let message): line += "; projection paused (\(code)): \(message); capture continues"
            case .running, .stopped: break
            }
        }
        if case .paused(let code, let message) = health.history.phase { line += "; history index paused (\(code)): \(message)" }
        let conditions = health.currentConditions
        if !conditions.isEmpty { line += "; problems: " + conditions.map(\.code).joined(separator: ", ") }
        return line
    }
}
