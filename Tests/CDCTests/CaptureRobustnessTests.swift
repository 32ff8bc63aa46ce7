import EventLog
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Capture under failure: kill -9 at random moments, server restarts, terminated walsenders, a huge
/// transaction, a second writer. Each test ends by proving the log equals exactly the committed history.
@Suite(.timeLimit(.minutes(15))) struct CaptureRobustnessTests {
    /// The `k` of the last load transaction in the log (its last record is that transaction's counter
    /// update), 0 before the first.
    static func lastLoggedTransaction(_ ws: CDCWorkspace) throws -> Int {
        let log = try EventLog.openForReading(path: ws.logPath)
        let head = try log.position().head
        guard head > 0, let record = try log.record(head), record.header.op == .update,
              case .row(_, _, let after?) = record.body, after.count == 2 else { return 0 }
        return after[1].string.flatMap { Int($0) } ?? 0
    }

    @Test func sigkillAtRandomMomentsUnderLoadLosesAndRepeatsNothing() throws {
        let ws = try CDCWorkspace("kill")
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start(limit: 200_000)  // not to end before the last kill (20,000 did, on a busy machine)
        var logged = 0
        for round in 1...8 {
            let run = try ws.startRun()
            defer { run.killIfRunning() }
            #expect(run.waitForLog("streaming"), "cdc run did not start streaming: \(run.stderr)")
            usleep(UInt32.random(in: 50_000...900_000))
            // Each kill lands while cdc run is at work: it has logged transactions since the last kill,
            // and the source has committed transactions the log does not have yet.
            let previous = logged
            try poll(what: "round \(round): cdc run logs transactions past \(previous): \(run.stderr)") {
                try Self.lastLoggedTransaction(ws) > previous
            }
            let committed = load.committedTransactions
            run.send(SIGKILL)
            #expect(run.wait().status == 128 + SIGKILL)
            logged = try Self.lastLoggedTransaction(ws)
            #expect(logged > previous && logged < committed,
                    "round \(round): killed with work in flight: the log went from transaction \(previous) to \(logged), the source had committed \(committed)")
        }
        let transactions = try load.stop()
        try ws.catchUp()
        let events = try ws.export()
        #expect(transactions > 100, "the load should have committed a good number of transactions")
        let problems = LedgerLoad.check(events, transactions: transactions)
        #expect(problems.isEmpty, "\(problems)")
        // The log against the source itself: the rows the log's transactions inserted are the ledger's
        // rows, and its last counter update is the counter's value.
        let sourceIDs = Set(try ws.sql("SELECT id FROM ledger").compactMap { $0[0].flatMap { Int($0) } })
        let loggedIDs = Set(events.filter { $0["table"] as? String == "public.ledger" && $0["op"] as? String == "insert" }
            .compactMap { row($0)?["id"] as? Int })
        let (extra, missing) = (loggedIDs.subtracting(sourceIDs).count, sourceIDs.subtracting(loggedIDs).count)
        #expect(loggedIDs == sourceIDs, "the log's ledger inserts are the source's rows: \(extra) logged that the source lacks, \(missing) missing")
        let counter = try ws.sql("SELECT n FROM counter WHERE id = 1")[0][0].flatMap { Int($0) }
        let lastUpdate = events.last { $0["table"] as? String == "public.counter" && $0["op"] as? String == "update" }
        #expect(row(lastUpdate)?["n"] as? Int == counter, "the log's last counter update is the source's counter \(counter ?? -1)")
    }

    @Test func sigtermFinishesTheBatchConfirmsItAndExitsZero() throws {
        let ws = try CDCWorkspace("term")
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"))
        try poll(what: "cdc run logs the load's transactions: \(run.stderr)") { try Self.lastLoggedTransaction(ws) > 0 }
        run.send(SIGTERM)
        let status = run.wait().status
        #expect(status == 0, "SIGTERM must exit 0: \(run.stderr)")
        #expect(run.stderr.contains("stopped"))
        // What was confirmed to the server is exactly the log's durable position (once the walsender has
        // read cdc's last status message, which it may do after cdc exited).
        let resume = try EventLog.openForReading(path: ws.logPath).position().resumeLSN.description
        var confirmed: String?
        try poll(what: "the slot's confirmed position \(confirmed ?? "?") becomes the log's resume LSN \(resume)", timeout: 10) {
            confirmed = try ws.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0]
            return confirmed == resume
        }
        let transactions = try load.stop()
        try ws.catchUp()
        #expect(LedgerLoad.check(try ws.export(), transactions: transactions).isEmpty)
    }

    @Test func walsenderTerminatedMidStreamReconnectsAndResumes() throws {
        let ws = try CDCWorkspace("walsender")
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start(pause: 2000)
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"))
        for round in 1...2 {
            // Terminated while streaming the load: the log has moved since the last round.
            let before = try Self.lastLoggedTransaction(ws)
            try poll(what: "round \(round): cdc run logs transactions past \(before): \(run.stderr)") { try Self.lastLoggedTransaction(ws) > before }
            let terminated = try ws.sql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)' AND active_pid IS NOT NULL")
            #expect(terminated.first?.first == "t")
            #expect(run.waitForLog("replication connection lost", count: round), "no reconnect logged: \(run.stderr)")
            #expect(run.waitForLog("streaming", count: round + 1), "did not resume: \(run.stderr)")
        }
        #expect(run.isRunning, "cdc run must survive a terminated walsender")
        let transactions = try load.stop()
        usleep(300_000)
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        try ws.catchUp()
        #expect(LedgerLoad.check(try ws.export(), transactions: transactions).isEmpty)
    }

    @Test func serverRestartMidStreamReconnectsAndResumes() throws {
        let server = try PostgresServer.start(name: "restart")
        defer { server.destroy() }
        let ws = try CDCWorkspace("restart", server: server)
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start(pause: 2000)
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"))
        try poll(what: "cdc run logs the load's transactions: \(run.stderr)") { try Self.lastLoggedTransaction(ws) > 0 }
        // Work in flight at the restart: the load commits up to it, and one transaction has written and
        // not committed (the restart aborts it: nothing of it may reach the log).
        let open = try server.connect(database: ws.database)
        try open.execute("BEGIN; INSERT INTO ledger VALUES (-1, -1, 'open at the restart')")
        try server.restart()
        #expect(throws: (any Error).self, "the load was committing when the server restarted: its connection is cut") { try load.stop() }
        // The source says what committed (the restart may have cut the answer to the load's last COMMIT).
        let before = try #require(try ws.sql("SELECT n FROM counter WHERE id = 1")[0][0].flatMap { Int($0) })
        #expect(before == load.committedTransactions || before == load.committedTransactions + 1,
                "the counter is at \(before), the load saw \(load.committedTransactions) commits")
        #expect(run.waitForLog("replication connection lost"), "no reconnect logged: \(run.stderr)")
        #expect(run.waitForLog("streaming", count: 2), "did not resume after the restart: \(run.stderr)")
        // More committed work after the restart continues the same history.
        let connection = try server.connect(database: ws.database)
        for k in (before + 1)...(before + 50) {
            try connection.execute("""
                BEGIN; INSERT INTO ledger VALUES (\(3 * k), \(k), 'a'), (\(3 * k + 1), \(k), 'b'), (\(3 * k + 2), \(k), 'c');
                UPDATE counter SET n = \(k) WHERE id = 1; COMMIT
                """)
        }
        try poll(what: "cdc run logs the transactions after the restart, up to \(before + 50): \(run.stderr)") {
            try Self.lastLoggedTransaction(ws) == before + 50
        }
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        try ws.catchUp()
        let problems = LedgerLoad.check(try ws.export(), transactions: before + 50)
        #expect(problems.isEmpty, "\(problems)")
    }

    @Test func millionRowTransactionIsCapturedWholeInBoundedMemory() throws {
        let ws = try CDCWorkspace("million")
        defer { ws.tearDown() }
        try ws.sql("CREATE TABLE bulk (id bigint PRIMARY KEY, payload text)")
        try ws.initialize()
        try ws.sql("INSERT INTO bulk SELECT g, 'row ' || g FROM generate_series(1, 1000000) g")
        try ws.sql("INSERT INTO bulk VALUES (0, 'after')")
        let endpos = try ws.server.currentLSN()
        let run = try ws.startRun(["--endpos", endpos])
        let (status, maxRSS) = run.wait()
        #expect(status == 0, "\(run.stderr)")
        // Memory stays bounded: far below the ~100 MB the transaction's rows would take if held at once.
        #expect(maxRSS < 160_000, "peak RSS \(maxRSS) KiB")

        // The inserts, transaction by transaction (by commit LSN, in log order).
        struct Transaction {
            var lsn: UInt64, xid: UInt32?
            var ids: [Int] = []
            var endFlags = 0
            var endsWithTheFlag = false
        }
        var transactions: [Transaction] = []
        let log = try EventLog.openForReading(path: ws.logPath)
        try log.scan { _, bytes in
            let record = try RecordCodec.decode(bytes)
            guard record.header.op == .insert else { return true }
            if transactions.last?.lsn != record.header.lsn.value {
                transactions.append(Transaction(lsn: record.header.lsn.value, xid: record.header.xid))
            }
            let ends = record.header.flags.contains(.endOfTransaction)
            if ends { transactions[transactions.count - 1].endFlags += 1 }
            transactions[transactions.count - 1].endsWithTheFlag = ends
            if case .row(_, _, let after?) = record.body, let id = after.first?.string.flatMap({ Int($0) }) {
                transactions[transactions.count - 1].ids.append(id)
            }
            return true
        }
        let shapes = transactions.map { "\($0.ids.count) inserts at \($0.lsn)" }
        try #require(transactions.count == 2, "the million rows share one commit LSN, the last insert has its own: \(shapes)")
        let (million, after) = (transactions[0], transactions[1])
        #expect(million.ids.count == 1_000_000 && Set(million.ids) == Set(1...1_000_000), "the first transaction has rows 1...1,000,000, each once")
        #expect(after.ids == [0], "the second has row 0: \(after.ids.prefix(5))")
        #expect(million.xid != nil && million.xid != after.xid)
        #expect(million.endFlags == 1 && million.endsWithTheFlag, "the million-row transaction is flagged ended at its last record and nowhere else (\(million.endFlags) flags)")
        #expect(after.endFlags == 1 && after.endsWithTheFlag)
    }

    @Test func aSecondWriterIsRefused() throws {
        let ws = try CDCWorkspace("writer")
        defer { ws.tearDown() }
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"))
        let second = try ws.cdc(["run", "--config", ws.configPath, "--no-project"])
        #expect(second.status != 0)
        #expect(second.stderr.contains("another cdc process (pid \(run.pid))"), "\(second.stderr)")
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
    }

    @Test func readersExportWholeTransactionsWhileRunWrites() throws {
        let ws = try CDCWorkspace("readers")
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start(pause: 3000, limit: 3000)
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"))
        // Concurrent exports show whole transactions only: counter updates 1...k with k's rows present.
        func wholeTransactions(_ events: [[String: Any]]) -> Int {
            let ns = events.compactMap { $0["table"] as? String == "public.counter" && $0["op"] as? String == "update" ? row($0)?["n"] as? Int : nil }
            let problems = LedgerLoad.check(events, transactions: ns.count)
            #expect(problems.isEmpty, "a concurrent export of \(events.count) events: \(problems)")
            return ns.count
        }
        let first = wholeTransactions(try ws.export())
        var reads = 1, last = first
        try poll(what: "the log grows while being read (\(reads) exports, from \(first) to \(last) transactions): \(run.stderr)", timeout: 60) {
            last = wholeTransactions(try ws.export())
            reads += 1
            return reads >= 5 && last > first
        }
        let transactions = try load.stop()
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        try ws.catchUp()
        #expect(LedgerLoad.check(try ws.export(), transactions: transactions).isEmpty)
    }
}

