import Foundation
import Testing
import TestSupport

/// Kimball's early-arriving facts: a milestone (`updated_by`, here an outcome) committed before its fact
/// row (a source without the foreign key) is kept in `cdc_early_arrivals` and applied when the fact
/// arrives; and a fact naming a dimension key deleted at the source points at that key's DELETE row
/// instead of bringing back a current row. Live (`cdc run`, over batches and restarts) and `cdc replay`
/// give the same warehouse.
@Suite(.timeLimit(.minutes(15))) struct EarlyArrivalTests {
    static let dimensions = "\(Fixture.facility("F1", "Mercy")); \(Fixture.surgeon("S1", "Dr. Ada Stone")); \(Fixture.robot("R1", facility: "F1"))"

    static func procedure(_ id: String) -> String { Fixture.procedure(id, robot: "R1", surgeon: "S1", facility: "F1") }

    static func early(_ ws: WarehouseWorkspace) throws -> [WarehouseRow] {
        try ws.dwRecords("SELECT fact_table, milestone, grain::text AS grain, milestone_values::text AS v FROM dw.cdc_early_arrivals ORDER BY grain")
    }

    @Test func anOutcomeBeforeItsProcedureIsAppliedWhenTheProcedureArrives() throws {
        let ws = try WarehouseWorkspace("ea_outcome")
        defer { ws.tearDown() }
        try ws.sql("ALTER TABLE procedure_outcomes DROP CONSTRAINT procedure_outcomes_procedure_id_fkey")
        try ws.initialize()
        try ws.change(Self.dimensions)

        // Separate transactions, the procedure in a later `cdc run` (a restart: the kept outcome is
        // read back from the warehouse).
        try ws.change(Fixture.outcome("P1"))
        // P5: kept, then updated while it waits. P6: kept, then deleted (on_delete = "clear").
        try ws.change(Fixture.outcome("P5", success: "Partially Successful"))
        try ws.change("UPDATE procedure_outcomes SET blood_loss_ml = 300 WHERE procedure_id = 'P5'")
        try ws.change(Fixture.outcome("P6"))
        try ws.change("DELETE FROM procedure_outcomes WHERE procedure_id = 'P6'")
        try ws.run()
        #expect(try ws.fact("P1") == nil)
        let waiting = try Self.early(ws)
        #expect(waiting.map { $0["grain"] } == [#"["P1"]"#, #"["P5"]"#], "kept in the warehouse: \(waiting)")
        #expect(waiting.first?["fact_table"] == "fact_procedures" && waiting.first?["milestone"] == "public.procedure_outcomes")

        let p1 = try ws.change(Self.procedure("P1"))
        // One transaction: the outcome first. Separate transactions in one batch: P3.
        try ws.change("\(Fixture.outcome("P2")); \(Self.procedure("P2"))")
        try ws.change(Fixture.outcome("P3", success: "Unsuccessful"))
        try ws.change(Self.procedure("P3"))
        try ws.change("\(Self.procedure("P5")); \(Self.procedure("P6"))")
        try ws.run()

        let f1 = try #require(try ws.fact("P1"))
        #expect(f1["success_status"] == "Successful" && f1["blood_loss_ml"] == "120" && f1["complication_level"] == "None")
        #expect(f1["hospital_stay_days"] == "2" && f1["patient_satisfaction_score"] == "9.1" && f1["readmission_30day"] == "f", "\(f1)")
        #expect(f1["created_at_utc"] == ws.commit(of: p1).time && f1["updated_at_utc"] == ws.commit(of: p1).time,
                "applied as of the procedure's commit: \(f1)")
        #expect(f1["source_lsn"] == ws.commit(of: p1).lsn)
        #expect(try ws.fact("P2")?["success_status"] == "Successful", "outcome and procedure in one transaction")
        #expect(try ws.fact("P3")?["success_status"] == "Unsuccessful", "in separate transactions of one batch")
        let f5 = try #require(try ws.fact("P5"))
        #expect(f5["success_status"] == "Partially Successful" && f5["blood_loss_ml"] == "300", "the update while it waited: \(f5)")
        let f6 = try #require(try ws.fact("P6"))
        #expect(f6["success_status"] == nil && f6["blood_loss_ml"] == nil, "a deleted outcome is not applied: \(f6)")
        #expect(try Self.early(ws).isEmpty, "nothing waits any more")

        // Across batches of one running `cdc run`.
        let live = try ws.startRun()
        defer { live.killIfRunning() }
        try ws.change(Fixture.outcome("P4", success: "Converted to Open"))
        try poll(what: "the outcome of P4 kept by the running projector", timeout: 60) {
            try Self.early(ws).map { $0["grain"] } == [#"["P4"]"#]
        }
        try ws.change(Self.procedure("P4"))
        try poll(what: "P4 with its outcome", timeout: 60) { try ws.fact("P4")?["success_status"] == "Converted to Open" }
        live.send(SIGTERM)
        #expect(live.wait().status == 0, "\(live.stderr)")
        #expect(try Self.early(ws).isEmpty)

        // The outcome row is changed once its procedure is there: as any milestone.
        try ws.change("UPDATE procedure_outcomes SET blood_loss_ml = 50 WHERE procedure_id = 'P1'")
        try ws.run()
        #expect(try ws.fact("P1")?["blood_loss_ml"] == "50")

        try ws.replay(schema: "rebuilt")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")
    }

    /// A warehouse schema made by a cdc without `cdc_early_arrivals` gets it when the projector opens it.
    @Test func aWarehouseOfAnOlderCdcGetsTheTable() throws {
        let ws = try WarehouseWorkspace("ea_upgrade")
        defer { ws.tearDown() }
        try ws.sql("ALTER TABLE procedure_outcomes DROP CONSTRAINT procedure_outcomes_procedure_id_fkey")
        try ws.initialize()
        try ws.dw("DROP TABLE dw.cdc_early_arrivals")
        try ws.change("\(Self.dimensions); \(Fixture.outcome("P1"))")
        try ws.run()
        #expect(try Self.early(ws).map { $0["grain"] } == [#"["P1"]"#])
        try ws.change(Self.procedure("P1"))
        try ws.run()
        #expect(try ws.fact("P1")?["success_status"] == "Successful")
    }

    @Test func aFactNamingADeletedDimensionKeyPointsAtItsDeleteRow() throws {
        let ws = try WarehouseWorkspace("ea_deleted")
        defer { ws.tearDown() }
        try ws.sql("""
            ALTER TABLE surgical_procedures DROP CONSTRAINT surgical_procedures_surgeon_id_fkey;
            ALTER TABLE surgical_robots DROP CONSTRAINT surgical_robots_facility_id_fkey
            """)
        try ws.initialize()
        try ws.change("\(Self.dimensions); \(Fixture.surgeon("S9", "Dr. Gone")); \(Fixture.facility("F9", "Closed"))")
        try ws.change("DELETE FROM surgeons WHERE surgeon_id = 'S9'; DELETE FROM facilities WHERE facility_id = 'F9'")
        try ws.run()
        // In a later run (the deleted keys are read back from the warehouse), a fact and a dimension row
        // naming them.
        try ws.change(Fixture.procedure("P1", robot: "R1", surgeon: "S9", facility: "F1"))
        try ws.change(Fixture.robot("R9", facility: "F9"))
        // And in the same run as the delete.
        try ws.change("DELETE FROM surgeons WHERE surgeon_id = 'S1'")
        try ws.change(Fixture.procedure("P2", robot: "R1", surgeon: "S1", facility: "F1"))
        try ws.run()

        for (table, id, key, fact) in [("dim_surgeons", "S9", "surgeon_key", "P1"), ("dim_surgeons", "S1", "surgeon_key", "P2")] {
            let versions = try ws.versions(table, id)
            #expect(versions.map { $0["change_type"] } == ["INSERT", "DELETE"], "no new version of \(id): \(versions)")
            #expect(!versions.contains { $0["is_current"] == "t" || $0["is_inferred"] == "t" }, "no current row comes back for \(id)")
            #expect(try ws.fact(fact)?[key] == versions.last?[key], "\(fact) points at \(id)'s DELETE row")
        }
        let f9 = try ws.versions("dim_facilities", "F9")
        #expect(f9.map { $0["change_type"] } == ["INSERT", "DELETE"] && !f9.contains { $0["is_current"] == "t" }, "\(f9)")
        #expect(try ws.current("dim_robots", "R9")?["facility_key"] == f9.last?["facility_key"], "a dimension lookup too")

        // A key inserted again is current again: new facts point at the new version.
        try ws.change(Fixture.surgeon("S9", "Dr. Back"))
        try ws.change(Fixture.procedure("P3", robot: "R1", surgeon: "S9", facility: "F1"))
        try ws.run()
        let back = try #require(try ws.current("dim_surgeons", "S9"))
        #expect(try ws.fact("P3")?["surgeon_key"] == back["surgeon_key"] && back["surgeon_name"] == "Dr. Back")

        try ws.replay(schema: "rebuilt")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")
    }
}
