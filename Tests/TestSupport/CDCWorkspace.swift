import Foundation

/// A test's own source database, cdc.toml and log directory, with helpers to run the real `cdc` binary.
public final class CDCWorkspace: @unchecked Sendable {
    public let server: PostgresServer
    public let database: String
    public let directory: String
    public var logPath: String { directory + "/log" }
    public var configPath: String { directory + "/cdc.toml" }
    /// The slot and publication name (unique per workspace: slots are cluster-wide).
    public var slot: String { database }

    /// Creates a database (with the source schema unless `schema` is false) and writes cdc.toml.
    public init(_ name: String, server: PostgresServer = .shared, schema: Bool = true, extraSource: String = "") throws {
        self.server = server
        database = try server.createDatabase(name, schema: schema)
        directory = try TemporaryDirectory.make(prefix: name)
        try writeConfig(extraSource: extraSource)
    }

    /// Writes cdc.toml for this workspace.
    public func writeConfig(conninfo: String? = nil, extraSource: String = "") throws {
        let text = """
            [source]
            url = "\(conninfo ?? server.conninfo(database: database))"
            slot = "\(slot)"
            publication = "\(slot)"
            \(extraSource)
            [log]
            path = "\(logPath)"

            """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Appends `text` to cdc.toml: whole TOML tables (e.g. `[metrics]`), which may follow any other.
    public func appendConfig(_ text: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: configPath))
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data(("\n" + text + "\n").utf8))
    }

        /// Runs SQL against the workspace's database.
    @discardableResult
    public func sql(_ statement: String) throws -> [[String?]] {
        try server.execute(statement, database: database)
    }

    /// The path of the `cdc` executable built next to the tests.
    public static let executable: String = {
        let candidates = [
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("cdc").path,
            Bundle.main.bundleURL.appendingPathComponent("cdc").path,
            PostgresServer.repositoryRoot + "/.build/debug/cdc",
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates.last!
    }()

    /// Runs `cdc ARGS...` to completion; throws when it takes more than `timeout` seconds (see ``Shell/run``).
    @discardableResult
    public func cdc(_ arguments: [String], environment: [String: String] = [:],
                    timeout: Double = Shell.defaultTimeout) throws -> Shell.Result {
        try Shell.run(Self.executable, arguments, environment: environment, timeout: timeout)
    }

    /// `cdc init --config cdc.toml`, which must succeed.
    public func initialize() throws {
        let result = try cdc(["init", "--config", configPath])
        guard result.status == 0 else { throw TestFailure("cdc init failed (\(result.status)): \(result.stderr)") }
    }

    /// `cdc run --no-project --endpos <current WAL position>`, which must succeed within `timeout` seconds.
    public func catchUp(timeout: Double = Shell.defaultTimeout) throws {
        let endpos = try server.currentLSN()
        let result = try cdc(["run", "--config", configPath, "--no-project", "--endpos", endpos], timeout: timeout)
        try? result.stderr.write(toFile: directory + "/run-\(endpos.replacingOccurrences(of: "/", with: "-")).log", atomically: true, encoding: .utf8)
        guard result.status == 0 else { throw TestFailure("cdc run failed (\(result.status)): \(result.stderr)") }
    }

    /// `cdc log export` parsed into JSON objects.
    public func export(from: UInt64? = nil) throws -> [[String: Any]] {
        var arguments = ["log", "export", "--log", logPath, "--format", "jsonl"]
        if let from { arguments += ["--from", String(from)] }
        let result = try cdc(arguments)
        guard result.status == 0 else { throw TestFailure("cdc log export failed: \(result.stderr)") }
        return try result.stdout.split(separator: "\n").map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw TestFailure("export line is not an object: \(line)")
            }
            return object
        }
    }

    /// Row events (not relation records) of `table` in the export.
    public func rowEvents(table: String, from: UInt64? = nil) throws -> [[String: Any]] {
        try export(from: from).filter { $0["table"] as? String == "public." + table && $0["op"] as? String != "relation" }
    }

    /// Drops the slot and removes the files.
    /// Creates the throwaway role `<prefix>_<database>` with `attributes` (e.g. "LOGIN REPLICATION
    /// PASSWORD 'x'") and returns its name; ``tearDown()`` drops it after the database.
    public func createRole(_ prefix: String, _ attributes: String = "") throws -> String {
        let role = "\(prefix)_\(database)"
        try server.execute("CREATE ROLE \(role) \(attributes)")
        return role
    }

    public func tearDown() {
        server.dropSlots(database: database)
        _ = try? server.execute("DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
        // The roles of createRole (they own nothing once the database is gone).
        let roles = (try? server.execute("SELECT rolname FROM pg_roles WHERE right(rolname, \(database.count + 1)) = '_\(database)'")) ?? []
        for case let role? in roles.map({ $0[0] }) { _ = try? server.execute("DROP ROLE IF EXISTS \(role)") }
        if ProcessInfo.processInfo.environment["CDC_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}
