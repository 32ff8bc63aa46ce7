import Foundation
import PGClient
#if canImport(Glibc)
import Glibc
#endif

/// A source workspace (``CDCWorkspace``: database, cdc.toml, log) plus a second database on the same
/// server for the warehouse, with a cdc.toml that has a `[warehouse]` section, and helpers to run the
/// real `cdc` with projection, query the warehouse and compare whole warehouse schemas.
public final class WarehouseWorkspace: @unchecked Sendable {
    public static let surgicalMapping = PostgresServer.repositoryRoot + "/schemas/projections/surgical-robotics.toml"
    public static let ecommerceMapping = PostgresServer.repositoryRoot + "/schemas/models/ecommerce/mapping.toml"

    /// The source side: its database, cdc.toml and log.
    public let source: CDCWorkspace
    /// The warehouse database (no source tables), on ``warehouseServer``.
    public let warehouseDatabase: String
    /// The server holding the warehouse: the source's, unless another was given (a Citus coordinator).
    public let warehouseServer: PostgresServer
    /// Creates the warehouse database on a server other than the source's (see ``CitusCluster``).
    public typealias WarehouseCreator = (_ name: String) throws -> (server: PostgresServer, database: String)
    /// The live warehouse schema (`[warehouse] schema`).
    public private(set) var schema: String
    /// `[warehouse] timezone`, or nil to leave the key out (default UTC).
    public private(set) var timezone: String?
    /// `[warehouse] mapping` (absolute path).
    public private(set) var mapping: String

    public var server: PostgresServer { source.server }
    public var configPath: String { source.configPath }
    public var directory: String { source.directory }

    /// Creates the source database (with the surgical-robotics source schema unless `sourceSchema` is
    /// false), the warehouse database (on the same server, or where `warehouse` creates it), and
    /// cdc.toml with `[warehouse]`.
    public init(_ name: String, server: PostgresServer = .shared, sourceSchema: Bool = true, schema: String = "dw",
                timezone: String? = nil, mapping: String = WarehouseWorkspace.surgicalMapping,
                warehouse: WarehouseCreator? = nil) throws {
        source = try CDCWorkspace(name, server: server, schema: sourceSchema)
        do {
            if let warehouse {
                (warehouseServer, warehouseDatabase) = try warehouse(name + "_dw")
            } else {
                warehouseServer = server
                warehouseDatabase = try server.createDatabase(name + "_dw", schema: false)
            }
        } catch {
            source.tearDown()
            throw error
        }
        self.schema = schema
        self.timezone = timezone
        self.mapping = mapping
        try writeConfig()
    }

    /// The warehouse's libpq conninfo.
    public var warehouseURL: String { warehouseServer.conninfo(database: warehouseDatabase) }

    /// (Re)writes cdc.toml: the source and log sections of the workspace, then `[warehouse]` with the
    /// given values (the workspace's own for those left nil; `url` replaces the warehouse url only,
    /// `sourceURL` the source's), then `sections` (whole TOML tables such as `[metrics]`).
    /// `extraSource` adds keys to `[source]`. Neither `sourceURL`, `extraSource` nor `sections` is
    /// remembered for later calls.
    public func writeConfig(url: String? = nil, schema: String? = nil, timezone: String? = nil,
                            mapping: String? = nil, extraWarehouse: String = "",
                            sourceURL: String? = nil, extraSource: String = "", sections: String = "") throws {
        if let schema { self.schema = schema }
        if let timezone { self.timezone = timezone }
        if let mapping { self.mapping = mapping }
        try source.writeConfig(conninfo: sourceURL, extraSource: extraSource)
        var section = """

            [warehouse]
            url = "\(url ?? warehouseURL)"
            schema = "\(self.schema)"
            mapping = "\(self.mapping)"

            """
        if let zone = self.timezone { section += "timezone = \"\(zone)\"\n" }
        section += extraWarehouse
        if !sections.isEmpty { section += "\n" + sections + "\n" }
        try source.appendConfig(section)
    }

    /// Appends `text` (whole TOML tables, e.g. `[metrics]`) to cdc.toml.
    public func appendConfig(_ text: String) throws { try source.appendConfig(text) }

