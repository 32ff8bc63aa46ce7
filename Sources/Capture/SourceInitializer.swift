import EventLog
import Logging
import PGClient

/// What `cdc init` needs to know.
public struct InitOptions: Sendable {
    public var conninfo: String
    public var slot: String
    public var publication: String
    /// Tables (`schema.table` or `table`) for a new publication; nil publishes all tables.
    public var tables: [String]?
    /// Column protection applied to the snapshot ([privacy] in cdc.toml).
    public var protector: ColumnProtector?
    /// Install the actor trigger on the published tables before the slot is created ([audit] actor).
    public var auditActor = false

    public init(conninfo: String, slot: String, publication: String, tables: [String]? = nil) {
        self.conninfo = conninfo
        self.slot = slot
        self.publication = publication
        self.tables = tables
    }
}

/// What `cdc init` did.
public struct InitReport: Sendable {
    public var alreadyInitialized = false
    public var createdPublication = false
    public var consistentPoint = LSN.zero
    public var tables: [(name: String, rows: Int)] = []
    /// Published tables that cannot publish updates and deletes (no primary key, no replica identity).
    public var tablesWithoutIdentity: [String] = []
    /// Tables the actor trigger was put on by this run ([audit] actor).
    public var actorTablesInstalled: [String] = []
}

/// `cdc init`: preflight checks, the publication, the slot with an exported snapshot, and the
/// initial COPY of every published table into the log at the slot's consistent point.
public final class SourceInitializer {
    let options: InitOptions
    var logger: Logger

    public init(options: InitOptions, logger: Logger) {
        self.options = options
        self.logger = logger
    }

    /// Opens an ordinary SQL connection to the source with cdc's session settings.
    public static func connect(_ conninfo: String, replication: Bool = false) throws -> PGConnection {
        do {
            return try PGConnection(conninfo: conninfo, overrides: replication ? SessionSettings.replicationOverrides()
                                        : SessionSettings.sqlOverrides())
        } catch let error as PGError {
            throw CaptureError(source: error, options: CaptureOptions(conninfo: "", slot: "", publication: ""))
        }
    }

    /// Runs every check that needs no write and returns the problems, each one line saying what to do.
    public static func preflight(_ sql: PGConnection, slot: String) throws -> [String] {
        var problems: [String] = []
        let walLevel = try sql.execute("SHOW wal_level").value(0, 0) ?? "?"
        if walLevel != "logical" {
            problems.append("wal_level is '\(walLevel)' on the source, logical replication needs 'logical': run ALTER SYSTEM SET wal_level = logical; and restart PostgreSQL")
        }
        let settings = try sql.execute("""
            SELECT current_setting('max_replication_slots')::int,
                   (SELECT count(*) FROM pg_replication_slots)::int,
                   (SELECT count(*) FROM pg_replication_slots WHERE slot_name = \(sql.quoteLiteral(slot)))::int,
                   current_setting('max_wal_senders')::int,
                   (SELECT count(*) FROM pg_stat_replication)::int,
                   (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
                   current_user
            """)
        let maxSlots = Int(settings.value(0, 0) ?? "0") ?? 0
        let usedSlots = Int(settings.value(0, 1) ?? "0") ?? 0
        let ours = settings.value(0, 2) == "1"
        let maxSenders = Int(settings.value(0, 3) ?? "0") ?? 0
        let usedSenders = Int(settings.value(0, 4) ?? "0") ?? 0
        let user = settings.value(0, 6) ?? "?"
        if maxSlots == 0 || (!ours && usedSlots >= maxSlots) {
            problems.append("max_replication_slots is \(maxSlots) with \(usedSlots) in use: raise it (ALTER SYSTEM SET max_replication_slots = \(max(usedSlots + 4, 10))) and restart PostgreSQL, or drop unused slots")
        }
        if maxSenders == 0 || usedSenders >= maxSenders {
            problems.append("max_wal_senders is \(maxSenders) with \(usedSenders) in use: raise it (ALTER SYSTEM SET max_wal_senders = \(max(usedSenders + 4, 10))) and restart PostgreSQL")
        }
        if settings.value(0, 5) != "t" {
            problems.append("role \(user) lacks the REPLICATION attribute: run ALTER ROLE \(sql.quoteIdentifier(user)) REPLICATION; as a superuser")
        }
        return problems
    }

