import EventLog
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What README.md says about `cdc replay` beyond "it equals the live warehouse": the indexes it defers
/// are all built, a schema holding a replay is continued from its checkpoint (not rebuilt), `--swap`
/// while `cdc run` projects hands the live projector the rebuilt schema, and the progress bar is drawn on
/// a terminal only.
@Suite(.timeLimit(.minutes(15))) struct ReplayClaimsTests {
    /// The `checkpoint at record N` and `replayed N log records` of replay's summary line.
    static func summary(_ result: Shell.Result) -> (records: Int, checkpoint: Int)? {
        guard let match = result.stdout.firstMatch(of: #/replayed (\d+) log records .* checkpoint at record (\d+)/#) else { return nil }
        return (Int(match.1)!, Int(match.2)!)
    }

    /// The head of the workspace's log.
    static func head(_ ws: WarehouseWorkspace) throws -> Int {
        Int(try EventLog.openForReading(path: ws.source.logPath).position().head)
    }

    /// 1,000 procedures (ids PROC-<tag>00001...), then `transactions` transactions of 30,000 telemetry
    /// rows each for them (ids from `firstId` + 1): a log of batches a replay folds and commits one by one.
    static func telemetryLoad(_ ws: WarehouseWorkspace, tag: String, firstId: Int, transactions: Int) throws {
        try ws.change("""
            INSERT INTO surgical_procedures (procedure_id, robot_id, surgeon_id, facility_id, procedure_type, procedure_category,
                                             patient_id, patient_age, patient_gender, start_time, duration_minutes, status)
            SELECT 'PROC-\(tag)' || lpad(g::text, 5, '0'), 'ROB-001', 'SRG-0001', 'FAC-001', 'Cholecystectomy', 'General',
                   'PAT-\(tag)' || g, 20 + g % 60, 'F', timestamptz '2026-03-01 08:00:00+00' + g * interval '1 minute', 30, 'scheduled'
            FROM generate_series(1, 1000) g
            """)
        for round in 0..<transactions {
            try ws.change("""
                INSERT INTO procedure_telemetry (telemetry_id, procedure_id, sample_timestamp, arm_position_x, arm_position_y,
                                                 force_feedback, tool_type, tool_active, lighting_level, video_fps)
                SELECT \(firstId) + \(round * 30_000) + g, 'PROC-\(tag)' || lpad((1 + g % 1000)::text, 5, '0'),
                       timestamptz '2026-03-01 08:00:00+00' + g * interval '1 second', g % 1000 / 10.0, g % 777 / 7.0,
                       g % 50 / 3.0, 'grasper', g % 3 = 0, g % 100, 60
                FROM generate_series(1, 30000) g
                """)
        }
    }

    @Test func aReplayBuildsEveryIndexTheMappingsDDLDeclares() throws {
        let ws = try ProjectionOperationsTests.seeded("rc_indexes")
        defer { ws.tearDown() }
        try ws.workload(["--transactions", "200", "--clients", "2"])
        let then = try ws.run()
        try ws.workload(["--transactions", "100", "--clients", "2"])
        try ws.run()
        // The live schema was created by `cdc init` with the mapping's DDL: its indexes are the reference.
        let declared = try ws.dump(schema: "dw").indexes
        let secondary = try ws.dwValue("""
            SELECT count(*) FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE n.nspname = 'dw' AND NOT x.indisunique AND NOT x.indisprimary
            """)
        try #require(Int(secondary ?? "") ?? 0 >= 5, "the DDL declares secondary indexes (those a replay defers): \(declared)")

        try ws.replay(schema: "rebuilt")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")
        try ws.replay(schema: "earlier", ["--until-lsn", then])
        #expect(try ws.dump(schema: "earlier").indexes == declared, "a replay that stops early builds them too")
    }

    /// A replay fills empty tables faster than autovacuum looks at them; without statistics the planner
    /// seq-scans the growing telemetry table for every cascading delete. The replay analyzes the
    /// columns its statements filter on as tables grow (from 50,000 rows written).
    @Test func aReplayGathersPlannerStatisticsForTheTablesItFills() throws {
        let ws = try ProjectionOperationsTests.seeded("rc_stats")
        defer { ws.tearDown() }
        // Four transactions of 30,000 telemetry rows: replay batches of 50,000 records, the first two
        // committed before the third is folded.
        try Self.telemetryLoad(ws, tag: "S", firstId: 20_000_000, transactions: 4)
        try ws.run()
        try ws.replay(schema: "rebuilt")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")
        let analyzed = try ws.dw("SELECT attname FROM pg_stats WHERE schemaname = 'rebuilt' AND tablename = 'fact_procedure_telemetry' ORDER BY 1").map { $0[0] ?? "" }
        #expect(analyzed.contains("procedure_key") && analyzed.contains("telemetry_key"),
                "statistics of the replayed telemetry table's filter columns: \(analyzed)")
    }

    /// A replay defers the primary key of a fact nothing finds rows of by key (telemetry: no fact looks
    /// it up, none is deleted with it) and addresses its rows by grain. Killed midway, it is left
    /// without that key; continued, it updates, deletes and moves rows by grain, adds the key back and
    /// equals the live warehouse, keys and constraints included.
    @Test func aReplayKilledMidwayContinuesByGrainAndEndsWithTheDDLsKeys() throws {
        let ws = try ProjectionOperationsTests.seeded("rc_killed")
        defer { ws.tearDown() }
        try Self.telemetryLoad(ws, tag: "K", firstId: 30_000_000, transactions: 6)
        // After them, so that the continued replay applies them: rows changed, deleted and moved to another grain.
        try ws.change("UPDATE procedure_telemetry SET force_feedback = force_feedback + 1 WHERE telemetry_id > 30000000 AND telemetry_id % 97 = 0")
        try ws.change("DELETE FROM procedure_telemetry WHERE telemetry_id > 30000000 AND telemetry_id % 89 = 0")
        try ws.change("UPDATE procedure_telemetry SET telemetry_id = telemetry_id + 1000000 WHERE telemetry_id > 30000000 AND telemetry_id % 83 = 0")
        try ws.run()
        let head = try Self.head(ws)

        func checkpoint() -> Int { Int((try? ws.checkpoint(schema: "killed").first?["last_seq"]) ?? "") ?? 0 }
        let replay = try ws.source.start(["replay", "--config", ws.configPath, "--schema", "killed"])
        defer { replay.killIfRunning() }
        let deadline = Date().addingTimeInterval(300)
        while checkpoint() == 0, replay.isRunning, Date() < deadline { usleep(10_000) }
        replay.send(SIGKILL)
        try #require(replay.wait().status == 128 + SIGKILL, "the replay was killed, not finished: \(replay.stderr)")
        let stop = checkpoint()
        try #require(stop > 0 && stop < head, "killed midway: checkpoint at record \(stop) of \(head)")
        #expect(try ws.dwValue("SELECT count(*) FROM pg_constraint WHERE conrelid = 'killed.fact_procedure_telemetry'::regclass AND contype = 'p'") == "0",
                "the telemetry fact's primary key is deferred while the replay runs")

        let second = try ws.replayResult(schema: "killed")
        try #require(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("(continued from record \(stop))"), "\(second.stdout)")
        #expect(try ws.dwValue("SELECT to_regclass('killed.cdc_deferred_constraints') IS NULL") == "t", "the record of deferred keys is gone")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "killed")
    }

    /// Deleting a procedure's fact row deletes its telemetry rows; a replay defers that cascade (and
    /// the index on their procedure_key): it lists the deleted procedures' keys and deletes the rows
    /// still pointing at them at its end. Here the source does not cascade, so the warehouse's cascade
    /// is all that removes them, and later changes meet rows whose procedure is gone (updated: the
    /// row comes back as a new one; deleted; moved to another grain): in a batch after the
    /// procedures' delete committed, and in the batch right after it, folded while that one is
    /// written. The replay equals the live warehouse.
    @Test func aReplayOfCascadesTheSourceDidNotMakeEqualsTheLiveWarehouse() throws {
        let ws = try WarehouseWorkspace("rc_cascade")
        defer { ws.tearDown() }
        try ws.loadSeed()
        try ws.sql("ALTER TABLE procedure_telemetry DROP CONSTRAINT procedure_telemetry_procedure_id_fkey")
        try ws.initialize()
        try Self.telemetryLoad(ws, tag: "C", firstId: 40_000_000, transactions: 1)
        // 50,000 telemetry rows of procedures 501-1000: a transaction that ends a replay batch.
        func filler(_ firstId: Int) -> String {
            """
            INSERT INTO procedure_telemetry (telemetry_id, procedure_id, sample_timestamp, arm_position_x, force_feedback, tool_type, tool_active, video_fps)
            SELECT \(firstId) + g, 'PROC-C' || lpad((501 + g % 500)::text, 5, '0'), timestamptz '2026-03-02 08:00:00+00' + g * interval '1 second',
                   g % 1000 / 10.0, g % 50 / 3.0, 'stapler', g % 2 = 0, 30
            FROM generate_series(1, 50000) g
            """
        }
        func procedures(_ first: Int, _ last: Int) -> String {
            "procedure_id BETWEEN 'PROC-C\(String(format: "%05d", first))' AND 'PROC-C\(String(format: "%05d", last))'"
        }
        func changes(_ range: String) throws {
            try ws.change("""
                UPDATE procedure_telemetry SET force_feedback = force_feedback + 1 WHERE \(range) AND telemetry_id % 7 = 0;
                DELETE FROM procedure_telemetry WHERE \(range) AND telemetry_id % 7 = 1;
                UPDATE procedure_telemetry SET telemetry_id = telemetry_id + 5000000 WHERE \(range) AND telemetry_id % 7 = 2
                """)
        }
        // Replay batches (whole transactions, the first ones smaller): ... | delete 51-100 | filler |
        // changes 51-100, delete 1-50 | changes 1-50. The last, a small batch at the log's end, is
        // folded while the one before it is written: its reads show the warehouse before that one.
        try ws.change("DELETE FROM surgical_procedures WHERE \(procedures(51, 100)); \(filler(41_000_000))")
        try ws.change(filler(42_000_000))
        try changes(procedures(51, 100))
        try ws.change("DELETE FROM surgical_procedures WHERE \(procedures(1, 50)); \(filler(43_000_000))")
        try changes(procedures(1, 50))
        try ws.run()
        let gone = procedures(1, 100)
        try #require(try ws.count("fact_procedure_telemetry", where: "\(gone) AND procedure_key <> -1") == 0,
                     "the live warehouse deleted the telemetry of the deleted procedures")
        try #require(try ws.count("fact_procedure_telemetry", where: "\(gone) AND procedure_key = -1") > 400,
                     "rows of theirs updated or moved later came back, pointing at no procedure")
        try #require(Int(try ws.sql("SELECT count(*) FROM procedure_telemetry WHERE \(gone)")[0][0] ?? "") ?? 0 > 2000,
                     "the source kept the telemetry of the deleted procedures")

        let replay = try ws.replayResult(schema: "rebuilt")
        try #require(replay.status == 0, "\(replay.stderr)")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")
        #expect(try ws.dwValue("SELECT to_regclass('rebuilt.cdc_deferred_cascades') IS NULL") == "t", "the list of deferred cascades is gone")
    }

    @Test func aReplayContinuesFromItsCheckpointInsteadOfRebuilding() throws {
        let ws = try ProjectionOperationsTests.seeded("rc_continue")
        defer { ws.tearDown() }
        try ws.workload(["--transactions", "200", "--clients", "2"])
        let then = try ws.run()
        try ProjectionOperationsTests.historyMakingChanges(ws, round: 1)
        try ws.workload(["--transactions", "200", "--clients", "2"])
        try ws.run()
        let head = try Self.head(ws)

        let first = try ws.replayResult(schema: "continued", ["--until-lsn", then])
        try #require(first.status == 0, "\(first.stderr)")
        let stop = try #require(Self.summary(first)?.checkpoint)
        try #require(stop < head && Self.summary(first)?.records == stop, "\(first.stdout)")
        // Each row as written by the first replay, with the transaction that wrote it (xmin).
        func rows() throws -> Set<String> {
            var rows = Set<String>()
            for table in ["dim_date", "dim_facilities", "dim_surgeons", "dim_robots", "fact_procedures", "fact_procedure_telemetry"] {
                for row in try ws.dw("SELECT xmin::text || ' ' || t::text FROM continued.\(table) t") { rows.insert(table + " " + (row[0] ?? "")) }
            }
            return rows
        }
        let written = try rows()

        let second = try ws.replayResult(schema: "continued")
        try #require(second.status == 0, "\(second.stderr)")
        #expect(second.stdout.contains("(continued from record \(stop))"), "\(second.stdout)")
        #expect(Self.summary(second)?.records == head - stop && Self.summary(second)?.checkpoint == head,
                "only the records after the checkpoint are replayed: \(second.stdout)")
        let kept = written.intersection(try rows())
        #expect(kept.filter { $0.hasPrefix("dim_date ") }.count == (try ws.count("dim_date")), "the calendar is the one written before, row for row")
        #expect(kept.filter { $0.hasPrefix("fact_procedure_telemetry ") }.count > 1000,
                "rows no later record changed are the rows the first replay wrote (same xmin): \(kept.count) kept")

        try ws.replay(schema: "single")
        try ProjectionOperationsTests.expectIdentical(ws, "continued", "single")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "continued")
    }

    /// Two swaps while `cdc run` projects: one in the middle of the traffic (the rebuilt warehouse is
    /// about where the live one is), and one of a warehouse replayed only up to an earlier LSN, so that
    /// the live projector must go back to that checkpoint and project the rest again.
    @Test func swapWhileCdcRunProjectsHandsTheLiveProjectorTheRebuiltSchema() throws {
        let ws = try ProjectionOperationsTests.seeded("rc_swaplive")
        defer { ws.tearDown() }
        func checkpoint(_ schema: String) throws -> Int { Int(try ws.checkpoint(schema: schema).first?["last_seq"] ?? "") ?? -1 }
        func oid(_ schema: String) throws -> String? { try ws.dwValue("SELECT oid::text FROM pg_namespace WHERE nspname = '\(schema)'") }
        let live = try ws.startRun()
        defer { if live.isRunning { live.send(SIGKILL); live.wait() } }
        #expect(live.waitForLog("projecting"), "\(live.stderr)")
        /// Changes after a swap, each projected by the live run with its checkpoint at the head: first a
        /// type-1 update alone (it fails on no constraint of the warehouse whatever the projector's
        /// position), then changes of every kind.
        func expectCaughtUp(round: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
            for (years, changes) in [(700 + 2 * round, false), (701 + 2 * round, true)] {
                if changes { try ProjectionOperationsTests.historyMakingChanges(ws, round: round) }
                try ws.change("UPDATE surgeons SET years_experience = \(years) WHERE surgeon_id = 'SRG-0001'")
                try poll(what: "the live projector caught up in the swapped-in schema: \(live.stderr)", timeout: 120,
                         sourceLocation: sourceLocation) {
                    try ws.count("dim_surgeons", where: "surgeon_id = 'SRG-0001' AND is_current AND years_experience = \(years)") == 1
                        && (try checkpoint("dw")) == (try Self.head(ws))
                }
            }
            #expect(live.isRunning, "cdc run went on through the swap: \(live.stderr)", sourceLocation: sourceLocation)
        }

        let load = try ws.startWorkload(["--duration", "10", "--rate", "100", "--clients", "2"])
        let snapshot = try Self.head(ws)
        try poll(what: "the live projector applies the workload: \(live.stderr)", timeout: 60) { try checkpoint("dw") > snapshot }
        let early = try ws.server.currentLSN()
        try poll(what: "the live projector 500 records past the snapshot: \(live.stderr)", timeout: 60) { try checkpoint("dw") > snapshot + 500 }
        let liveOID = try #require(try oid("dw"))
        let swap = try ws.replayResult(schema: "dw_next", ["--swap"])
        try #require(swap.status == 0, "\(swap.stderr)")
        #expect(swap.stdout.contains("swapped: dw is the rebuilt warehouse, dw_next the previous one"), "\(swap.stdout)")
        #expect(try oid("dw_next") == liveOID && (try oid("dw")) != liveOID, "the names were exchanged")
        let previous = try checkpoint("dw_next")
        #expect(Shell.wait(load) == 0, "tools/workload failed: \((try? String(contentsOfFile: ws.directory + "/workload.err", encoding: .utf8)) ?? "")")
        try expectCaughtUp(round: 1)
        #expect(try checkpoint("dw_next") == previous, "the previous warehouse was left alone after the swap")

        let past = try ws.replayResult(schema: "dw_past", ["--until-lsn", early, "--swap"])
        try #require(past.status == 0, "\(past.stderr)")
        let back = try #require(Self.summary(past)?.checkpoint)
        try #require(back < (try checkpoint("dw_past")), "the swapped-in warehouse is behind the live one: \(back)")
        try expectCaughtUp(round: 2)
        live.send(SIGTERM)
        #expect(live.wait().status == 0, "\(live.stderr)")

        try ws.replay(schema: "fresh")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "fresh")
        #expect(try ws.count("fact_procedures") == Int(try ws.sql("SELECT count(*) FROM surgical_procedures")[0][0] ?? ""))
    }

    @Test func theProgressBarIsDrawnOnATerminalOnly() throws {
        let ws = try ProjectionOperationsTests.seeded("rc_progress")
        defer { ws.tearDown() }
        // Two replay batches (a batch is whole transactions, 50,000 records or more): the snapshot and
        // transactions of 10,000 telemetry samples past 50,000 records, then a last one of one record.
        let snapshot = try Self.head(ws)
        let transactions = Int((50_000 - Double(snapshot)) / 10_000 + 1)
        try ws.sql("""
            DO $$ BEGIN FOR i IN 1..\(transactions) LOOP
              INSERT INTO procedure_telemetry (procedure_id, sample_timestamp, system_temperature, video_fps)
              SELECT procedure_id, start_time + g * interval '1 second', 38.5, 60
              FROM (SELECT procedure_id, start_time FROM surgical_procedures ORDER BY procedure_id LIMIT 2000) p, generate_series(1, 5) g;
              COMMIT;
            END LOOP; END $$
            """)
        try ws.sql("UPDATE surgeons SET years_experience = years_experience + 1 WHERE surgeon_id = 'SRG-0001'")
        try ws.source.catchUp()
        let head = try Self.head(ws)
        try #require(head == snapshot + transactions * 10_000 + 1 && head - 1 >= 50_000, "snapshot \(snapshot), head \(head)")

        let terminal = try Terminal.run(CDCWorkspace.executable, ["replay", "--config", ws.configPath, "--schema", "on_tty"])
        #expect(terminal.status == 0, "\(terminal.output)")
        let bars = terminal.output.matches(of: #/\r\[([#.]{30})\] +(\d+)%  (\d+)/(\d+) records  (\d+)/s  ETA (\d+):(\d\d)/#)
        #expect(!bars.isEmpty, "a progress bar (records, records/s, ETA) on the terminal: \(terminal.output.debugDescription)")
        if let last = bars.last {
            #expect(last.1 == String(repeating: "#", count: 30) && last.2 == "100" && Int(last.3) == head && Int(last.4) == head,
                    "the bar ends full, at \(head) of \(head) records: \(String(terminal.output[last.range]).debugDescription)")
        }
        #expect(terminal.output.contains("replayed \(head) log records"), "\(terminal.output.debugDescription)")

        let piped = try ws.replayResult(schema: "off_tty")
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(!piped.stderr.contains("\r") && !piped.stderr.contains("records  ") && !piped.stdout.contains("\r"),
                "no progress bar when stdout and stderr are files: \(piped.stderr.debugDescription)")
        #expect(piped.stdout.hasPrefix("replayed \(head) log records"), "\(piped.stdout)")
        try ProjectionOperationsTests.expectIdentical(ws, "on_tty", "off_tty")
    }
}

/// Runs a program on a pseudo-terminal, as from an interactive shell.
enum Terminal {
    /// Runs `executable` with stdin, stdout and stderr on a new pseudo-terminal (util-linux `script`)
    /// and returns its exit status and everything it wrote there (the terminal turns "\n" into "\r\n").
    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let command = ([executable] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: #"'\''"#) + "'" }.joined(separator: " ")
        let result = try Shell.run("/usr/bin/script", ["--quiet", "--flush", "--return", "--command", command, "/dev/null"])
        return (result.status, result.stdout + result.stderr)
    }
}