    // MARK: SQL

    /// Runs SQL against the source database.
    @discardableResult
    public func sql(_ statement: String) throws -> [[String?]] { try source.sql(statement) }

    /// Runs SQL against the warehouse database (session time zone UTC, ISO dates).
    @discardableResult
    public func dw(_ statement: String) throws -> [[String?]] {
        try warehouseServer.execute(statement, database: warehouseDatabase)
    }

    /// The warehouse query's rows, by column name.
    public func dwRecords(_ statement: String) throws -> [WarehouseRow] {
        let result = try warehouseServer.connect(database: warehouseDatabase).execute(statement)
        return (0..<result.rowCount).map { r in
            var values: [String: String?] = [:]
            for c in 0..<result.columnCount { values[result.columnName(c)] = .some(result.value(r, c)) }
            return WarehouseRow(values: values)
        }
    }

    /// The first value of the warehouse query's first row (nil for no row or NULL).
    public func dwValue(_ statement: String) throws -> String? {
        try dw(statement).first?.first ?? nil
    }

    /// SQL that renders the timestamptz `expression` exactly as the log export renders commit times
    /// (`2026-11-22T02:02:55.254715Z`).
    public static func rfc3339(_ expression: String) -> String {
        "to_char((\(expression)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    }

    /// Whether `name` exists as a schema in the warehouse database.
    public func schemaExists(_ name: String) throws -> Bool {
        try dwValue("SELECT count(*) FROM pg_namespace WHERE nspname = '\(name)'") == "1"
    }

    // MARK: cdc

    /// Runs `cdc ARGS...` to completion.
    @discardableResult
    public func cdc(_ arguments: [String]) throws -> Shell.Result { try source.cdc(arguments) }

    /// `cdc init --config cdc.toml`, which must succeed.
    public func initialize() throws {
        let result = try cdc(["init", "--config", configPath])
        guard result.status == 0 else { throw TestFailure("cdc init failed (\(result.status)): \(result.stderr)") }
    }

    /// `cdc run --config cdc.toml --endpos <current WAL insert position>` (capture and projection),
    /// whatever its exit status.
    public func runResult(_ extra: [String] = []) throws -> Shell.Result {
        try run(endpos: try server.currentLSN(), extra)
    }

    /// `cdc run --endpos <current WAL insert position>` with projection, which must succeed: afterwards
    /// every committed source change is in the log and applied to the warehouse. Returns the endpos.
    @discardableResult
    public func run() throws -> String {
        let endpos = try server.currentLSN()
        let result = try run(endpos: endpos)
        guard result.status == 0 else { throw TestFailure("cdc run --endpos \(endpos) failed (\(result.status)): \(result.stderr)") }
        return endpos
    }

    /// `cdc run --endpos ENDPOS ARGS...`, its stderr kept in the workspace directory.
    func run(endpos: String, _ extra: [String] = []) throws -> Shell.Result {
        let result = try cdc(["run", "--config", configPath, "--endpos", endpos] + extra)
        try? result.stderr.write(toFile: directory + "/run-\(endpos.replacingOccurrences(of: "/", with: "-")).log",
                                 atomically: true, encoding: .utf8)
        return result
    }

    /// `cdc replay --config cdc.toml --schema NAME ARGS...`, whatever its exit status.
    public func replayResult(schema name: String, _ extra: [String] = []) throws -> Shell.Result {
        try cdc(["replay", "--config", configPath, "--schema", name] + extra)
    }

    /// `cdc replay --schema NAME ARGS...`, which must succeed.
    public func replay(schema name: String, _ extra: [String] = []) throws {
        let result = try replayResult(schema: name, extra)
        guard result.status == 0 else {
            throw TestFailure("cdc replay --schema \(name) \(extra.joined(separator: " ")) failed (\(result.status)): \(result.stderr)")
        }
    }

    /// Starts `cdc run --config cdc.toml ARGS...` (capture and projection) in the background, with
    /// `environment` added to the test process's (e.g. `NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    public func startRun(_ arguments: [String] = [], environment: [String: String] = [:]) throws -> RunningCDC {
        let path = directory + "/run-\(UInt32.random(in: 0...UInt32.max)).stderr"
        let pid = try Shell.spawn(CDCWorkspace.executable, ["run", "--config", configPath] + arguments,
                                  environment: environment, stdout: "/dev/null", stderr: path)
        return RunningCDC(pid: pid, stderrPath: path)
    }

