import Capture
import EventLog
import Foundation
import Lifecycle
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
    let context: RunContext

    public init(config: Config, endpos: LSN?, context: RunContext, logger: Logger) {
        self.config = config
        self.endpos = endpos
        self.context = context
        self.logger = logger
    }

    public func run() async throws {
        let stop = StopSignal()
        let config = self.config
        let endpos = self.endpos
        let logger = self.logger
        let health = context.health.capture
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
            options.auditActor = config.auditActor
            options.origins = config.source.origins
            options.streaming = config.source.streaming
            options.backfillChunkSize = config.source.backfillChunkSize
            options.health = health
            let stream = CaptureStream(options: options, writer: writer, identity: identity, logger: logger)
            return try stream.run(stop: stop)
        }
        logger.info("capture finished", metadata: ["cdc.outcome": "\(outcome)"])
    }
}

extension CaptureService: CustomStringConvertible {
    /// Names the slot and log only: the source url may hold a password, and ServiceLifecycle logs this.
    public var description: String {
        "CaptureService(slot: \(config.source.slot), log: \(config.log.path))"
    }
}
