import Foundation
import Testing
import TestSupport

/// Transactions that logical replication applied from another node carry a replication origin: the log
/// records it (`origin` record, `origin` on each change in the export), and `[source] origins = "none"`
/// leaves them out (bidirectional set-ups).
@Suite(.timeLimit(.minutes(15))) struct OriginTests {
    /// Commits `statements` in one transaction as a logical replication apply worker would: in a session
    /// with the replication origin `origin` set up, the upstream commit LSN given.
    static func replicated(_ ws: CDCWorkspace, origin: String, upstreamLSN: String, _ statements: String) throws {
        try ws.sql("""
            SELECT pg_replication_origin_create('\(origin)') WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = '\(origin)');
            SELECT pg_replication_origin_session_setup('\(origin)');
            BEGIN;
            SELECT pg_replication_origin_xact_setup('\(upstreamLSN)', now());
            \(statements)
            COMMIT;
            SELECT pg_replication_origin_session_reset();
            """)
    }

    static func dropOrigins(_ ws: CDCWorkspace, _ names: [String]) {
        for name in names { _ = try? ws.sql("SELECT pg_replication_origin_drop('\(name)')") }
    }

    static let changeOps: Set<String> = ["insert", "update", "delete", "truncate"]

    @Test func aReplicatedTransactionNamesItsOriginAndOthersDoNot() throws {
        let ws = try CDCWorkspace("origin_rec", schema: false)
        let origin = "upstream_\(ws.database)"
        defer { Self.dropOrigins(ws, [origin]); ws.tearDown() }
        try ws.sql("CREATE TABLE acct (id int PRIMARY KEY, v text)")
        try ws.initialize()
        try ws.sql("INSERT INTO acct VALUES (1, 'local')")
        try Self.replicated(ws, origin: origin, upstreamLSN: "0/ABCDEF0", """
            INSERT INTO acct VALUES (2, 'from upstream');
            UPDATE acct SET v = 'changed upstream' WHERE id = 1;
            """)
        try ws.sql("DELETE FROM acct WHERE id = 2")
        try ws.catchUp()

        let events = try ws.export()
        let origins = events.filter { $0["op"] as? String == "origin" }
        try #require(origins.count == 1, "one origin record: \(origins)")
        let record = origins[0]
        #expect(record["origin"] as? String == origin)
        #expect(record["origin_lsn"] as? String == "0/ABCDEF0", "the upstream commit LSN it was applied with")
        let xid = try #require(record["xid"] as? Int)
        let replicatedChanges = events.filter { $0["xid"] as? Int == xid && Self.changeOps.contains($0["op"] as? String ?? "") }
        #expect(replicatedChanges.count == 2, "the insert and the update: \(replicatedChanges)")
        for change in replicatedChanges { #expect(change["origin"] as? String == origin, "each change names the origin: \(change)") }
        let firstOfTransaction = events.filter { $0["xid"] as? Int == xid }.compactMap { $0["seq"] as? Int }.min()
        #expect(record["seq"] as? Int == firstOfTransaction, "the origin record is its transaction's first")
        let local = events.filter { $0["xid"] as? Int != xid && Self.changeOps.contains($0["op"] as? String ?? "") }
        #expect(local.count == 2, "the local insert and delete: \(local)")
        for change in local { #expect(change["origin"] == nil, "a local change has no origin: \(change)") }

        // The log stays verifiable, counts it, and a reader starting in the middle of the transaction
        // still finds its origin.
        let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
        #expect(verify.status == 0, "verify: \(verify.stdout)\(verify.stderr)")
        let stats = try ws.cdc(["log", "stats", "--log", ws.logPath, "--format", "json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any])
        #expect(json["replicated_transactions"] as? Int == 1, "\(stats.stdout)")
        let lastChange = try #require(replicatedChanges.compactMap { $0["seq"] as? Int }.max())
        let tail = try ws.export(from: UInt64(lastChange))
        #expect(tail.first?["origin"] as? String == origin, "from the middle: \(String(describing: tail.first))")
    }

    @Test func originsNoneSkipsReplicatedTransactionsAndMovesOn() throws {
        let ws = try CDCWorkspace("origin_none", schema: false, extraSource: "origins = \"none\"")
        let origin = "peer_\(ws.database)"
        defer { Self.dropOrigins(ws, [origin]); ws.tearDown() }
        try ws.sql("CREATE TABLE acct (id int PRIMARY KEY, v text)")
        try ws.initialize()
        try ws.sql("INSERT INTO acct VALUES (1, 'local')")
        try Self.replicated(ws, origin: origin, upstreamLSN: "0/1000", "INSERT INTO acct VALUES (2, 'echo'); UPDATE acct SET v = 'echo' WHERE id = 1;")
        try ws.catchUp()
        try ws.sql("INSERT INTO acct VALUES (3, 'local again')")
        try ws.catchUp()

        let events = try ws.export()
        #expect(!events.contains { $0["op"] as? String == "origin" }, "no origin record")
        let rows = events.filter { Self.changeOps.contains($0["op"] as? String ?? "") }
        let ids = rows.compactMap { ($0["after"] as? [String: Any])?["id"] as? Int }
        #expect(ids == [1, 3], "only the local inserts, once each (the second run did not take the skipped one again): \(rows)")
        #expect(!rows.contains { ($0["after"] as? [String: Any])?["v"] as? String == "echo" }, "nothing of the replicated transaction")
    }
}