    // MARK: Source commits

    /// A source transaction run by ``change(_:)``: its commit LSN lies in (before, after].
    public struct Change: Sendable {
        public let before: String
        public let after: String
        /// Its xid (32 bits, as logical decoding and the log report it).
        public let xid: UInt32
        /// Its commit as the server recorded it.
        public let commit: Commit
    }

    /// A source transaction's commit LSN and commit time, from the server (never from cdc).
    public struct Commit: Sendable, Equatable {
        /// The start of its WAL commit record (pg_walinspect): the commit LSN logical decoding reports.
        public let lsn: String
        /// `pg_xact_commit_timestamp(xid)`, RFC 3339 UTC with microseconds as in the export (compare
        /// with ``rfc3339(_:)``).
        public let time: String
    }

    /// Runs `statements` on the source as one transaction (BEGIN ... COMMIT added) and records its xid,
    /// commit LSN (from the WAL) and commit time (from the server's commit timestamps).
    @discardableResult
    public func change(_ statements: String) throws -> Change {
        let connection = try server.connect(database: source.database)
        let before = try connection.execute("SELECT pg_current_wal_insert_lsn()").value(0, 0)!
        // synchronous_commit on: the commit record is flushed when COMMIT returns, so pg_walinspect
        // can read it right away.
        try connection.execute("BEGIN; SET LOCAL synchronous_commit = on; \(statements)")
        let xidText = try connection.execute("SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text").value(0, 0)
        try connection.execute("COMMIT")
        let after = try connection.execute("SELECT pg_current_wal_insert_lsn()").value(0, 0)!
        guard let xid = xidText.flatMap({ UInt32($0) }) else { throw TestFailure("no xid: \(xidText ?? "NULL")") }
        let record = try server.commitRecord(xid: xid, from: before, to: after)
        return Change(before: before, after: after, xid: xid, commit: Commit(lsn: record.lsn, time: try server.commitTime(xid: xid)))
    }

    /// The commit of `change` as the server recorded it (the WAL's commit record, the server's commit
    /// timestamp): what the log and the warehouse must say about it.
    public func commit(of change: Change) -> Commit { change.commit }


    // MARK: Whole-warehouse comparison

    /// Warehouse schema `name` as a whole: every base table's rows, and the schema's definition
    /// (columns, indexes, constraints, views), with the schema's own name replaced by `SCHEMA` wherever
    /// a definition names it, so that two schemas built alike compare equal.
    public func dump(schema name: String) throws -> WarehouseDump {
        try Self.dump(try warehouseServer.connect(database: warehouseDatabase), schema: name)
    }

