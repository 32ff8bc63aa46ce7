import Foundation
import PGClient

/// A throwaway PostgreSQL 15 cluster (wal_level=logical, loopback, password auth over TCP) started
/// with tools/pg-sandbox, for tests that need a real server.
public final class PostgresServer: @unchecked Sendable {
    /// The sandbox directory (data, socket, pgpass, log).
    public let directory: String
    /// The TCP port on 127.0.0.1.
    public let port: Int

    /// The repository's root, found from this file's location.
    public static let repositoryRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// One cluster for the whole test process; tests isolate themselves with their own databases.
    /// Tests that restart or reconfigure the server start their own with ``start(name:)``.
    public static let shared: PostgresServer = {
        do {
            let server = try PostgresServer.start(name: "shared")
            sharedForCleanup = server
            atexit { PostgresServer.sharedForCleanup?.destroy() }
            return server
        } catch {
            fatalError("cannot start the test PostgreSQL: \(error)")
        }
    }()

    nonisolated(unsafe) static var sharedForCleanup: PostgresServer?

    /// Starts a new sandbox cluster (fsync off: tests need no durability from the server).
    public static func start(name: String, fast: Bool = true, extraSettings: [String] = []) throws -> PostgresServer {
        let directory = try TemporaryDirectory.make(prefix: "pg-\(name)")
        var arguments = ["start", directory]
        if fast { arguments.append("--fast") }
        let result = try Shell.run(repositoryRoot + "/tools/pg-sandbox", arguments)
        guard result.status == 0 else {
            throw TestFailure("pg-sandbox start failed: \(result.stderr)")
        }
        guard let portLine = result.stdout.split(separator: "\n").first(where: { $0.hasPrefix("PGPORT=") }),
              let port = Int(portLine.dropFirst("PGPORT=".count)) else {
            throw TestFailure("pg-sandbox printed no PGPORT: \(result.stdout)")
        }
        let server = PostgresServer(directory: directory, port: port)
        for setting in extraSettings {
            try server.execute("ALTER SYSTEM SET \(setting)")
        }
        if !extraSettings.isEmpty { try server.restart() }
        return server
    }

    init(directory: String, port: Int) {
        self.directory = directory
        self.port = port
    }

    /// A libpq connection string for `database` (password from the sandbox's pgpass file).
    public func conninfo(database: String = "postgres", user: String = "postgres") -> String {
        "host=127.0.0.1 port=\(port) dbname=\(database) user=\(user) passfile=\(directory)/pgpass"
    }

    /// Opens an ordinary connection.
    public func connect(database: String = "postgres") throws -> PGConnection {
        try PGConnection(conninfo: conninfo(database: database), overrides: ["options": "-c timezone=UTC -c datestyle=ISO -c extra_float_digits=3"])
    }

    /// Runs SQL and returns the rows as text.
    @discardableResult
    public func execute(_ sql: String, database: String = "postgres") throws -> [[String?]] {
        try connect(database: database).execute(sql).rows
    }

    /// Creates a fresh database with the surgical-robotics source schema (schemas/source/*.sql) unless
    /// `schema` is false. Returns its name (also a valid slot and publication name).
    public func createDatabase(_ prefix: String, schema: Bool = true) throws -> String {
        let name = "\(prefix)_\(UInt32.random(in: 0...UInt32.max))".lowercased()
        try execute("CREATE DATABASE \(name)")
        if schema {
            let connection = try connect(database: name)
            let directory = PostgresServer.repositoryRoot + "/schemas/source"
            let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }.sorted()
            for file in files {
                try connection.execute(try String(contentsOfFile: directory + "/" + file, encoding: .utf8))
            }
        }
        return name
    }

    /// Drops every slot of `database` (so that the cluster's slot limit is not exhausted).
    public func dropSlots(database: String) {
        _ = try? execute("""
            SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = '\(database)' AND active_pid IS NOT NULL
            """)
        _ = try? execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '\(database)' AND NOT active")
    }

    /// The current WAL insert position. (Not pg_current_wal_lsn(): that is the write position, which
    /// lags behind commits under the sandbox's synchronous_commit = off.)
    public func currentLSN() throws -> String {
        try execute("SELECT pg_current_wal_insert_lsn()")[0][0]!
    }

    /// pg_ctl restart -m fast.
    public func restart() throws {
        let result = try Shell.run(PostgresServer.repositoryRoot + "/tools/pg-sandbox", ["restart", directory])
        guard result.status == 0 else { throw TestFailure("pg-sandbox restart failed: \(result.stderr)") }
    }

    /// Stops and removes the cluster.
    public func destroy() {
        _ = try? Shell.run(PostgresServer.repositoryRoot + "/tools/pg-sandbox", ["destroy", directory])
    }
}

/// A test precondition that failed, with a message.
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Temporary directories readable by the `postgres` user (the sandbox runs as it when tests run as root).
public enum TemporaryDirectory {
    public static func make(prefix: String) throws -> String {
        let base = ProcessInfo.processInfo.environment["CDC_TEST_TMP"] ?? "/tmp"
        let path = "\(base)/cdc-test-\(prefix)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        return path
    }
}
