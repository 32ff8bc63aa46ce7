import EventLog
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Capture under failure: kill -9 at random moments, server restarts, terminated walsenders, a huge
/// transaction, a second writer. Each test ends by proving the log equals exactly the committed history.
@Suite(.timeLimit(.minutes(10))) struct CaptureRobustnessTests {
    @Test func sigkillAtRandomMomentsUnderLoadLosesAndRepeatsNothing() throws {
        let ws = try CDCWorkspace("kill")
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start()
        var kills = 0
        for _ in 0..<8 {
            let run = try ws.startRun()
            #expect(run.waitForLog("streaming"), "cdc run did not start streaming: \(run.stderr)")
            usleep(UInt32.random(in: 50_000...900_000))
            run.send(SIGKILL)
            #expect(run.wait().status == 128 + SIGKILL)
            kills += 1
        }
        let transactions = try load.stop()
        try ws.catchUp()
        let events = try ws.export()
        #expect(kills == 8)
        #expect(transactions > 100, "the load should have committed a good number of transactions")
        let problems = LedgerLoad.check(events, transactions: transactions)
        #expect(problems.isEmpty, "\(problems)")
        // The log's count matches the source: every ledger row is there once.
        let sourceRows = try ws.sql("SELECT count(*) FROM ledger")[0][0].flatMap { Int($0) }
        #expect(sourceRows == 3 * transactions)
    }

    @Test func sigtermFinishesTheBatchConfirmsItAndExitsZero() throws {
        let ws = try CDCWorkspace("term")
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start()
        let run = try ws.startRun()
        #expect(run.waitForLog("streaming"))
        usleep(700_000)
        run.send(SIGTERM)
        let status = run.wait().status
        #expect(status == 0, "SIGTERM must exit 0: \(run.stderr)")
        #expect(run.stderr.contains("stopped"))
        // What was confirmed to the server is exactly the log's durable position.
        let log = try EventLog.openForReading(path: ws.logPath)
        let position = try log.position()
        let confirmed = try ws.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0]
        #expect(confirmed == position.resumeLSN.description)
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
        #expect(run.waitForLog("streaming"))
        for round in 1...2 {
            usleep(500_000)
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
        #expect(run.waitForLog("streaming"))
        usleep(500_000)
        _ = try? load.stop()  // the load's connection dies with the restart
        let before = load.committedTransactions
        try server.restart()
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
        usleep(300_000)
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        try ws.catchUp()
        #expect(LedgerLoad.check(try ws.export(), transactions: before + 50).isEmpty)
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

        let log = try EventLog.openForReading(path: ws.logPath)
        var inserts = 0
        var lsns = Set<UInt64>()
        var lastFlags: RecordFlags = []
        var ids = 0
        try log.scan { _, bytes in
            let record = try RecordCodec.decode(bytes)
            if record.header.op == .insert {
                inserts += 1
                lsns.insert(record.header.lsn.value)
                if case .row(_, _, let after?) = record.body, after.first != .text(Array("0".utf8)) { ids += 1 }
                lastFlags = record.header.flags
            }
            return true
        }
        #expect(inserts == 1_000_001)
        #expect(ids == 1_000_000)
        #expect(lsns.count == 2, "the million rows share one commit LSN, the last insert has its own")
        #expect(lastFlags.contains(.endOfTransaction))
    }

    @Test func aSecondWriterIsRefused() throws {
        let ws = try CDCWorkspace("writer")
        defer { ws.tearDown() }
        try ws.initialize()
        let run = try ws.startRun()
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
        #expect(run.waitForLog("streaming"))
        var sizes: [Int] = []
        for _ in 0..<5 {
            usleep(300_000)
            let events = try ws.export()
            sizes.append(events.count)
            // A concurrent export shows whole transactions only: counter updates 1...k with k's rows present.
            let ns = events.compactMap { $0["table"] as? String == "public.counter" && $0["op"] as? String == "update" ? ($0["after"] as? [String: Any])?["n"] as? Int : nil }
            #expect(LedgerLoad.check(events, transactions: ns.count).isEmpty)
        }
        #expect(sizes.last! > sizes.first!, "the log grew while being read: \(sizes)")
        let transactions = try load.stop()
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        try ws.catchUp()
        #expect(LedgerLoad.check(try ws.export(), transactions: transactions).isEmpty)
    }
}

/// An idle captured database on a busy server must not pin WAL forever: the slot's confirmed
/// position follows the server's WAL through keepalives while nothing of ours is in flight.
@Suite(.timeLimit(.minutes(5))) struct IdleSlotTests {
    @Test func idleSlotKeepsConfirmingProgressWhileOtherDatabasesWrite() throws {
        let ws = try CDCWorkspace("idle")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.sql("INSERT INTO facilities VALUES ('F1', 'Mercy', 'Boston', 'MA', 'US', 'Academic', 300)")
        let run = try ws.startRun()
        #expect(run.waitForLog("streaming"))
        func confirmed() throws -> String { try ws.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] ?? "" }
        // Wait until the insert is confirmed, then make WAL elsewhere only.
        var start = try confirmed()
        try poll(what: "the insert is logged: \(run.stderr)", timeout: 10) { try ws.export().contains { $0["op"] as? String == "insert" } }
        start = try confirmed()
        let other = try ws.server.createDatabase("idle_other", schema: false)
        defer { _ = try? ws.server.execute("DROP DATABASE IF EXISTS \(other) WITH (FORCE)") }
        try ws.server.execute("CREATE TABLE noise (id int); INSERT INTO noise SELECT generate_series(1, 10000)", database: other)
        let busyLSN = try ws.server.currentLSN()
        var advanced = false
        for _ in 0..<300 {  // up to 30 s: standby status goes out every 10 s
            if LedgerLoad.compareLSN(try confirmed(), busyLSN) >= 0 { advanced = true; break }
            usleep(100_000)
        }
        #expect(advanced, "slot stayed at \(start) while the server's WAL moved to \(busyLSN)")
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        // Nothing from the other database is in the log, and capture goes on after the advance.
        try ws.sql("INSERT INTO facilities VALUES ('F2', 'Hope', 'Austin', 'TX', 'US', 'Community', 50)")
        try ws.catchUp()
        let ids = try ws.rowEvents(table: "facilities").compactMap { ($0["after"] as? [String: Any])?["facility_id"] as? String }
        #expect(ids == ["F1", "F2"])
        #expect(try ws.export().allSatisfy { ($0["table"] as? String)?.contains("noise") != true })
    }
}

/// A slot invalidated by max_slot_wal_keep_size has lost the WAL the log needs: cdc run must stop with
/// an explanation, write nothing, and never re-create the slot.
@Suite(.timeLimit(.minutes(10))) struct SlotInvalidationTests {
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
        for _ in 0..<12 where status != "lost" {
            try ws.sql("INSERT INTO filler SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            try server.execute("SELECT pg_switch_wal()")
            try server.execute("CHECKPOINT")
            status = try server.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] ?? ""
        }
        try #require(status == "lost", "could not invalidate the slot (wal_status \(status))")

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