    /// ``dump(schema:)`` of schema `name` in the database `connection` is on.
    public static func dump(_ connection: PGConnection, schema name: String) throws -> WarehouseDump {
        let quoted = try connection.query("SELECT quote_ident($1)", [name]).value(0, 0) ?? name
        // The schema's name where it qualifies another name (not inside a longer identifier).
        let qualifier = try NSRegularExpression(pattern: "(?<![A-Za-z0-9_$\"])" + NSRegularExpression.escapedPattern(for: quoted + "."))
        func normalised(_ text: String?) -> String {
            let text = text ?? "NULL"
            return qualifier.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text), withTemplate: "SCHEMA.")
        }
        func rows(_ sql: String) throws -> [[String?]] { try connection.query(sql, [name]).rows }
        var dump = WarehouseDump()
        for row in try rows("""
            SELECT table_name FROM information_schema.tables
            WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1
            """) {
            guard let table = row[0] else { continue }
            let qualified = connection.quoteIdentifier(name) + "." + connection.quoteIdentifier(table)
            dump.rows[table] = try connection.execute("SELECT t::text FROM \(qualified) t").rows.map { $0[0] ?? "" }.sorted()
        }
        for row in try rows("""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated
            FROM pg_attribute a
            JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY c.relname, a.attnum
            """) {
            var column = "\(row[1] ?? "?") \(row[2] ?? "?")"
            if row[3] == "t" { column += " NOT NULL" }
            if let expression = row[4] { column += " DEFAULT " + normalised(expression) }
            if let identity = row[5], !identity.isEmpty { column += " IDENTITY " + identity }
            if let generated = row[6], !generated.isEmpty { column += " GENERATED " + generated }
            dump.columns[row[0] ?? "?", default: []].append(column)
        }
        // pg_indexes' indexdef, plus whether the index is valid (a failed build leaves an invalid one).
        for row in try rows("""
            SELECT i.relname, pg_get_indexdef(x.indexrelid) || CASE WHEN x.indisvalid THEN '' ELSE ' (INVALID)' END
            FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_namespace n ON n.oid = i.relnamespace
            WHERE n.nspname = $1
            """) {
            dump.indexes[row[0] ?? "?"] = normalised(row[1])
        }
        for row in try rows("""
            SELECT c.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
            FROM pg_constraint k
            JOIN pg_class c ON c.oid = k.conrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1
            """) {
            dump.constraints[row[0] ?? "?"] = normalised(row[1])
        }
        for row in try rows("""
            SELECT c.relname, pg_get_viewdef(c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND c.relkind IN ('v', 'm')
            """) {
            dump.views[row[0] ?? "?"] = normalised(row[1])
        }
        return dump
    }

    /// What differs between two dumps (empty when identical): rows (a few per table), columns,
    /// indexes, constraints and views.
    public static func differences(_ a: WarehouseDump, _ b: WarehouseDump, names: (String, String) = ("a", "b")) -> [String] {
        var problems: [String] = []
        for table in Set(a.rows.keys).union(b.rows.keys).sorted() {
            guard let rowsA = a.rows[table] else { problems.append("\(table): only in \(names.1)"); continue }
            guard let rowsB = b.rows[table] else { problems.append("\(table): only in \(names.0)"); continue }
            if rowsA == rowsB { continue }
            let setA = Set(rowsA), setB = Set(rowsB)
            let onlyA = rowsA.filter { !setB.contains($0) }, onlyB = rowsB.filter { !setA.contains($0) }
            problems.append("\(table): \(rowsA.count) rows in \(names.0), \(rowsB.count) in \(names.1); "
                            + "only in \(names.0): \(onlyA.prefix(3)); only in \(names.1): \(onlyB.prefix(3))")
        }
        // Definitions: what is only on one side, or where two differ (long texts around the first difference).
        func compare(_ kind: String, _ x: [String: String], _ y: [String: String]) {
            for key in Set(x.keys).union(y.keys).sorted() where x[key] != y[key] {
                guard let one = x[key] else { problems.append("\(kind) \(key): only in \(names.1): \(y[key]!.prefix(120))"); continue }
                guard let other = y[key] else { problems.append("\(kind) \(key): only in \(names.0): \(one.prefix(120))"); continue }
                let same = zip(one, other).prefix { $0 == $1 }.count
                let from = max(0, same - 40)
                problems.append("\(kind) \(key) differs at character \(same): \(names.0): …\(one.dropFirst(from).prefix(120)); "
                                + "\(names.1): …\(other.dropFirst(from).prefix(120))")
            }
        }
        for table in Set(a.columns.keys).union(b.columns.keys).sorted() where a.columns[table] != b.columns[table] {
            let x = a.columns[table] ?? [], y = b.columns[table] ?? []
            problems.append("columns of \(table): \(names.0): \(x.filter { !y.contains($0) }); \(names.1): \(y.filter { !x.contains($0) })"
                            + (Set(x) == Set(y) ? " (same columns, other order)" : ""))
        }
        compare("index", a.indexes, b.indexes)
        compare("constraint", a.constraints, b.constraints)
        compare("view", a.views, b.views)
        return problems
    }

    /// The checkpoint row(s) of warehouse schema `name`.
    public func checkpoint(schema name: String? = nil) throws -> [WarehouseRow] {
        try dwRecords("SELECT projection, schema_version::text, last_seq::text, last_lsn::text, "
                      + Self.rfc3339("last_commit_time") + " AS last_commit_time FROM \(name ?? schema).cdc_checkpoint")
    }

    // MARK: Sample data and traffic (tools/seed.sql, tools/workload)

    static func postgresTool(_ name: String) -> String {
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let path = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return "/usr/lib/postgresql/15/bin/" + name
    }

    /// Loads tools/seed.sql into the source (20 facilities, 150 surgeons, 60 robots, 2,000 procedures).
    public func loadSeed() throws {
        let result = try Shell.run(Self.postgresTool("psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1",
                                                               "-f", PostgresServer.repositoryRoot + "/tools/seed.sql",
                                                               server.conninfo(database: source.database)])
        guard result.status == 0 else { throw TestFailure("tools/seed.sql failed: \(result.stderr)") }
    }

    /// The arguments of tools/workload against this workspace's source.
    func workloadArguments(_ options: [String]) -> [String] {
        ["--conninfo", server.conninfo(database: source.database)] + options
    }

    /// Runs tools/workload with `options` (e.g. `["--transactions", "500", "--clients", "2"]`) to completion.
    public func workload(_ options: [String]) throws {
        let result = try Shell.run(PostgresServer.repositoryRoot + "/tools/workload", workloadArguments(options))
        guard result.status == 0 else { throw TestFailure("tools/workload failed (\(result.status)): \(result.stderr)\(result.stdout)") }
    }

    /// Starts tools/workload in the background; wait for it with ``Shell/wait(_:)`` (exit status).
    public func startWorkload(_ options: [String]) throws -> pid_t {
        try Shell.spawn(PostgresServer.repositoryRoot + "/tools/workload", workloadArguments(options),
                        stdout: directory + "/workload.out", stderr: directory + "/workload.err")
    }

    // MARK: Teardown

    /// Drops the source's slot and both databases and removes the files.
    public func tearDown() {
        source.tearDown()
        _ = try? warehouseServer.execute("DROP DATABASE IF EXISTS \(warehouseDatabase) WITH (FORCE)")
    }
}

