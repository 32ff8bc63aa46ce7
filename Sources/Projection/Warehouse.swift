import EventLog
import Foundation
import PGClient

/// A problem with the warehouse (unreachable, another schema version, another log): a stable
/// ``Code``, a one-line message, and the error that caused it (usually a ``PGError``).
public struct WarehouseError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, as a stable identifier: `rawValue` is the snake_case form reported by the
    /// health endpoints and `status` (e.g. `warehouse_unreachable`). Never renamed once released.
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// The warehouse cannot be reached (or refused the connection for a reason other than
        /// credentials): retried.
        case warehouseUnreachable = "warehouse_unreachable"
        /// The warehouse refused the credentials (SQLSTATE class 28, or libpq's message for a failed
        /// connection, which has no SQLSTATE).
        case warehouseAuthenticationFailed = "warehouse_authentication_failed"
        /// The schema holds another projection.
        case projectionMismatch = "projection_mismatch"
        /// The schema was built with another schema_version of the mapping.
        case schemaVersionMismatch = "schema_version_mismatch"
        /// The schema was projected from another log.
        case logMismatch = "log_mismatch"
        /// The schema holds tables but no cdc checkpoint: it is not cdc's.
        case notAWarehouse = "not_a_warehouse"
        /// The schema has no cdc checkpoint (not created yet).
        case checkpointMissing = "checkpoint_missing"
        /// The checkpoint moved under the projector (another projector, or a swap): retried.
        case checkpointMoved = "checkpoint_moved"
        /// A DDL file of the mapping cannot be read.
        case ddlUnreadable = "ddl_unreadable"
        /// A DDL file of the mapping failed; the underlying ``PGError`` has the SQLSTATE.
        case ddlFailed = "ddl_failed"
        /// The log has not been through `cdc init`.
        case logNotInitialised = "log_not_initialised"
        /// The mapping is for another engine than the warehouse runs (a Citus mapping on a warehouse
        /// without the citus extension or without workers), or the schema's distribution cannot be
        /// written by cdc.
        case engineMismatch = "engine_mismatch"
        /// Anything else.
        case other

        /// Retrying later may succeed; else something must change first (the mapping, the schema,
        /// the config).
        public var isTransient: Bool {
            switch self {
            case .warehouseUnreachable, .checkpointMoved: true
            default: false
            }
        }
    }

    public var code: Code
    public var message: String
    /// The error that caused this one, e.g. the ``PGError`` with the warehouse's SQLSTATE.
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    /// Retrying later may succeed (the warehouse is unreachable, or its checkpoint moved); else
    /// something must change first (the mapping, the schema, the config).
    public var isTransient: Bool { code.isTransient }

    /// The underlying error's SQLSTATE, when the warehouse sent one.
    public var sqlState: SQLState? { (underlying as? PGError)?.sqlState }

    public var description: String { message }
}

/// Where a projection writes: a schema in a warehouse database, holding the mapping's tables and the
/// checkpoint (`cdc_checkpoint`: the last applied log position, written with the rows).
public struct WarehouseTarget: Sendable {
    /// libpq connection string; secret: never logged.
    public var url: String
    public var schema: String
    public var clock: WarehouseClock

    public init(url: String, schema: String, clock: WarehouseClock) {
        self.url = url
        self.schema = schema
        self.clock = clock
    }

    /// Connects, with cdc's session settings (values read back have the log's text forms) and an
    /// application name.
    public func connect(application: String = "cdc-projector") throws -> PGConnection {
        let connection: PGConnection
        do {
            connection = try PGConnection(conninfo: url, overrides: SessionSettings.sqlOverrides(applicationName: application))
        } catch let error as PGError {
            throw WarehouseError(error.isAuthenticationFailure ? .warehouseAuthenticationFailed : .warehouseUnreachable,
                                 "cannot connect to the warehouse ([warehouse] url): \(error.message)", underlying: error)
        }
        do {
            try Citus.configureSession(connection)
        } catch let error as PGError {
            throw WarehouseError(error.kind == .server ? .other : .warehouseUnreachable,
                                 "cannot set up the warehouse session (Citus connection caching): \(error.messageAndHint)", underlying: error)
        }
        return connection
    }
}

/// The checkpoint row of a warehouse schema.
public struct Checkpoint: Sendable, Equatable {
    public var projection: String
    public var schemaVersion: Int
    public var lastSeq: UInt64
    public var lastLSN: String?
    public var lastCommitTime: String?
    /// The log's source (system identifier/database/slot), so that another log is never applied on top.
    public var logSource: String?
}

