import Foundation
import PGClient
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Hostile input (README "Hostile input"): the source taken away from under a running `cdc run`
/// (REPLICATION revoked, slot dropped, publication dropped), a read-only log directory, and values at
/// the edges of their types checked end to end against PostgreSQL's own text: the source, the log's
/// export, the warehouse, and a replay. Each gets one clear line or exact data; none loses data or crashes.
@Suite(.timeLimit(.minutes(15))) struct HostileInputTests {
    // MARK: Helpers

    /// The facility ids in the log's facility row events, in log order (one per event).
    static func loggedFacilities(_ ws: CDCWorkspace) throws -> [String] {
        try ws.rowEvents(table: "facilities").compactMap { row($0)?["facility_id"] as? String }
    }

    /// `cdc run` (started by the caller) has streamed and logged facility `id`.
    static func waitUntilLogged(_ ws: CDCWorkspace, _ run: RunningCDC, _ id: String) throws {
        try poll(what: "cdc run logs facility \(id): \(run.stderr)") { try loggedFacilities(ws).contains(id) }
    }

    /// Terminates the walsender streaming `ws`'s slot; true if there was one.
    @discardableResult
    static func terminateWalsender(_ ws: CDCWorkspace) throws -> Bool {
        try ws.server.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)' AND active_pid IS NOT NULL").first?.first == "t"
    }

    /// The last `cdc: error:` line of a stderr.
    static func errorLine(_ stderr: String) -> String {
        stderr.split(separator: "\n").last { $0.hasPrefix("cdc: error:") }.map(String.init) ?? ""
    }

    /// The run's stderr, once it has exited: one `cdc: error:` line, the last, naming `words`.
    static func expectStoppedWithOneLine(_ run: RunningCDC, naming words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        let status = run.wait(timeout: 60, sourceLocation: sourceLocation).status
        expectOneLineError(Shell.Result(status: status, stdout: "", stderr: run.stderr), naming: words, sourceLocation: sourceLocation)
        #expect(status == 1, "exit status 1, not a crash: \(status)", sourceLocation: sourceLocation)
    }

    /// `cdc run` streaming a workspace whose log holds facilities F1 (snapshot) and F2 (streamed);
    /// returns the run and the export at that point.
    static func streamingTwoFacilities(_ ws: CDCWorkspace) throws -> (RunningCDC, [String]) {
        try ws.sql(Fixture.facility("F1"))
        try ws.initialize()
        let run = try ws.startRun()
        do {
            #expect(run.waitForLog("streaming"), "\(run.stderr)")
            try ws.sql(Fixture.facility("F2"))
            try waitUntilLogged(ws, run, "F2")
            return (run, try ws.exportLines())
        } catch {
            run.killIfRunning()
            throw error
        }
    }

    // MARK: A config file that is not one

    /// Config paths that are not a readable TOML file: each is refused in one line saying what it is.
    @Test func aConfigPathThatIsNotAReadableTOMLFileIsRefusedSayingWhatItIs() throws {
        let directory = try TemporaryDirectory.make(prefix: "badconfig")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cases: [(String, (String) throws -> Void, [String], Bool)] = [
            ("missing.toml", { _ in }, ["no such file"], false),
            ("a-directory", { try FileManager.default.createDirectory(atPath: $0, withIntermediateDirectories: false) }, ["is a directory"], false),
            ("empty.toml", { try "".write(toFile: $0, atomically: true, encoding: .utf8) }, ["[source]"], false),
            ("zero-byte.toml", { try "[source]\nurl = \"host=x\u{0}y\"\n".write(toFile: $0, atomically: true, encoding: .utf8) }, ["NUL", "line 2"], false),
            ("latin1.toml", { try Data([0x5B, 0x73, 0xE9, 0x5D]).write(to: URL(fileURLWithPath: $0)) }, ["not UTF-8"], false),
            ("secret.toml", { try "[source]\n".write(toFile: $0, atomically: true, encoding: .utf8); chmod($0, 0o600) }, ["permission denied"], true),
        ]
        _ = chmod(directory, 0o755)
        for (name, make, words, asNobody) in cases {
            let path = directory + "/" + name
            try make(path)
            let arguments = ["init", "--config", path]
            let result = asNobody
                ? try Shell.run("/usr/bin/setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", CDCWorkspace.executable] + arguments)
                : try Shell.run(CDCWorkspace.executable, arguments)
            expectOneLineError(result, naming: [path] + words)
            #expect(result.status == 1, "\(name): exit \(result.status)")
        }
        // /dev/null is an empty file, not a permission problem.
        expectOneLineError(try Shell.run(CDCWorkspace.executable, ["init", "--config", "/dev/null"]), naming: ["[source]"])
    }

    // MARK: The source taken away mid-run

    @Test func replicationRevokedMidRunStopsNamingTheRoleAndResumesOnceRestored() throws {
        let ws = try CDCWorkspace("revoke")
        defer { ws.tearDown() }
        let role = try ws.createRole("revoke", "WITH LOGIN REPLICATION PASSWORD 'revoke-pass'")
        try ws.sql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO \(role); CREATE PUBLICATION \(ws.slot) FOR ALL TABLES")
        try ws.writeConfigFile(url: "host=127.0.0.1 port=\(ws.server.port) dbname=\(ws.database) user=\(role) password=revoke-pass")
        let (run, _) = try Self.streamingTwoFacilities(ws)
        defer { run.killIfRunning() }

        // REPLICATION revoked: the running walsender keeps it until it reconnects (as after any network blip).
        try ws.server.execute("ALTER ROLE \(role) NOREPLICATION")
        try ws.sql(Fixture.facility("F3"))
        try poll(what: "the walsender is terminated") { try Self.terminateWalsender(ws) }
        try ws.sql(Fixture.facility("F4"))
        Self.expectStoppedWithOneLine(run, naming: ["replication role", "REPLICATION"])
        let logged = try Self.loggedFacilities(ws)
        #expect(logged.prefix(2) == ["F1", "F2"] && Set(logged).count == logged.count && Set(logged).isSubset(of: ["F1", "F2", "F3"]),
                "what was committed before is logged once, nothing after: \(logged)")

        // As the error says: give the role REPLICATION back, start cdc run again: everything, once.
        try ws.server.execute("ALTER ROLE \(role) REPLICATION")
        try ws.catchUp()
        #expect(try Self.loggedFacilities(ws) == ["F1", "F2", "F3", "F4"])
        #expect(try ws.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "1")
    }

    @Test func slotDroppedMidRunStopsWithTheRecoveryAndInitStartsAFreshLog() throws {
        let ws = try CDCWorkspace("slotmid")
        defer { ws.tearDown() }
        let (run, before) = try Self.streamingTwoFacilities(ws)
        defer { run.killIfRunning() }

        // An active slot cannot be dropped: terminate its walsender and drop it before cdc reconnects.
        try poll(what: "the slot is dropped") {
            try Self.terminateWalsender(ws)
            return (try? ws.sql("SELECT pg_drop_replication_slot('\(ws.slot)')")) != nil
        }
        try ws.sql(Fixture.facility("F3"))
        Self.expectStoppedWithOneLine(run, naming: ["slot \"\(ws.slot)\"", "does not exist", "move the log aside", "cdc init"])
        #expect(try ws.exportLines() == before, "everything committed before is in the log once; nothing is added")
        #expect(try ws.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "0",
                "the slot is not re-created behind the operator's back")

        // The recovery the line gives: the old log aside, `cdc init` starts a new one with every row.
        try FileManager.default.moveItem(atPath: ws.logPath, toPath: ws.logPath + ".old")
        try ws.initialize()
        #expect(try ws.rowEvents(table: "facilities").map { $0["op"] as? String } == ["snapshot", "snapshot", "snapshot"])
        #expect(try Set(Self.loggedFacilities(ws)) == ["F1", "F2", "F3"])
    }

    @Test func publicationDroppedMidRunStopsWithTheRecovery() throws {
        let ws = try CDCWorkspace("pubmid")
        defer { ws.tearDown() }
        let (run, before) = try Self.streamingTwoFacilities(ws)
        defer { run.killIfRunning() }

        try ws.sql("DROP PUBLICATION \(ws.slot)")
        try ws.sql(Fixture.facility("F3"))
        Self.expectStoppedWithOneLine(run, naming: ["publication \"\(ws.slot)\"", "does not exist", "CREATE PUBLICATION", "cdc init"])
        #expect(try ws.exportLines() == before, "everything committed before is in the log once; nothing of the failed transaction")

        // Re-creating it is not enough once changes were committed without it (PostgreSQL decodes them
        // with the catalog of their time): run says the same, and the log still does not move.
        try ws.sql("CREATE PUBLICATION \(ws.slot) FOR ALL TABLES")
        try ws.sql(Fixture.facility("F4"))
        let again = try ws.runToCurrentLSN()
        expectOneLineError(again, naming: ["publication \"\(ws.slot)\"", "pg_drop_replication_slot"])
        #expect(try ws.exportLines() == before)

        // The rest of the recovery the line gives: drop the slot, the old log aside, `cdc init`.
        try ws.sql("SELECT pg_drop_replication_slot('\(ws.slot)')")
        try FileManager.default.moveItem(atPath: ws.logPath, toPath: ws.logPath + ".old")
        try ws.initialize()
        #expect(try Set(Self.loggedFacilities(ws)) == ["F1", "F2", "F3", "F4"])
        try ws.sql(Fixture.facility("F5"))
        try ws.catchUp()
        #expect(try Self.loggedFacilities(ws).last == "F5")
    }

    /// A publication dropped while cdc was not running is refused when `cdc run` starts, before any
    /// change arrives, with the same recovery.
    @Test func aPublicationMissingAtStartIsRefusedBeforeStreaming() throws {
        let ws = try CDCWorkspace("pubstart")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.sql("DROP PUBLICATION \(ws.slot)")
        let result = try ws.runToCurrentLSN()
        expectOneLineError(result, naming: ["publication \"\(ws.slot)\"", "does not exist", "CREATE PUBLICATION"])
        #expect(!result.stderr.contains("streaming"), "refused before streaming:\n\(result.stderr)")
    }

    // MARK: A read-only log directory

    enum ReadOnly: String, CaseIterable, Sendable {
        /// The filesystem is mounted read-only (EROFS): cdc runs in a mount namespace where it is.
        case mount
        /// The directory belongs to another user (EACCES): cdc runs as `nobody`.
        case permissions
    }

    /// `cdc ARGS` with the log directory read-only in the way `how` says.
    static func cdcWithReadOnlyLog(_ ws: CDCWorkspace, _ how: ReadOnly, _ arguments: [String]) throws -> Shell.Result {
        switch how {
        case .mount:
            let quoted = ([CDCWorkspace.executable] + arguments).map { "'" + $0 + "'" }.joined(separator: " ")
            return try Shell.run("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c",
                                                      "mount --bind '\(ws.logPath)' '\(ws.logPath)' && mount -o remount,bind,ro '\(ws.logPath)' && exec \(quoted)"])
        case .permissions:
            return try Shell.run("/usr/bin/setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", CDCWorkspace.executable] + arguments)
        }
    }

    @Test(arguments: ReadOnly.allCases)
    func aReadOnlyLogDirectoryIsRefusedByRunWithOneLineAndNeverCrashesAReader(_ how: ReadOnly) throws {
        let ws = try CDCWorkspace("rolog_\(how.rawValue)")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        try ws.initialize()
        try ws.sql(Fixture.facility("F2"))
        try ws.catchUp()
        try ws.sql(Fixture.facility("F3"))
        let before = try ws.exportLines()
        // Everyone may read the directory and the config (for `nobody`); only root may write.
        _ = try Shell.run("/bin/chmod", ["-R", "go+rX,go-w", ws.directory])

        let run = try Self.cdcWithReadOnlyLog(ws, how, ["run", "--config", ws.configPath, "--no-project", "--endpos", try ws.server.currentLSN()])
        expectOneLineError(run, naming: [ws.logPath, how == .mount ? "read-only file system" : "permission denied", "writable"])
        #expect(run.status == 1, "exit 1, not a crash: \(run.status)")
        #expect(try ws.exportLines() == before, "the log is unchanged")

        // The auditor's commands read a read-only log, or say in one line why they cannot; none crashes.
        for command in [["log", "export", "--log", ws.logPath, "--format", "jsonl"], ["log", "verify", "--log", ws.logPath],
                        ["log", "stats", "--log", ws.logPath], ["status", "--config", ws.configPath]] {
            let result = try Self.cdcWithReadOnlyLog(ws, how, command)
            // (`status` exits 2 when it cannot tell: `nobody` cannot read the sandbox's passfile.)
            #expect((0...(command[0] == "status" ? 2 : 1)).contains(result.status),
                    "\(command.joined(separator: " ")): exit \(result.status), stderr:\n\(result.stderr.prefix(2000))")
            if command[0] == "status" {
                #expect(!result.stdout.contains("not initialised"), "status does not call an unreadable log uninitialised: \(result.stdout)")
                if how == .permissions { #expect(result.stdout.contains("log_unreadable") && result.stdout.contains("Permission denied"), "\(result.stdout)") }
            } else if how == .mount {
                if command[1] == "export" { #expect(result.stdout.split(separator: "\n").map(String.init) == before) }
                if command[1] == "verify" { #expect(result.status == 0, "\(result.stderr)") }
            } else if result.status != 0 {
                expectOneLineError(result, naming: [ws.logPath, "permission denied"])
            }
        }
        // Writable again, the same config goes on where it was.
        try ws.catchUp()
        #expect(try Self.loggedFacilities(ws) == ["F1", "F2", "F3"])
    }

    // MARK: Values at the edges, end to end

    /// Source columns of the edge table and their types (also the warehouse's).
    static let edgeColumns: [(String, String)] = [("n", "numeric"), ("ts", "timestamp"), ("tstz", "timestamptz"), ("d", "date"),
                                                  ("b", "bytea"), ("t", "text")]

    /// Six rows of values at the edges of their types, as SQL expressions per column.
    static let edgeRows: [[String]] = {
        let bytesUp = "decode((SELECT string_agg(lpad(to_hex(g), 2, '0'), '' ORDER BY g) FROM generate_series(0, 255) g), 'hex')"
        let bytesDown = "decode((SELECT string_agg(lpad(to_hex(g), 2, '0'), '' ORDER BY g DESC) FROM generate_series(0, 255) g), 'hex')"
        // Every code point of the Basic Multilingual Plane but NUL and the surrogates (PostgreSQL text
        // cannot hold them), and every 61st of planes 1 to 16, their last ones included.
        let bmp = "(SELECT string_agg(chr(c), '' ORDER BY c) FROM generate_series(1, 65535) c WHERE c NOT BETWEEN 55296 AND 57343)"
        let astral = "(SELECT string_agg(chr(c), '' ORDER BY c) FROM generate_series(65536, 1114111) c WHERE c % 61 = 0 OR c % 65536 IN (0, 65533, 65534, 65535))"
        let marks = #"E'e\u0301 a\u0308\u0323 \u1100\u1161\u11A8 👩\u200D👩\u200D👧 🏳\uFE0F\u200D🌈 \u202Eevil\u202C \uFEFF \u2028 \u0085 \u00A0 Z\u0351\u0358\u0359\u035A\u035B\u035C\u035D\u035E\u035F\u0360\u0361'"#
        let controls = #"E'\x01\x02\t\n\r\x1b\x7f \\ \\N \\t "q" ''s'' \\\\'"#
        return [
            ["'NaN'", "'infinity'", "'-infinity'", "'infinity'", bytesUp, bmp],
            ["repeat('9', 1000)::numeric", "'-infinity'", "'infinity'", "'-infinity'", bytesDown, astral],
            ["('-0.' || repeat('0', 999) || '1')::numeric", "'4713-01-01 00:00:00 BC'", "'294276-12-31 23:59:59.999999+00'", "'4713-01-01 BC'", "'\\x'::bytea", marks],
            ["'Infinity'", "'294276-12-31 23:59:59.999999'", "'4713-01-01 00:00:00+00 BC'", "'5874897-12-31'", "'\\x5c0a0d0900'::bytea", controls],
            ["'-Infinity'", "NULL", "NULL", "NULL", "NULL", "NULL"],
            ["('1' || repeat('0', 999) || '.' || repeat('3', 1000))::numeric", "'2000-01-01 00:00:00'", "'2000-01-01 00:00:00+00'", "'2000-01-01'", bytesUp, "''"],
        ]
    }()

    /// A mapping of one SCD2 dimension per entry (all columns type 2 but `type1`), with its DDL, written
    /// to the workspace's directory; returns the mapping's path.
    struct TestDimension {
        var table: String
        var source: String
        var key: String
        var businessKey: (String, String)
        var type2: [(String, String)]
        var type1: [(String, String)] = []
    }

    static func writeMapping(_ ws: WarehouseWorkspace, name: String, _ dimensions: [TestDimension]) throws -> String {
        func toml(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        func list(_ columns: [(String, String)]) -> String { "[" + columns.map { toml($0.0) }.joined(separator: ", ") + "]" }
        func sql(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        var mapping = "name = \(toml(name))\nschema_version = 1\nddl = [\"\(name).sql\"]\n"
        var ddl = ""
        for d in dimensions {
            mapping += """

                [dimensions.\(toml(d.table))]
                source = \(toml(d.source))
                surrogate_key = \(toml(d.key))
                business_key = [\(toml(d.businessKey.0))]
                type2 = \(list(d.type2))
                type1 = \(list(d.type1))

                """
            let columns = [(d.key, "integer NOT NULL PRIMARY KEY"), d.businessKey] + d.type2 + d.type1
            ddl += "CREATE TABLE IF NOT EXISTS \(sql(d.table)) (\n"
                + columns.map { "    \(sql($0.0)) \($0.1)" }.joined(separator: ",\n") + """
                ,
                    effective_date date NOT NULL, expiration_date date, is_current boolean NOT NULL DEFAULT true,
                    valid_from timestamptz NOT NULL, valid_to timestamptz, change_type text, record_hash text,
                    source_lsn pg_lsn, is_inferred boolean NOT NULL DEFAULT false
                );

                """
        }
        try ddl.write(toFile: ws.directory + "/\(name).sql", atomically: true, encoding: .utf8)
        let path = ws.directory + "/\(name).toml"
        try mapping.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// SQL selecting, per row of `table` ordered by `key`, the key and each column as PostgreSQL's text
    /// (bytea as hex): the independent side of every comparison.
    static func textSelect(_ table: String, key: String, _ columns: [(String, String)], where condition: String = "true") -> String {
        let quote = { (s: String) in "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }
        let texts = columns.map { $0.1 == "bytea" ? "encode(\(quote($0.0)), 'hex')" : "\(quote($0.0))::text" }
        // Aliased: ORDER BY then means the table's key, not its text.
        let outputs = ([quote(key) + "::text"] + texts).enumerated().map { "\($0.element) AS cdc_text_\($0.offset)" }
        return "SELECT \(outputs.joined(separator: ", ")) FROM \(table) WHERE \(condition) ORDER BY \(quote(key))"
    }

    /// The log's current image of every row of `table` (folded from the export: later events override,
    /// an unchanged TOASTed value keeps the earlier one, a delete removes the row), as the same texts.
    static func loggedRows(_ events: [Event], table: String, key: String, _ columns: [(String, String)]) -> [[String?]] {
        var current: [String: [String: Any]] = [:]
        for event in events where event["table"] as? String == table {
            let op = event["op"] as? String
            if op == "delete", let id = row(event, "before")?[key] { current["\(id)"] = nil; continue }
            guard let after = row(event), let id = after[key] else { continue }
            var merged = current["\(id)"] ?? [:]
            for (name, value) in after where (value as? [String: Any])?["unchanged_toast"] == nil { merged[name] = value }
            current["\(id)"] = merged
        }
        return current.keys.sorted { Int($0) ?? 0 < Int($1) ?? 0 }.map { id in
            [id] + columns.map { name, type in
                guard let value = current[id]?[name], !(value is NSNull) else { return nil }
                let text = value as? String ?? "\(value)"
                return type == "bytea" ? String(text.dropFirst(2)) : text  // "\x..." → hex
            }
        }
    }

    static func expectSameRows(_ a: [[String?]], _ b: [[String?]], _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.count == b.count, "\(what): \(a.count) rows vs \(b.count)", sourceLocation: sourceLocation)
        for (x, y) in zip(a, b) {
            for (i, (u, v)) in zip(x, y).enumerated() where !sameBytes(u, v) {
                Issue.record("\(what): row \(x.first.flatMap { $0 } ?? "?") column \(i): \(u.map { String($0.prefix(120)) } ?? "NULL") (\(u?.utf8.count ?? 0) bytes) vs \(v.map { String($0.prefix(120)) } ?? "NULL") (\(v?.utf8.count ?? 0) bytes)",
                             sourceLocation: sourceLocation)
            }
        }
    }

    @Test func edgeValuesReachTheLogTheWarehouseAndAReplayExactly() throws {
        let ws = try WarehouseWorkspace("edges", sourceSchema: false)
        defer { ws.tearDown() }
        let columns = Self.edgeColumns
        let mapping = try Self.writeMapping(ws, name: "edges", [
            TestDimension(table: "dim_edge", source: "public.edge", key: "edge_key", businessKey: ("id", "integer"),
                          type2: Array(columns.dropLast()), type1: [columns.last!]),
        ])
        try ws.writeConfig(mapping: mapping)
        try ws.sql("CREATE TABLE edge (id int PRIMARY KEY, " + columns.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")")
        try ws.sql("CREATE TABLE edge_values (k int PRIMARY KEY, " + columns.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")")
        for (k, values) in Self.edgeRows.enumerated() {
            try ws.sql("INSERT INTO edge_values VALUES (\(k + 1), \(values.joined(separator: ", ")))")
        }
        let names = columns.map(\.0).joined(separator: ", ")
        // Snapshot (COPY) rows 1-6, streamed (pgoutput) rows 11-16, updates in place, a TOASTed value
        // left unchanged by an update, a delete.
        try ws.sql("INSERT INTO edge SELECT k, \(names) FROM edge_values")
        try ws.initialize()
        try ws.change("INSERT INTO edge SELECT k + 10, \(names) FROM edge_values")
        try ws.change("UPDATE edge e SET (\(names)) = (SELECT \(names) FROM edge_values v WHERE v.k = e.id % 6 + 1) WHERE e.id <= 6")
        try ws.change("UPDATE edge SET n = n WHERE id = 11; UPDATE edge SET d = 'epoch' WHERE id = 12")
        try ws.change("DELETE FROM edge WHERE id = 15")
        try ws.run()

        let source = try ws.sql(Self.textSelect("edge", key: "id", columns))
        #expect(source.count == 11)
        #expect(source.first { $0[0] == "12" }?[1] == String(repeating: "9", count: 1000), "the 1,000-digit numeric as PostgreSQL prints it")
        #expect(source.first { $0[0] == "11" }?[5]?.count == 512, "256 bytes as hex")
        let events = try ws.source.export()
        expectExportInvariants(events)
        Self.expectSameRows(Self.loggedRows(events, table: "public.edge", key: "id", columns), source, "log export vs source")
        // The snapshot's images (COPY), which later updates overwrite in `edge`: edge_values is never updated.
        Self.expectSameRows(Self.loggedRows(events, table: "public.edge_values", key: "k", columns),
                            try ws.sql(Self.textSelect("edge_values", key: "k", columns)), "snapshot in the log vs source")
        let warehouse = try ws.dw(Self.textSelect("dw.dim_edge", key: "id", columns, where: "is_current"))
        Self.expectSameRows(warehouse, source, "warehouse vs source")
        // The deleted row's last version, and the version before each update, keep their values too.
        #expect(try ws.dwValue("SELECT count(*) FROM dw.dim_edge WHERE id = 15 AND change_type = 'DELETE'") == "1")
        let history = try ws.dw(Self.textSelect("dw.dim_edge", key: "id", columns, where: "id <= 6 AND change_type = 'INSERT'"))
        Self.expectSameRows(history, try ws.sql(Self.textSelect("edge_values", key: "k", columns)), "first versions vs the values")

        try ws.replay(schema: "rebuilt")
        let differences = WarehouseWorkspace.differences(try ws.dump(schema: "dw"), try ws.dump(schema: "rebuilt"), names: ("dw", "rebuilt"))
        #expect(differences.isEmpty, "replay differs:\n\(differences.prefix(20).joined(separator: "\n"))")
    }

    /// A timestamp the date and time keys cannot hold (±infinity, a year past 9999, BC) in a column the
    /// surgical mapping turns into `start_date_key` (NOT NULL) and `end_date_key`.
    @Test(arguments: ["infinity", "-infinity", "294276-12-31 23:59:59+00", "0044-03-15 12:00:00+00 BC"])
    func aTimestampWithoutADateKeyIsProjectedWithoutStoppingTheWarehouse(_ start: String) throws {
        let ws = try WarehouseWorkspace("edgekeys")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy") + ";" + Fixture.surgeon("S1", "Dr One") + ";" + Fixture.robot("R1", facility: "F1"))
        try ws.initialize()
        try ws.change(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1", start: start, end: start, status: "completed"))
        try ws.change(Fixture.procedure("P2", robot: "R1", surgeon: "S1", facility: "F1"))
        let result = try ws.runResult()
        #expect(result.status == 0, "\(result.stderr.suffix(2000))")
        let p1 = try #require(try ws.fact("P1"), "the fact row is written")
        let p2 = try #require(try ws.fact("P2"), "and the next transaction's too")
        #expect(p1["start_date_key"] == "-1" && p1["start_time_key"] == "-1" && p1["end_date_key"] == "-1",
                "a timestamp with no calendar key points at the unknown key -1: \(p1)")
        #expect(p2["start_date_key"] == "20260314")
        try ws.replay(schema: "rebuilt")
        let differences = WarehouseWorkspace.differences(try ws.dump(schema: "dw"), try ws.dump(schema: "rebuilt"), names: ("dw", "rebuilt"))
        #expect(differences.isEmpty, "replay differs:\n\(differences.prefix(20).joined(separator: "\n"))")
    }

    @Test func identifiersThatNeedQuotingReachTheLogAndTheWarehouse() throws {
        let ws = try WarehouseWorkspace("idents", sourceSchema: false)
        defer { ws.tearDown() }
        // Spaces, quotes, upper case, unicode, reserved words: in the schema, table and column names.
        let key = ("Item ID", "integer")
        let columns: [(String, String)] = [("select", "text"), ("Ünïcode 名前", "text"), ("MixedCase", "integer"), ("qty \"x\"", "numeric"),
                                           ("from", "timestamptz")]
        let mapping = try Self.writeMapping(ws, name: "idents", [
            TestDimension(table: "Dim \"Order\" Items", source: "Sales Dept.Order \"Items\"", key: "Item Key", businessKey: key,
                          type2: Array(columns.prefix(3)), type1: Array(columns.dropFirst(3))),
        ])
        try ws.writeConfig(mapping: mapping)
        let table = #""Sales Dept"."Order ""Items""""#
        try ws.sql(#"CREATE SCHEMA "Sales Dept"; CREATE TABLE "# + table + #" ("Item ID" int PRIMARY KEY, "select" text, "Ünïcode 名前" text, "MixedCase" int, "qty ""x""" numeric, "from" timestamptz)"#)
        try ws.sql("INSERT INTO \(table) VALUES (1, 'one', 'ä', 1, 1.5, '2026-01-01 00:00:00+00')")
        try ws.initialize()
        try ws.change("INSERT INTO \(table) VALUES (2, 'two', 'ß', 2, 2.5, '2026-01-02 00:00:00+00')")
        try ws.change(#"UPDATE "# + table + #" SET "select" = 'uno', "qty ""x""" = 9 WHERE "Item ID" = 1"#)
        try ws.run()

        let all = [key] + columns
        let source = try ws.sql(Self.textSelect(table, key: key.0, columns))
        let events = try ws.source.export()
        #expect(relationRecords(events, table: "Sales Dept.Order \"Items\"").map(columnNames).last == all.map(\.0))
        Self.expectSameRows(Self.loggedRows(events, table: "Sales Dept.Order \"Items\"", key: key.0, columns), source, "log export vs source")
        let warehouse = try ws.dw(Self.textSelect(#"dw."Dim ""Order"" Items""#, key: key.0, columns, where: "is_current"))
        Self.expectSameRows(warehouse, source, "warehouse vs source")
        #expect(try ws.dwValue(#"SELECT count(*) FROM dw."Dim ""Order"" Items" WHERE "Item ID" = 1"#) == "2", "the type-2 change opened a version")
        try ws.replay(schema: "rebuilt")
        let differences = WarehouseWorkspace.differences(try ws.dump(schema: "dw"), try ws.dump(schema: "rebuilt"), names: ("dw", "rebuilt"))
        #expect(differences.isEmpty, "replay differs:\n\(differences.prefix(20).joined(separator: "\n"))")
    }

    /// 100 MiB of text in one value, through the snapshot and the stream, into the warehouse and a
    /// replay; `cdc run`'s peak memory is printed (README "Hostile input").
    @Test func aHundredMegabyteTextValueIsCapturedAndProjectedWhole() throws {
        let ws = try WarehouseWorkspace("bigvalue", sourceSchema: false)
        defer { ws.tearDown() }
        let mapping = try Self.writeMapping(ws, name: "bigvalue", [
            TestDimension(table: "dim_big", source: "public.big", key: "big_key", businessKey: ("id", "integer"), type2: [("t", "text")]),
        ])
        try ws.writeConfig(mapping: mapping)
        // 3,276,800 md5 hex digests: 104,857,600 bytes that TOAST compresses little.
        let value = "(SELECT string_agg(md5(g::text), '' ORDER BY g) FROM generate_series(1, 3276800) g)"
        try ws.sql("CREATE TABLE big (id int PRIMARY KEY, t text); INSERT INTO big VALUES (1, \(value))")
        try ws.initialize()
        try ws.sql("INSERT INTO big VALUES (2, \(value) || 'é')")
        let endpos = try ws.server.currentLSN()
        let started = Date()
        let run = try ws.startRun(["--endpos", endpos])
        let (status, peak) = run.wait(timeout: 600)
        let seconds = Date().timeIntervalSince(started)
        try #require(status == 0, "\(run.stderr.suffix(3000))")
        print("100 MiB value: cdc run (capture + projection) took \(String(format: "%.1f", seconds)) s, peak RSS \(peak / 1024) MiB")
        #expect(peak < 1_536 * 1024, "peak RSS \(peak / 1024) MiB for two 100 MiB values")

        let source = try ws.sql("SELECT id, length(t), md5(t) FROM big ORDER BY id")
        #expect(source.map { $0[1] } == ["104857600", "104857601"])
        // The export, byte for byte against the value PostgreSQL returns.
        let export = try ws.cdc(["log", "export", "--log", ws.source.logPath, "--format", "jsonl"])
        try #require(export.status == 0, "\(export.stderr)")
        let rows = try export.stdout.split(separator: "\n").map { try parseEvent(String($0)) }.filter { $0["table"] as? String == "public.big" && $0["op"] as? String != "relation" }
        #expect(rows.map { $0["op"] as? String } == ["snapshot", "insert"])
        let connection = try ws.server.connect(database: ws.source.database)
        for (index, event) in rows.enumerated() {
            let expected = try connection.execute("SELECT t FROM big WHERE id = \(index + 1)").value(0, 0)
            #expect(sameBytes(row(event)?["t"] as? String, expected), "row \(index + 1) in the export is the source's value")
        }
        for schema in ["dw", "rebuilt"] {
            if schema == "rebuilt" { try ws.replay(schema: "rebuilt") }
            let warehouse = try ws.dw("SELECT id, length(t), md5(t) FROM \(schema).dim_big WHERE is_current ORDER BY id")
            #expect(warehouse == source, "\(schema): \(warehouse) vs source \(source)")
        }
    }
}
