import Foundation
import PGClient
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `cdc init`: idempotence, warnings, the publication it creates, the snapshot's order, the checks it
/// runs before creating anything, and an interrupted init.
@Suite(.timeLimit(.minutes(15))) struct InitTests {
    @Test func reRunningInitOnAnInitialisedLogAddsNothing() throws {
        let ws = try CDCWorkspace("reinit")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        let first = try ws.cdc(["init", "--config", ws.configPath])
        #expect(first.status == 0, "first init: \(first.stderr)")
        #expect(first.stdout.contains("initialised:") && !first.stdout.contains("already"))
        try ws.sql(Fixture.facility("F2"))
        try ws.catchUp()
        let before = try ws.exportLines()
        #expect(before.count == 9, "7 relation records, the snapshot row and the streamed insert")

        let again = try ws.cdc(["init", "--config", ws.configPath])
        #expect(again.status == 0, "second init: \(again.stderr)")
        #expect(again.stdout.contains("already initialised"), "stdout: \(again.stdout)")
        #expect(try ws.exportLines() == before, "re-running init adds no events")
        #expect(try ws.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "1")

        // The stream continues where it was: the next change arrives once, nothing is copied again.
        try ws.sql(Fixture.facility("F3"))
        try ws.catchUp()
        let after = try ws.export()
        expectExportInvariants(after)
        #expect(after.count == before.count + 1)
        #expect(after.last?["op"] as? String == "insert")
        #expect(row(after.last)?["facility_id"] as? String == "F3")
    }

    @Test func publishedTableWithoutPrimaryKeyWarnsAndInitSucceeds() throws {
        let ws = try CDCWorkspace("nopk")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE audit_trail (at timestamptz, what text);
            CREATE TABLE full_identity (a int, b text);
            ALTER TABLE full_identity REPLICA IDENTITY FULL;
            INSERT INTO audit_trail VALUES ('2024-01-01 00:00:00+00', 'x');
            """)
        let result = try ws.cdc(["init", "--config", ws.configPath])
        #expect(result.status == 0, "init succeeds: \(result.stderr)")
        let warnings = result.stderr.split(separator: "\n").filter { $0.contains("warning") }
        #expect(warnings.count == 1, "one warning: \(result.stderr)")
        #expect(warnings.first?.contains("public.audit_trail") == true, "the warning names the table: \(result.stderr)")
        #expect(!warnings.contains { $0.contains("full_identity") }, "a table with REPLICA IDENTITY FULL needs no warning")
        #expect(!result.stdout.contains("warning"), "warnings go to stderr")

        // The table was copied, and its inserts stream.
        try ws.sql("INSERT INTO audit_trail VALUES ('2024-01-02 00:00:00+00', 'y')")
        try ws.catchUp()
        let rows = try ws.rowEvents(table: "audit_trail")
        #expect(rows.map { $0["op"] as? String } == ["snapshot", "insert"])
        #expect(rows.map { row($0)?["what"] as? String } == ["x", "y"])
    }

    @Test func tablesListCreatesAPublicationOfOnlyThoseTables() throws {
        let ws = try CDCWorkspace("tables", extraSource: #"tables = ["public.facilities", "public.surgeons"]"#)
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        try ws.sql("INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, facility_id) VALUES ('R1', 'SN1', 'da Vinci Xi', 'F1')")
        try ws.initialize()
        let published = try ws.sql("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = '\(ws.slot)' ORDER BY 1")
        #expect(published.map { $0[0] } == ["public.facilities", "public.surgeons"])
        #expect(try ws.sql("SELECT puballtables FROM pg_publication WHERE pubname = '\(ws.slot)'") == [["f"]])

        try ws.sql(Fixture.facility("F2"))
        try ws.sql("INSERT INTO surgeons VALUES ('S1', 'Dr A', 'Urology', 3, 'Basic')")
        try ws.sql("INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, facility_id) VALUES ('R2', 'SN2', 'Hugo RAS', 'F2')")
        try ws.sql("UPDATE surgical_robots SET status = 'active'")
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        #expect(Set(events.compactMap { $0["table"] as? String }) == ["public.facilities", "public.surgeons"])
        let rows = events.filter { $0["op"] as? String != "relation" }
        #expect(rows.map { "\($0["op"] ?? "?") \(row($0)?["facility_id"] ?? row($0)?["surgeon_id"] ?? "?")" }
                    == ["snapshot F1", "insert F2", "insert S1"])
    }

    // MARK: The snapshot's order

    @Test func theSnapshotCopiesParentsBeforeChildrenWhateverTheirNames() throws {
        // Alphabetical order is the reverse of foreign-key order: a_child -> m_middle -> z_parent, and
        // a_child also references z_parent directly (depth is the longest path, not the shortest).
        let ws = try CDCWorkspace("fkorder", schema: false)
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE z_parent (id int PRIMARY KEY, name text);
            CREATE TABLE m_middle (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES z_parent);
            CREATE TABLE a_child (id int PRIMARY KEY, middle_id int NOT NULL REFERENCES m_middle,
                                  parent_id int REFERENCES z_parent);
            CREATE TABLE b_alone (id int PRIMARY KEY);
            INSERT INTO z_parent SELECT g, 'p' || g FROM generate_series(1, 5) g;
            INSERT INTO m_middle SELECT g, 1 + g % 5 FROM generate_series(1, 8) g;
            INSERT INTO a_child SELECT g, 1 + g % 8, 1 + (g + 2) % 5 FROM generate_series(1, 12) g;
            INSERT INTO b_alone VALUES (1);
            """)
        try ws.initialize()
        let snapshot = try ws.export().filter { $0["op"] as? String == "snapshot" }
        #expect(snapshot.count == 5 + 8 + 12 + 1, "every row copied once")
        // Where each row is in the log, by "table id".
        var position: [String: Int] = [:]
        for event in snapshot {
            let table = (event["table"] as? String ?? "?").replacingOccurrences(of: "public.", with: "")
            position["\(table) \(row(event)?["id"] as? Int ?? -1)"] = event["seq"] as? Int
        }
        // Every row comes after each row it references (the server's own foreign keys say which).
        let references = try ws.sql("""
            SELECT 'm_middle ' || id, 'z_parent ' || parent_id FROM m_middle
            UNION ALL SELECT 'a_child ' || id, 'm_middle ' || middle_id FROM a_child
            UNION ALL SELECT 'a_child ' || id, 'z_parent ' || parent_id FROM a_child
            """)
        #expect(references.count == 8 + 12 + 12)
        for reference in references {
            let child = reference[0]!, parent = reference[1]!
            let c = try #require(position[child], "\(child) is in the snapshot")
            let p = try #require(position[parent], "\(parent) is in the snapshot")
            #expect(p < c, "\(parent) (seq \(p)) must come before \(child) (seq \(c)), which references it")
        }
    }

    // MARK: Checks before anything is created

    /// What a refused `cdc init` must leave behind: no log, no publication, no slot of this database.
    static func expectNothingCreated(_ ws: CDCWorkspace, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(!FileManager.default.fileExists(atPath: ws.logPath + "/data.mdb"), "no log was created", sourceLocation: sourceLocation)
        #expect(try ws.sql("SELECT count(*) FROM pg_publication WHERE pubname = '\(ws.slot)'")[0][0] == "0",
                "no publication was created", sourceLocation: sourceLocation)
        #expect(try ws.slotNames().isEmpty, "no slot was created", sourceLocation: sourceLocation)
    }

    @Test func initRefusesAServerWithoutAFreeReplicationSlotOrWALSender() throws {
        let server = try PostgresServer.start(name: "slots", extraSettings: ["max_replication_slots = 2", "max_wal_senders = 1"])
        defer { server.destroy() }
        let ws = try CDCWorkspace("fullslots", server: server)
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))

        // Both slots taken (by physical slots of other clients).
        try server.execute("SELECT pg_create_physical_replication_slot('standby_a'), pg_create_physical_replication_slot('standby_b')")
        expectOneLineError(try ws.cdc(["init", "--config", ws.configPath]), naming: ["max_replication_slots is 2 with 2 in use"])
        try Self.expectNothingCreated(ws)
        #expect(try server.execute("SELECT count(*) FROM pg_replication_slots")[0][0] == "2")

        // A slot free, but the only WAL sender busy with another replication client.
        try server.execute("SELECT pg_drop_replication_slot('standby_b')")
        var other: PGConnection? = try PGConnection(conninfo: server.conninfo() + " replication=database")
        #expect(try server.execute("SELECT count(*) FROM pg_stat_replication")[0][0] == "1", "the other client holds the WAL sender")
        expectOneLineError(try ws.cdc(["init", "--config", ws.configPath]), naming: ["max_wal_senders is 1 with 1 in use"])
        try Self.expectNothingCreated(ws)

        // Once the sender is free, the same init succeeds: the refusals were about the server's limits.
        #expect(other != nil)
        other = nil  // PQfinish
        try poll(what: "the other client's WAL sender gone") { (try? server.execute("SELECT count(*) FROM pg_stat_replication")[0][0]) == "0" }
        let result = try ws.cdc(["init", "--config", ws.configPath])
        #expect(result.status == 0, "init with a free slot and sender: \(result.stderr)")
        #expect(try ws.slotNames() == [ws.slot])
    }

    @Test func initRefusesAServerWithNoReplicationSlotsOrWALSendersNamingBoth() throws {
        let server = try PostgresServer.start(name: "noslots", extraSettings: ["max_replication_slots = 0", "max_wal_senders = 0"])
        defer { server.destroy() }
        let ws = try CDCWorkspace("noslots", server: server)
        defer { ws.tearDown() }
        #expect(try server.execute("SHOW max_wal_senders") == [["0"]])
        let result = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(result, naming: ["max_replication_slots is 0", "max_wal_senders is 0", "ALTER SYSTEM SET"])
        try Self.expectNothingCreated(ws)
    }

    // MARK: An interrupted init

    @Test func anInitKilledWhileCopyingStartsOverAndCopiesEachRowOnce() throws {
        let ws = try CDCWorkspace("initkill", schema: false)
        defer { ws.tearDown() }
        let rows = 1_000_000
        try createBulkTable(ws)
        try insertBulk(ws, 1, rows, bytes: 100)

        // kill -9 while the COPY runs: the log has grown past the first 16 MiB chunk and the server
        // still shows the COPY in progress.
        let first = try ws.start(["init", "--config", ws.configPath])
        func copying() throws -> Bool {
            try ws.server.execute("""
                SELECT count(*) FROM pg_stat_activity WHERE datname = '\(ws.database)' AND state = 'active' AND query LIKE 'COPY %'
                """)[0][0] == "1"
        }
        try poll(what: "init copying past 16 MiB (running: \(first.isRunning)) \(first.stderr)", timeout: 120) {
            guard first.isRunning else { return true }
            return try ws.dataFileSize > 16 << 20 && copying()
        }
        #expect(first.isRunning, "the copy must be under way when init is killed: \(first.stderr)")
        #expect(try copying(), "the server shows the COPY in progress")
        first.send(SIGKILL)
        #expect(first.wait().status == 128 + SIGKILL, "the kill landed while init ran: \(first.stderr)")
        let leftover = try ws.stats()
        #expect(leftover["state"] as? String == "initializing" && leftover["head"] as? Int == 0,
                "the interrupted log shows nothing: \(leftover)")
        #expect(try ws.slotNames() == [ws.slot], "the interrupted init had created its slot")
        expectOneLineError(try ws.runToCurrentLSN(), naming: ["not initialised"])

        // Run again: it starts over (a new slot, a fresh snapshot), and the log holds each row once.
        let again = try ws.cdc(["init", "--config", ws.configPath])
        #expect(again.status == 0, "init after the interruption: \(again.stderr)")
        #expect(again.stdout.contains("initialised: 1 tables, \(rows) rows copied"), "\(again.stdout)")
        #expect(again.stderr.contains("dropping the slot of an interrupted init"), "\(again.stderr)")
        #expect(try ws.slotNames() == [ws.slot], "one slot")
        let stats = try ws.stats()
        #expect(stats["state"] as? String == "ready")
        #expect(stats["head"] as? Int == rows + 1, "one relation record and each row once: \(stats["head"] ?? "?")")
        #expect(try ws.statsCount("public.bulk", "snapshot") == Int(ws.sql("SELECT count(*) FROM bulk")[0][0] ?? ""),
                "as many snapshot rows as the source table has")
        let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")

        // And the stream continues from the new snapshot: the next row arrives once.
        try insertBulk(ws, rows + 1, rows + 1, bytes: 10)
        try ws.catchUp()
        let tail = try ws.rowEvents(table: "bulk", from: UInt64(rows + 2))
        #expect(tail.map { "\($0["op"] ?? "?") \(row($0)?["id"] ?? "?")" } == ["insert \(rows + 1)"])
    }

    // MARK: One writer

    @Test func initIsRefusedWhileRunHoldsTheLog() throws {
        let ws = try CDCWorkspace("initlock")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        try ws.initialize()
        let run = try ws.startRun()
        #expect(run.waitForLog("streaming"), "\(run.stderr)")
        try ws.sql(Fixture.facility("F2"))
        try poll(what: "cdc run captured F2") { (try? ws.lastVisibleSeq()) == 9 }
        let before = try ws.exportLines()

        let second = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(second, naming: ["another cdc process (pid \(run.pid)) is writing the log at \(ws.logPath)"])
        #expect(try ws.exportLines() == before, "the log is unchanged")
        #expect(try ws.slotNames() == [ws.slot])
        #expect(run.isRunning, "cdc run goes on")
        try ws.sql(Fixture.facility("F3"))
        try poll(what: "cdc run still captures") { (try? ws.lastVisibleSeq()) == 10 }
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr)")
    }

    // MARK: The warehouse inside the source

    /// `existing`: a FOR ALL TABLES publication exists; otherwise init would create one (no `tables`).
    @Test(arguments: [true, false])
    func aWarehouseInTheSourceDatabaseUnderAPublicationOfAllTablesIsRefused(existing: Bool) throws {
        let ws = try WarehouseWorkspace("dwinside")
        defer { ws.tearDown() }
        let source = ws.source
        try ws.sql(Fixture.facility("F1"))
        if existing { try ws.sql("CREATE PUBLICATION \(source.slot) FOR ALL TABLES") }
        // The same database, spelled differently (a URI rather than the source's key=value string).
        let url = "postgresql://postgres@127.0.0.1:\(ws.server.port)/\(source.database)?passfile=\(ws.server.directory)/pgpass"
        try ws.writeConfig(url: url)
        let result = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(result, naming: ["[warehouse] url is the source database", "publishes all its tables"])
        #expect(!FileManager.default.fileExists(atPath: source.logPath + "/data.mdb"), "no log was created")
        #expect(try source.slotNames().isEmpty, "no slot was created")
        #expect(try ws.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'dw'")[0][0] == "0", "no warehouse schema was created")
        let publications = try ws.sql("SELECT count(*) FROM pg_publication WHERE pubname = '\(source.slot)'")[0][0]
        #expect(publications == (existing ? "1" : "0"), "no publication was created")

        // Publishing the source tables by name, the warehouse may live in the source database.
        let tables = try ws.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").compactMap { $0[0] }
        if existing {
            try ws.sql("DROP PUBLICATION \(source.slot); CREATE PUBLICATION \(source.slot) FOR TABLE \(tables.joined(separator: ", "))")
            try ws.writeConfig(url: url)
        } else {
            try ws.writeConfig(url: url, extraSource: "tables = [" + tables.map { "\"public.\($0)\"" }.joined(separator: ", ") + "]")
        }
        let listed = try ws.cdc(["init", "--config", ws.configPath])
        #expect(listed.status == 0, "\(listed.stderr)")
        #expect(try ws.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'dw'")[0][0] == "1")
    }
}