/// Creating and checking a warehouse schema.
public enum WarehouseSchema {
    static let checkpointDDL = """
        CREATE TABLE IF NOT EXISTS cdc_checkpoint (
            projection        text        NOT NULL PRIMARY KEY,  -- the mapping's name
            schema_version    integer     NOT NULL,              -- the mapping's schema_version
            last_seq          bigint      NOT NULL,              -- last log record applied (0: none)
            last_lsn          pg_lsn,                            -- its source commit LSN
            last_commit_time  timestamptz,                       -- its source commit time
            log_source        text,                              -- system_identifier/database/slot of the log
            next_keys         jsonb                              -- each table's next surrogate key: {"table": n}
        );
        """

    /// Every table's next surrogate key as of the checkpoint of `projection` (empty for a checkpoint
    /// that has none yet). Keys are assigned in log order; the table's highest key does not tell the
    /// next one once the newest rows are deleted, so a restarted projector would give their keys
    /// again, unlike a replay. Adds the column to the checkpoint table of an older cdc.
    static func nextKeys(_ connection: PGConnection, schema: String, projection: String) throws -> [String: Int64] {
        let s = quoteIdentifier(schema)
        let column = try connection.query("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'next_keys' AND NOT attisdropped", [s + ".cdc_checkpoint"])
        guard column.rowCount > 0 else {
            do {
                try connection.execute("ALTER TABLE \(s).cdc_checkpoint ADD COLUMN IF NOT EXISTS next_keys jsonb")
            } catch let error as PGError {
                throw WarehouseError(.other, "warehouse schema \(schema) has a cdc_checkpoint table without the next_keys column (built by an older cdc) and cdc cannot add it: \(error.messageAndHint) — run ALTER TABLE \(s).cdc_checkpoint ADD COLUMN next_keys jsonb as its owner", underlying: error)
            }
            return [:]
        }
        let result = try connection.query("SELECT next_keys::text FROM \(s).cdc_checkpoint WHERE projection = $1", [projection])
        guard result.rowCount == 1, let text = result.value(0, 0),
              let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return [:] }
        return object.compactMapValues { ($0 as? NSNumber)?.int64Value }
    }

    /// `next_keys` as written with the checkpoint.
    static func nextKeysJSON(_ keys: [String: Int64]) -> String {
        "{" + keys.sorted { $0.key < $1.key }.map { EarlyArrival.json($0.key) + ":" + String($0.value) }.joined(separator: ",") + "}"
    }

    /// Milestones (`updated_by`) that came before their fact row, kept until it arrives; written in
    /// the batch's transaction like the checkpoint. Created by `cdc init`, `cdc replay`, and by the
    /// projector in a schema of an older cdc that lacks it.
    static func earlyArrivalsDDL(_ schema: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(quoteIdentifier(schema)).cdc_early_arrivals (
            fact_table        text        NOT NULL,  -- the fact the milestone completes
            milestone         text        NOT NULL,  -- its updated_by source table
            grain             jsonb       NOT NULL,  -- the fact grain it waits for: a JSON array of text values
            milestone_values  jsonb       NOT NULL,  -- the columns it sets: {"column": "text value" or null}
            source_lsn        pg_lsn      NOT NULL,  -- commit LSN of the milestone change kept
            commit_time       timestamptz,           -- its commit time
            PRIMARY KEY (fact_table, milestone, grain)
        );
        """
    }

    /// Creates `cdc_early_arrivals` when `schema` (built by an older cdc) lacks it.
    static func ensureEarlyArrivals(_ connection: PGConnection, schema: String) throws {
        guard try !tableExists(connection, schema: schema, table: "cdc_early_arrivals") else { return }
        do {
            try connection.execute(earlyArrivalsDDL(schema))
        } catch let error as PGError {
            throw WarehouseError(.other, "warehouse schema \(schema) has no cdc_early_arrivals table (built by an older cdc) and cdc cannot create it: \(error.messageAndHint) — grant the projector's role CREATE on schema \(schema), or create it as printed by `cdc init` on a new schema", underlying: error)
        }
    }

    /// Whether `schema`.`table` exists (names as written, quoted here).
    public static func tableExists(_ connection: PGConnection, schema: String, table: String) throws -> Bool {
        try connection.query("SELECT to_regclass($1) IS NOT NULL", [quoteIdentifier(schema) + "." + quoteIdentifier(table)]).value(0, 0) == "t"
    }

    /// `system_identifier/database/slot` of a log.
    public static func logSource(_ identity: SourceIdentity) -> String {
        "\(identity.systemIdentifier)/\(identity.database)/\(identity.slot)"
    }

    /// Reads the checkpoint of `schema`; nil when the schema or its checkpoint table does not exist.
    public static func checkpoint(_ connection: PGConnection, schema: String, projection: String) throws -> Checkpoint? {
        guard try tableExists(connection, schema: schema, table: "cdc_checkpoint") else { return nil }
        let result = try connection.query("SELECT projection, schema_version, last_seq, last_lsn, last_commit_time, log_source FROM \(quoteIdentifier(schema)).cdc_checkpoint")
        guard result.rowCount > 0 else { return nil }
        let row = (0..<result.rowCount).first { result.value($0, 0) == projection } ?? 0
        return Checkpoint(projection: result.value(row, 0) ?? "", schemaVersion: Int(result.value(row, 1) ?? "") ?? 0,
                          lastSeq: UInt64(result.value(row, 2) ?? "") ?? 0, lastLSN: result.value(row, 3),
                          lastCommitTime: result.value(row, 4), logSource: result.value(row, 5))
    }

    /// Refuses a checkpoint written by another mapping, schema version or log.
    public static func check(_ checkpoint: Checkpoint, schema: String, mapping: ProjectionMapping, logSource: String) throws {
        guard checkpoint.projection == mapping.name else {
            throw WarehouseError(.projectionMismatch, "warehouse schema \(schema) holds projection \(checkpoint.projection), not \(mapping.name) (mapping \(mapping.path)): use another schema")
        }
        guard checkpoint.schemaVersion == mapping.schemaVersion else {
            throw WarehouseError(.schemaVersionMismatch, "warehouse schema \(schema) was built with schema_version \(checkpoint.schemaVersion) of \(mapping.name), the mapping has \(mapping.schemaVersion): rebuild with `cdc replay --schema NEW --swap`, or use the matching mapping")
        }
        if let source = checkpoint.logSource, source != logSource {
            throw WarehouseError(.logMismatch, "warehouse schema \(schema) was projected from another log (source \(source), this log's is \(logSource)): use another schema")
        }
    }

    /// The checks a projector makes before it writes `schema`: a checkpoint of this mapping, schema
    /// version and log, and every table and column the mapping writes.
    public static func checkFit(_ connection: PGConnection, schema: String, mapping: ProjectionMapping, logSource: String) throws {
        _ = try fit(connection, schema: schema, mapping: mapping, logSource: logSource)
    }

    /// ``checkFit(_:schema:mapping:logSource:)``, returning the checkpoint and the schema's catalog.
    static func fit(_ connection: PGConnection, schema: String, mapping: ProjectionMapping,
                    logSource: String) throws -> (checkpoint: Checkpoint, catalog: [String: [String: WarehouseColumn]]) {
        guard let checkpoint = try checkpoint(connection, schema: schema, projection: mapping.name) else {
            throw WarehouseError(.checkpointMissing, "warehouse schema \(schema) has no cdc checkpoint: run `cdc init` to create the warehouse")
        }
        try check(checkpoint, schema: schema, mapping: mapping, logSource: logSource)
        let catalog = try catalog(connection, schema: schema)
        try mapping.check(warehouseColumns: catalog.mapValues { Set($0.keys) }, schema: schema)
        return (checkpoint, catalog)
    }

    /// The columns of every table of `schema`: table → column → type and nullability.
    static func catalog(_ connection: PGConnection, schema: String) throws -> [String: [String: WarehouseColumn]] {
        let result = try connection.query("""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
            FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
            """, [schema])
        var tables: [String: [String: WarehouseColumn]] = [:]
        for r in 0..<result.rowCount {
            tables[result.value(r, 0)!, default: [:]][result.value(r, 1)!] = WarehouseColumn(type: result.value(r, 2)!, notNull: result.value(r, 3) == "t")
        }
        return tables
    }

    /// Creates `schema` with the mapping's DDL and a checkpoint at the start of the log, or checks an
    /// existing one; all in one transaction, so a failure leaves nothing behind. Returns true when it
    /// created the schema.
    @discardableResult
    public static func prepare(_ connection: PGConnection, schema: String, mapping: ProjectionMapping, logSource: String) throws -> Bool {
        let quoted = quoteIdentifier(schema)
        if mapping.engine == .citus { try Citus.check(connection, mapping: mapping) }
        try connection.execute("BEGIN")
        do {
            let created: Bool
            if let existing = try checkpoint(connection, schema: schema, projection: mapping.name) {
                try check(existing, schema: schema, mapping: mapping, logSource: logSource)
                try ensureEarlyArrivals(connection, schema: schema)
                created = false
            } else {
                let tables = try connection.query("""
                    SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm')
                    """, [schema])
                if let count = Int(tables.value(0, 0) ?? "0"), count > 0 {
                    throw WarehouseError(.notAWarehouse, "schema \(schema) already holds \(count) tables or views but no cdc checkpoint: it is not a cdc warehouse; choose another schema or drop it")
                }
                try connection.execute("CREATE SCHEMA IF NOT EXISTS \(quoted)")
                try runDDL(connection, schema: schema, mapping: mapping)
                try connection.execute(checkpointDDL)
                try connection.execute(earlyArrivalsDDL(schema))
                try connection.query("INSERT INTO cdc_checkpoint (projection, schema_version, last_seq, log_source) VALUES ($1, $2, 0, $3)",
                                     [mapping.name, String(mapping.schemaVersion), logSource])
                created = true
            }
            let catalog = try catalog(connection, schema: schema)
            try mapping.check(warehouseColumns: catalog.mapValues { Set($0.keys) }, schema: schema)
            try connection.execute("COMMIT")
            return created
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// Runs the mapping's DDL files in `schema`, inside the caller's transaction. The files are
    /// re-runnable (IF NOT EXISTS, CREATE OR REPLACE, ON CONFLICT DO NOTHING): running them again
    /// restores what is missing, such as indexes a replay deferred.
    static func runDDL(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws {
        try connection.execute("SET LOCAL search_path TO \(quoteIdentifier(schema))")
        for file in mapping.ddl {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw WarehouseError(.ddlUnreadable, "cannot read DDL file \(file) named by mapping \(mapping.path)")
            }
            // One statement at a time (see SQLScript: Citus refuses a multi-command CREATE INDEX).
            for statement in SQLScript.statements(text) {
                do {
                    try connection.execute(statement.text)
                } catch let error as PGError {
                    throw WarehouseError(.ddlFailed, "DDL file \(file) failed in schema \(schema) at the statement of line \(statement.line): \(error.messageAndHint)", underlying: error)
                }
            }
        }
    }

    /// Drops the non-unique indexes of a fresh schema that the projector itself does not use (it
    /// finds rows by surrogate key, grain and `deleted_with` parent key, the last not at all when it
    /// defers the cascades: ``deferCascades(_:schema:mapping:)``), so that a bulk replay does not
    /// maintain them row by row. ``restoreIndexes(_:schema:mapping:)`` builds them again, once.
    /// Returns how many it dropped. (On PostgreSQL the surrogate keys and grains have unique indexes;
    /// on Citus, where a unique index must include the distribution column, they may be plain ones.)
    public static func deferIndexes(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws -> Int {
        // Before any index goes: with the table of deferred cascades there, a projector defers the
        // cascades whether or not their index is still there (see deferredCascadeFacts).
        let cascades = try deferCascades(connection, schema: schema, mapping: mapping)
        var used: [String: Set<String>] = [:]
        for fact in mapping.facts {
            used[fact.table, default: []].formUnion([fact.surrogateKey, fact.grain.first].compactMap { $0 })
            if let lookup = fact.parentLookup, !cascades.contains(fact.table) {
                used[fact.table, default: []].insert(lookup.column)
            }
        }
        let result = try connection.query("""
            SELECT t.relname, i.relname,
                   (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attnum = x.indkey[0])
            FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = $1 AND NOT x.indisunique AND NOT x.indisprimary
            """, [schema])
        var dropped = 0
        for r in 0..<result.rowCount {
            guard let table = result.value(r, 0), let index = result.value(r, 1) else { continue }
            if let first = result.value(r, 2), used[table]?.contains(first) == true { continue }
            try connection.execute("DROP INDEX \(quoteIdentifier(schema)).\(quoteIdentifier(index))")
            dropped += 1
        }
        return dropped + (try deferPrimaryKeys(connection, schema: schema, mapping: mapping))
    }

    /// The facts whose primary key a replay may defer: those with a surrogate key that nothing finds
    /// rows by (no fact looks them up, none is deleted with them). Their rows are then addressed by
    /// grain (``grainAddressedFacts(_:schema:mapping:)``).
    static func leafFacts(_ mapping: ProjectionMapping) -> [ProjectionMapping.Fact] {
        let targets = Set(mapping.facts.flatMap { f in f.lookups.compactMap { lookup -> String? in
            if case .fact(let name) = lookup.target { return name } else { return nil }
        } } + mapping.facts.compactMap(\.deletedWith))
        return mapping.facts.filter { $0.surrogateKey != nil && !targets.contains($0.table) }
    }

    /// Table of the `deleted_with` cascades a replay deferred: (child fact table, parent surrogate key).
    /// A row of the child fact whose parent key is listed is deleted: it stays in the table until
    /// ``restoreIndexes(_:schema:mapping:)`` deletes all such rows at once, and until then a projector
    /// reading the table treats it as gone (``FactProjector`` drops it when it reads it by grain).
    static let deferredCascades = "cdc_deferred_cascades"

    /// The facts whose `deleted_with` cascades a replay may defer: leaf facts (``leafFacts(_:)``: no
    /// other fact reads their rows, by lookup or cascade) deleted with a parent. Their cascading
    /// DELETE then needs no index on the parent key column during the replay (measured, a COPY of the
    /// telemetry fact's 700 k rows: 1.5 s with the grain's unique index, 2.2 s with the cascade index too).
    static func cascadeDeferrable(_ mapping: ProjectionMapping) -> [ProjectionMapping.Fact] {
        leafFacts(mapping).filter { $0.parentLookup != nil }
    }

    /// Creates the table of deferred cascades (``deferredCascades``) when some fact's cascades can be
    /// deferred. Not on Citus. Returns the facts whose cascades are deferred from now on.
    static func deferCascades(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws -> Set<String> {
        let facts = cascadeDeferrable(mapping)
        guard !facts.isEmpty, try Citus.version(connection) == nil else { return [] }
        try connection.execute("CREATE TABLE IF NOT EXISTS \(quoteIdentifier(schema)).\(deferredCascades) (fact_table text NOT NULL, parent_key bigint NOT NULL)")
        return Set(facts.map(\.table))
    }

    /// The facts whose cascades a replay in progress deferred (the table of deferred cascades exists).
    public static func deferredCascadeFacts(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws -> Set<String> {
        guard try tableExists(connection, schema: schema, table: deferredCascades) else { return [] }
        return Set(cascadeDeferrable(mapping).map(\.table))
    }

    /// Deletes the rows of the deferred cascades and drops their table (in the caller's transaction;
    /// after the DDL, which builds the index on the parent key column).
    static func applyDeferredCascades(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws {
        let s = quoteIdentifier(schema)
        guard try tableExists(connection, schema: schema, table: deferredCascades) else { return }
        for fact in cascadeDeferrable(mapping) {
            guard let lookup = fact.parentLookup else { continue }
            try connection.query("DELETE FROM \(s).\(quoteIdentifier(fact.table)) WHERE \(quoteIdentifier(lookup.column)) IN (SELECT parent_key FROM \(s).\(deferredCascades) WHERE fact_table = $1)",
                                 [fact.table])
        }
        try connection.execute("DROP TABLE \(s).\(deferredCascades)")
    }

    /// The column sets (names sorted) of the valid unique indexes of `schema`.`table`, primary key
    /// included, partial and expression indexes left out.
    static func uniqueColumnSets(_ connection: PGConnection, schema: String, table: String) throws -> Set<[String]> {
        let result = try connection.query("""
            SELECT (SELECT string_agg(a.attname::text, chr(31) ORDER BY a.attname::text) FROM pg_attribute a
                    WHERE a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey))
            FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = $1 AND t.relname = $2 AND x.indisunique AND x.indisvalid AND x.indpred IS NULL AND x.indexprs IS NULL
            """, [schema, table])
        return Set((0..<result.rowCount).compactMap { result.value($0, 0)?.split(separator: "\u{1F}").map(String.init) })
    }

    /// The facts whose rows a projector addresses by grain rather than by surrogate key: a replay
    /// deferred their primary key (``deferPrimaryKeys(_:schema:mapping:)``), and their grain is unique.
    public static func grainAddressedFacts(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws -> Set<String> {
        var found: Set<String> = []
        for fact in leafFacts(mapping) {
            guard let key = fact.surrogateKey else { continue }
            let unique = try uniqueColumnSets(connection, schema: schema, table: fact.table)
            if !unique.contains([key]), unique.contains(fact.grain.sorted()) { found.insert(fact.table) }
        }
        return found
    }

    /// Table of the primary keys a replay deferred, with their definitions, so that
    /// ``restoreIndexes(_:schema:mapping:)`` adds exactly those back (also after a killed replay resumed).
    static let deferredConstraints = "cdc_deferred_constraints"

    /// Drops, in one transaction, the primary key of each leaf fact (``leafFacts(_:)``) whose grain has
    /// a unique index and whose key no foreign key references, and records its definition: a bulk
    /// replay then maintains one index fewer per row of such a table (measured, a COPY of the telemetry
    /// fact's 700 k rows: 2.1 s into the bare table, 2.9 with the primary key alone, 4.8 with the three
    /// indexes a replay kept; each index costs 0.6-0.8 s). Not on Citus (a distributed table's unique
    /// constraints are its shards').
    static func deferPrimaryKeys(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws -> Int {
        guard try Citus.version(connection) == nil else { return 0 }
        let s = quoteIdentifier(schema)
        var deferred = 0
        try connection.execute("BEGIN")
        do {
            try connection.execute("CREATE TABLE IF NOT EXISTS \(s).\(deferredConstraints) (table_name text PRIMARY KEY, constraint_name text NOT NULL, definition text NOT NULL)")
            for fact in leafFacts(mapping) {
                guard let key = fact.surrogateKey else { continue }
                let result = try connection.query("""
                    SELECT c.conname, pg_get_constraintdef(c.oid)
                    FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
                    WHERE n.nspname = $1 AND t.relname = $2 AND c.contype = 'p'
                      AND c.conkey = ARRAY[(SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = t.oid AND a.attname = $3)]
                      AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.confrelid = t.oid)
                    """, [schema, fact.table, key])
                guard result.rowCount == 1, let name = result.value(0, 0), let definition = result.value(0, 1),
                      // Only where the grain stays unique without it.
                      try uniqueColumnSets(connection, schema: schema, table: fact.table).contains(fact.grain.sorted()) else { continue }
                try connection.query("INSERT INTO \(s).\(deferredConstraints) VALUES ($1, $2, $3)", [fact.table, name, definition])
                try connection.execute("ALTER TABLE \(s).\(quoteIdentifier(fact.table)) DROP CONSTRAINT \(quoteIdentifier(name))")
                deferred += 1
            }
            if deferred == 0 { try connection.execute("DROP TABLE \(s).\(deferredConstraints)") }
            try connection.execute("COMMIT")
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
        return deferred
    }

    /// Runs the mapping's DDL again in one transaction: the deferred cascades are applied, every
    /// deferred index is built, and every deferred primary key added back.
    public static func restoreIndexes(_ connection: PGConnection, schema: String, mapping: ProjectionMapping) throws {
        try connection.execute("BEGIN")
        do {
            try runDDL(connection, schema: schema, mapping: mapping)
            // After the DDL built their index: the listed parents' rows are found by it (measured on
            // the replay benchmark: 114 ms by a scan of the 700 k telemetry rows before).
            try applyDeferredCascades(connection, schema: schema, mapping: mapping)
            let s = quoteIdentifier(schema)
            if try tableExists(connection, schema: schema, table: deferredConstraints) {
                let deferred = try connection.query("SELECT table_name, constraint_name, definition FROM \(s).\(deferredConstraints) ORDER BY table_name")
                for r in 0..<deferred.rowCount {
                    guard let table = deferred.value(r, 0), let name = deferred.value(r, 1), let definition = deferred.value(r, 2) else { continue }
                    do {
                        try connection.execute("ALTER TABLE \(s).\(quoteIdentifier(table)) ADD CONSTRAINT \(quoteIdentifier(name)) \(definition)")
                    } catch let error as PGError {
                        throw WarehouseError(.ddlFailed, "adding back the primary key \(name) of \(schema).\(table) after the replay failed: \(error.messageAndHint)", underlying: error)
                    }
                }
                try connection.execute("DROP TABLE \(s).\(deferredConstraints)")
            }
            try connection.execute("COMMIT")
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// Checks the mapping's source side against the tables of the log (latest relation versions).
    public static func checkSource(_ mapping: ProjectionMapping, log: EventLog) throws {
        var relations: [String: Set<String>] = [:]
        for (_, seq) in try log.relationIndex() {
            if let definition = try log.relationDefinition(seq) {
                relations[definition.qualifiedName] = Set(definition.columns.map(\.name))
            }
        }
        try mapping.check(relations: relations)
    }
}
