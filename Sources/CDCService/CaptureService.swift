import Capture
import EventLog
import Foundation
import Logging
import ServiceLifecycle

/// `cdc run`'s capture as a long-running ``Service``: streams the slot into the log until graceful
/// shutdown (SIGTERM: finish the batch, confirm it, return) or until `--endpos`.
///
/// All blocking work (libpq, LMDB write transactions) happens on one thread owned by this service.
public struct CaptureService: Service {
    let config: Config
    let endpos: LSN?
    let logger: Logger

    public init(config: Config, endpos: LSN?, logger: Logger) {
        self.config = config
        self.endpos = endpos
        self.logger = logger
    }

    public func run() async throws {
        let stop = StopSignal()
        let config = self.config
        let endpos = self.endpos
        let logger = self.logger
        let outcome = try await runUntilStopped(name: "cdc-capture", stop: stop, onShutdown: {
            logger.info("shutdown requested: finishing the current batch")
        }) {
            let writer = try EventLogWriter(path: config.log.path, create: false)
            guard let identity = try writer.log.sourceIdentity(), try writer.log.state() == .ready else {
                throw CaptureError(.logNotInitialised, "the log at \(config.log.path) is not initialised: run `cdc init --config ...` first")
            }
            var options = CaptureOptions(conninfo: config.source.url, slot: config.source.slot,
                                         publication: config.source.publication, endpos: endpos)
            options.statusInterval = 10
            options.protector = try config.protector()
            let stream = CaptureStream(options: options, writer: writer, identity: identity, logger: logger)
            return try stream.run(stop: stop)
        }
        logger.info("capture finished", metadata: ["cdc.outcome": "\(outcome)"])
    }
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

/// Runs `body` on a new thread (not Swift's cooperative pool) and returns its result.
public func runOnDedicatedThread<T: Sendable>(name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }
}

extension CaptureService: CustomStringConvertible {
    /// Names the slot and log only: the source url may hold a password, and ServiceLifecycle logs this.
    public var description: String {
        "CaptureService(slot: \(config.source.slot), log: \(config.log.path))"
    }
}
