import Foundation
import PGClient
#if canImport(Glibc)
import Glibc
#endif
import Testing
import TestSupport

/// Streaming of in-progress transactions (pgoutput protocol 2): a dedicated server with
/// `logical_decoding_work_mem = '64kB'` streams any transaction of more than a few hundred rows. In
/// every case the log's transactions equal test_decoding's committed history exactly (xid, commit
/// LSN, commit time, every change in order), nothing of an open or aborted transaction is in the log
/// while cdc has already received it, and the slot's statistics show that the server did stream (so
/// the suite cannot pass on protocol 1).
@Suite(.timeLimit(.minutes(15))) struct StreamingTests {
    static let server: Result<PostgresServer, any Error> = Result {
        let server = try PostgresServer.start(name: "streaming", extraSettings: ["logical_decoding_work_mem = '64kB'"])
        atexit { try? StreamingTests.server.get().destroy() }
        return server
    }

    /// A workspace on the streaming server with table `big` and a test_decoding slot from after `cdc init`.
    struct Fixture {
        let ws: CDCWorkspace
        let decoder: TestDecodingSlot
        let from: String

        init(_ name: String, extraSource: String = "") throws {
            let server = try StreamingTests.server.get()
            ws = try CDCWorkspace(name, server: server, extraSource: extraSource)
            try ws.sql("CREATE TABLE big (id int PRIMARY KEY, part text NOT NULL, payload text)")
            try ws.initialize()
            decoder = try TestDecodingSlot.create(server: server, database: ws.database)
            from = try server.currentLSN()
        }

        func tearDown() {
            decoder.drop()
            ws.tearDown()
        }

        func connect() throws -> PGConnection { try ws.server.connect(database: ws.database) }

        /// `count` rows from `first` inserted by `connection` (in whatever transaction it has open).
        func insert(_ connection: PGConnection, from first: Int, count: Int, part: String) throws {
            try connection.execute("INSERT INTO big SELECT g, '\(part)', repeat(md5(g::text), 3) FROM generate_series(\(first), \(first + count - 1)) g")
        }

        /// The slot's streamed, spilled transaction counts (pg_stat_replication_slots).
        func slotStats() throws -> (streamed: Int, spilled: Int) {
            let rows = try ws.sql("SELECT stream_txns, spill_txns FROM pg_stat_replication_slots WHERE slot_name = '\(ws.slot)'")
            guard let row = rows.first else { return (0, 0) }
            return (Int(row[0] ?? "0") ?? 0, Int(row[1] ?? "0") ?? 0)
        }

        /// Waits until cdc has confirmed WAL up to the current insert position: it has received and
        /// handled everything the server decoded until now (the confirmation follows the data on the
        /// connection), including the streamed blocks of open transactions.
        func waitUntilReceived(_ what: String) throws {
            let target = try ws.server.currentLSN()
            try poll(what: "cdc confirmed \(target) (\(what))", timeout: 60) {
                let rows = try ws.sql("SELECT confirmed_flush_lsn >= '\(target)'::pg_lsn FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")
                return rows.first?[0] == "t"
            }
        }

        /// Row events of `big` in the log, and of its `part`.
        func logged(part: String? = nil) throws -> Int {
            try ws.rowEvents(table: "big").filter { part == nil || row($0)?["part"] as? String == part }.count
        }

        /// The log equals the server's committed history since `from`.
        func expectExactHistory(transactions: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let decoded = try decoder.transactions()
            #expect(decoded.count == transactions, "test_decoding's committed transactions", sourceLocation: sourceLocation)
            let events = try ws.exportLines().map(parseEvent)
            expectExportInvariants(events, sourceLocation: sourceLocation)
            try LogInspectTests.expectSame(events, decoded, try ws.server.commitRecords(of: decoded, from: from), sourceLocation: sourceLocation)
            // And the folded log is the table.
            let source = Set(try ws.sql("SELECT id FROM big").compactMap { $0[0].flatMap(Int.init) })
            var folded = Set<Int>()
            for event in events where event["table"] as? String == "public.big" {
                let id = (row(event)?["id"] ?? row(event, "before")?["id"]) as? Int
                switch event["op"] as? String {
                case "insert", "update", "snapshot": if let id { folded.insert(id) }
                case "delete": if let id { folded.remove(id) }
                case "truncate": folded = []
                default: break
                }
            }
            #expect(folded == source, "the folded log is the source table", sourceLocation: sourceLocation)
        }
    }

    @Test func aStreamedTransactionBecomesVisibleWhenItCommits() throws {
        let f = try Fixture("stream_commit")
        defer { f.tearDown() }
        let port = try LoopbackPort.free()
        try f.ws.appendConfig("[metrics]\nlisten = \"127.0.0.1:\(port)\"")
        let run = try f.ws.startRun()
        defer { run.killIfRunning() }
        let a = try f.connect()
        try a.execute("BEGIN")
        try f.insert(a, from: 1, count: 4000, part: "t")
        try a.execute("UPDATE big SET payload = 'changed' WHERE id % 100 = 0")
        try a.execute("DELETE FROM big WHERE id % 250 = 0")
        // A big DDL transaction in another database, rolled back: the server streams its catalog
        // invalidations to every slot as empty blocks, which are neither open nor aborted for cdc.
        let streamedBefore = try f.slotStats().streamed
        try f.ws.server.execute("BEGIN; " + (1...300).map { "CREATE TABLE elsewhere_\($0) (a int, b text);" }.joined() + " ROLLBACK", database: "postgres")
        try f.waitUntilReceived("the open transaction's stream blocks")
        #expect(try f.slotStats().streamed >= streamedBefore + 1, "the server streamed the other database's transaction to this slot too")
        #expect(try f.slotStats().streamed >= 1, "the server streamed the open transaction")
        #expect(try f.logged() == 0, "nothing of the open transaction is in the log")
        #expect(ServiceTests.scrape(port).metrics.value("cdc_stream_open_transactions") == 1)
        try a.execute("COMMIT")
        try poll(what: "the committed transaction in the log") { try f.logged() == 4000 + 40 + 16 }
        let metrics = ServiceTests.scrape(port).metrics
        #expect(metrics.value("cdc_stream_open_transactions") == 0)
        #expect(metrics.value("cdc_stream_transactions_total", ["outcome": "committed"]) == 1)
        #expect(metrics.value("cdc_stream_transactions_total", ["outcome": "aborted"]) ?? 0 == 0)
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr.suffix(2000))")
        #expect(run.stderr.contains("pgoutput protocol 2"), "it said which protocol it uses")
        try f.expectExactHistory(transactions: 1)
    }

    @Test func anAbortedStreamedTransactionLeavesNothing() throws {
        let f = try Fixture("stream_abort")
        defer { f.tearDown() }
        let port = try LoopbackPort.free()
        try f.ws.appendConfig("[metrics]\nlisten = \"127.0.0.1:\(port)\"")
        let run = try f.ws.startRun()
        defer { run.killIfRunning() }
        let a = try f.connect()
        try a.execute("BEGIN")
        try f.insert(a, from: 1, count: 4000, part: "aborted")
        try f.waitUntilReceived("the open transaction's stream blocks")
        #expect(try f.slotStats().streamed >= 1, "the server streamed the open transaction")
        try a.execute("ROLLBACK")
        let b = try f.connect()
        try f.insert(b, from: 10_001, count: 1, part: "after")
        try poll(what: "the transaction after the abort in the log") { try f.logged(part: "after") == 1 }
        #expect(try f.logged(part: "aborted") == 0)
        let metrics = ServiceTests.scrape(port).metrics
        #expect(metrics.value("cdc_stream_transactions_total", ["outcome": "aborted"]) == 1)
        #expect(metrics.value("cdc_stream_open_transactions") == 0)
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr.suffix(2000))")
        try f.expectExactHistory(transactions: 1)
    }

    /// The first change of `big` in the transaction, and so the Relation message pgoutput sends once per
    /// streamed transaction, belongs to the subtransaction that is rolled back: the changes after it
    /// still need that relation.
    @Test func anAbortedSubtransactionDropsOnlyItsChanges() throws {
        let f = try Fixture("stream_subxact")
        defer { f.tearDown() }
        let run = try f.ws.startRun()
        defer { run.killIfRunning() }
        let a = try f.connect()
        try a.execute("BEGIN")
        try a.execute("SAVEPOINT s1")
        try f.insert(a, from: 1, count: 3000, part: "rolled-back")
        try f.waitUntilReceived("the subtransaction's streamed changes")
        #expect(try f.slotStats().streamed >= 1, "the server streamed the subtransaction's changes")
        try a.execute("ROLLBACK TO SAVEPOINT s1")
        try f.insert(a, from: 5001, count: 1500, part: "kept")
        try a.execute("SAVEPOINT s2")
        try f.insert(a, from: 7001, count: 1500, part: "kept-sub")  // a subtransaction that commits
        try a.execute("RELEASE SAVEPOINT s2")
        try f.waitUntilReceived("the rest")
        #expect(try f.logged() == 0, "nothing of the open transaction is in the log")
        try a.execute("COMMIT")
        try poll(what: "the transaction in the log") { try f.logged() == 3000 }
        #expect(try f.logged(part: "rolled-back") == 0)
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr.suffix(2000))")
        try f.expectExactHistory(transactions: 1)
    }

    /// Two streamed transactions whose blocks alternate, small ones committing between their blocks,
    /// and the later-started one committing first: the log has them in commit order.
    @Test func interleavedStreamedTransactionsAndSmallOnesInCommitOrder() throws {
        let f = try Fixture("stream_interleave")
        defer { f.tearDown() }
        let run = try f.ws.startRun()
        defer { run.killIfRunning() }
        let a = try f.connect(), b = try f.connect()
        try a.execute("BEGIN")
        try b.execute("BEGIN")
        try f.insert(a, from: 1, count: 2000, part: "a")
        try f.insert(b, from: 100_001, count: 2000, part: "b")
        try f.insert(a, from: 2001, count: 2000, part: "a")
        try f.ws.sql("INSERT INTO big VALUES (900001, 'small', NULL)")
        try f.insert(b, from: 102_001, count: 2000, part: "b")
        try f.ws.sql("INSERT INTO big VALUES (900002, 'small', NULL)")
        try f.waitUntilReceived("both transactions' blocks")
        #expect(try f.slotStats().streamed >= 2, "the server streamed both")
        #expect(try f.logged(part: "small") == 2, "the small transactions are visible")
        #expect(try f.logged(part: "a") + f.logged(part: "b") == 0, "nothing of the open ones")
        try b.execute("COMMIT")
        try f.ws.sql("UPDATE big SET payload = 'x' WHERE id = 900001")
        try f.insert(a, from: 4001, count: 500, part: "a")
        try a.execute("COMMIT")
        try poll(what: "everything in the log") { try f.logged() == 2 + 4000 + 1 + 4500 }
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr.suffix(2000))")
        try f.expectExactHistory(transactions: 5)
    }

    /// kill -9 while a streamed transaction is open (its changes in cdc's in-flight store): nothing of
    /// it is visible, and after the restart the server streams it again, whole, and it commits once.
    @Test func killedMidStreamThenRestarted() throws {
        let f = try Fixture("stream_kill")
        defer { f.tearDown() }
        var run = try f.ws.startRun()
        defer { run.killIfRunning() }
        let a = try f.connect()
        try a.execute("BEGIN")
        try f.insert(a, from: 1, count: 20_000, part: "t")  // ~2 MiB: held in memory, not spilled (the unit tests spill)
        try f.waitUntilReceived("the open transaction's stream blocks")
        #expect(try f.slotStats().streamed >= 1)
        run.send(SIGKILL)
        run.wait()
        #expect(try f.logged() == 0, "nothing of the open transaction is in the log after the kill")
        try f.ws.sql("INSERT INTO big VALUES (900001, 'small', NULL)")
        run = try f.ws.startRun()
        try f.insert(a, from: 20_001, count: 1000, part: "t")
        try f.waitUntilReceived("the re-streamed transaction")
        #expect(try f.logged(part: "t") == 0, "still nothing of it after the restart")
        try a.execute("COMMIT")
        try poll(what: "the transaction in the log once") { try f.logged() == 21_001 }
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr.suffix(2000))")
        try f.expectExactHistory(transactions: 2)
    }

    /// `streaming = false`: protocol 1, the server spills the big transaction instead of streaming it.
    /// On a server left at the default `logical_decoding_work_mem` (64 MB), a transaction of some
    /// 12 MB of decoded changes still streams while it runs: cdc's walsender session asks for 4 MB, so
    /// a huge transaction's tail does not wait for its commit in the server's memory.
    @Test func cdcsSessionStreamsBelowTheServersDefaultDecodingMemory() throws {
        let ws = try CDCWorkspace("stream_session_mem")
        defer { ws.tearDown() }
        let setting = try ws.sql("SHOW logical_decoding_work_mem").first?[0]
        #expect(setting == "64MB", "the shared test server keeps PostgreSQL's default")
        try ws.sql("CREATE TABLE big (id int PRIMARY KEY, part text NOT NULL, payload text)")
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        let a = try ws.server.connect(database: ws.database)
        try a.execute("BEGIN")
        try a.execute("INSERT INTO big SELECT g, 'm', repeat(md5(g::text), 3) FROM generate_series(1, 40000) g")
        try a.execute("COMMIT")
        try poll(what: "the transaction in the log") { try ws.rowEvents(table: "big").count == 40000 }
        let stats = try ws.sql("SELECT stream_txns, spill_txns FROM pg_stat_replication_slots WHERE slot_name = '\(ws.slot)'").first
        #expect(Int(stats?[0] ?? "0") ?? 0 >= 1, "the server streamed the transaction while it ran")
        #expect(stats?[1] == "0", "and spilled nothing")
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr.suffix(2000))")
    }

    @Test func streamingFalseUsesProtocolOne() throws {
        let f = try Fixture("stream_off", extraSource: "streaming = false")
        defer { f.tearDown() }
        let a = try f.connect()
        try a.execute("BEGIN")
        try f.insert(a, from: 1, count: 4000, part: "t")
        try a.execute("COMMIT")
        try f.ws.catchUp()
        let stats = try f.slotStats()
        #expect(stats.streamed == 0, "nothing streamed on protocol 1")
        #expect(stats.spilled >= 1, "the server spilled the transaction instead")
        try f.expectExactHistory(transactions: 1)
    }
}