    /// Published tables whose updates and deletes the source will refuse (no primary key and replica
    /// identity DEFAULT, or replica identity NOTHING).
    public static func tablesWithoutIdentity(_ sql: PGConnection, publication: String) throws -> [String] {
        try sql.query("""
            SELECT pt.schemaname || '.' || pt.tablename
            FROM pg_publication_tables pt
            JOIN pg_namespace n ON n.nspname = pt.schemaname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
            WHERE pt.pubname = $1
              AND (c.relreplident = 'n'
                   OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                   OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
            ORDER BY 1
            """, [publication]).rows.compactMap { $0[0] }
    }

    /// Reads the source's identity through a replication connection.
    public static func identify(_ replication: PGConnection, slot: String, publication: String) throws -> SourceIdentity {
        let system = try replication.execute("IDENTIFY_SYSTEM")
        guard let id = system.value(0, "systemid"), let db = system.value(0, "dbname") else {
            throw CaptureError(.sourceMisconfigured, "IDENTIFY_SYSTEM gave no system identifier or database: [source] url must name a database")
        }
        return SourceIdentity(systemIdentifier: id, database: db, slot: slot, publication: publication)
    }

    /// Runs `cdc init` for the log at `logPath`. Nothing is written (the log is not even created)
    /// until the source passed every check.
    public func run(logPath: String) throws -> InitReport {
        var report = InitReport()
        let sql = try Self.connect(options.conninfo)
        let problems = try Self.preflight(sql, slot: options.slot)
        if let first = problems.first {
            throw CaptureError(.sourceMisconfigured, problems.count == 1 ? first : problems.joined(separator: "; "))
        }
        if let protector = options.protector {
            try Self.checkProtection(protector, sql)
        }
        let replication = try Self.connect(options.conninfo, replication: true)
        let identity = try Self.identify(replication, slot: options.slot, publication: options.publication)
        if EventLog.exists(at: logPath), let recorded = try EventLog.openForReading(path: logPath).sourceIdentity(),
           let difference = recorded.difference(from: identity) {
            throw CaptureError(.sourceMismatch, "the log at \(logPath) belongs to another source (\(difference)): use another [log] path, or point [source] at the log's own source")
        }
        let writer = try EventLogWriter(path: logPath)
        let recorded = try writer.log.sourceIdentity()
        if let recorded, let difference = recorded.difference(from: identity) {
            throw CaptureError(.sourceMismatch, "the log at \(writer.log.path) belongs to another source (\(difference)): use another [log] path, or point [source] at the log's own source")
        }
        let state = try writer.log.state()
        let slotExists = try sql.query("SELECT 1 FROM pg_replication_slots WHERE slot_name = $1", [options.slot]).rowCount == 1

        if state == .ready {
            guard slotExists else {
                throw CaptureError(.slotMissing, "the log is initialised but replication slot \"\(options.slot)\" is gone: its changes since \(writer.durable.resumeLSN) are lost; cdc never re-creates a slot silently — move the log aside and run `cdc init` again for a fresh snapshot")
            }
            report.alreadyInitialized = true
            report.consistentPoint = writer.durable.resumeLSN
            report.tablesWithoutIdentity = try Self.tablesWithoutIdentity(sql, publication: options.publication)
            if options.auditActor {
                report.actorTablesInstalled = try AuditActor.install(sql, publication: options.publication)
            }
            return report
        }

        if slotExists {
            // A slot left by an interrupted `cdc init` of this very log has no complete snapshot: start over.
            guard recorded == identity, state == .initializing, writer.durable.head == 0 else {
                throw CaptureError(.slotExists, "replication slot \"\(options.slot)\" already exists and this log has no snapshot from it: choose another [source] slot, or drop it with SELECT pg_drop_replication_slot('\(options.slot)') if nothing else uses it")
            }
            logger.info("dropping the slot of an interrupted init", metadata: ["cdc.slot": "\(options.slot)"])
            try sql.query("SELECT pg_drop_replication_slot($1)", [options.slot])
        }

        let publicationExists = try sql.query("SELECT 1 FROM pg_publication WHERE pubname = $1", [options.publication]).rowCount == 1
        if !publicationExists {
            let target: String
            if let tables = options.tables, !tables.isEmpty {
                target = "TABLE " + tables.map { name in
                    name.split(separator: ".", maxSplits: 1).map { sql.quoteIdentifier(String($0)) }.joined(separator: ".")
                }.joined(separator: ", ")
            } else {
                target = "ALL TABLES"
            }
            do {
                try sql.execute("CREATE PUBLICATION \(sql.quoteIdentifier(options.publication)) FOR \(target)")
            } catch let error as PGError {
                throw CaptureError(.publicationFailed, "cannot create publication \"\(options.publication)\": \(error.messageAndHint) — create it as a superuser (CREATE PUBLICATION \(options.publication) FOR ALL TABLES) or list tables = [...] in [source]", underlying: error)
            }
            report.createdPublication = true
        }
        report.tablesWithoutIdentity = try Self.tablesWithoutIdentity(sql, publication: options.publication)
        if options.auditActor {
            // Before the slot exists, so every streamed transaction of these tables names its actor.
            report.actorTablesInstalled = try AuditActor.install(sql, publication: options.publication)
        }

        try writer.setSource(identity, state: .initializing)
        try writer.recordPrivacy(options.protector?.policy ?? .none)
        let created = try replication.execute(
            "CREATE_REPLICATION_SLOT \(replication.quoteIdentifier(options.slot)) LOGICAL pgoutput (SNAPSHOT 'export')")
        guard let pointText = created.value(0, "consistent_point"), let point = LSN(pointText),
              let snapshot = created.value(0, "snapshot_name") else {
            throw CaptureError(.unexpectedReply, "CREATE_REPLICATION_SLOT returned no consistent point or snapshot")
        }
        report.consistentPoint = point
        logger.info("slot created", metadata: ["cdc.slot": "\(options.slot)", "cdc.consistent_point": "\(point)"])

        // The exported snapshot lives only while the replication connection stays open and idle.
        try withExtendedLifetime(replication) {
            try sql.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            try sql.execute("SET TRANSACTION SNAPSHOT \(sql.quoteLiteral(snapshot))")
            let time = Int64(try sql.execute("SELECT (extract(epoch FROM now()) * 1000000)::int8").value(0, 0) ?? "") ?? nil
            report.tables = try copyTables(sql, writer: writer, at: point, time: time)
            try sql.execute("COMMIT")
            writer.endTransaction(commitLSN: point, commitTime: time, resume: point)
            try writer.flush(settingState: .ready)
        }
        return report
    }

