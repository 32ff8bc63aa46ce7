import ArgumentParser
import CDCService
import Capture
import EventLog
import Foundation
import Lifecycle
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

@main
struct CDC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cdc",
        abstract: "Change data capture from PostgreSQL into an append-only LMDB event log.",
        version: BuildInfo.version,
        subcommands: [Init.self, Run.self, Status.self, Replay.self, LogCommand.self]
    )
}

/// Options every command shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "Path to cdc.toml.")
    var config: String = Config.defaultPath

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["CDC_LOG_LEVEL"] ?? "info"

    func logger() throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical")
        }
        let journal = JournalLogHandler.stderrIsJournal()
        LoggingSystem.bootstrap { label in
            if journal { return JournalLogHandler(level: level) }
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "cdc")
    }

    func loadConfig() throws -> Config {
        try Config.load(path: config)
    }
}

/// Turns any error into one line on stderr and a non-zero exit.
func fail(_ error: Error, status: Int32 = 1) -> Never {
    let message: String
    switch error {
    case let error as CaptureError: message = error.description
    case let error as ConfigError: message = error.description
    case let error as EventLogError: message = error.description
    case let error as CustomStringConvertible: message = error.description
    default: message = "\(error)"
    }
    FileHandle.standardError.write(Data(("cdc: error: " + message + "\n").utf8))
    exit(status)
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the source, create the publication and slot, copy every published table into the log, and create the warehouse.",
        discussion: "Safe to re-run: an initialised log and warehouse are only checked. Refuses a log that belongs to another source, and a warehouse built by another mapping version or log.")

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        do {
            let logger = try global.logger()
            let config = try global.loadConfig()
            try await runOnDedicatedThread(name: "cdc-init-preflight") { try config.preflightWarehouse() }
            let report = try await runOnDedicatedThread(name: "cdc-init") {
                var options = InitOptions(conninfo: config.source.url, slot: config.source.slot,
                                          publication: config.source.publication, tables: config.source.tables)
                options.protector = try config.protector()
                let initializer = SourceInitializer(options: options, logger: logger)
                return try initializer.run(logPath: config.log.path)
            }
            for table in report.tablesWithoutIdentity {
                logger.warning("published table has no primary key or replica identity: the source will refuse its UPDATEs and DELETEs; add a primary key or ALTER TABLE \(table) REPLICA IDENTITY FULL",
                               metadata: ["cdc.table": "\(table)"])
            }
            if report.alreadyInitialized {
                print("already initialised: log \(config.log.path) streams slot \(config.source.slot) from \(report.consistentPoint)")
            } else {
                let rows = report.tables.reduce(0) { $0 + $1.rows }
                print("initialised: \(report.tables.count) tables, \(rows) rows copied at consistent point \(report.consistentPoint)"
                      + (report.createdPublication ? "; created publication \(config.source.publication)" : ""))
            }
            if let warehouse = config.warehouse {
                let (created, mapping) = try await runOnDedicatedThread(name: "cdc-init-warehouse") { try config.prepareWarehouse() }
                print(created ? "warehouse: created schema \(warehouse.schema) for \(mapping.name) (schema_version \(mapping.schemaVersion))"
                              : "warehouse: schema \(warehouse.schema) already holds \(mapping.name) (schema_version \(mapping.schemaVersion))")
            }
        } catch {
            fail(error)
        }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stream committed changes into the log (and, with projectors, into the warehouse).",
        discussion: "Stops gracefully on SIGTERM or SIGINT: the current batch is written and confirmed. Reconnects after connection losses.")

    @OptionGroup var global: GlobalOptions

    @Option(help: "Stop, exit 0, once every transaction committed at or before this LSN (X/Y) is durable.")
    var endpos: String?

    @Flag(help: "Run capture alone, without projection.")
    var noProject = false

    func run() async throws {
        var server: MetricsServer?
        do {
            let logger = try global.logger()
            var stopAt: LSN?
            if let endpos {
                guard let lsn = LSN(endpos) else { throw ConfigError("--endpos \"\(endpos)\" is not an LSN: write it as PostgreSQL prints one, e.g. 0/16B3748") }
                stopAt = lsn
            }
            let config = try global.loadConfig()
            let projecting = config.warehouse != nil && !noProject
            let watchdog = NotifyService.watchdogMicroseconds()
            let context = RunContext(health: ServiceHealth(projecting: projecting,
                                                           stallThreshold: ServiceHealth.stallThreshold(watchdogMicroseconds: watchdog)))
            // The endpoint binds first: a port in use or a bad address stops cdc before it touches the source.
            if let metrics = config.metrics {
                let registry = PrometheusCollectorRegistry()
                MetricsSystem.bootstrap(CatalogMetricsFactory(registry: registry))
                server = try await MetricsServer.bind(listen: metrics.listen, registry: registry, context: context, logger: logger)
            }
            // ServiceGroup starts these in order and, on SIGTERM, stops them in reverse: STOPPING=1 first,
            // then the projector's batch, the history index, capture's batch (written and confirmed), and
            // the endpoint last.
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
            if let server { services.append(.init(service: server)) }
            services.append(.init(service: MonitorService(config: config, context: context, logger: logger)))
            services.append(.init(service: CaptureService(config: config, endpos: stopAt, context: context, logger: logger),
                                  successTerminationBehavior: .gracefullyShutdownGroup))
            services.append(.init(service: HistoryIndexService(logPath: config.log.path, context: context, logger: logger)))
            if let warehouse = config.warehouse, projecting {
                services.append(.init(service: ProjectionService(config: config, warehouse: warehouse, drainOnShutdown: stopAt != nil,
                                                                 context: context, logger: logger)))
            }
            if let notifier = SystemdNotifier.fromEnvironment() {
                services.append(.init(service: NotifyService(notifier: notifier, context: context, logger: logger)))
            }
            var configuration = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            // A deadline for SIGTERM (systemd's TimeoutStopSec is 60 s); --endpos drains the projection, however long.
            if stopAt == nil {
                configuration.maximumGracefulShutdownDuration = .seconds(45)
                configuration.maximumCancellationDuration = .seconds(10)
            }
            try await ServiceGroup(configuration: configuration).run()
        } catch {
            await server?.close()
            fail(error)
        }
    }
}

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Read the event log (read-only; safe while `cdc run` writes).",
        subcommands: [FilteredExport.self, Verify.self, Digest.self, LogShow.self, LogTxn.self, LogTail.self, LogHistory.self, LogStats.self])
}

