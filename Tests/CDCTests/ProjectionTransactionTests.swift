import Foundation
import Testing
import TestSupport

/// What the warehouse's own transactions show: the projector writes each batch's rows and its checkpoint
/// in one warehouse transaction, so a crash anywhere leaves rows and checkpoint agreeing. Observed with
/// statement-level triggers that record the transaction id (`pg_current_xact_id()`) of every write,
/// an oracle on the server's side that does not depend on killing cdc at the right microsecond.
@Suite(.timeLimit(.minutes(15))) struct ProjectionTransactionTests {
    /// Adds, in the warehouse, a table `audit.writes` and a trigger on every base table of `schema` that
    /// records (table, transaction id) for each statement that writes it.
    static func recordWrites(_ ws: WarehouseWorkspace, schema: String) throws {
        let tables = try ws.dw("""
            SELECT table_name FROM information_schema.tables
            WHERE table_schema = '\(schema)' AND table_type = 'BASE TABLE' ORDER BY 1
            """).compactMap { $0[0] }
        #expect(tables.contains("cdc_checkpoint"), "the warehouse has a checkpoint table: \(tables)")
        var sql = """
            CREATE SCHEMA audit;
            CREATE TABLE audit.writes (tbl text NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id());
            CREATE FUNCTION audit.note() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO audit.writes (tbl) VALUES (TG_TABLE_NAME); RETURN NULL; END $$;
            """
        for table in tables {
            sql += "CREATE TRIGGER audit_writes AFTER INSERT OR UPDATE OR DELETE ON \(schema).\"\(table)\" FOR EACH STATEMENT EXECUTE FUNCTION audit.note();\n"
        }
        try ws.dw(sql)
    }

    @Test func everyBatchWritesItsRowsAndItsCheckpointInOneWarehouseTransaction() throws {
        let ws = try WarehouseWorkspace("po_txn")
        defer { ws.tearDown() }
        try ws.loadSeed()
        try ws.initialize()
        try Self.recordWrites(ws, schema: ws.schema)

        // Live projection while traffic runs (many small batches), then the catch-up of what is left.
        let live = try ws.startRun()
        #expect(live.waitForLog("streaming"), "\(live.stderr)")
        try ws.workload(["--transactions", "300", "--clients", "2"])
        try ws.change("UPDATE facilities SET facility_name = facility_name || ' (renamed)' WHERE facility_id = 'FAC-001'")
        try ws.change("DELETE FROM surgical_procedures WHERE procedure_id IN (SELECT procedure_id FROM surgical_procedures ORDER BY procedure_id LIMIT 3)")
        live.send(SIGTERM)
        #expect(live.wait().status == 0, "\(live.stderr)")
        try ws.run()

        let counts = try ws.dw("""
            SELECT count(DISTINCT xid) FILTER (WHERE tbl = 'cdc_checkpoint'),
                   count(DISTINCT xid) FILTER (WHERE tbl <> 'cdc_checkpoint'),
                   count(DISTINCT tbl) FILTER (WHERE tbl <> 'cdc_checkpoint')
            FROM audit.writes
            """)[0].map { Int($0 ?? "") ?? -1 }
        #expect(counts[0] > 1, "the projector wrote several batches (checkpoint updates in \(counts[0]) transactions)")
        #expect(counts[2] >= 3, "the batches wrote dimensions and facts (\(counts[2]) tables written)")
        let orphans = try ws.dw("""
            SELECT w.tbl, w.xid::text FROM audit.writes w
            WHERE w.tbl <> 'cdc_checkpoint'
              AND NOT EXISTS (SELECT 1 FROM audit.writes c WHERE c.tbl = 'cdc_checkpoint' AND c.xid = w.xid)
            ORDER BY 2 LIMIT 5
            """)
        #expect(orphans.isEmpty, "rows written in a warehouse transaction that did not also move the checkpoint: \(orphans)")
        // And the warehouse is where its checkpoint says: at the log's head.
        let digest = try ws.cdc(["log", "digest", "--log", ws.source.logPath])
        let head = (try JSONSerialization.jsonObject(with: Data(digest.stdout.utf8)) as? [String: Any])?["seq"] as? Int
        let checkpoint = try ws.checkpoint().first?["last_seq"]
        #expect(head != nil && checkpoint == head.map(String.init), "checkpoint \(checkpoint ?? "none") at the log's head: \(digest.stdout)")
    }
}
