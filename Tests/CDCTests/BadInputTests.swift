import Foundation
import Testing
import TestSupport

/// Wrong sources, wrong credentials, broken configuration: cdc refuses with one `cdc: error:` line
/// naming the problem, exits non-zero, and writes nothing.
@Suite(.timeLimit(.minutes(15))) struct BadInputTests {
    static func logExists(_ ws: CDCWorkspace) -> Bool {
        FileManager.default.fileExists(atPath: ws.logPath)
    }

    static func slotExists(_ ws: CDCWorkspace, _ slot: String) throws -> Bool {
        try ws.server.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(slot)'")[0][0] != "0"
    }

    static func publicationExists(_ ws: CDCWorkspace, _ name: String) throws -> Bool {
        try ws.sql("SELECT count(*) FROM pg_publication WHERE pubname = '\(name)'")[0][0] != "0"
    }

    // MARK: The source

    @Test func initAgainstAnUnreachableSourceFailsAndWritesNothing() throws {
        let ws = try CDCWorkspace("unreach")
        defer { ws.tearDown() }
        try ws.writeConfigFile(url: "host=127.0.0.1 port=1 dbname=\(ws.database) user=postgres connect_timeout=5")
        let result = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(result, naming: ["cannot connect to the source"])
        #expect(!Self.logExists(ws), "no log directory is created")

        // Once the url is fixed, init works.
        try ws.writeConfig()
        try ws.initialize()
        #expect(try relationRecords(ws.export(), table: "public.facilities").count == 1)
    }

    @Test func runAgainstAnUnreachableSourceFailsAndLeavesTheLogAlone() throws {
        let ws = try CDCWorkspace("unreachrun")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        try ws.initialize()
        try ws.sql(Fixture.facility("F2"))
        let before = try ws.exportLines()
        try ws.writeConfigFile(url: "host=127.0.0.1 port=1 dbname=\(ws.database) user=postgres connect_timeout=5")
        let result = try ws.runToCurrentLSN()
        expectOneLineError(result, naming: ["cannot connect to the source"])
        #expect(try ws.exportLines() == before, "the log is unchanged")
    }

    @Test func wrongPasswordIsRefusedAndNeverShown() throws {
        let ws = try CDCWorkspace("wrongpw", schema: false)
        defer { ws.tearDown() }
        let role = try ws.createRole("pw", "WITH LOGIN REPLICATION PASSWORD 'right-secret'")
        try ws.sql("""
            CREATE TABLE t (id int PRIMARY KEY);
            INSERT INTO t VALUES (1);
            GRANT SELECT ON t TO \(role);
            CREATE PUBLICATION \(ws.slot) FOR ALL TABLES;
            """)
        let base = "host=127.0.0.1 port=\(ws.server.port) dbname=\(ws.database) user=\(role)"

        try ws.writeConfigFile(url: base + " password=wrong-secret-123")
        let initResult = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(initResult, naming: ["password authentication failed", role])
        #expect(!initResult.stderr.contains("wrong-secret-123") && !initResult.stdout.contains("wrong-secret-123"))
        #expect(!Self.logExists(ws), "no log directory is created")
        #expect(try !Self.slotExists(ws, ws.slot))

        // With the right password init works; a wrong one later makes run fail the same way.
        try ws.writeConfigFile(url: base + " password=right-secret")
        try ws.initialize()
        try ws.sql("INSERT INTO t VALUES (2)")
        let before = try ws.exportLines()
        #expect(before.count == 2, "the relation record and the snapshot row")
        try ws.writeConfigFile(url: base + " password=wrong-secret-123")
        let runResult = try ws.runToCurrentLSN()
        expectOneLineError(runResult, naming: ["password authentication failed"])
        #expect(!runResult.stderr.contains("wrong-secret-123") && !runResult.stdout.contains("wrong-secret-123"))
        #expect(try ws.exportLines() == before, "the log is unchanged")
    }

    @Test func roleWithoutReplicationIsRefused() throws {
        let ws = try CDCWorkspace("norepl")
        defer { ws.tearDown() }
        let role = try ws.createRole("norepl", "WITH LOGIN PASSWORD 'norepl-pass'")
        try ws.writeConfigFile(url: "host=127.0.0.1 port=\(ws.server.port) dbname=\(ws.database) user=\(role)")
        let result = try ws.cdc(["init", "--config", ws.configPath], environment: ["PGPASSWORD": "norepl-pass"])
        expectOneLineError(result, naming: ["REPLICATION", role])
        #expect(!Self.logExists(ws), "no log directory is created")
        #expect(try !Self.slotExists(ws, ws.slot), "no slot is created")
        #expect(try !Self.publicationExists(ws, ws.slot), "no publication is created")
    }

    @Test func walLevelReplicaIsRefused() throws {
        let server = try PostgresServer.start(name: "replica", extraSettings: ["wal_level = replica"])
        defer { server.destroy() }
        let ws = try CDCWorkspace("walreplica", server: server)
        defer { ws.tearDown() }
        #expect(try server.execute("SHOW wal_level") == [["replica"]])
        let result = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(result, naming: ["wal_level", "logical"])
        #expect(!Self.logExists(ws), "no log directory is created")
        #expect(try !Self.publicationExists(ws, ws.slot), "no publication is created")
    }

    @Test func slotDroppedAfterInitStopsRunWithARecoveryHint() throws {
        let ws = try CDCWorkspace("slotgone")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        try ws.initialize()
        try ws.sql(Fixture.facility("F2"))
        try ws.catchUp()
        try ws.sql(Fixture.facility("F3"))
        let before = try ws.exportLines()
        try ws.sql("SELECT pg_drop_replication_slot('\(ws.slot)')")

        let run = try ws.runToCurrentLSN()
        expectOneLineError(run, naming: ["slot \"\(ws.slot)\"", "does not exist", "cdc init"])
        #expect(try ws.exportLines() == before, "the log is unchanged")
        #expect(try !Self.slotExists(ws, ws.slot), "the slot is not re-created behind the operator's back")

        let reinit = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(reinit, naming: ["slot \"\(ws.slot)\"", "cdc init"])
        #expect(try ws.exportLines() == before, "the log is unchanged")
        #expect(try !Self.slotExists(ws, ws.slot), "the slot is not re-created behind the operator's back")
    }

    @Test func logOfAnotherSourceIsRefusedByInitAndRun() throws {
        let a = try CDCWorkspace("sourcea")
        defer { a.tearDown() }
        let b = try CDCWorkspace("sourceb")
        defer { b.tearDown() }
        try a.sql(Fixture.facility("FA"))
        try a.initialize()
        try b.sql(Fixture.facility("FB"))
        let before = try a.exportLines()

        // b's database, slot and publication, but a's log.
        try b.writeConfigFile(url: b.server.conninfo(database: b.database), logPath: a.logPath)
        let initResult = try b.cdc(["init", "--config", b.configPath])
        expectOneLineError(initResult, naming: ["another source", "database"])
        let runResult = try b.runToCurrentLSN()
        expectOneLineError(runResult, naming: ["another source", "database"])
        #expect(try a.exportLines() == before, "a's log is unchanged")
        #expect(try !Self.slotExists(b, b.slot), "no slot is created for b")
        #expect(try !Self.publicationExists(b, b.slot), "no publication is created in b")

        // a's own source still works with it.
        try a.sql(Fixture.facility("FA2"))
        try a.catchUp()
        #expect(try a.rowEvents(table: "facilities").compactMap { row($0)?["facility_id"] as? String } == ["FA", "FA2"])
    }

    @Test func exportAndRunBeforeInitAreRefused() throws {
        let ws = try CDCWorkspace("noinit", schema: false)
        defer { ws.tearDown() }
        let export = try ws.cdc(["log", "export", "--log", ws.logPath, "--format", "jsonl"])
        expectOneLineError(export, naming: ["no event log", ws.logPath])
        #expect(export.stdout.isEmpty)
        #expect(!Self.logExists(ws), "export: no log directory is created")

        let run = try ws.runToCurrentLSN()
        expectOneLineError(run, naming: ["no event log", "cdc init"])
        #expect(!Self.logExists(ws), "run: no log directory is created")
        #expect(try !Self.slotExists(ws, ws.slot))
    }

    // MARK: The configuration and the command line

    struct BrokenConfig: Sendable, CustomTestStringConvertible {
        let name: String
        /// What the error must name.
        let words: [String]
        /// The file, given the url, slot and log path.
        let text: @Sendable (String, String, String) -> String
        var testDescription: String { name }
    }

    static let brokenConfigs: [BrokenConfig] = [
        BrokenConfig(name: "invalid TOML", words: ["TOML", "line"]) { url, slot, log in
            "[source\nurl = \"\(url)\"\nslot = \"\(slot)\"\npublication = \"\(slot)\"\n[log]\npath = \"\(log)\"\n"
        },
        BrokenConfig(name: "unknown key", words: ["hots"]) { url, slot, log in
            "[source]\nurl = \"\(url)\"\nhots = \"db.internal\"\nslot = \"\(slot)\"\npublication = \"\(slot)\"\n[log]\npath = \"\(log)\"\n"
        },
        BrokenConfig(name: "missing url", words: ["url"]) { _, slot, log in
            "[source]\nslot = \"\(slot)\"\npublication = \"\(slot)\"\n[log]\npath = \"\(log)\"\n"
        },
        BrokenConfig(name: "slot of the wrong type", words: ["slot"]) { url, slot, log in
            "[source]\nurl = \"\(url)\"\nslot = 5\npublication = \"\(slot)\"\n[log]\npath = \"\(log)\"\n"
        },
        BrokenConfig(name: "tables not an array", words: ["tables"]) { url, slot, log in
            "[source]\nurl = \"\(url)\"\nslot = \"\(slot)\"\npublication = \"\(slot)\"\ntables = \"public.facilities\"\n[log]\npath = \"\(log)\"\n"
        },
        BrokenConfig(name: "missing [log]", words: ["[log]"]) { url, slot, _ in
            "[source]\nurl = \"\(url)\"\nslot = \"\(slot)\"\npublication = \"\(slot)\"\n"
        },
    ]

    @Test(arguments: brokenConfigs)
    func brokenConfigurationIsRefusedNamingTheKey(_ broken: BrokenConfig) throws {
        let ws = try CDCWorkspace("badconf", schema: false)
        defer { ws.tearDown() }
        let url = ws.server.conninfo(database: ws.database)
        try broken.text(url, ws.slot, ws.logPath).write(toFile: ws.configPath, atomically: true, encoding: .utf8)
        for command in [["init", "--config", ws.configPath], ["run", "--config", ws.configPath, "--no-project", "--endpos", "0/1"]] {
            let result = try ws.cdc(command)
            expectOneLineError(result, naming: broken.words)
            #expect(!result.stderr.contains(url), "the url is never printed")
            #expect(!Self.logExists(ws), "\(command[0]): no log directory is created")
        }
        #expect(try !Self.slotExists(ws, ws.slot))
    }

    @Test(arguments: ["garbage", "0/XYZ", "1/2/3", ""])
    func garbageEndposIsRefused(_ endpos: String) throws {
        let ws = try CDCWorkspace("endpos")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        try ws.initialize()
        try ws.sql(Fixture.facility("F2"))
        let before = try ws.exportLines()
        let result = try ws.cdc(["run", "--config", ws.configPath, "--no-project", "--endpos", endpos])
        expectOneLineError(result, naming: ["--endpos"])
        #expect(try ws.exportLines() == before, "the log is unchanged")
    }

    // MARK: Secrets

    @Test(arguments: ["keywords", "uri"])
    func passwordInTheURLNeverAppearsEvenAtTraceLevel(_ form: String) throws {
        let ws = try CDCWorkspace("secret")
        defer { ws.tearDown() }
        let secret = "Trace-Secret-987"
        let role = try ws.createRole("su", "WITH LOGIN REPLICATION SUPERUSER PASSWORD '\(secret)'")
        let url = form == "uri"
            ? "postgresql://\(role):\(secret)@127.0.0.1:\(ws.server.port)/\(ws.database)"
            : "host=127.0.0.1 port=\(ws.server.port) dbname=\(ws.database) user=\(role) password=\(secret)"
        try ws.writeConfigFile(url: url)
        try ws.sql(Fixture.facility("F1"))

        let initResult = try ws.cdc(["init", "--config", ws.configPath, "--log-level", "trace"])
        #expect(initResult.status == 0, "init: \(initResult.stderr)")
        try ws.sql(Fixture.facility("F2"))
        let runResult = try ws.runToCurrentLSN(["--log-level", "trace"])
        #expect(runResult.status == 0, "run: \(runResult.stderr)")
        #expect(try ws.rowEvents(table: "facilities").count == 2, "init and run really used the url")
        #expect(runResult.stderr.split(separator: "\n").count > 1, "trace logging wrote something")

        // A failing run logs and reports errors: no secret there either.
        try ws.sql("SELECT pg_drop_replication_slot('\(ws.slot)')")
        let failing = try ws.runToCurrentLSN(["--log-level", "trace"])
        #expect(failing.status != 0)

        for (name, result) in [("init", initResult), ("run", runResult), ("failing run", failing)] {
            for (stream, text) in [("stdout", result.stdout), ("stderr", result.stderr)] {
                #expect(!text.lowercased().contains(secret.lowercased()), "\(name) \(stream) shows the password")
            }
        }
    }
}