/// An idle captured database on a busy server must not pin WAL forever: the slot's confirmed
/// position follows the server's WAL through keepalives while nothing of ours is in flight.
@Suite(.timeLimit(.minutes(15))) struct IdleSlotTests {
    @Test func idleSlotKeepsConfirmingProgressWhileOtherDatabasesWrite() throws {
        let ws = try CDCWorkspace("idle")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.sql(Fixture.facility("F1", "Mercy", type: "Academic"))
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"))
        func confirmed() throws -> String { try ws.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] ?? "" }
        // Wait until the insert is logged, then make WAL elsewhere only.
        try poll(what: "the insert is logged: \(run.stderr)", timeout: 10) { try ws.rowEvents(table: "facilities").count == 1 }
        let start = try confirmed()
        let other = try ws.server.createDatabase("idle_other", schema: false)
        defer { _ = try? ws.server.execute("DROP DATABASE IF EXISTS \(other) WITH (FORCE)") }
        try ws.server.execute("CREATE TABLE noise (id int); INSERT INTO noise SELECT generate_series(1, 10000)", database: other)
        let busyLSN = try ws.server.currentLSN()
        // Up to 30 s: standby status goes out every 10 s.
        try poll(what: "the slot's confirmed position passes \(busyLSN), past the other database's WAL (it was at \(start), now \((try? confirmed()) ?? "?"))") {
            LedgerLoad.compareLSN(try confirmed(), busyLSN) >= 0
        }
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        // Capture goes on after the advance. (Nothing is checked about the other database's rows in the
        // log: a logical slot decodes its own database only, so they could not be there whatever cdc did.)
        try ws.sql(Fixture.facility("F2", "Hope", city: "Austin", state: "TX", type: "Community", beds: 50))
        try ws.catchUp()
        let ids = try ws.rowEvents(table: "facilities").compactMap { row($0)?["facility_id"] as? String }
        #expect(ids == ["F1", "F2"])
    }
}

