import Foundation
import Testing
import TestSupport

/// `cdc init`: idempotence, warnings, and the publication it creates.
@Suite(.timeLimit(.minutes(5))) struct InitTests {
    static func facility(_ id: String) -> String {
        "INSERT INTO facilities VALUES ('\(id)', 'Facility \(id)', 'Boston', 'MA', 'US', 'Academic', 100)"
    }

    @Test func reRunningInitOnAnInitialisedLogAddsNothing() throws {
        let ws = try CDCWorkspace("reinit")
        defer { ws.tearDown() }
        try ws.sql(Self.facility("F1"))
        let first = try ws.cdc(["init", "--config", ws.configPath])
        #expect(first.status == 0, "first init: \(first.stderr)")
        #expect(first.stdout.contains("initialised:") && !first.stdout.contains("already"))
        try ws.sql(Self.facility("F2"))
        try ws.catchUp()
        let before = try ws.exportLines()
        #expect(before.count == 9, "7 relation records, the snapshot row and the streamed insert")

        let again = try ws.cdc(["init", "--config", ws.configPath])
        #expect(again.status == 0, "second init: \(again.stderr)")
        #expect(again.stdout.contains("already initialised"), "stdout: \(again.stdout)")
        #expect(try ws.exportLines() == before, "re-running init adds no events")
        #expect(try ws.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "1")

        // The stream continues where it was: the next change arrives once, nothing is copied again.
        try ws.sql(Self.facility("F3"))
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
        try ws.sql(Self.facility("F1"))
        try ws.sql("INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, facility_id) VALUES ('R1', 'SN1', 'da Vinci Xi', 'F1')")
        try ws.initialize()
        let published = try ws.sql("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = '\(ws.slot)' ORDER BY 1")
        #expect(published.map { $0[0] } == ["public.facilities", "public.surgeons"])
        #expect(try ws.sql("SELECT puballtables FROM pg_publication WHERE pubname = '\(ws.slot)'") == [["f"]])

        try ws.sql(Self.facility("F2"))
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
}
