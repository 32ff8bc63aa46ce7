import EventLog
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Running the projector: replay gives the live warehouse back row for row and key for key (also as it
/// was at an LSN or a time), --swap, kill -9 under load, the views against the source, and bad input
/// refused with one line before anything is written.
@Suite(.timeLimit(.minutes(15))) struct ProjectionOperationsTests {
    /// A seeded source (tools/seed.sql) captured by `cdc init`, with a warehouse.
    static func seeded(_ name: String, mapping: String = WarehouseWorkspace.surgicalMapping,
                       warehouse: WarehouseWorkspace.WarehouseCreator? = nil) throws -> WarehouseWorkspace {
        let ws = try WarehouseWorkspace(name, mapping: mapping, warehouse: warehouse)
        do {
            try ws.loadSeed()
            try ws.initialize()
        } catch {
            ws.tearDown()
            throw error
        }
        return ws
    }

    /// Changes the workload makes only rarely, made sure: robots move and get upgrades, facilities are
    /// renamed, surgeons certified, procedures deleted (with their telemetry and outcomes).
    static func historyMakingChanges(_ ws: WarehouseWorkspace, round: Int) throws {
        try ws.change("UPDATE surgical_robots SET facility_id = CASE facility_id WHEN 'FAC-001' THEN 'FAC-002' ELSE 'FAC-001' END WHERE robot_id IN ('ROB-00\(round)', 'ROB-01\(round)')")
        try ws.change("UPDATE surgical_robots SET software_version = software_version || '.\(round)' WHERE robot_id = 'ROB-02\(round)'")
        try ws.change("UPDATE facilities SET facility_name = facility_name || ' (\(round))' WHERE facility_id IN ('FAC-00\(round + 2)', 'FAC-001')")
        try ws.change("UPDATE surgeons SET certification_level = 'Master' WHERE surgeon_id = 'SRG-00\(round)\(round)'")
        try ws.change("UPDATE surgeons SET years_experience = years_experience + 1 WHERE surgeon_id LIKE 'SRG-00\(round)%'")
        try ws.change("DELETE FROM surgical_procedures WHERE procedure_id IN (SELECT procedure_id FROM surgical_procedures ORDER BY md5(procedure_id || '\(round)') LIMIT 4)")
    }

    static func expectIdentical(_ ws: WarehouseWorkspace, _ a: String, _ b: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let differences = WarehouseWorkspace.differences(try ws.dump(schema: a), try ws.dump(schema: b), names: (a, b))
        #expect(differences.isEmpty, "\(a) and \(b) differ:\n\(differences.joined(separator: "\n"))", sourceLocation: sourceLocation)
    }

    // MARK: Replay

    @Test func replayBuildsTheWarehouseThatRunBuiltRowForRowAndKeyForKey() throws {
        let ws = try Self.seeded("po_replay")
        defer { ws.tearDown() }
        // Live: projected continuously by a background `cdc run` while the traffic runs, then caught up.
        let live = try ws.startRun()
        #expect(live.waitForLog("streaming"), "\(live.stderr)")
        try ws.workload(["--transactions", "400", "--clients", "2"])
        try Self.historyMakingChanges(ws, round: 1)
        try ws.workload(["--transactions", "200", "--clients", "2"])
        live.send(SIGTERM)
        #expect(live.wait().status == 0, "\(live.stderr)")
        try Self.historyMakingChanges(ws, round: 2)
        try ws.run()

        let replay = try ws.replayResult(schema: "rebuilt")
        try #require(replay.status == 0, "\(replay.stderr)")
        #expect(!replay.stderr.contains("\r"), "no progress bar when stderr is not a terminal")
        try Self.expectIdentical(ws, "dw", "rebuilt")
        // Not trivially equal: history and facts are there.
        #expect(try ws.count("fact_procedures") > 2000)
        #expect(try ws.count("dim_robots", where: "NOT is_current") > 0)
        #expect(try ws.count("dim_facilities", where: "change_type = 'UPDATE'") > 0)
        #expect(try ws.count("fact_procedures") == Int(try ws.sql("SELECT count(*) FROM surgical_procedures")[0][0] ?? ""))
    }

    /// Surrogate keys follow the log, not the projector's restarts: a restarted projector does not
    /// give a new row the key of the newest row, deleted before the restart (a key the table no
    /// longer holds). Every `ws.run()` is a projector started again.
    @Test func aRestartedProjectorAssignsTheKeysAReplayAssigns() throws {
        let ws = try Self.seeded("po_keys")
        defer { ws.tearDown() }
        try ws.run()
        // As a schema of an older cdc has it: the projector adds the column.
        try ws.dw("ALTER TABLE dw.cdc_checkpoint DROP COLUMN next_keys")
        try ws.change(Fixture.procedure("P-NEWEST", robot: "ROB-001", surgeon: "SRG-0001", facility: "FAC-001", start: "2026-03-20 08:00:00+00"))
        try ws.run()
        let newest = try #require(try ws.fact("P-NEWEST")?["procedure_key"] ?? nil)
        try #require(try ws.dwValue("SELECT max(procedure_key)::text FROM dw.fact_procedures") == newest, "the newest procedure has the highest key")
        try ws.change("DELETE FROM surgical_procedures WHERE procedure_id = 'P-NEWEST'")
        try ws.run()
        #expect(try ws.dwValue("SELECT (next_keys ->> 'fact_procedures')::text FROM dw.cdc_checkpoint") == String(Int(newest)! + 1),
                "the next key is stored with the checkpoint")
        try ws.change(Fixture.procedure("P-NEXT", robot: "ROB-001", surgeon: "SRG-0001", facility: "FAC-001", start: "2026-03-21 08:00:00+00"))
        try ws.run()
        let next = try #require(try ws.fact("P-NEXT")?["procedure_key"] ?? nil)
        #expect(Int(next) == Int(newest)! + 1, "the next procedure's key follows the deleted one's: \(next) after \(newest)")
        try ws.replay(schema: "rebuilt")
        try Self.expectIdentical(ws, "dw", "rebuilt")
    }

    @Test func replayUntilAnLSNOrATimeIsTheWarehouseAsItWasThen() throws {
        let ws = try Self.seeded("po_until")
        defer { ws.tearDown() }
        try ws.workload(["--transactions", "300", "--clients", "2"])
        try Self.historyMakingChanges(ws, round: 1)
        let lsn = try ws.run()          // every transaction so far commits at or before `lsn`; none after yet
        let then = try ws.dump(schema: "dw")
        // A time after the last commit so far and before the next one (whole seconds, as an operator types it).
        let time = try #require(try ws.sql("SELECT to_char((date_trunc('second', clock_timestamp()) + interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")[0][0])
        try poll(what: "the server's clock passes \(time)", timeout: 10) { try ws.sql("SELECT clock_timestamp() > '\(time)'::timestamptz")[0][0] == "t" }

        try ws.workload(["--transactions", "300", "--clients", "2"])
        try Self.historyMakingChanges(ws, round: 2)
        try ws.run()
        let later = try ws.dump(schema: "dw")
        #expect(later["fact_procedures"] != then["fact_procedures"], "the warehouse moved on after \(lsn)")

        try ws.replay(schema: "at_lsn", ["--until-lsn", lsn])
        let atLSN = WarehouseWorkspace.differences(then, try ws.dump(schema: "at_lsn"), names: ("live at \(lsn)", "replay --until-lsn"))
        #expect(atLSN.isEmpty, "\(atLSN.joined(separator: "\n"))")
        try ws.replay(schema: "at_time", ["--until-time", time])
        let atTime = WarehouseWorkspace.differences(then, try ws.dump(schema: "at_time"), names: ("live at \(time)", "replay --until-time"))
        #expect(atTime.isEmpty, "\(atTime.joined(separator: "\n"))")
        // A schema that holds a replayed warehouse continues from its checkpoint.
        try ws.replay(schema: "at_lsn")
        try Self.expectIdentical(ws, "dw", "at_lsn")
    }

    @Test func swapMakesTheRebuiltSchemaTheLiveOne() throws {
        let ws = try WarehouseWorkspace("po_swap")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change("\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: "F1"))")
        try ws.change(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1"))
        try ws.change("UPDATE surgical_robots SET software_version = '5.0.1' WHERE robot_id = 'R1'")
        try ws.run()
        func oid(_ schema: String) throws -> String? { try ws.dwValue("SELECT oid::text FROM pg_namespace WHERE nspname = '\(schema)'") }
        let liveOID = try #require(try oid("dw"))
        let before = try ws.dump(schema: "dw")

        try ws.replay(schema: "dw_next", ["--swap"])
        let newLiveOID = try #require(try oid("dw"))
        #expect(try oid("dw_next") == liveOID, "the previous live warehouse is now named dw_next")
        #expect(newLiveOID != liveOID, "dw is the rebuilt schema")
        let swapped = WarehouseWorkspace.differences(before, try ws.dump(schema: "dw"), names: ("replaced", "rebuilt"))
        #expect(swapped.isEmpty, "the rebuilt warehouse equals the one it replaced:\n\(swapped.joined(separator: "\n"))")
        #expect(try ws.count("fact_procedures") == 1 && (try ws.count("dim_robots", where: "robot_id = 'R1'")) == 2, "the live name answers queries")

        // `cdc run` goes on projecting into the live name, i.e. into the rebuilt schema.
        try ws.change(Fixture.procedure("P2", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-03-15 10:00:00+00"))
        try ws.run()
        #expect(try ws.fact("P2") != nil)
        #expect(try ws.dwValue("SELECT count(*) FROM dw_next.fact_procedures WHERE procedure_id = 'P2'") == "0", "the old schema is left alone")
        #expect(try oid("dw") == newLiveOID)
    }

    // MARK: Crashes

    @Test func sigkillDuringProjectionUnderLoadEndsWithTheWarehouseOfAnUninterruptedRun() throws {
        let ws = try Self.seeded("po_kill")
        defer { ws.tearDown() }
        // The load lasts longer than the six rounds, so that every kill lands under it.
        let load = try ws.startWorkload(["--duration", "30", "--rate", "120", "--clients", "2"])
        func applied() throws -> Int { Int(try ws.checkpoint().first?["last_seq"] ?? "0") ?? 0 }
        func logged() throws -> Int { Int(try EventLog.openForReading(path: ws.source.logPath).position().head) }
        // Even rounds kill at a random moment soon after projection starts (the first one in the middle of
        // the seed's snapshot batch); odd rounds once a batch has committed, a random moment later. Each
        // kill lands with work in flight: the run is frozen (SIGSTOP) and killed only if the log then holds
        // records the projector has not applied, else it goes on (SIGCONT) and is looked at again.
        var seqs = [try applied()]
        for round in 0..<6 {
            let run = try ws.startRun()
            defer { run.killIfRunning() }
            #expect(run.waitForLog("projecting"), "cdc run did not start projecting: \(run.stderr)")
            if round % 2 == 1 {
                // Something to project, then wait for a batch to commit.
                try ws.change("UPDATE surgeons SET years_experience = years_experience + 1 WHERE surgeon_id = 'SRG-0001'")
                try poll(what: "round \(round): a batch is projected past \(seqs.last!): \(run.stderr)") { try applied() != seqs.last! || !run.isRunning }
                usleep(UInt32.random(in: 0...400_000))
            } else {
                usleep(UInt32.random(in: 100_000...1_200_000))
            }
            try poll(what: "round \(round): a moment when the log holds records the projector has not applied (the load still running: \(Shell.isRunning(load)))") {
                run.send(SIGSTOP)
                if try logged() > applied() || !run.isRunning { return true }
                run.send(SIGCONT)
                return false
            }
            run.send(SIGKILL)
            #expect(run.wait().status == 128 + SIGKILL, "\(run.stderr)")
            seqs.append(try applied())
            let head = try logged()
            #expect(head > seqs.last!, "round \(round): killed with records to project: log head \(head), checkpoint \(seqs.last!)")
            #expect(Shell.isRunning(load), "round \(round): killed under load (tools/workload still running)")
        }
        #expect(Shell.wait(load) == 0, "tools/workload failed: \((try? String(contentsOfFile: ws.directory + "/workload.err", encoding: .utf8)) ?? "")")
        #expect(zip(seqs, seqs.dropFirst()).enumerated().filter { $0.offset % 2 == 1 }.allSatisfy { $0.element.1 > $0.element.0 },
                "projection made progress in every run that was given the time: checkpoints \(seqs)")
        try Self.historyMakingChanges(ws, round: 3)
        try ws.run()

        try ws.replay(schema: "uninterrupted")
        try Self.expectIdentical(ws, "dw", "uninterrupted")
        // And it is the source's state: one fact per procedure and telemetry row, one current version per row.
        for (fact, table) in [("fact_procedures", "surgical_procedures"), ("fact_procedure_telemetry", "procedure_telemetry")] {
            #expect(try ws.count(fact) == Int(try ws.sql("SELECT count(*) FROM \(table)")[0][0] ?? ""), "\(fact) vs \(table)")
        }
        for (dimension, table) in [("dim_facilities", "facilities"), ("dim_surgeons", "surgeons"), ("dim_robots", "surgical_robots")] {
            #expect(try ws.count(dimension, where: "is_current AND \(WarehouseWorkspace.businessKeys[dimension]!) IS NOT NULL") == Int(try ws.sql("SELECT count(*) FROM \(table)")[0][0] ?? ""),
                    "\(dimension) current versions vs \(table)")
        }
    }

    @Test func captureGoesOnWhileTheWarehouseIsAwayAndProjectionCatchesUp() throws {
        let ws = try WarehouseWorkspace("po_away")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("projecting"), "\(run.stderr)")
        try poll(what: "a first batch is projected: \(run.stderr)") { try ws.checkpoint().first?["last_seq"] ?? "0" != "0" }
        try #require(try ws.count("dim_facilities", where: "facility_id = 'F1'") == 1, "the snapshot is projected")

        // The warehouse goes away: no new connections, the projector's connection terminated.
        try ws.server.execute("ALTER DATABASE \(ws.warehouseDatabase) ALLOW_CONNECTIONS false")
        try ws.server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(ws.warehouseDatabase)'")
        try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        try poll(what: "the update is captured while the warehouse is away (capture does not wait for it): \(run.stderr)") {
            try ws.source.rowEvents(table: "facilities").contains { $0["op"] as? String == "update" }
        }
        #expect(run.waitForLog("projection failed; retrying", timeout: 30), "the projector says it retries: \(run.stderr)")
        #expect(run.isRunning, "cdc run survives a warehouse outage: \(run.stderr)")

        // It comes back: projection catches up by itself.
        try ws.server.execute("ALTER DATABASE \(ws.warehouseDatabase) ALLOW_CONNECTIONS true")
        try poll(what: "projection catches up once the warehouse is back: \(run.stderr)", timeout: 60) {
            try ws.count("dim_facilities", where: "facility_id = 'F1'") >= 2
        }
        #expect(try ws.current("dim_facilities", "F1")?["facility_name"] == "Mercy General", "\(run.stderr)")
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr)")
        try ws.replay(schema: "replayed")
        try Self.expectIdentical(ws, "dw", "replayed")
    }

    // MARK: The views

    @Test func theViewsAnswerWhatTheSourceTablesAnswer() throws {
        let ws = try Self.seeded("po_views")
        defer { ws.tearDown() }
        try ws.workload(["--transactions", "400", "--clients", "2"])
        try Self.historyMakingChanges(ws, round: 1)
        try ws.workload(["--transactions", "400", "--clients", "2"])
        try Self.historyMakingChanges(ws, round: 2)
        try ws.workload(["--transactions", "200", "--clients", "2"])
        try ws.run()
        // History matters here: some robot has procedures on two of its versions, some facility was renamed.
        try #require(try ws.dwValue("""
            SELECT count(*) FROM (SELECT r.robot_id FROM dw.fact_procedures p JOIN dw.dim_robots r USING (robot_key)
                                  GROUP BY r.robot_id HAVING count(DISTINCT r.robot_key) > 1) x
            """) != "0")
        try #require(try ws.count("dim_facilities", where: "change_type = 'UPDATE'") > 0)

        func same(_ view: String, _ warehouse: String, _ source: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let fromView = try ws.dw(warehouse).map { $0.map { $0 ?? "NULL" }.joined(separator: " | ") }.sorted()
            let fromSource = try ws.sql(source).map { $0.map { $0 ?? "NULL" }.joined(separator: " | ") }.sorted()
            #expect(!fromSource.isEmpty, "\(view): the source query returns rows", sourceLocation: sourceLocation)
            let (viewSet, sourceSet) = (Set(fromView), Set(fromSource))
            let onlyView = fromView.filter { !sourceSet.contains($0) }, onlySource = fromSource.filter { !viewSet.contains($0) }
            #expect(fromView == fromSource, "\(view): \(fromView.count) rows vs \(fromSource.count) from the source; only in the view: \(onlyView.prefix(3)); only in the source: \(onlySource.prefix(3))",
                    sourceLocation: sourceLocation)
        }
        let utcDate = "(p.start_time AT TIME ZONE 'UTC')::date"
        // Procedures per robot (all statuses), the robot's current model and facility.
        try same("vw_robot_utilization", """
            SELECT robot_id, robot_serial_number, robot_model, facility_name, city, state, total_procedures,
                   total_operating_hours, avg_procedure_duration_minutes, first_procedure_date, last_procedure_date
            FROM dw.vw_robot_utilization
            """, """
            SELECT r.robot_id, r.robot_serial_number, r.robot_model, f.facility_name, f.city, f.state, count(*),
                   sum(p.duration_minutes) / 60.0, avg(p.duration_minutes), min(\(utcDate)), max(\(utcDate))
            FROM surgical_procedures p JOIN surgical_robots r ON r.robot_id = p.robot_id
            LEFT JOIN facilities f ON f.facility_id = r.facility_id
            GROUP BY r.robot_id, r.robot_serial_number, r.robot_model, f.facility_name, f.city, f.state
            """)
        // Completed procedures per surgeon, the surgeon's current attributes.
        try same("vw_surgeon_performance", """
            SELECT surgeon_id, surgeon_name, specialization, years_experience, total_procedures, avg_complexity_score,
                   success_rate, avg_blood_loss
            FROM dw.vw_surgeon_performance
            """, """
            SELECT s.surgeon_id, s.surgeon_name, s.specialization, s.years_experience, count(*), avg(p.complexity_score),
                   sum(CASE WHEN o.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision / NULLIF(count(*), 0) * 100,
                   avg(o.blood_loss_ml)
            FROM surgical_procedures p JOIN surgeons s ON s.surgeon_id = p.surgeon_id
            LEFT JOIN procedure_outcomes o ON o.procedure_id = p.procedure_id
            WHERE p.status = 'completed'
            GROUP BY s.surgeon_id, s.surgeon_name, s.specialization, s.years_experience
            """)
        // Completed procedures per facility where they were performed (not where the robot is now).
        try same("vw_facility_performance", """
            SELECT facility_id, facility_name, city, state, facility_type, robot_count, total_procedures, surgeon_count,
                   avg_procedure_duration, avg_hospital_stay
            FROM dw.vw_facility_performance
            """, """
            SELECT f.facility_id, f.facility_name, f.city, f.state, f.facility_type, count(DISTINCT p.robot_id), count(*),
                   count(DISTINCT p.surgeon_id), avg(p.duration_minutes), avg(o.hospital_stay_days)
            FROM surgical_procedures p JOIN facilities f ON f.facility_id = p.facility_id
            LEFT JOIN procedure_outcomes o ON o.procedure_id = p.procedure_id
            WHERE p.status = 'completed'
            GROUP BY f.facility_id, f.facility_name, f.city, f.state, f.facility_type
            """)
        // Completed procedures per robot model (the robot's current model).
        try same("vw_outcomes_by_robot_model", """
            SELECT robot_model, manufacturer, total_procedures, avg_complexity, avg_blood_loss FROM dw.vw_outcomes_by_robot_model
            """, """
            SELECT r.robot_model, r.manufacturer, count(*), avg(p.complexity_score), avg(o.blood_loss_ml)
            FROM surgical_procedures p JOIN surgical_robots r ON r.robot_id = p.robot_id
            LEFT JOIN procedure_outcomes o ON o.procedure_id = p.procedure_id
            WHERE p.status = 'completed'
            GROUP BY r.robot_model, r.manufacturer
            """)
        // Outcomes per procedure type (facts only).
        try same("vw_procedure_outcomes", """
            SELECT procedure_type, procedure_category, total_procedures, successful_count, complication_count, readmission_count
            FROM dw.vw_procedure_outcomes
            """, """
            SELECT p.procedure_type, p.procedure_category, count(*),
                   sum(CASE WHEN o.success_status = 'Successful' THEN 1 ELSE 0 END),
                   sum(CASE WHEN o.complication_level IN ('Moderate', 'Severe') THEN 1 ELSE 0 END),
                   sum(CASE WHEN o.readmission_30day THEN 1 ELSE 0 END)
            FROM surgical_procedures p LEFT JOIN procedure_outcomes o ON o.procedure_id = p.procedure_id
            WHERE p.status = 'completed'
            GROUP BY p.procedure_type, p.procedure_category
            """)
        // Completed procedures per day.
        try same("vw_daily_procedure_volume", """
            SELECT date, procedure_count, total_operating_hours FROM dw.vw_daily_procedure_volume
            """, """
            SELECT \(utcDate), count(*), sum(p.duration_minutes) / 60.0
            FROM surgical_procedures p WHERE p.status = 'completed' GROUP BY 1
            """)
        // Telemetry per procedure: the robot's current model, the (current name of the) facility where performed.
        try same("vw_telemetry_system_health", """
            SELECT procedure_id, robot_model, facility_name, date, telemetry_sample_count, max_temperature, min_video_fps
            FROM dw.vw_telemetry_system_health
            """, """
            SELECT p.procedure_id, r.robot_model, f.facility_name, \(utcDate), count(*), max(t.system_temperature), min(t.video_fps)
            FROM procedure_telemetry t JOIN surgical_procedures p ON p.procedure_id = t.procedure_id
            JOIN surgical_robots r ON r.robot_id = p.robot_id JOIN facilities f ON f.facility_id = p.facility_id
            GROUP BY p.procedure_id, r.robot_model, f.facility_name, \(utcDate)
            """)
    }

    // MARK: Init

    @Test func initAgainChangesNothingAndRunGoesOn() throws {
        let ws = try WarehouseWorkspace("po_reinit")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try ws.initialize()
        #expect(try ws.schemaExists("dw"))
        #expect(try ws.count("dim_date") == 5844 && (try ws.count("dim_time")) == 1440, "2020-01-01 .. 2035-12-31, one row per minute")
        let calendar = try ws.dw("""
            SELECT min(date_key), max(date_key),
                   (SELECT fiscal_year || '/' || fiscal_quarter FROM dw.dim_date WHERE date_key = 20251001),
                   (SELECT fiscal_year || '/' || fiscal_quarter FROM dw.dim_date WHERE date_key = 20250930),
                   (SELECT is_holiday::text FROM dw.dim_date WHERE date_key = 20260704),
                   (SELECT is_weekend || '/' || day_name FROM dw.dim_date WHERE date_key = 20261122),
                   (SELECT hour_12 || am_pm || '/' || time_of_day || '/' || business_hours FROM dw.dim_time WHERE time_key = 143000)
            FROM dw.dim_date
            """)[0]
        #expect(calendar == ["20200101", "20351231", "2026/1", "2025/4", "true", "true/Sunday", "2PM/Afternoon/true"], "\(calendar)")
        let initial = try ws.checkpoint()
        #expect(initial.allSatisfy { $0["schema_version"] == "1" }, "\(initial)")
        try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        try ws.run()
        let before = try ws.dump(schema: "dw")
        try ws.initialize()
        #expect(WarehouseWorkspace.differences(before, try ws.dump(schema: "dw")).isEmpty, "a second init leaves the warehouse alone")
        try ws.change("UPDATE facilities SET city = 'Cambridge' WHERE facility_id = 'F1'")
        try ws.run()
        #expect(try ws.versions("dim_facilities", "F1").count == 3)
        let checkpoint = try #require(try ws.checkpoint().first)
        #expect(checkpoint["projection"] == "surgical-robotics" && checkpoint["schema_version"] == "1")
        let last = try #require(try ws.source.export().last)
        #expect(checkpoint["last_seq"] == String(last["seq"] as? Int ?? -1) && checkpoint["last_lsn"] == last["lsn"] as? String
                && checkpoint["last_commit_time"] == last["commit_time"] as? String, "\(checkpoint) vs the log's last record")
    }

    // MARK: Bad input

    /// A copy of the surgical mapping with `edit` applied, its DDL paths made absolute.
    static func mapping(_ ws: WarehouseWorkspace, _ edit: (String) -> String) throws -> String {
        let text = try String(contentsOfFile: WarehouseWorkspace.surgicalMapping, encoding: .utf8)
            .replacingOccurrences(of: "\"../warehouse/", with: "\"" + PostgresServer.repositoryRoot + "/schemas/warehouse/")
        let edited = edit(text)
        precondition(edited != text, "the edit changed nothing")
        let path = ws.directory + "/mapping-\(UInt32.random(in: 0...UInt32.max)).toml"
        try edited.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func expectExit1(_ result: Shell.Result, naming words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        expectOneLineError(result, naming: words, sourceLocation: sourceLocation)
        #expect(result.status == 1, "exit status 1: \(result.status)", sourceLocation: sourceLocation)
    }

    static func slotExists(_ ws: WarehouseWorkspace) throws -> Bool {
        try ws.server.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.source.slot)'")[0][0] != "0"
    }

    @Test func initWithAMappingThatNamesAMissingSourceTableFailsAndWritesNothing() throws {
        let ws = try WarehouseWorkspace("po_badtable")
        defer { ws.tearDown() }
        let bad = try Self.mapping(ws) { $0.replacingOccurrences(of: "source = \"public.facilities\"", with: "source = \"public.no_such_table\"") }
        try ws.writeConfig(mapping: bad)
        let result = try ws.cdc(["init", "--config", ws.configPath])
        Self.expectExit1(result, naming: ["no_such_table"])
        #expect(!(try ws.schemaExists("dw")), "the warehouse schema is not created")
        #expect(!FileManager.default.fileExists(atPath: ws.source.logPath), "no log is created")
        #expect(!(try Self.slotExists(ws)), "no slot is created")
    }

    @Test func runWithAMappingThatNamesAMissingColumnFailsAndWritesNothing() throws {
        let ws = try WarehouseWorkspace("po_badcolumn")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try ws.initialize()
        try ws.run()
        let bad = try Self.mapping(ws) {
            $0.replacingOccurrences(of: "type2 = [\"facility_name\", \"city\"", with: "type2 = [\"facility_name\", \"no_such_column\", \"city\"")
        }
        try ws.writeConfig(mapping: bad)
        let (warehouse, log) = (try ws.dump(schema: "dw"), try ws.source.exportLines())
        try ws.sql("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        Self.expectExit1(try ws.runResult(), naming: ["no_such_column"])
        #expect(WarehouseWorkspace.differences(warehouse, try ws.dump(schema: "dw")).isEmpty, "the warehouse is unchanged")
        #expect(try ws.source.exportLines() == log, "the log is unchanged")
        Self.expectExit1(try ws.cdc(["init", "--config", ws.configPath]), naming: ["no_such_column"])
        #expect(WarehouseWorkspace.differences(warehouse, try ws.dump(schema: "dw")).isEmpty)
    }

    @Test func anUnreachableWarehouseIsAnErrorBeforeAnythingIsWritten() throws {
        let ws = try WarehouseWorkspace("po_unreach")
        defer { ws.tearDown() }
        let unreachable = "host=127.0.0.1 port=1 dbname=\(ws.warehouseDatabase) user=postgres connect_timeout=5"
        try ws.writeConfig(url: unreachable)
        Self.expectExit1(try ws.cdc(["init", "--config", ws.configPath]), naming: ["warehouse"])
        #expect(!FileManager.default.fileExists(atPath: ws.source.logPath), "no log is created")
        #expect(!(try Self.slotExists(ws)), "no slot is created")

        // A working setup whose warehouse then goes away: run refuses, the log does not move.
        try ws.writeConfig()
        try ws.initialize()
        try ws.run()
        try ws.writeConfig(url: unreachable)
        let log = try ws.source.exportLines()
        try ws.sql(Fixture.facility("F1", "Mercy"))
        Self.expectExit1(try ws.runResult(), naming: ["warehouse"])
        #expect(try ws.source.exportLines() == log, "the log is unchanged")
        #expect(try ws.count("dim_facilities", where: "facility_id IS NOT NULL") == 0)
    }

    @Test func aWarehouseOfAnotherSchemaVersionIsRefused() throws {
        let ws = try WarehouseWorkspace("po_version")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try ws.initialize()
        try ws.run()
        try ws.replay(schema: "dw_old")
        try ws.dw("UPDATE dw.cdc_checkpoint SET schema_version = 99; UPDATE dw_old.cdc_checkpoint SET schema_version = 99")
        let (warehouse, old, log) = (try ws.dump(schema: "dw"), try ws.dump(schema: "dw_old"), try ws.source.exportLines())
        try ws.sql("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        Self.expectExit1(try ws.runResult(), naming: ["99"])
        #expect(WarehouseWorkspace.differences(warehouse, try ws.dump(schema: "dw")).isEmpty, "the warehouse is unchanged")
        #expect(try ws.source.exportLines() == log, "the log is unchanged")
        Self.expectExit1(try ws.cdc(["init", "--config", ws.configPath]), naming: ["99"])
        #expect(WarehouseWorkspace.differences(warehouse, try ws.dump(schema: "dw")).isEmpty)
        // A replay that would continue a warehouse of another version is refused too.
        Self.expectExit1(try ws.replayResult(schema: "dw_old"), naming: ["99"])
        #expect(WarehouseWorkspace.differences(old, try ws.dump(schema: "dw_old")).isEmpty)
    }

    @Test func replayIntoTheLiveSchemaIsRefused() throws {
        let ws = try WarehouseWorkspace("po_replaylive")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try ws.initialize()
        try ws.run()
        let warehouse = try ws.dump(schema: "dw")
        Self.expectExit1(try ws.replayResult(schema: "dw"), naming: ["dw"])
        Self.expectExit1(try ws.replayResult(schema: "dw", ["--swap"]), naming: ["dw"])
        #expect(WarehouseWorkspace.differences(warehouse, try ws.dump(schema: "dw")).isEmpty, "the live warehouse is unchanged")
    }
}
