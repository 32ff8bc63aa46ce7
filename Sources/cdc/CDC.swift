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
        subcommands: [Init.self, Run.self, Status.self, Snapshot.self, Replay.self, LogCommand.self]
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
    finish(status: status)
}

/// Ends the process once its work is done and durable: flushes stdout and stderr and calls `_exit`,
/// not `exit`. `exit` runs the atexit handlers and C++ static destructors of the runtime libraries
/// (Foundation, libdispatch, libpq's OpenSSL) while the runtime's own worker threads may still be
/// finishing (tearing down signal sources, task storage): a `cdc run --endpos` in CI aborted with
/// "double free or corruption" after "capture finished", one thread in `_fini` and another freeing.
/// Nothing of cdc's needs those handlers: the log is committed and closed, connections are finished.
func finish(status: Int32) -> Never {
    fflush(nil)  // every output stream
    _exit(status)
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check the source, create the publication and slot, copy every published table into the log, and create the warehouse.",
        discussion: "Safe to re-run: an initialised log and warehouse are only checked. Refuses a log that belongs to another source, and a warehouse built by another mapping version or log.")

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print the SQL that installs the actor trigger on the publication's tables ([audit] actor), for a DBA to run, and exit.")
    var printAuditSql = false

    func run() async throws {
        do {
            let logger = try global.logger()
            let config = try global.loadConfig()
            if printAuditSql {
                print(AuditActor.script(publication: config.source.publication), terminator: "")
                return
            }
            try await runOnDedicatedThread(name: "cdc-init-preflight") { try config.preflightWarehouse() }
            let report = try await runOnDedicatedThread(name: "cdc-init") {
                var options = InitOptions(conninfo: config.source.url, slot: config.source.slot,
                                          publication: config.source.publication, tables: config.source.tables)
                options.protector = try config.protector()
                options.auditActor = config.auditActor
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
            if config.auditActor {
                print(report.actorTablesInstalled.isEmpty ? "audit: the actor trigger is on every published table"
                      : "audit: installed the actor trigger on \(report.actorTablesInstalled.count) tables")
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
            if projecting {
                let drains = stopAt != nil
                try await runOnDedicatedThread(name: "cdc-run-preflight") { try config.preflightProjection(mustReachWarehouse: drains) }
            }
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
        finish(status: 0)
    }
}

struct LogCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "log",
        abstract: "Read the event log (read-only; safe while `cdc run` writes).",
        subcommands: [FilteredExport.self, Verify.self, Digest.self, Prove.self, CheckProof.self, Keygen.self, LogShow.self, LogTxn.self, LogTail.self, LogHistory.self, LogStats.self])
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

    @Option(help: "A signed checkpoint written by `cdc log digest --sign` (with --key): its signature, and its root against the records.")
    var checkpoint: String?

    @Option(help: "The checkpoint's verifier key (name+hash+key, as `cdc log keygen` prints it), or a file holding it.")
    var key: String?

    func run() async throws {
        do {
            let log = try EventLog.openForReading(path: try location.path())
            var expected: LogDigest?
            if let checkpoint {
                guard digest == nil else { throw ProofInputError("give --digest or --checkpoint, not both") }
                guard let key else { throw ProofInputError("--checkpoint needs --key VKEY") }
                let c = try openCheckpoint(checkpoint, key: key)
                if let source = try log.sourceIdentity(), c.origin != source.checkpointOrigin {
                    FileHandle.standardError.write(Data("cdc: note: the checkpoint's origin \(c.origin) is not this log's default origin \(source.checkpointOrigin)\n".utf8))
                }
                let head = try log.position().head
                guard c.size <= head else {
                    throw ProofInputError("checkpoint check failed: it covers \(c.size) records but the log has only \(head): records were removed, or another log")
                }
                expected = LogDigest(seq: c.size, lsn: "", commitTime: nil, root: hex(c.root), systemIdentifier: nil, database: nil)
            }
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
            if report.nodesChecked > 0 { line += ", \(report.nodesChecked) stored Merkle nodes matched" }
            if let expected { line += checkpoint == nil ? "; digest at seq \(expected.seq) matched" : "; signed checkpoint at seq \(expected.seq) matched" }
            print(line)
        } catch {
            fail(error)
        }
    }
}

struct Digest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the head (seq, LSN, commit time, Merkle root) as one JSON line, to store outside the system.",
        discussion: "With --sign KEYFILE (from `cdc log keygen`), print a C2SP tlog-checkpoint signed note instead: origin, tree size, base64 root, a blank line and the signature line.")

    @OptionGroup var location: LogLocation

    @Option(help: "Sign a C2SP checkpoint with this private key file (from `cdc log keygen`).")
    var sign: String?

    @Option(help: "The checkpoint's origin line (default: cdc/<system identifier>/<database>/<slot>).")
    var origin: String?

    func run() async throws {
        do {
            let log = try EventLog.openForReading(path: try location.path())
            if let sign {
                let signer: NoteSigner
                do { signer = try NoteSigner(privateKey: String(decoding: try readFile(sign, what: "private key"), as: UTF8.self)) } catch let error as SignedNote.Failure {
                    throw ProofInputError("private key check failed: \(sign): \(error)")
                }
                guard let name = try origin ?? log.sourceIdentity()?.checkpointOrigin else {
                    throw ProofInputError("the log has no source identity yet: pass --origin")
                }
                guard !name.isEmpty, !name.contains("\n") else { throw ProofInputError("--origin must be one non-empty line") }
                let (head, frontier) = (try log.position().head, try log.frontier())
                guard frontier.size == head else { throw ProofInputError("the log's frontier does not match its head: run `cdc log verify`") }
                let note = try signer.sign(Checkpoint(origin: name, size: head, root: frontier.root).text)
                FileHandle.standardOutput.write(Data(note.utf8))
                return
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(try log.digest()), as: UTF8.self))
        } catch {
            fail(error)
        }
    }
}
