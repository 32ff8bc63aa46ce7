import Foundation
import Testing
import TestSupport

/// Change capture through the real `cdc` binary against a real PostgreSQL.
@Suite(.timeLimit(.minutes(15))) struct CaptureStreamTests {
    @Test func snapshotThenStreamInCommitOrderWithoutRolledBackWork() throws {
        let ws = try CDCWorkspace("stream")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy", type: "Academic"))
        try ws.initialize()
        try ws.sql("""
            BEGIN;
            UPDATE facilities SET bed_count = 301 WHERE facility_id = 'F1';
            INSERT INTO surgeons VALUES ('S1', 'Dr A', 'Urology', 3, 'Basic');
            COMMIT;
            BEGIN; INSERT INTO surgeons VALUES ('S2', 'Dr B', 'Urology', 4, 'Basic'); ROLLBACK;
            INSERT INTO surgeons VALUES ('S3', 'Dr C', 'Urology', 5, 'Expert');
            """)
        try ws.catchUp()

        let events = try ws.export()
        #expect(events.map { $0["seq"] as? Int } == Array(1...events.count).map { $0 }, "seq is dense from 1")
        let rows = events.filter { $0["op"] as? String != "relation" }
        #expect(rows.map { $0["op"] as? String } == ["snapshot", "update", "insert", "insert"])
        #expect(rows.compactMap { ($0["after"] as? [String: Any])?["surgeon_id"] as? String } == ["S1", "S3"])
        #expect((rows[1]["after"] as? [String: Any])?["bed_count"] as? Int == 301)
        // Both changes of the first transaction share its xid and commit LSN; the next commits later.
        #expect(rows[1]["xid"] as? Int == rows[2]["xid"] as? Int)
        #expect(rows[1]["lsn"] as? String == rows[2]["lsn"] as? String)
        #expect(rows[3]["xid"] as? Int != rows[2]["xid"] as? Int)
        #expect(rows[0]["xid"] is NSNull, "snapshot rows belong to no transaction")

        // A second run with nothing new appends nothing: no duplicates on restart.
        try ws.catchUp()
        #expect(try ws.export().count == events.count)
    }
}
