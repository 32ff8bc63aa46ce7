import Capture
import EventLog
import Foundation
import Lifecycle
import Logging
import Metrics
import PGClient
import Projection
import ServiceLifecycle

/// `cdc run`'s projection as a long-running ``Service``: folds the log into the warehouse in
/// micro-batches as capture appends to it, on a thread of its own, so capture never waits for the
/// warehouse.
///
/// On graceful shutdown it finishes the batch in flight and stops; with `drainOnShutdown` (`--endpos`)
/// it first applies everything the log holds. A warehouse that goes away is retried with backoff; a
/// mapping or schema that does not fit stops `cdc run` with the reason.
public struct ProjectionService: Service, CustomStringConvertible {
    let config: Config
    let warehouse: Config.Warehouse
    let drainOnShutdown: Bool
    let logger: Logger
    let context: RunContext
    /// Pause between polls of the log's head when caught up.
    var idle: Double = 0.01

    public init(config: Config, warehouse: Config.Warehouse, drainOnShutdown: Bool, context: RunContext, logger: Logger) {
        self.config = config
        self.warehouse = warehouse
        self.drainOnShutdown = drainOnShutdown
        self.context = context
        self.logger = logger
    }

    public var description: String { "ProjectionService(schema: \(warehouse.schema), log: \(config.log.path))" }

    public func run() async throws {
        let stop = StopSignal(), drain = StopSignal()
        let service = self
        // Graceful shutdown stops after the batch in flight, or, with --endpos, once the log is applied.
        try await runUntilStopped(name: "cdc-projector", stop: stop, stopOnShutdown: !drainOnShutdown, onShutdown: { drain.stop() }) {
            try service.loop(stop: stop, drain: drain)
        }
    }

    func loop(stop: StopSignal, drain: StopSignal) throws {
        let health = context.health.projection!
        health.set(.starting("connecting to the warehouse"))
        defer { health.set(.stopped) }
        let connected = Gauge(label: "cdc_warehouse_connected")
        let batchSeconds = Metrics.Timer(label: "cdc_projection_batch_seconds")
        var rowCounters: [String: Counter] = [:]
        func rows(_ table: String) -> Counter {
            if let counter = rowCounters[table] { return counter }
            let counter = Counter(label: "cdc_projection_rows_total", dimensions: [("table", table)])
            rowCounters[table] = counter
            return counter
        }
        connected.record(0)
        defer { connected.record(0) }
        let retries = RateLimitedLog(interval: 60)
        let mapping = try ProjectionMapping.load(path: warehouse.mapping)
        var projector: Projector?
        var backoff = Backoff(initial: 1, maximum: 30)
        while !stop.isStopped {
            health.beat()
            do {
                if projector == nil {
                    health.doing("connecting to the warehouse and loading its dimensions")
                    let log = try EventLog.openForReading(path: config.log.path)
                    projector = try Projector(mapping: mapping, target: warehouse.target(), log: log)
                    projector!.heartbeat = { health.beat() }
                    for table in projector!.tables { _ = rows(table) }
                    context.projectionPosition = projector!.position
                    connected.record(1)
                    health.set(.running)
                    context.health.projectionLoaded()
                    retries.reset(key: "projection")
                    logger.info("projecting", metadata: ["cdc.warehouse.schema": "\(warehouse.schema)", "cdc.projection.seq": "\(projector!.position)"])
                }
                health.doing("projecting a batch into the warehouse")
                let started = ContinuousClock.now
                // A source transaction bigger than a batch is applied in chunks within one warehouse
                // transaction: each chunk beats, so a long one is not taken for a stall.
                let step = try projector!.step { soFar in
                    health.doing("projecting a large source transaction in one warehouse transaction (\(soFar.records) log records so far)")
                    logger.debug("projected a chunk of a large source transaction; its warehouse transaction stays open",
                                 metadata: ["cdc.projection.records": "\(soFar.records)"])
                }
                if step.records == 0 {
                    health.doing("")
                    if drain.isStopped { break }
                    stop.sleep(seconds: idle, health: health)
                } else {
                    batchSeconds.record(duration: ContinuousClock.now - started)
                    for (table, count) in step.rows where count > 0 { rows(table).increment(by: count) }
                    context.projectionPosition = projector!.position
                    backoff.reset()
                    logger.debug("projected", metadata: ["cdc.projection.records": "\(step.records)", "cdc.projection.seq": "\(projector!.position)"])
                }
            } catch {
                let transient: Bool
                switch error {
                case let error as WarehouseError: transient = error.code.isTransient
                // Any libpq or server error while projecting (whatever its kind or SQLSTATE class):
                // reconnect and retry.
                case is PGError: transient = true
                default: transient = false
                }
                guard transient, !drainOnShutdown else { throw error }
                let delay = backoff.next()
                connected.record(0)
                if Self.code(of: error) == "warehouse_disk_full" {
                    // Not a lost connection: the warehouse's disk is full. Capture goes on; the batch is retried.
                    health.set(.paused(code: "warehouse_disk_full", message: "\(error) — free space on the warehouse server; projection resumes by itself"))
                } else {
                    health.set(.retrying(code: Self.code(of: error), message: "\(error)"))
                }
                retries.log(logger, .warning, key: "projection", "projection failed; retrying",
                            metadata: ["cdc.error": "\(error)", "cdc.retry.seconds": "\(delay)"])
                projector = nil
                stop.sleep(seconds: delay, health: health)
            }
        }
        if let projector {
            logger.info("projection stopped", metadata: ["cdc.projection.seq": "\(projector.position)"])
        }
    }