/// A warehouse schema as ``WarehouseWorkspace/dump(schema:)`` read it; compare two with
/// ``WarehouseWorkspace/differences(_:_:names:)``.
public struct WarehouseDump: Sendable, Equatable {
    /// Base table → its rows as text (`t::text`, every column in order), sorted.
    public var rows: [String: [String]] = [:]
    /// Base table → its columns in order: `name type [NOT NULL] [DEFAULT expr] [IDENTITY a|d] [GENERATED s]`.
    public var columns: [String: [String]] = [:]
    /// Index name → `pg_get_indexdef` (unique and primary-key indexes included), ` (INVALID)` appended
    /// to an index that is not valid.
    public var indexes: [String: String] = [:]
    /// `table.constraint` → `pg_get_constraintdef` (primary keys, foreign keys, unique, check).
    public var constraints: [String: String] = [:]
    /// View → `pg_get_viewdef`.
    public var views: [String: String] = [:]

    public init() {}

    /// The rows of `table` (nil: no such table); setting nil leaves the table's rows out of a comparison.
    public subscript(_ table: String) -> [String]? {
        get { rows[table] }
        set { rows[table] = newValue }
    }
}

/// One row of a warehouse query: PostgreSQL's text output by column name.
public struct WarehouseRow: Sendable, CustomStringConvertible {
    public let values: [String: String?]

    /// The value of column `name`; nil for SQL NULL or a column the query did not return.
    public subscript(_ name: String) -> String? { values[name] ?? nil }

    /// Whether the query returned column `name`.
    public func has(_ name: String) -> Bool { values[name] != nil }

    public var description: String {
        "{" + values.keys.sorted().map { "\($0): \(values[$0]!.map { "\"\($0.prefix(40))\"" } ?? "NULL")" }.joined(separator: ", ") + "}"
    }
}
