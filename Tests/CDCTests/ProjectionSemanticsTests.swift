import Foundation
import Testing
import TestSupport

/// Every semantic rule of the projector (issue 3, /work/notes/projector-contract.md), each on its own,
/// checked the way a data engineer checks a warehouse: real source changes, the real `cdc run` with
/// projection, then SQL against the warehouse tables, with commit LSNs and times taken from the server
/// (the WAL's commit records, pg_xact_commit_timestamp), never from cdc's own output.
@Suite(.timeLimit(.minutes(15))) struct ProjectionSemanticsTests {
    // MARK: Versions

    @Test func aSnapshotRowOpensAnInsertVersionAtTheConsistentPoint() throws {
        let ws = try WarehouseWorkspace("ps_snapshot")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy General"))
        // The snapshot has no commit of its own: its time is taken during init, its LSN is the slot's
        // consistent point (the slot's confirmed_flush_lsn until something is confirmed).
        func now() throws -> String? { try ws.sql("SELECT \(WarehouseWorkspace.rfc3339("clock_timestamp()"))")[0][0] }
        let initStarted = try #require(try now())
        try ws.initialize()
        let initEnded = try #require(try now())
        let consistentPoint = try #require(try ws.server.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '\(ws.source.slot)'").first?.first ?? nil)
        try ws.run()
        let snapshot = try #require(try ws.source.rowEvents(table: "facilities").first)
        #expect(snapshot["lsn"] as? String == consistentPoint, "the log's snapshot is at the slot's consistent point")
        let versions = try ws.versions("dim_facilities", "F1")
        try #require(versions.count == 1, "\(versions)")
        let v = versions[0]
        #expect(v["facility_key"] == "1", "surrogate keys start at 1")
        #expect(v["change_type"] == "INSERT" && v["is_current"] == "t" && v["is_inferred"] == "f")
        #expect(v["facility_name"] == "Mercy General" && v["city"] == "Boston" && v["bed_count"] == "300")
        let validFrom = try #require(v["valid_from_utc"])
        #expect(validFrom >= initStarted && validFrom <= initEnded, "valid_from \(validFrom) is a moment of init (\(initStarted) .. \(initEnded))")
        #expect(validFrom == snapshot["commit_time"] as? String, "valid_from is the snapshot's time in the log")
        #expect(v["source_lsn"] == consistentPoint, "source_lsn is the consistent point")
        #expect(v["valid_to"] == nil && v["expiration_date"] == nil)
        #expect(v["effective_date"] == utcDate(validFrom))
        // The unknown member is there and untouched.
        let unknown = try ws.dwRecords("SELECT facility_id, facility_name, is_current FROM dw.dim_facilities WHERE facility_key = -1")
        #expect(unknown.count == 1 && unknown.first?["facility_name"] == "Unknown" && unknown.first?["facility_id"] == nil)
    }

    @Test func severalChangesToAKeyInOneTransactionMakeOneVersion() throws {
        let ws = try WarehouseWorkspace("ps_txn")
        defer { ws.tearDown() }
        try ws.initialize()
        let insert = try ws.change(Fixture.facility("F1", "Mercy"))
        let burst = try ws.change("""
            UPDATE facilities SET facility_name = 'Mercy North' WHERE facility_id = 'F1';
            UPDATE facilities SET city = 'Cambridge' WHERE facility_id = 'F1';
            UPDATE facilities SET facility_name = 'Mercy Cambridge', bed_count = 320 WHERE facility_id = 'F1'
            """)
        // A key born and changed in one transaction: one version, opened by the insert.
        let born = try ws.change("""
            \(Fixture.facility("F2", "Hope", city: "Nashua", state: "NH"));
            UPDATE facilities SET facility_name = 'Hope Regional' WHERE facility_id = 'F2';
            UPDATE facilities SET facility_type = 'Community Hospital' WHERE facility_id = 'F2'
            """)
        try ws.run()
        let (t1, t2, t3) = (ws.commit(of: insert), ws.commit(of: burst), ws.commit(of: born))

        let f1 = try ws.versions("dim_facilities", "F1")
        try #require(f1.count == 2, "one version for the insert, ONE for the three updates of one transaction: \(f1)")
        #expect(f1[0]["facility_name"] == "Mercy" && f1[0]["city"] == "Boston" && f1[0]["change_type"] == "INSERT")
        #expect(f1[0]["valid_from_utc"] == t1.time && f1[0]["valid_to_utc"] == t2.time && f1[0]["is_current"] == "f")
        #expect(f1[1]["facility_name"] == "Mercy Cambridge" && f1[1]["city"] == "Cambridge" && f1[1]["bed_count"] == "320",
                "the version holds the transaction's final values: \(f1[1])")
        #expect(f1[1]["change_type"] == "UPDATE" && f1[1]["is_current"] == "t")
        #expect(f1[1]["valid_from_utc"] == t2.time && f1[1]["source_lsn"] == t2.lsn)

        let f2 = try ws.versions("dim_facilities", "F2")
        try #require(f2.count == 1, "insert + updates in one transaction: one version: \(f2)")
        #expect(f2[0]["facility_name"] == "Hope Regional" && f2[0]["facility_type"] == "Community Hospital")
        #expect(f2[0]["change_type"] == "INSERT" && f2[0]["is_current"] == "t")
        #expect(f2[0]["valid_from_utc"] == t3.time && f2[0]["source_lsn"] == t3.lsn)

        // Surrogate keys 1, 2, 3 in log order.
        #expect([f1[0]["facility_key"], f1[1]["facility_key"], f2[0]["facility_key"]] == ["1", "2", "3"])
    }

    @Test func aTypeTwoChangeClosesTheVersionAndOpensAnother() throws {
        let ws = try WarehouseWorkspace("ps_type2")
        defer { ws.tearDown() }
        try ws.initialize()
        let insert = try ws.change(Fixture.facility("F1", "Mercy General", beds: 300))
        let change = try ws.change("UPDATE facilities SET facility_type = 'Teaching Hospital' WHERE facility_id = 'F1'")
        try ws.run()
        let (t1, t2) = (ws.commit(of: insert), ws.commit(of: change))
        let v = try ws.versions("dim_facilities", "F1")
        try #require(v.count == 2, "\(v)")
        // The old version: closed at the change's commit time.
        #expect(v[0]["facility_type"] == "Academic Medical Center")
        #expect(v[0]["valid_from_utc"] == t1.time && v[0]["valid_to_utc"] == t2.time)
        #expect(v[0]["is_current"] == "f" && v[0]["change_type"] == "INSERT" && v[0]["source_lsn"] == t1.lsn)
        #expect(v[0]["effective_date"] == utcDate(t1.time) && v[0]["expiration_date"] == utcDate(t2.time))
        // The new version: open, from the change's commit time, with every other column carried over.
        #expect(v[1]["facility_type"] == "Teaching Hospital" && v[1]["facility_name"] == "Mercy General")
        #expect(v[1]["city"] == "Boston" && v[1]["state"] == "MA" && v[1]["country"] == "US" && v[1]["bed_count"] == "300")
        #expect(v[1]["valid_from_utc"] == t2.time && v[1]["valid_to"] == nil && v[1]["expiration_date"] == nil)
        #expect(v[1]["is_current"] == "t" && v[1]["change_type"] == "UPDATE" && v[1]["source_lsn"] == t2.lsn)
        #expect(v[1]["effective_date"] == utcDate(t2.time))
        #expect(v[0]["record_hash"] != nil && v[1]["record_hash"] != nil && v[0]["record_hash"] != v[1]["record_hash"],
                "record_hash covers the type-2 columns: \(v[0]["record_hash"] ?? "NULL") vs \(v[1]["record_hash"] ?? "NULL")")
        #expect(Int(v[1]["facility_key"] ?? "") ?? 0 > Int(v[0]["facility_key"] ?? "") ?? 0)
    }

    @Test func aTypeOneOnlyChangeUpdatesTheCurrentVersionInPlace() throws {
        let ws = try WarehouseWorkspace("ps_type1")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change(Fixture.facility("F1", "Mercy", beds: 300))
        let rename = try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        try ws.run()
        let before = try ws.versions("dim_facilities", "F1")
        try #require(before.count == 2)

        try ws.change("UPDATE facilities SET bed_count = 350 WHERE facility_id = 'F1'")
        try ws.run()
        let t2 = ws.commit(of: rename)
        let after = try ws.versions("dim_facilities", "F1")
        try #require(after.count == 2, "a type-1-only change opens no version: \(after)")
        #expect(after[1]["bed_count"] == "350", "the current version has the new value")
        for column in ["facility_key", "facility_name", "valid_from_utc", "valid_to", "is_current", "change_type", "record_hash", "source_lsn", "effective_date"] {
            #expect(after[1][column] == before[1][column], "\(column) of the current version is kept: \(before[1][column] ?? "NULL") → \(after[1][column] ?? "NULL")")
        }
        #expect(after[1]["valid_from_utc"] == t2.time && after[1]["source_lsn"] == t2.lsn)
        #expect(after[0]["bed_count"] == "300" && after[0]["valid_to_utc"] == t2.time, "the closed version is history: untouched")
    }

    @Test func anUpdateThatChangesNothingChangesNothing() throws {
        let ws = try WarehouseWorkspace("ps_noop")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change(Fixture.facility("F1", "Mercy"))
        try ws.change(Fixture.surgeon("S1", "Dr. Ada Stone"))
        try ws.run()
        let dimensions = try ws.dump(schema: "dw")
        let seqBefore = try ws.checkpoint().first?["last_seq"]

        try ws.change("UPDATE facilities SET facility_name = facility_name WHERE facility_id = 'F1'")
        try ws.change("UPDATE facilities SET bed_count = bed_count, city = city, state = state WHERE facility_id = 'F1'")
        try ws.change("UPDATE surgeons SET surgeon_name = 'Dr. Ada Stone', years_experience = 12 WHERE surgeon_id = 'S1'")
        try ws.run()
        // The no-op updates are in the log and were applied (the checkpoint moved past them) ...
        let events = try ws.source.export()
        try #require(events.filter { $0["op"] as? String == "update" }.count == 3, "the source sent the three no-op updates")
        let seqAfter = try ws.checkpoint().first?["last_seq"]
        #expect(seqAfter == String(events.last?["seq"] as? Int ?? -1), "checkpoint \(seqBefore ?? "NULL") → \(seqAfter ?? "NULL")")
        // ... and every warehouse table is exactly as before (no version, no in-place write).
        var now = try ws.dump(schema: "dw")
        var then = dimensions
        now["cdc_checkpoint"] = nil
        then["cdc_checkpoint"] = nil
        #expect(WarehouseWorkspace.differences(then, now, names: ("before", "after")).isEmpty,
                "\(WarehouseWorkspace.differences(then, now, names: ("before", "after")))")
    }

    // MARK: Deletes, re-inserts, key changes, truncate

    @Test func aDeleteClosesTheVersionAndAddsADeleteRow() throws {
        let ws = try WarehouseWorkspace("ps_delete")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change(Fixture.facility("F1", "Mercy", beds: 300))
        let rename = try ws.change("UPDATE facilities SET facility_name = 'Mercy General', bed_count = 310 WHERE facility_id = 'F1'")
        let delete = try ws.change("DELETE FROM facilities WHERE facility_id = 'F1'")
        // Born and gone in one transaction: nothing.
        try ws.change("\(Fixture.facility("F2", "Ephemeral")); DELETE FROM facilities WHERE facility_id = 'F2'")
        // Updated and deleted in one transaction: the old version closed + a DELETE row.
        let f3Insert = try ws.change(Fixture.facility("F3", "Hope"))
        let f3Gone = try ws.change("UPDATE facilities SET facility_name = 'Hope Regional' WHERE facility_id = 'F3'; DELETE FROM facilities WHERE facility_id = 'F3'")
        try ws.run()
        let (t2, t3) = (ws.commit(of: rename), ws.commit(of: delete))

        let v = try ws.versions("dim_facilities", "F1")
        try #require(v.count == 3, "insert, update, DELETE row: \(v)")
        #expect(v[1]["valid_to_utc"] == t3.time && v[1]["is_current"] == "f", "the last version is closed at the delete")
        #expect(v[1]["valid_from_utc"] == t2.time)
        let d = v[2]
        #expect(d["change_type"] == "DELETE" && d["is_current"] == "f")
        #expect(d["valid_from_utc"] == t3.time && d["valid_to_utc"] == t3.time, "the DELETE row is the instant of the delete")
        #expect(d["effective_date"] == utcDate(t3.time) && d["expiration_date"] == utcDate(t3.time))
        #expect(d["source_lsn"] == t3.lsn)
        #expect(d["facility_name"] == "Mercy General" && d["city"] == "Boston" && d["bed_count"] == "310",
                "the DELETE row carries the last version's attributes: \(d)")
        #expect(try ws.current("dim_facilities", "F1") == nil, "a deleted key has no current row")

        #expect(try ws.versions("dim_facilities", "F2").isEmpty, "insert + delete in one transaction leaves no row")

        let f3 = try ws.versions("dim_facilities", "F3")
        try #require(f3.count == 2, "update + delete in one transaction: the old version closed + a DELETE row: \(f3)")
        let (i3, g3) = (ws.commit(of: f3Insert), ws.commit(of: f3Gone))
        #expect(f3[0]["change_type"] == "INSERT" && f3[0]["valid_from_utc"] == i3.time && f3[0]["valid_to_utc"] == g3.time)
        #expect(f3[1]["change_type"] == "DELETE" && f3[1]["valid_from_utc"] == g3.time && f3[1]["valid_to_utc"] == g3.time)
        #expect(f3.allSatisfy { $0["is_current"] == "f" })
    }

    @Test func aReinsertOpensANewCurrentVersionWithANewKey() throws {
        let ws = try WarehouseWorkspace("ps_reinsert")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change(Fixture.surgeon("S1", "Dr. Ada Stone"))
        try ws.change("DELETE FROM surgeons WHERE surgeon_id = 'S1'")
        try ws.run()
        let back = try ws.change(Fixture.surgeon("S1", "Dr. Ada Stone-Reyes", specialization: "Gynecology"))
        try ws.run()
        let t3 = ws.commit(of: back)
        let v = try ws.versions("dim_surgeons", "S1")
        try #require(v.count == 3, "insert, DELETE row, re-insert: \(v)")
        #expect(v.map { $0["change_type"] } == ["INSERT", "DELETE", "INSERT"])
        let new = v[2]
        #expect(new["is_current"] == "t" && new["valid_to"] == nil && new["valid_from_utc"] == t3.time && new["source_lsn"] == t3.lsn)
        #expect(new["surgeon_name"] == "Dr. Ada Stone-Reyes" && new["specialization"] == "Gynecology")
        let keys = v.compactMap { Int($0["surgeon_key"] ?? "") }
        #expect(keys.count == 3 && Set(keys).count == 3 && keys[2] > keys[1], "a new surrogate key: \(keys)")
        #expect(try ws.count("dim_surgeons", where: "surgeon_id = 'S1' AND is_current") == 1)
    }

    @Test func anUpdateOfTheBusinessKeyDeletesTheOldKeyAndOpensTheNewOne() throws {
        let ws = try WarehouseWorkspace("ps_rekey")
        defer { ws.tearDown() }
        try ws.initialize()
        let insert = try ws.change(Fixture.facility("F1", "Mercy"))
        let rekey = try ws.change("UPDATE facilities SET facility_id = 'F9' WHERE facility_id = 'F1'")
        try ws.run()
        let (t1, t2) = (ws.commit(of: insert), ws.commit(of: rekey))
        let old = try ws.versions("dim_facilities", "F1")
        try #require(old.count == 2, "old key: closed version + DELETE row: \(old)")
        #expect(old[0]["change_type"] == "INSERT" && old[0]["valid_from_utc"] == t1.time && old[0]["valid_to_utc"] == t2.time)
        #expect(old[1]["change_type"] == "DELETE" && old[1]["valid_from_utc"] == t2.time && old[1]["valid_to_utc"] == t2.time)
        #expect(try ws.current("dim_facilities", "F1") == nil)
        let new = try ws.versions("dim_facilities", "F9")
        try #require(new.count == 1, "\(new)")
        #expect(new[0]["change_type"] == "UPDATE" && new[0]["is_current"] == "t")
        #expect(new[0]["valid_from_utc"] == t2.time && new[0]["source_lsn"] == t2.lsn)
        #expect(new[0]["facility_name"] == "Mercy" && new[0]["bed_count"] == "300")
    }

    @Test func truncateClosesEveryCurrentVersion() throws {
        let ws = try WarehouseWorkspace("ps_truncate")
        defer { ws.tearDown() }
        // Only procedures reference surgeons; without that FK surgeons can be truncated on its own.
        try ws.sql("ALTER TABLE surgical_procedures DROP CONSTRAINT surgical_procedures_surgeon_id_fkey")
        try ws.initialize()
        try ws.change("\(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.surgeon("S2", "Dr. Ben Okafor", specialization: "Colorectal"))")
        try ws.change(Fixture.facility("F1", "Mercy"))
        let promote = try ws.change("UPDATE surgeons SET certification_level = 'Master' WHERE surgeon_id = 'S1'")
        try ws.run()
        let truncate = try ws.change("TRUNCATE surgeons")
        let back = try ws.change(Fixture.surgeon("S1", "Dr. Ada Stone", level: "Master"))
        try ws.run()
        let (t2, t3, t4) = (ws.commit(of: promote), ws.commit(of: truncate), ws.commit(of: back))

        let s1 = try ws.versions("dim_surgeons", "S1")
        try #require(s1.count == 4, "insert, update, DELETE row at the truncate, re-insert: \(s1)")
        #expect(s1.map { $0["change_type"] } == ["INSERT", "UPDATE", "DELETE", "INSERT"])
        #expect(s1[0]["valid_to_utc"] == t2.time, "an already closed version keeps its valid_to")
        #expect(s1[1]["valid_to_utc"] == t3.time && s1[1]["is_current"] == "f")
        #expect(s1[2]["valid_from_utc"] == t3.time && s1[2]["valid_to_utc"] == t3.time && s1[2]["certification_level"] == "Master")
        #expect(s1[3]["valid_from_utc"] == t4.time && s1[3]["is_current"] == "t")
        let s2 = try ws.versions("dim_surgeons", "S2")
        try #require(s2.count == 2, "\(s2)")
        #expect(s2[0]["valid_to_utc"] == t3.time && s2[1]["change_type"] == "DELETE" && s2[1]["valid_from_utc"] == t3.time)
        #expect(try ws.current("dim_surgeons", "S2") == nil)
        // The unknown member survives, and the truncate touched no other dimension.
        #expect(try ws.count("dim_surgeons", where: "surgeon_key = -1 AND is_current") == 1)
        #expect(try ws.count("dim_surgeons", where: "is_current") == 2, "the unknown member and the re-inserted S1")
        #expect(try ws.current("dim_facilities", "F1") != nil)
    }

    // MARK: TOAST

    @Test func anUnchangedToastedValueKeepsItsPriorValue() throws {
        let ws = try WarehouseWorkspace("ps_toast")
        defer { ws.tearDown() }
        // ~10 KB, stored out of line and uncompressed: an UPDATE that leaves it alone does not send it.
        let big = "(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 320) i)"
        try ws.sql("ALTER TABLE facilities ALTER COLUMN facility_name SET STORAGE EXTERNAL")
        try ws.initialize()
        try ws.change("INSERT INTO facilities VALUES ('F1', \(big), 'Boston', 'MA', 'US', 'Academic Medical Center', 300)")
        try ws.change("UPDATE facilities SET bed_count = 301 WHERE facility_id = 'F1'")
        try ws.run()
        let expected = try #require(try ws.sql("SELECT md5(facility_name), length(facility_name) FROM facilities").first)
        #expect(expected[1] == "10240")
        let toastTable = try ws.sql("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'facilities'::regclass")[0][0] ?? ""
        let toastRows = try ws.sql("SELECT count(*) FROM \(toastTable)")
        try #require(Int(toastRows.first?.first.flatMap { $0 } ?? "0") ?? 0 > 0, "facility_name is stored out of line")
        let update = try #require(try ws.source.rowEvents(table: "facilities").last)
        let marker = row(update)?["facility_name"] as? [String: Any]
        try #require(marker?["unchanged_toast"] as? Bool == true, "the log holds the unchanged-TOAST marker, not the value: \(String(describing: row(update)?["facility_name"]))")

        func names() throws -> [WarehouseRow] {
            try ws.dwRecords("SELECT md5(facility_name) AS md5, length(facility_name) AS length, bed_count, city, change_type FROM dw.dim_facilities WHERE facility_id = 'F1' ORDER BY facility_key")
        }
        var v = try names()
        try #require(v.count == 1, "bed_count is type 1: no new version: \(v)")
        #expect(v[0]["md5"] == expected[0] && v[0]["length"] == "10240", "the name survived a type-1 update that did not send it: \(v[0])")
        #expect(v[0]["bed_count"] == "301")

        // A type-2 change that does not send the name either: the new version carries the prior value.
        try ws.change("UPDATE facilities SET city = 'Cambridge' WHERE facility_id = 'F1'")
        try ws.run()
        v = try names()
        try #require(v.count == 2, "\(v)")
        #expect(v.allSatisfy { $0["md5"] == expected[0] && $0["length"] == "10240" }, "\(v)")
        #expect(v[1]["city"] == "Cambridge" && v[1]["change_type"] == "UPDATE" && v[1]["bed_count"] == "301")
    }

    // MARK: Facts and lookups

    @Test func factsPointAtTheVersionsCurrentAtTheirCommitAndAreNeverRepointed() throws {
        let ws = try WarehouseWorkspace("ps_pit")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change("""
            \(Fixture.facility("F1", "Mercy")); \(Fixture.facility("F2", "Hope", city: "Nashua", state: "NH"));
            \(Fixture.surgeon("S1", "Dr. Ada Stone"));
            \(Fixture.robot("R1", facility: "F1")); \(Fixture.robot("R2", facility: "F2", model: "Hugo RAS"))
            """)
        try ws.change(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1"))
        try ws.change("UPDATE surgical_robots SET software_version = '5.0.1' WHERE robot_id = 'R1'")
        try ws.change(Fixture.procedure("P2", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-03-14 12:00:00+00"))
        try ws.run()
        try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        try ws.change("UPDATE surgeons SET certification_level = 'Master' WHERE surgeon_id = 'S1'")
        // Later changes to P1 that keep its business keys: keys stay where they were.
        try ws.change("UPDATE surgical_procedures SET status = 'completed', end_time = start_time + interval '95 minutes', duration_minutes = 95 WHERE procedure_id = 'P1'")
        try ws.change(Fixture.procedure("P3", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-03-15 09:00:00+00"))
        try ws.run()

        let r1 = try ws.versions("dim_robots", "R1"), f1 = try ws.versions("dim_facilities", "F1"), s1 = try ws.versions("dim_surgeons", "S1")
        try #require(r1.count == 2 && f1.count == 2 && s1.count == 2, "R1 \(r1.count), F1 \(f1.count), S1 \(s1.count) versions")
        let p1 = try #require(try ws.fact("P1")), p2 = try #require(try ws.fact("P2")), p3 = try #require(try ws.fact("P3"))
        #expect(p1["robot_key"] == r1[0]["robot_key"], "P1 was recorded on R1's first version")
        #expect(p2["robot_key"] == r1[1]["robot_key"], "P2 came after the upgrade")
        #expect(p1["facility_key"] == f1[0]["facility_key"] && p1["surgeon_key"] == s1[0]["surgeon_key"],
                "an update of P1 after the facility and surgeon changed does not re-point it: \(p1)")
        #expect(p1["status"] == "completed")
        #expect(p3["facility_key"] == f1[1]["facility_key"] && p3["surgeon_key"] == s1[1]["surgeon_key"] && p3["robot_key"] == r1[1]["robot_key"])

        // An update that changes a business key re-points that key only.
        try ws.change("UPDATE surgical_procedures SET robot_id = 'R2' WHERE procedure_id = 'P1'")
        try ws.run()
        let r2 = try #require(try ws.current("dim_robots", "R2"))
        let moved = try #require(try ws.fact("P1"))
        #expect(moved["robot_key"] == r2["robot_key"], "P1 now points at R2's current version")
        #expect(moved["facility_key"] == f1[0]["facility_key"] && moved["surgeon_key"] == s1[0]["surgeon_key"], "the other keys stay: \(moved)")
        #expect(try ws.fact("P2")?["robot_key"] == r1[1]["robot_key"])
    }

    @Test func aRobotVersionPointsAtTheFacilityVersionCurrentWhenItOpened() throws {
        let ws = try WarehouseWorkspace("ps_robotfac")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change("""
            \(Fixture.facility("F1", "Mercy")); \(Fixture.facility("F2", "Hope", city: "Nashua", state: "NH"));
            \(Fixture.robot("R1", facility: "F1"))
            """)
        try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")       // F1 v2; R1 not re-versioned
        try ws.change("UPDATE surgical_robots SET status = 'maintenance' WHERE robot_id = 'R1'")              // R1 v2 → F1 v2
        let move = try ws.change("UPDATE surgical_robots SET facility_id = 'F2' WHERE robot_id = 'R1'")        // R1 v3 → F2 v1
        try ws.change("UPDATE facilities SET bed_count = 99 WHERE facility_id = 'F2'")                         // type 1: nothing for R1
        try ws.change("UPDATE surgical_robots SET total_procedures_count = 7, total_operating_hours = 10.5 WHERE robot_id = 'R1'")  // type 1
        try ws.run()
        let f1 = try ws.versions("dim_facilities", "F1"), f2 = try ws.versions("dim_facilities", "F2")
        let r1 = try ws.versions("dim_robots", "R1")
        try #require(f1.count == 2 && f2.count == 1)
        try #require(r1.count == 3, "insert, status change, move; a facility change does not version the robot: \(r1)")
        #expect(r1[0]["facility_key"] == f1[0]["facility_key"])
        #expect(r1[1]["facility_key"] == f1[1]["facility_key"], "opened after F1's rename: F1's second version")
        #expect(r1[2]["facility_key"] == f2[0]["facility_key"], "a move opens a version pointing at the new facility")
        let moved = ws.commit(of: move)
        #expect(r1[2]["change_type"] == "UPDATE" && r1[2]["valid_from_utc"] == moved.time)
        #expect(r1[2]["total_procedures_count"] == "7" && r1[2]["total_operating_hours"] == "10.50" && r1[2]["is_current"] == "t")
    }

    @Test func aFactBeforeItsDimensionRowGetsAnInferredMemberCompletedInPlace() throws {
        let ws = try WarehouseWorkspace("ps_inferred")
        defer { ws.tearDown() }
        try ws.sql("""
            ALTER TABLE surgical_procedures DROP CONSTRAINT surgical_procedures_surgeon_id_fkey;
            ALTER TABLE surgical_procedures DROP CONSTRAINT surgical_procedures_robot_id_fkey
            """)
        try ws.initialize()
        try ws.change(Fixture.facility("F1", "Mercy"))
        let early = try ws.change(Fixture.procedure("P1", robot: "R-LATE", surgeon: "S-LATE", facility: "F1"))
        try ws.run()
        let t = ws.commit(of: early)

        let surgeon = try ws.versions("dim_surgeons", "S-LATE")
        try #require(surgeon.count == 1, "an inferred member for the unknown surgeon: \(surgeon)")
        let s = surgeon[0]
        #expect(s["is_inferred"] == "t" && s["is_current"] == "t" && s["change_type"] == "INSERT")
        #expect(s["surgeon_name"] == "Unknown", "NOT NULL text columns say 'Unknown'")
        #expect(s["specialization"] == nil && s["years_experience"] == nil && s["certification_level"] == nil, "others are NULL: \(s)")
        #expect(s["valid_from_utc"] == t.time && s["source_lsn"] == t.lsn, "opened at the fact's commit")
        let robot = try ws.versions("dim_robots", "R-LATE")
        try #require(robot.count == 1, "\(robot)")
        let r = robot[0]
        #expect(r["is_inferred"] == "t" && r["robot_model"] == "Unknown" && r["robot_serial_number"] == "Unknown")
        #expect(r["manufacturer"] == nil && r["software_version"] == nil && r["facility_key"] == "-1", "lookup keys are -1: \(r)")
        let p1 = try #require(try ws.fact("P1"))
        #expect(p1["surgeon_key"] == s["surgeon_key"] && p1["robot_key"] == r["robot_key"])

        // The rows arrive: completed in place, same surrogate keys.
        try ws.change(Fixture.surgeon("S-LATE", "Dr. Lee Late", specialization: "Urology", years: 7, level: "Advanced"))
        try ws.change(Fixture.robot("R-LATE", facility: "F1", model: "da Vinci SP", software: "2.3.1"))
        try ws.change(Fixture.procedure("P2", robot: "R-LATE", surgeon: "S-LATE", facility: "F1", start: "2026-03-14 15:00:00+00"))
        try ws.run()
        let completed = try ws.versions("dim_surgeons", "S-LATE")
        try #require(completed.count == 1, "completed in place, not versioned: \(completed)")
        let c = completed[0]
        #expect(c["surgeon_key"] == s["surgeon_key"] && c["is_inferred"] == "f" && c["is_current"] == "t")
        #expect(c["surgeon_name"] == "Dr. Lee Late" && c["specialization"] == "Urology" && c["years_experience"] == "7" && c["certification_level"] == "Advanced")
        let completedRobot = try ws.versions("dim_robots", "R-LATE")
        try #require(completedRobot.count == 1, "\(completedRobot)")
        let f1 = try #require(try ws.current("dim_facilities", "F1"))
        #expect(completedRobot[0]["robot_key"] == r["robot_key"] && completedRobot[0]["is_inferred"] == "f")
        #expect(completedRobot[0]["robot_model"] == "da Vinci SP" && completedRobot[0]["software_version"] == "2.3.1")
        #expect(completedRobot[0]["facility_key"] == f1["facility_key"], "the lookup is resolved when the row arrives")
        #expect(try ws.fact("P1")?["surgeon_key"] == s["surgeon_key"], "P1 still points at the same (now complete) row")
        let p2 = try #require(try ws.fact("P2"))
        #expect(p2["surgeon_key"] == s["surgeon_key"] && p2["robot_key"] == r["robot_key"], "the arrived rows are current: \(p2)")
    }

    @Test func aNullForeignKeyPointsAtTheUnknownMember() throws {
        let ws = try WarehouseWorkspace("ps_unknown")
        defer { ws.tearDown() }
        try ws.sql("ALTER TABLE surgical_procedures ALTER COLUMN robot_id DROP NOT NULL")
        try ws.initialize()
        let unknownBefore = try ws.dump(schema: "dw").rows.mapValues { $0.filter { $0.hasPrefix("(-1,") } }
        try ws.change("\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: nil))")
        try ws.change(Fixture.procedure("P1", robot: nil, surgeon: "S1", facility: "F1"))
        try ws.run()
        let r1 = try ws.versions("dim_robots", "R1")
        try #require(r1.count == 1)
        #expect(r1[0]["facility_key"] == "-1", "a robot without a facility points at the unknown facility")
        #expect(try ws.fact("P1")?["robot_key"] == "-1", "a procedure without a robot points at the unknown robot")
        #expect(try ws.count("dim_robots", where: "robot_id IS NULL") == 1, "no row is inferred for NULL")
        let unknownAfter = try ws.dump(schema: "dw").rows.mapValues { $0.filter { $0.hasPrefix("(-1,") } }
        #expect(unknownAfter == unknownBefore, "the unknown members are never written")

        // NULL → F1 is a change of the lookup's business key: a new version pointing at F1.
        try ws.change("UPDATE surgical_robots SET facility_id = 'F1' WHERE robot_id = 'R1'")
        try ws.run()
        let moved = try ws.versions("dim_robots", "R1")
        try #require(moved.count == 2, "\(moved)")
        let f1 = try #require(try ws.current("dim_facilities", "F1"))
        #expect(moved[1]["facility_key"] == f1["facility_key"] && moved[1]["change_type"] == "UPDATE")
    }

    @Test func factProceduresIsAnAccumulatingSnapshot() throws {
        let ws = try WarehouseWorkspace("ps_accum")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change("\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: "F1"))")
        let insert = try ws.change(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-03-14 10:00:00+00"))
        try ws.run()
        let t1 = ws.commit(of: insert)
        let p = try #require(try ws.fact("P1"))
        let key = p["procedure_key"]
        #expect(p["status"] == "in_progress" && p["created_at_utc"] == t1.time && p["updated_at"] == nil && p["source_lsn"] == t1.lsn)
        #expect(p["end_date_key"] == nil && p["end_time_key"] == nil && p["duration_minutes"] == nil)
        #expect(p["success_status"] == nil && p["readmission_30day"] == nil)

        let complete = try ws.change("""
            UPDATE surgical_procedures SET status = 'completed', end_time = '2026-03-14 11:35:00+00', duration_minutes = 95
            WHERE procedure_id = 'P1'
            """)
        try ws.run()
        let t2 = ws.commit(of: complete)
        let done = try #require(try ws.fact("P1"))
        #expect(done["procedure_key"] == key && done["status"] == "completed" && done["duration_minutes"] == "95")
        #expect(done["end_date_key"] == "20260314" && done["end_time_key"] == "113500")
        #expect(done["created_at_utc"] == t1.time && done["updated_at_utc"] == t2.time && done["source_lsn"] == t2.lsn)

        let outcome = try ws.change(Fixture.outcome("P1"))
        try ws.run()
        let t3 = ws.commit(of: outcome)
        let o = try #require(try ws.fact("P1"))
        #expect(o["success_status"] == "Successful" && o["blood_loss_ml"] == "120" && o["complication_level"] == "None")
        #expect(o["hospital_stay_days"] == "2" && o["patient_satisfaction_score"] == "9.1" && o["readmission_30day"] == "f")
        #expect(o["updated_at_utc"] == t3.time && o["source_lsn"] == t3.lsn && o["created_at_utc"] == t1.time && o["procedure_key"] == key)

        let readmitted = try ws.change("UPDATE procedure_outcomes SET readmission_30day = true WHERE procedure_id = 'P1'")
        try ws.run()
        let t4 = ws.commit(of: readmitted)
        let u = try #require(try ws.fact("P1"))
        #expect(u["readmission_30day"] == "t" && u["success_status"] == "Successful" && u["blood_loss_ml"] == "120")
        #expect(u["updated_at_utc"] == t4.time && u["source_lsn"] == t4.lsn)

        let cleared = try ws.change("DELETE FROM procedure_outcomes WHERE procedure_id = 'P1'")
        try ws.run()
        let t5 = ws.commit(of: cleared)
        let c = try #require(try ws.fact("P1"), "deleting the outcome keeps the procedure")
        for column in ["success_status", "blood_loss_ml", "complication_level", "hospital_stay_days", "patient_satisfaction_score", "readmission_30day"] {
            #expect(c[column] == nil, "\(column) cleared: \(c[column] ?? "NULL")")
        }
        #expect(c["status"] == "completed" && c["duration_minutes"] == "95" && c["procedure_key"] == key)
        #expect(c["updated_at_utc"] == t5.time && c["source_lsn"] == t5.lsn && c["created_at_utc"] == t1.time)
        #expect(try ws.count("fact_procedures") == 1)
    }

    @Test func deletingAProcedureRemovesItsFactRowAndItsTelemetry() throws {
        let ws = try WarehouseWorkspace("ps_procdel")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change("\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: "F1"))")
        try ws.change("""
            \(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1"));
            \(Fixture.telemetry(11, procedure: "P1", at: "2026-03-14 10:01:00+00"));
            \(Fixture.telemetry(12, procedure: "P1", at: "2026-03-14 10:02:00+00"));
            \(Fixture.telemetry(13, procedure: "P1", at: "2026-03-14 10:03:00+00"));
            \(Fixture.outcome("P1"))
            """)
        try ws.change("""
            \(Fixture.procedure("P2", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-03-14 14:00:00+00"));
            \(Fixture.telemetry(21, procedure: "P2", at: "2026-03-14 14:01:00+00"));
            \(Fixture.telemetry(22, procedure: "P2", at: "2026-03-14 14:02:00+00"))
            """)
        try ws.run()
        let p1 = try #require(try ws.fact("P1")), p2 = try #require(try ws.fact("P2"))
        #expect(try ws.count("fact_procedure_telemetry", where: "procedure_key = \(p1["procedure_key"] ?? "0") AND procedure_id = 'P1'") == 3)
        #expect(try ws.count("fact_procedure_telemetry", where: "procedure_key = \(p2["procedure_key"] ?? "0") AND procedure_id = 'P2'") == 2)

        try ws.change("DELETE FROM surgical_procedures WHERE procedure_id = 'P1'")   // cascades to telemetry and outcome
        try ws.change("DELETE FROM procedure_telemetry WHERE telemetry_id = 22")
        try ws.run()
        #expect(try ws.fact("P1") == nil, "the procedure's fact row is gone")
        #expect(try ws.count("fact_procedure_telemetry", where: "procedure_id = 'P1' OR procedure_key = \(p1["procedure_key"] ?? "0")") == 0,
                "its telemetry rows are gone")
        #expect(try ws.fact("P2")?["procedure_key"] == p2["procedure_key"])
        let left = try ws.dw("SELECT telemetry_id FROM dw.fact_procedure_telemetry ORDER BY 1").map { $0[0] }
        #expect(left == ["21"], "one telemetry row per source row: \(left)")
    }

    @Test func telemetryOfAProcedureWithoutAFactRowPointsAtMinusOne() throws {
        let ws = try WarehouseWorkspace("ps_orphan")
        defer { ws.tearDown() }
        try ws.sql("ALTER TABLE procedure_telemetry DROP CONSTRAINT procedure_telemetry_procedure_id_fkey")
        try ws.initialize()
        try ws.change("\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: "F1"))")
        try ws.change("\(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1")); \(Fixture.telemetry(1, procedure: "P1", at: "2026-03-14 10:01:00+00"))")
        try ws.change(Fixture.telemetry(2, procedure: "P-NONE", at: "2026-03-14 10:02:00+00"))
        try ws.run()
        let p1 = try #require(try ws.fact("P1"))
        let keys = try ws.dw("SELECT telemetry_id, procedure_key, procedure_id FROM dw.fact_procedure_telemetry ORDER BY 1")
        #expect(keys == [["1", p1["procedure_key"], "P1"], ["2", "-1", "P-NONE"]], "\(keys)")
    }

    // MARK: Dates and times

    @Test func dateAndTimeKeysAreYYYYMMDDAndHHMM00InUTCByDefault() throws {
        let ws = try WarehouseWorkspace("ps_keys")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change("\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: "F1"))")
        try ws.change("""
            \(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-03-14 23:59:30+00", end: "2026-03-15 00:01:10+00", status: "completed"));
            \(Fixture.telemetry(1, procedure: "P1", at: "2026-03-14 13:45:59.9+00"));
            \(Fixture.telemetry(2, procedure: "P1", at: "2026-03-15 00:00:00+00"));
            \(Fixture.procedure("P2", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-01-01 08:05:00-05"))
            """)
        try ws.run()
        let p1 = try #require(try ws.fact("P1")), p2 = try #require(try ws.fact("P2"))
        #expect(p1["start_date_key"] == "20260314" && p1["start_time_key"] == "235900", "\(p1)")
        #expect(p1["end_date_key"] == "20260315" && p1["end_time_key"] == "100", "00:01 is 000100: \(p1)")
        #expect(p2["start_date_key"] == "20260101" && p2["start_time_key"] == "130500", "08:05-05 is 13:05 UTC: \(p2)")
        let samples = try ws.dw("SELECT telemetry_id, timestamp_key FROM dw.fact_procedure_telemetry ORDER BY 1").map { $0[1] }
        #expect(samples == ["134500", "0"], "minute grain, truncated: \(samples)")
        // Every key resolves in dim_date / dim_time.
        #expect(try ws.count("fact_procedures f", where: "NOT EXISTS (SELECT 1 FROM dw.dim_date d WHERE d.date_key = f.start_date_key) OR NOT EXISTS (SELECT 1 FROM dw.dim_time t WHERE t.time_key = f.start_time_key)") == 0)
        #expect(try ws.dwValue("SELECT date FROM dw.dim_date WHERE date_key = 20260314") == "2026-03-14")
        #expect(try ws.dwValue("SELECT time_value FROM dw.dim_time WHERE time_key = 235900") == "23:59:00")
        // Dimension dates are the UTC dates of the commit times.
        #expect(try ws.count("dim_facilities", where: "facility_id IS NOT NULL AND effective_date <> (valid_from AT TIME ZONE 'UTC')::date") == 0)
    }

    @Test func dateAndTimeKeysFollowTheWarehouseTimeZone() throws {
        let ws = try WarehouseWorkspace("ps_zone")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.change("\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: "F1"))")
        try ws.change("""
            \(Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1", start: "2026-03-14 11:20:00+00", end: "2026-03-14 23:50:00+00", status: "completed"));
            \(Fixture.telemetry(1, procedure: "P1", at: "2026-03-14 11:21:30+00"))
            """)
        let rename = try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        // A zone whose date differs from UTC's at the rename's commit (Kiritimati is UTC+14, Etc/GMT+12 is
        // UTC-12), so that effective_date in the wrong zone would be a different day.
        try ws.source.catchUp()
        let t = ws.commit(of: rename)
        let zone = Int(t.time.dropFirst(11).prefix(2))! >= 12 ? "Pacific/Kiritimati" : "Etc/GMT+12"
        try ws.writeConfig(timezone: zone)
        try ws.run()
        func local(_ timestamp: String) throws -> (date: String, time: String) {
            let row = try ws.dw("""
                SELECT to_char(TIMESTAMPTZ '\(timestamp)' AT TIME ZONE '\(zone)', 'YYYYMMDD'),
                       (to_char(TIMESTAMPTZ '\(timestamp)' AT TIME ZONE '\(zone)', 'HH24MI') || '00')::int::text
                """)[0]
            return (row[0]!, row[1]!)
        }
        let (start, end, sample) = (try local("2026-03-14 11:20:00+00"), try local("2026-03-14 23:50:00+00"), try local("2026-03-14 11:21:30+00"))
        #expect(start.date != "20260314" || end.date != "20260314", "the zone moves one of the dates off UTC's (\(zone))")
        #expect(start.time != "112000", "the zone moves the time off UTC's")
        let p1 = try #require(try ws.fact("P1"))
        #expect(p1["start_date_key"] == start.date && p1["start_time_key"] == start.time, "\(zone): \(p1)")
        #expect(p1["end_date_key"] == end.date && p1["end_time_key"] == end.time, "\(zone): \(p1)")
        #expect(try ws.dwValue("SELECT timestamp_key FROM dw.fact_procedure_telemetry WHERE telemetry_id = 1") == sample.time)
        // effective_date / expiration_date: the dates of valid_from / valid_to in the warehouse zone.
        let v = try ws.versions("dim_facilities", "F1")
        try #require(v.count == 2)
        let localDate = try ws.dwValue("SELECT (TIMESTAMPTZ '\(t.time)' AT TIME ZONE '\(zone)')::date")
        #expect(localDate != String(t.time.prefix(10)), "the zone puts the rename on another day than UTC's (\(t.time))")
        #expect(v[1]["effective_date"] == localDate && v[0]["expiration_date"] == localDate,
                "\(zone): commit \(t.time) is \(localDate ?? "?") there; got \(v[1]["effective_date"] ?? "NULL") / \(v[0]["expiration_date"] ?? "NULL")")
        #expect(v[1]["valid_from_utc"] == t.time, "valid_from is an instant, whatever the zone")
    }

    // MARK: A second model

    @Test func theEcommerceModelIsProjectedFromItsMappingAlone() throws {
        let ws = try WarehouseWorkspace("ps_shop", sourceSchema: false, schema: "shop_dw", mapping: WarehouseWorkspace.ecommerceMapping)
        defer { ws.tearDown() }
        try ws.sql(try String(contentsOfFile: PostgresServer.repositoryRoot + "/schemas/models/ecommerce/source.sql", encoding: .utf8))
        try ws.sql("""
            INSERT INTO customers VALUES (1, 'Ann Lee', 'ann@example.com', 'US', 'Consumer'), (2, 'Bo Chan', 'bo@example.com', 'CA', 'Corporate');
            INSERT INTO products VALUES ('SKU-1', 'Widget', 'Tools', 9.99, '2025-01-01 00:00:00+00')
            """)
        try ws.initialize()
        let order100 = try ws.change("INSERT INTO orders VALUES (100, 1, 'SKU-1', 2, 19.98, '2026-03-14 23:30:00+00')")
        let reprice = try ws.change("UPDATE products SET list_price = 12.50 WHERE product_id = 'SKU-1'")
        try ws.change("INSERT INTO orders VALUES (101, 1, 'SKU-1', 1, 12.50, '2026-03-15 08:00:00+00'), (102, 2, 'SKU-1', 1, 12.50, '2026-03-15 09:00:00+00')")
        try ws.change("UPDATE customers SET email = 'ann.lee@example.com' WHERE customer_id = 1")       // type 1
        try ws.change("UPDATE customers SET segment = 'Home Office' WHERE customer_id = 1")              // type 2
        let requantity = try ws.change("UPDATE orders SET quantity = 3, amount = 29.97 WHERE order_id = 100")
        try ws.change("DELETE FROM orders WHERE order_id = 102; DELETE FROM customers WHERE customer_id = 2")
        try ws.run()
        #expect(try ws.schemaExists("shop_dw"))

        let sku = try ws.versions("dim_products", "SKU-1")
        try #require(sku.count == 2, "\(sku)")
        #expect(sku[0]["list_price"] == "9.99" && sku[1]["list_price"] == "12.50" && sku[1]["change_type"] == "UPDATE")
        let repriced = ws.commit(of: reprice)
        #expect(sku[1]["valid_from_utc"] == repriced.time && sku[0]["valid_to_utc"] == repriced.time)
        let ann = try ws.versions("dim_customers", "1")
        try #require(ann.count == 2, "\(ann)")
        #expect(ann[0]["email"] == "ann.lee@example.com" && ann[0]["segment"] == "Consumer", "the type-1 change landed on the then-current version")
        #expect(ann[1]["segment"] == "Home Office" && ann[1]["email"] == "ann.lee@example.com" && ann[1]["is_current"] == "t")
        let bo = try ws.versions("dim_customers", "2")
        #expect(bo.map { $0["change_type"] } == ["INSERT", "DELETE"] && bo.allSatisfy { $0["is_current"] == "f" })

        let o100 = try #require(try ws.fact("100", table: "fact_orders", grain: "order_id"))
        #expect(o100["customer_key"] == ann[0]["customer_key"] && o100["product_key"] == sku[0]["product_key"], "point in time: \(o100)")
        #expect(o100["quantity"] == "3" && o100["amount"] == "29.97" && o100["date_key"] == "20260314")
        let (created, updated) = (ws.commit(of: order100), ws.commit(of: requantity))
        #expect(o100["created_at_utc"] == created.time && o100["updated_at_utc"] == updated.time && o100["source_lsn"] == updated.lsn)
        let o101 = try #require(try ws.fact("101", table: "fact_orders", grain: "order_id"))
        #expect(o101["product_key"] == sku[1]["product_key"] && o101["customer_key"] == ann[0]["customer_key"] && o101["date_key"] == "20260315")
        #expect(try ws.fact("102", table: "fact_orders", grain: "order_id") == nil)
        #expect(try ws.count("dim_customers", where: "customer_key = -1") == 1)
        #expect(try ws.count("dim_products", where: "product_key = -1") == 1)
        // Nothing of the surgical model was created.
        #expect(try ws.dwValue("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'shop_dw' AND table_name LIKE 'dim_robots'") == "0")
    }
}