    /// The stable code of a projection failure, for /readyz and STATUS=.
    static func code(of error: Error) -> String {
        switch error {
        case let error as WarehouseError where error.sqlState == .diskFull: "warehouse_disk_full"
        case let error as WarehouseError: error.code.rawValue
        case let error as PGError where error.sqlState == .diskFull: "warehouse_disk_full"
        case let error as PGError: error.sqlState.map { "sqlstate_\($0)" } ?? "warehouse_unreachable"
        default: "other"
        }
    }
}

extension Config {
    /// The warehouse checks `cdc init` runs before it writes anything: the mapping parses, names
    /// only tables and columns the source database has, the warehouse answers, a warehouse schema
    /// that exists holds this mapping's version, and the warehouse is not a database whose own
    /// writes the publication would capture.
    public func preflightWarehouse() throws {
        guard let warehouse else { return }
        let mapping = try ProjectionMapping.load(path: warehouse.mapping)
        let source = try SourceInitializer.connect(self.source.url)
        let columns = try source.execute("""
            SELECT n.nspname || '.' || c.relname, a.attname
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
            """)
        var relations: [String: Set<String>] = [:]
        for r in 0..<columns.rowCount { relations[columns.value(r, 0)!, default: []].insert(columns.value(r, 1)!) }
        try mapping.check(relations: relations, in: "the source database")
        let dw = try warehouse.target().connect(application: "cdc")
        if let checkpoint = try WarehouseSchema.checkpoint(dw, schema: warehouse.schema, projection: mapping.name) {
            let logSource = (try? EventLog.openForReading(path: log.path).sourceIdentity()).flatMap { $0 }.map(WarehouseSchema.logSource)
            try WarehouseSchema.check(checkpoint, schema: warehouse.schema, mapping: mapping, logSource: logSource ?? checkpoint.logSource ?? "")
        }
        let identity = "SELECT system_identifier::text || '/' || current_database() FROM pg_control_system()"
        if try source.execute(identity).value(0, 0) == dw.execute(identity).value(0, 0) {
            let publication = try source.query("SELECT puballtables FROM pg_publication WHERE pubname = $1", [self.source.publication])
            let allTables = publication.rowCount > 0 ? publication.value(0, 0) == "t" : self.source.tables == nil
            if allTables {
                throw ConfigError("[warehouse] url is the source database and publication \(self.source.publication) publishes all its tables: cdc would capture its own warehouse writes. Put the warehouse in another database, or list the source tables in [source] tables")
            }
        }
    }

    /// The checks `cdc run` makes before any of its services starts, so that a projection that
    /// cannot work stops it before capture writes a record (capture and projection start together,
    /// and capture may otherwise write the log before the projector finds out): the mapping parses
    /// and reads only tables and columns the log describes; with `mustReachWarehouse` (`--endpos`,
    /// which must project what it captures) the warehouse answers and its schema fits the mapping and
    /// the log (``WarehouseSchema/checkFit``). A live `cdc run` does not wait for the warehouse here
    /// (it may be down or unreachable for minutes): capture starts, and its projector connects,
    /// checks the same, and retries.
    public func preflightProjection(mustReachWarehouse: Bool) throws {
        guard let warehouse else { return }
        let mapping = try ProjectionMapping.load(path: warehouse.mapping)
        // A missing or uninitialised log is capture's to report, with its own remedy.
        guard FileManager.default.fileExists(atPath: log.path),
              let reader = try? EventLog.openForReading(path: log.path), let identity = try? reader.sourceIdentity() else { return }
        try WarehouseSchema.checkSource(mapping, log: reader)
        guard mustReachWarehouse else { return }
        let connection = try warehouse.target().connect()
        try WarehouseSchema.checkFit(connection, schema: warehouse.schema, mapping: mapping, logSource: WarehouseSchema.logSource(identity))
    }

    /// Creates the warehouse schema of [warehouse] (or of `schema`) with the mapping's DDL, or checks
    /// it, after checking the mapping against the log. Returns true when it created the schema.
    public func prepareWarehouse(schema: String? = nil) throws -> (created: Bool, mapping: ProjectionMapping) {
        guard let warehouse else { throw ConfigError("config has no [warehouse] section: add url, schema and mapping") }
        let mapping = try ProjectionMapping.load(path: warehouse.mapping)
        let log = try EventLog.openForReading(path: self.log.path)
        guard let identity = try log.sourceIdentity() else { throw ConfigError("the log at \(self.log.path) is not initialised: run `cdc init`") }
        try WarehouseSchema.checkSource(mapping, log: log)
        let connection = try warehouse.target(schema: schema).connect(application: "cdc")
        let created = try WarehouseSchema.prepare(connection, schema: schema ?? warehouse.schema, mapping: mapping,
                                                  logSource: WarehouseSchema.logSource(identity))
        return (created, mapping)
    }
}