/// A slot invalidated by max_slot_wal_keep_size has lost the WAL the log needs: cdc run must stop with
/// an explanation, write nothing, and never re-create the slot.
@Suite(.timeLimit(.minutes(15))) struct SlotInvalidationTests {
    @Test func invalidatedSlotIsExplainedAndNothingIsWritten() throws {
        let server = try PostgresServer.start(name: "lostslot", extraSettings: [
            "max_slot_wal_keep_size = '1MB'", "min_wal_size = '32MB'", "max_wal_size = '64MB'",
        ])
        defer { server.destroy() }
        let ws = try CDCWorkspace("lostslot", server: server)
        defer { ws.tearDown() }
        try ws.initialize()
        let before = try ws.export().count
        try ws.sql("CREATE TABLE filler (id int, payload text)")
        var status = ""
        try poll(what: "the slot is invalidated (wal_status \(status))", timeout: 120) {
            try ws.sql("INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            try server.execute("SELECT pg_switch_wal()")
            try server.execute("CHECKPOINT")
            status = try server.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] ?? ""
            return status == "lost"
        }

        let endpos = try server.currentLSN()
        let result = try ws.cdc(["run", "--config", ws.configPath, "--no-project", "--endpos", endpos])
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("cdc: error:") }
        #expect(lines.count == 1, "\(result.stderr)")
        #expect(lines.first?.contains("invalidated") == true && lines.first?.contains("cdc init") == true, "\(result.stderr)")
        #expect(try ws.export().count == before, "nothing was written")
        let slots = try server.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0]
        #expect(slots == "1", "the lost slot is left for the operator, not dropped or re-created")
    }
}