    private func copyTables(_ sql: PGConnection, writer: EventLogWriter, at point: LSN, time: Int64?) throws -> [(String, Int)] {
        let tables = try publishedTables(sql)
        var copied: [(String, Int)] = []
        var scratch: [UInt8] = []
        for row in tables.rows {
            guard let oidText = row[0], let oid = UInt32(oidText), let schema = row[1], let table = row[2] else { continue }
            let definition = try Self.relationDefinition(sql, publishedRow: row)
            let relationSeq = writer.append { w in
                RecordCodec.writeHeader(RecordHeader(op: .relation, lsn: point, xid: nil, commitTime: time, relationSeq: 0), to: &w)
                RecordCodec.writeRelation(definition, to: &w)
            }
            writer.noteRelation(oid: oid, seq: relationSeq)
            let columns = definition.columns.map { sql.quoteIdentifier($0.name) }.joined(separator: ", ")
            var query = "COPY (SELECT \(columns) FROM ONLY \(sql.quoteIdentifier(schema)).\(sql.quoteIdentifier(table))"
            if let filter = row[5] { query += " WHERE \(filter)" }
            query += ") TO STDOUT"
            let count = definition.columns.count
            let header = RecordHeader(op: .snapshot, lsn: point, xid: nil, commitTime: time, relationSeq: relationSeq)
            let methods = try options.protector?.methods(for: definition)
            let rows = try sql.copyOut(query) { line in
                try writer.append { w in
                    RecordCodec.writeHeader(header, to: &w)
                    try CopyTextRow.transcode(line, columns: count, into: &w, scratch: &scratch,
                                              protecting: methods, with: options.protector)
                }
                if writer.pendingBytes >= 16 << 20 { try writer.flush() }
            }
            logger.info("copied", metadata: ["cdc.table": "\(schema).\(table)", "cdc.rows": "\(rows)"])
            copied.append(("\(schema).\(table)", rows))
        }
        return copied
    }