/// Where a log command reads: `--log DIR`, or the [log] path of `--config`.
struct LogLocation: ParsableArguments {
    @Option(name: .long, help: "Path to cdc.toml (its [log] path is read).")
    var config: String?

    @Option(name: .long, help: "The log directory, instead of --config.")
    var log: String?

    func path() throws -> String {
        if let log { return log }
        return try Config.load(path: config ?? Config.defaultPath).log.path
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recompute every hash and check the log's structure; exit 1 naming the first bad record.",
        discussion: """
            Checks: dense sequence numbers, each record against its SHA-256 leaf hash, the RFC 6962 Merkle \
            roots stored at every head, whole transactions, non-decreasing commit LSNs, rows pointing at \
            known relation versions. With --digest FILE (from `cdc log digest`), also proves that the log \
            still holds exactly the history that digest covered.
            """)

    @OptionGroup var location: LogLocation

    @Option(help: "First sequence number to re-read (earlier ones are taken from their stored hashes).")
    var from: UInt64 = 1

    @Option(help: "Last sequence number (default: the head).")
    var to: UInt64?

    @Option(help: "A digest file written by `cdc log digest`.")
    var digest: String?

    func run() async throws {
        do {
            let log = try EventLog.openForReading(path: try location.path())
            var expected: LogDigest?
            if let digest {
                guard let data = FileManager.default.contents(atPath: digest) else {
                    throw ConfigError("cannot read digest file \(digest)")
                }
                do { expected = try JSONDecoder().decode(LogDigest.self, from: data) } catch {
                    throw ConfigError("\(digest) is not a digest written by `cdc log digest`")
                }
                if let id = expected?.systemIdentifier, let source = try log.sourceIdentity(), id != source.systemIdentifier {
                    throw ConfigError("the digest belongs to another source (system identifier \(id), the log's is \(source.systemIdentifier))")
                }
            }
            let report = try log.verify(from: from, to: to, digest: expected)
            var line = "ok: \(report.records) records and \(report.transactions) transactions verified, \(report.rootsChecked) stored roots matched; head \(report.head), root \(hex(report.root))"
            if let expected { line += "; digest at seq \(expected.seq) matched" }
            print(line)
        } catch {
            fail(error)
        }
    }
}

struct Digest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the head (seq, LSN, commit time, Merkle root) as one JSON line, to store outside the system.")

    @OptionGroup var location: LogLocation

    func run() async throws {
        do {
            let log = try EventLog.openForReading(path: try location.path())
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(try log.digest()), as: UTF8.self))
        } catch {
            fail(error)
        }
    }
}
