import Foundation
import PGClient

/// A throwaway Citus cluster: a coordinator and two workers, each a ``PostgresServer`` sandbox with
/// citus in shared_preload_libraries, on loopback. The nodes know each other by their unix socket
/// directories (trust authentication there, so no password travels between nodes).
///
/// Citus is not in Debian's packages: the suites that need it run only where it has been built and
/// installed into this machine's PostgreSQL 15 (``available``) and say they are skipped otherwise.
public final class CitusCluster: @unchecked Sendable {
    public let coordinator: PostgresServer
    public let workers: [PostgresServer]
    /// Shards per distributed table (`citus.shard_count`, set on the coordinator): four, as the
    /// README recommends for a cluster of two workers with one cdc writing.
    public static let shardCount = 4

    /// Whether citus.so is installed in the PostgreSQL that the sandboxes run.
    public static let available: Bool = {
        for directory in ["/usr/lib/postgresql/15/lib"] + libraryDirectory() {
            if FileManager.default.fileExists(atPath: directory + "/citus.so") { return true }
        }
        return false
    }()

    static func libraryDirectory() -> [String] {
        guard let result = try? Shell.run("/usr/bin/env", ["pg_config", "--pkglibdir"]), result.status == 0 else { return [] }
        return [result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)]
    }

    /// One cluster for the test process, started on first use.
    public static let shared: CitusCluster = {
        do {
            let cluster = try CitusCluster.start()
            sharedForCleanup = cluster
            atexit { CitusCluster.sharedForCleanup?.destroy() }
            return cluster
        } catch {
            fatalError("cannot start the test Citus cluster: \(error)")
        }
    }()

    nonisolated(unsafe) static var sharedForCleanup: CitusCluster?

    static func start() throws -> CitusCluster {
        // A node serves all the test databases at once: each runs a Citus maintenance daemon (a
        // background worker: PostgreSQL's default of 8 leaves later databases without one, and so
        // without 2PC recovery and deadlock detection) and has cdc sessions caching their worker
        // connections besides the tests' own.
        let settings = ["shared_preload_libraries = 'citus'", "max_connections = 300", "max_worker_processes = 64"]
        let coordinator = try PostgresServer.start(name: "citus-coordinator", extraSettings: settings)
        var workers: [PostgresServer] = []
        for i in 1...2 { workers.append(try PostgresServer.start(name: "citus-worker\(i)", extraSettings: settings)) }
        try coordinator.execute("ALTER SYSTEM SET citus.shard_count = \(shardCount)")
        try coordinator.execute("SELECT pg_reload_conf()")
        // Adding a node propagates the coordinator's roles to it, the postgres role's password
        // included: the workers get the coordinator's password now (and in their pgpass files), or
        // the tests' own connections to them would fail once a database had its workers added.
        let password = try Self.password(coordinator)
        for worker in workers {
            let session = try worker.connect()
            try session.query("SELECT set_config('cdc.pw', $1, false)", [password])
            try session.execute("DO $$ BEGIN EXECUTE format('ALTER ROLE postgres PASSWORD %L', current_setting('cdc.pw')); END $$")
            let passfile = worker.directory + "/pgpass"
            let lines = try String(contentsOfFile: passfile, encoding: .utf8).split(separator: "\n").map { line in
                line.split(separator: ":", maxSplits: 4, omittingEmptySubsequences: false).prefix(4).joined(separator: ":") + ":" + password
            }
            try (lines.joined(separator: "\n") + "\n").write(toFile: passfile, atomically: false, encoding: .utf8)
        }
        return CitusCluster(coordinator: coordinator, workers: workers)
    }

    /// The postgres role's password of a sandbox (the last field of its pgpass file).
    static func password(_ server: PostgresServer) throws -> String {
        let text = try String(contentsOfFile: server.directory + "/pgpass", encoding: .utf8)
        guard let line = text.split(separator: "\n").first,
              let field = line.split(separator: ":", maxSplits: 4, omittingEmptySubsequences: false).last, !field.isEmpty else {
            throw TestFailure("no password in \(server.directory)/pgpass")
        }
        return String(field)
    }

    private let registration = NSLock()

    init(coordinator: PostgresServer, workers: [PostgresServer]) {
        self.coordinator = coordinator
        self.workers = workers
    }

    /// Creates database `name` on every node with the citus extension, and registers the coordinator
    /// and (unless `workers` is false) the workers in its metadata: a Citus cluster's metadata is per
    /// database. Returns the coordinator and the database, for ``WarehouseWorkspace``.
    ///
    /// One database at a time: `CREATE EXTENSION citus` and `citus_add_node` write cluster-wide
    /// catalogs on the nodes (the extension turns ssl on with ALTER SYSTEM; adding a node propagates
    /// the roles to it), and two databases doing so at once fail one with "tuple concurrently updated",
    /// reported as "failure on connection marked as essential".
    public func createDatabase(_ prefix: String, workers withWorkers: Bool = true) throws -> (server: PostgresServer, database: String) {
        registration.lock()
        defer { registration.unlock() }
        let name = "\(prefix)_\(UInt32.random(in: 0...UInt32.max))".lowercased()
        for node in [coordinator] + workers {
            try node.execute("CREATE DATABASE \(name)")
            try node.execute("CREATE EXTENSION citus", database: name)
        }
        try coordinator.execute("SELECT citus_set_coordinator_host('\(coordinator.directory)', \(coordinator.port))", database: name)
        if withWorkers {
            for worker in workers {
                do {
                    try coordinator.execute("SELECT citus_add_node('\(worker.directory)', \(worker.port))", database: name)
                } catch {
                    // The nodes' logs say why a connection between them failed; the sandboxes are
                    // gone by the time anyone reads the test's output.
                    throw TestFailure("citus_add_node(\(worker.directory)) in \(name): \(error)\n" + ([coordinator] + workers).map { node in
                        "--- \(node.directory)/postgres.log (last lines):\n" + Self.logTail(node)
                    }.joined(separator: "\n"))
                }
            }
        }
        return (coordinator, name)
    }

    /// The last lines of a node's server log.
    static func logTail(_ node: PostgresServer, lines: Int = 40) -> String {
        guard let text = try? String(contentsOfFile: node.directory + "/postgres.log", encoding: .utf8) else { return "(unreadable)" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    public func destroy() {
        coordinator.destroy()
        for worker in workers { worker.destroy() }
    }
}
