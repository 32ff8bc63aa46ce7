import EventLog
import Foundation
import Testing
import TestSupport

/// The history index: (table, key) → every record that touched that row, in log order, written in
/// the same LMDB transaction as the records.
@Suite struct HistoryIndexTests {
    @Test func aRowsHistoryIsExactlyTheEventsThatTouchedIt() throws {
        let ws = try CDCWorkspace("history")
        defer { ws.tearDown() }
        try ws.sql("INSERT INTO surgeons VALUES ('S1', 'Dr One', 'Urology', 1, 'Basic'), ('S2', 'Dr Two', 'Urology', 2, 'Basic')")
        try ws.initialize()
        try ws.sql("""
            UPDATE surgeons SET certification_level = 'Advanced' WHERE surgeon_id = 'S1';
            UPDATE surgeons SET years_experience = 9 WHERE surgeon_id = 'S2';
            BEGIN; UPDATE surgeons SET years_experience = 2 WHERE surgeon_id = 'S1';
                   UPDATE surgeons SET surgeon_name = 'Dr Uno' WHERE surgeon_id = 'S1'; COMMIT;
            UPDATE surgeons SET surgeon_id = 'S1-NEW' WHERE surgeon_id = 'S1';
            DELETE FROM surgeons WHERE surgeon_id = 'S1-NEW';
            INSERT INTO surgeons VALUES ('S1', 'Dr One Again', 'Urology', 1, 'Basic');
            """)
        try ws.catchUp()
        let events = try ws.rowEvents(table: "surgeons")
        func touches(_ id: String) -> [Int] {
            events.filter { e in
                [e["before"], e["after"]].contains { ($0 as? [String: Any])?["surgeon_id"] as? String == id }
            }.compactMap { $0["seq"] as? Int }
        }
        let log = try EventLog.openForReading(path: ws.logPath)
        func history(_ id: String) throws -> [Int] {
            try log.history(prefix: HistoryKey.prefix(table: "public.surgeons", key: [Array(id.utf8)])).map { Int($0) }
        }
        // S1: snapshot, update, two updates in one transaction, the key change away from it, the re-insert.
        #expect(try history("S1") == touches("S1"))
        #expect(try history("S1").count == 6)
        // S1-NEW: the key change into it, then its delete.
        #expect(try history("S1-NEW") == touches("S1-NEW"))
        #expect(try history("S1-NEW").count == 2)
        #expect(try history("S2") == touches("S2"))
        #expect(try history("S2").count == 2)
        #expect(try history("S3").isEmpty)
        #expect(try log.verify().records == UInt64(try ws.export().count))
    }
}