    /// Refuses, before anything is written, a protection naming a column the source does not have or
    /// one that cannot apply to its column (hash of a non-text column, redaction of a key column).
    static func checkProtection(_ protector: ColumnProtector, _ sql: PGConnection) throws {
        try protector.requireColumns(sql)
        let tables = Set(protector.policy.columns.keys.map { $0.split(separator: ".").prefix(2).joined(separator: ".") })
        for table in tables.sorted() {
            let parts = table.split(separator: ".").map(String.init)
            let found = try sql.query("""
                SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = $1 AND c.relname = $2
                """, parts)
            guard let row = found.rows.first else { continue }
            _ = try protector.methods(for: try relationDefinition(
                sql, publishedRow: [row[0], parts[0], parts[1], row[1], nil, nil]))
        }
    }

    /// The publication's tables: oid, schema, table, replica identity, published columns, row filter.
    /// The published tables, parents before children (by foreign keys; then by name), so that the
    /// snapshot, like the live stream under foreign keys, never holds a row before the row it references.
    private func publishedTables(_ sql: PGConnection) throws -> PGResult {
        try sql.query("""
            WITH RECURSIVE pub AS (
                SELECT c.oid, pt.schemaname, pt.tablename, c.relreplident, pt.attnames, pt.rowfilter
                FROM pg_publication_tables pt
                JOIN pg_namespace n ON n.nspname = pt.schemaname
                JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
                WHERE pt.pubname = $1
            ), edges AS (
                SELECT conrelid AS child, confrelid AS parent FROM pg_constraint WHERE contype = 'f' AND conrelid <> confrelid
            ), depth(oid, d) AS (
                SELECT oid, 0 FROM pub
                UNION ALL
                SELECT e.child, depth.d + 1 FROM depth JOIN edges e ON e.parent = depth.oid WHERE depth.d < 32
            )
            SELECT pub.oid, pub.schemaname, pub.tablename, pub.relreplident, pub.attnames, pub.rowfilter
            FROM pub
            ORDER BY (SELECT max(d) FROM depth WHERE depth.oid = pub.oid), pub.schemaname, pub.tablename
            """, [options.publication])
    }

    /// The relation definition of one row of ``publishedTables(_:)``.
    static func relationDefinition(_ sql: PGConnection, publishedRow row: [String?]) throws -> RelationDefinition {
        try relationDefinition(sql, oid: UInt32(row[0] ?? "") ?? 0, namespace: row[1] ?? "", name: row[2] ?? "",
                               replicaIdentity: row[3]?.utf8.first ?? 0x64, publishedColumns: row[4].map(parseNameArray))
    }

    /// The relation definition pgoutput would send for a table, read from the catalog.
    static func relationDefinition(_ sql: PGConnection, oid: UInt32, namespace: String, name: String,
                                   replicaIdentity: UInt8, publishedColumns: [String]?) throws -> RelationDefinition {
        let result = try sql.query("""
            SELECT a.attname, a.atttypid, a.atttypmod,
                   (c.relreplident = 'f' OR a.attnum = ANY (coalesce(i.indkey::int2[], '{}'))) AS is_key,
                   tn.nspname, t.typname
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_type t ON t.oid = a.atttypid
            JOIN pg_namespace tn ON tn.oid = t.typnamespace
            LEFT JOIN pg_index i ON i.indrelid = c.oid
                 AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))
            WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
            ORDER BY a.attnum
            """, [String(oid)])
        var columns: [RelationDefinition.Column] = []
        for r in 0..<result.rowCount {
            let columnName = result.value(r, 0) ?? ""
            if let publishedColumns, !publishedColumns.contains(columnName) { continue }
            let type = UInt32(result.value(r, 1) ?? "0") ?? 0
            let typeName = TypeNames.name(type, namespace: result.value(r, 4) ?? "", typname: result.value(r, 5) ?? "")
            columns.append(.init(name: columnName, typeOID: type, typeModifier: Int32(result.value(r, 2) ?? "-1") ?? -1,
                                 isKey: result.value(r, 3) == "t", typeName: typeName))
        }
        return RelationDefinition(oid: oid, namespace: namespace, name: name, replicaIdentity: replicaIdentity, columns: columns)
    }

    /// Parses a `name[]` text value such as `{a,b,"c d"}`.
    static func parseNameArray(_ text: String) -> [String] {
        var names: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for c in text.dropFirst().dropLast() {
            if escaped { current.append(c); escaped = false; continue }
            switch c {
            case "\\": escaped = true
            case "\"": quoted.toggle()
            case "," where !quoted: names.append(current); current = ""
            default: current.append(c)
            }
        }
        if !current.isEmpty || !names.isEmpty { names.append(current) }
        return names
    }
}
