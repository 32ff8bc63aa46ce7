import Foundation
import PGClient
import Testing
import TestSupport

/// What each kind of source change becomes in the log.
@Suite(.timeLimit(.minutes(15))) struct ChangeSemanticsTests {
    /// The row events of `table` ("public.x"), in log order.
    static func rows(_ events: [Event], _ table: String) -> [Event] {
        events.filter { $0["table"] as? String == table && $0["op"] as? String != "relation" }
    }

    static func isUnchangedToastMarker(_ value: Any?) -> Bool {
        guard let marker = value as? [String: Any], marker.count == 1, let flag = marker["unchanged_toast"] as? NSNumber else { return false }
        return isJSONBool(flag) && flag.boolValue
    }

    @Test func unchangedToastIsTheMarkerAndNullIsNull() throws {
        let ws = try CDCWorkspace("toast")
        defer { ws.tearDown() }
        let big1 = "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 3000) i"
        let big2 = "SELECT string_agg(md5((-i)::text), '') FROM generate_series(1, 3000) i"
        try ws.sql("""
            CREATE TABLE docs (id int PRIMARY KEY, body text, note text);
            ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
            INSERT INTO docs SELECT 1, (\(big1)), 'first';
            """)
        // The value really lives in the TOAST table (uncompressed, out of line).
        let toastTable = try ws.sql("SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'docs'::regclass")[0][0]!
        let toastRows = try ws.sql("SELECT count(*) FROM \(toastTable)")
        try #require(Int(toastRows[0][0] ?? "0")! > 0, "body is stored out of line")
        let value1 = try ws.sql(big1)[0][0]!, value2 = try ws.sql(big2)[0][0]!
        try ws.initialize()
        try ws.sql("INSERT INTO docs SELECT 2, (\(big2)), 'second'")
        try ws.sql("UPDATE docs SET note = 'touched' WHERE id = 1")          // body unchanged: not sent
        try ws.sql("UPDATE docs SET body = NULL, note = 'nulled' WHERE id = 2")  // body NULL: sent as null
        try ws.sql("UPDATE docs SET note = 'still null' WHERE id = 2")       // NULL is not TOASTed: null again
        try ws.sql("UPDATE docs SET body = 'short', note = 'replaced' WHERE id = 1")
        try ws.sql("UPDATE docs SET note = 'touched again' WHERE id = 1")    // short inline value: sent
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let rows = Self.rows(events, "public.docs")
        try #require(rows.count == 7, "\(rows.count) row events")
        #expect(rows.map { $0["op"] as? String } == ["snapshot", "insert", "update", "update", "update", "update", "update"])
        #expect(sameBytes(row(rows[0])?["body"] as? String, value1), "the snapshot holds the whole TOASTed value")
        #expect(sameBytes(row(rows[1])?["body"] as? String, value2), "the insert holds the whole TOASTed value")

        let touched = row(rows[2])
        #expect(touched?["id"] as? Int == 1)
        #expect(touched?["note"] as? String == "touched")
        #expect(Self.isUnchangedToastMarker(touched?["body"]), "unchanged TOAST is {\"unchanged_toast\":true}: \(String(describing: touched?["body"]))")

        let nulled = row(rows[3])
        #expect(nulled?["note"] as? String == "nulled")
        #expect(nulled?["body"] is NSNull, "set to NULL exports null, not the marker: \(String(describing: nulled?["body"]))")
        let stillNull = row(rows[4])
        #expect(stillNull?["note"] as? String == "still null")
        #expect(stillNull?["body"] is NSNull, "a NULL left unchanged exports null, not the marker: \(String(describing: stillNull?["body"]))")

        #expect(row(rows[5])?["body"] as? String == "short")
        #expect(row(rows[6])?["body"] as? String == "short", "an inline value is always sent")
        #expect(row(rows[6])?["note"] as? String == "touched again")
        // The marker is never used for anything else.
        for event in rows where event["seq"] as? Int != rows[2]["seq"] as? Int {
            #expect(!Self.isUnchangedToastMarker(row(event)?["body"]), "seq \(event["seq"] ?? "?") has no marker")
        }
    }

    @Test func replicaIdentityDefaultSendsTheKeyAndFullSendsTheRow() throws {
        let ws = try CDCWorkspace("identity")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE ri_default (id int PRIMARY KEY, a text, b int);
            CREATE TABLE ri_full (id int PRIMARY KEY, a text, b int);
            ALTER TABLE ri_full REPLICA IDENTITY FULL;
            INSERT INTO ri_default VALUES (1, 'one', 10), (2, 'two', 20), (3, 'three', 30);
            INSERT INTO ri_full VALUES (1, 'one', 10), (2, 'two', 20);
            """)
        try ws.initialize()
        try ws.sql("UPDATE ri_default SET a = 'uno', b = 11 WHERE id = 1")
        try ws.sql("UPDATE ri_default SET id = 30, a = 'tres' WHERE id = 3")
        try ws.sql("DELETE FROM ri_default WHERE id = 2")
        try ws.sql("UPDATE ri_full SET a = 'uno', b = 11 WHERE id = 1")
        try ws.sql("DELETE FROM ri_full WHERE id = 2")
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let defaults = Self.rows(events, "public.ri_default").filter { $0["op"] as? String != "snapshot" }
        let fulls = Self.rows(events, "public.ri_full").filter { $0["op"] as? String != "snapshot" }
        try #require(defaults.count == 3 && fulls.count == 2)
        // No change of definition, no new version: one relation record per table.
        #expect(relationRecords(events, table: "public.ri_default").count == 1)
        #expect(relationRecords(events, table: "public.ri_full").count == 1)
        #expect(relationRecords(events, table: "public.ri_default").allSatisfy {
            ($0["relation"] as? [String: Any])?["replica_identity"] as? String == "d" })
        #expect(relationRecords(events, table: "public.ri_full").allSatisfy {
            ($0["relation"] as? [String: Any])?["replica_identity"] as? String == "f" })

        // DEFAULT, key kept: the new row in full; PostgreSQL sends no old values, so before is null and
        // there is no before_kind (schemas/event-log.md: "update/delete with old values have before_kind").
        let update = defaults[0]
        #expect(update["op"] as? String == "update")
        #expect(canonicalJSON(row(update)) == canonicalJSON(["id": 1, "a": "uno", "b": 11]))
        #expect(update["before"] is NSNull)
        #expect(update["before_kind"] == nil)

        // DEFAULT, key changed: before has the old key (others null), after the new row.
        let rekey = defaults[1]
        #expect(rekey["op"] as? String == "update")
        #expect(rekey["before_kind"] as? String == "key")
        #expect(canonicalJSON(row(rekey, "before")) == canonicalJSON(["id": 3, "a": NSNull(), "b": NSNull()]))
        #expect(canonicalJSON(row(rekey)) == canonicalJSON(["id": 30, "a": "tres", "b": 30]))

        // DEFAULT delete: the key only.
        let delete = defaults[2]
        #expect(delete["op"] as? String == "delete")
        #expect(delete["before_kind"] as? String == "key")
        #expect(canonicalJSON(row(delete, "before")) == canonicalJSON(["id": 2, "a": NSNull(), "b": NSNull()]))
        #expect(delete["after"] is NSNull)

        // FULL: the whole old row.
        #expect(fulls[0]["op"] as? String == "update")
        #expect(fulls[0]["before_kind"] as? String == "row")
        #expect(canonicalJSON(row(fulls[0], "before")) == canonicalJSON(["id": 1, "a": "one", "b": 10]))
        #expect(canonicalJSON(row(fulls[0])) == canonicalJSON(["id": 1, "a": "uno", "b": 11]))
        #expect(fulls[1]["op"] as? String == "delete")
        #expect(fulls[1]["before_kind"] as? String == "row")
        #expect(canonicalJSON(row(fulls[1], "before")) == canonicalJSON(["id": 2, "a": "two", "b": 20]))
        #expect(fulls[1]["after"] is NSNull)
    }

    @Test func truncateOfTwoTablesWithRestartIdentityCascade() throws {
        let ws = try CDCWorkspace("truncate")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE tr_parent (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text);
            CREATE TABLE tr_child (id int PRIMARY KEY, parent_id bigint REFERENCES tr_parent (id));
            CREATE TABLE tr_other (id serial PRIMARY KEY, v text);
            CREATE TABLE tr_untouched (id int PRIMARY KEY);
            INSERT INTO tr_parent (name) VALUES ('p1'), ('p2');
            INSERT INTO tr_child VALUES (1, 1), (2, 2);
            INSERT INTO tr_other (v) VALUES ('o1');
            INSERT INTO tr_untouched VALUES (1);
            """)
        try ws.initialize()
        try ws.sql("INSERT INTO tr_other (v) VALUES ('o2')")
        try ws.sql("TRUNCATE tr_parent, tr_other RESTART IDENTITY CASCADE")
        try ws.sql("INSERT INTO tr_other (v) VALUES ('after')")
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let truncates = events.filter { $0["op"] as? String == "truncate" }
        // One event per truncated table: the two named and the one CASCADE reached.
        #expect(truncates.compactMap { $0["table"] as? String }.sorted() == ["public.tr_child", "public.tr_other", "public.tr_parent"])
        for event in truncates {
            #expect(event["cascade"] as? Bool == true, "cascade of \(event["table"] ?? "?")")
            #expect(event["restart_identity"] as? Bool == true, "restart_identity of \(event["table"] ?? "?")")
            #expect(event["before"] is NSNull && event["after"] is NSNull)
            #expect(event["xid"] as? Int != nil && event["xid"] as? Int == truncates[0]["xid"] as? Int, "one transaction")
            #expect(event["lsn"] as? String == truncates[0]["lsn"] as? String)
        }
        // The stream goes on after it, in order.
        let other = Self.rows(events, "public.tr_other").map { "\($0["op"] ?? "?"):\(row($0)?["v"] ?? "-")" }
        #expect(other == ["snapshot:o1", "insert:o2", "truncate:-", "insert:after"])
        #expect(row(Self.rows(events, "public.tr_other").last)?["id"] as? Int == 1, "identity restarted")
        #expect(!events.contains { $0["table"] as? String == "public.tr_untouched" && $0["op"] as? String == "truncate" })
    }

    @Test func schemaChangesMidStreamAddRelationVersions() throws {
        let ws = try CDCWorkspace("alter")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE evolve (id int PRIMARY KEY, a text, b int);
            INSERT INTO evolve VALUES (0, 'zero', 0);
            """)
        try ws.initialize()
        try ws.sql("INSERT INTO evolve VALUES (1, 'one', 1)")
        try ws.catchUp()
        try ws.sql("ALTER TABLE evolve ADD COLUMN c text DEFAULT 'dflt'")
        try ws.sql("INSERT INTO evolve VALUES (2, 'two', 2, 'c2')")
        try ws.sql("INSERT INTO evolve (id, a, b) VALUES (20, 'twenty', 20)")
        try ws.sql("ALTER TABLE evolve DROP COLUMN a")
        try ws.sql("INSERT INTO evolve (id, b, c) VALUES (3, 3, 'c3')")
        try ws.sql("ALTER TABLE evolve ALTER COLUMN b TYPE bigint")
        try ws.sql("INSERT INTO evolve (id, b, c) VALUES (4, 9000000000, 'c4')")
        try ws.sql("UPDATE evolve SET c = 'c1' WHERE id = 1")
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let relations = relationRecords(events, table: "public.evolve")
        #expect(relations.map(columnNames) == [["id", "a", "b"], ["id", "a", "b", "c"], ["id", "b", "c"], ["id", "b", "c"]],
                "one relation record per version")
        try #require(relations.count == 4)
        let types = relations.map { columns($0).map { $0["type"] as? String ?? "?" } }
        #expect(types == [["int4", "text", "int4"], ["int4", "text", "int4", "text"], ["int4", "int4", "text"], ["int4", "int8", "text"]])
        let seqs = relations.map { $0["seq"] as? Int ?? -1 }

        let rows = Self.rows(events, "public.evolve")
        let summary = rows.map { event -> String in
            let after = row(event) ?? [:]
            return "\(event["op"] ?? "?") \(after["id"] ?? "?") [\(after.keys.sorted().joined(separator: ","))] rel \(seqs.firstIndex(of: event["relation_seq"] as? Int ?? 0) ?? -1)"
        }
        #expect(summary == [
            "snapshot 0 [a,b,id] rel 0",
            "insert 1 [a,b,id] rel 0",
            "insert 2 [a,b,c,id] rel 1",
            "insert 20 [a,b,c,id] rel 1",
            "insert 3 [b,c,id] rel 2",
            "insert 4 [b,c,id] rel 3",
            "update 1 [b,c,id] rel 3",
        ])
        try #require(rows.count == 7)
        #expect(row(rows[1])?["a"] as? String == "one", "rows before the change keep their columns")
        #expect(row(rows[3])?["c"] as? String == "dflt")
        #expect(rawScalar(try ws.exportLines()[(rows[5]["seq"] as? Int ?? 1) - 1], key: "b") == "9000000000", "b is now an int8 number")
        #expect(row(rows[6])?["c"] as? String == "c1")
    }

    @Test func logicalMessagesTransactionalNonTransactionalAndBinary() throws {
        let ws = try CDCWorkspace("messages")
        defer { ws.tearDown() }
        try ws.sql("CREATE TABLE msgs (id int PRIMARY KEY)")
        try ws.initialize()
        try ws.sql("""
            BEGIN;
            INSERT INTO msgs VALUES (1);
            SELECT pg_logical_emit_message(true, 'audit', 'hello ✓ "quoted"
            second line');
            SELECT pg_logical_emit_message(true, 'bin', '\\xff00fe'::bytea);
            COMMIT;
            """)
        try ws.sql("SELECT pg_logical_emit_message(false, 'ping', 'non-transactional')")
        try ws.sql("""
            BEGIN;
            INSERT INTO msgs VALUES (2);
            SELECT pg_logical_emit_message(false, 'sent-anyway', 'emitted at once');
            SELECT pg_logical_emit_message(true, 'gone', 'rolled back');
            ROLLBACK;
            """)
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let messages = events.filter { $0["op"] as? String == "message" }
        #expect(messages.map { $0["prefix"] as? String } == ["audit", "bin", "ping", "sent-anyway"])
        #expect(Self.rows(events, "public.msgs").map { row($0)?["id"] as? Int } == [1], "the rolled-back insert is absent")
        try #require(messages.count == 4)
        let insert = Self.rows(events, "public.msgs")[0]

        let audit = messages[0]
        #expect(audit["transactional"] as? Bool == true)
        #expect(sameBytes(audit["content"] as? String, "hello ✓ \"quoted\"\nsecond line"))
        #expect(audit["content_encoding"] as? String == "utf8")
        #expect(audit["xid"] as? Int != nil && audit["xid"] as? Int == insert["xid"] as? Int, "in the insert's transaction")
        #expect(audit["lsn"] as? String == insert["lsn"] as? String)

        let binary = messages[1]
        #expect(binary["transactional"] as? Bool == true)
        #expect(binary["content_encoding"] as? String == "base64")
        #expect(binary["content"] as? String == "/wD+")
        #expect(binary["xid"] as? Int == insert["xid"] as? Int)

        #expect(messages.allSatisfy { $0["table"] is NSNull }, "messages belong to no table")
        for message in messages[2...] {
            #expect(message["transactional"] as? Bool == false)
            #expect(message["xid"] is NSNull, "a non-transactional message has no xid")
            #expect(message["content_encoding"] as? String == "utf8")
        }
        #expect(messages[2]["content"] as? String == "non-transactional")
        #expect(messages[3]["content"] as? String == "emitted at once")
        #expect(lsnValue(messages[2]["lsn"] as? String) ?? 0 > lsnValue(insert["lsn"] as? String) ?? .max)

        // The log ended on a non-transactional message: the next run resumes after it, without
        // repeating it and without losing what follows.
        try ws.sql("SELECT pg_logical_emit_message(false, 'next', 'after restart')")
        try ws.sql("INSERT INTO msgs VALUES (3)")
        try ws.catchUp()
        let resumed = try ws.export()
        expectExportInvariants(resumed)
        #expect(resumed.count == events.count + 2)
        #expect(resumed.filter { $0["op"] as? String == "message" }.map { $0["prefix"] as? String } == ["audit", "bin", "ping", "sent-anyway", "next"])
        #expect(Self.rows(resumed, "public.msgs").map { row($0)?["id"] as? Int } == [1, 3])
    }

    @Test func transactionWithAReplicationOriginIsCaptured() throws {
        let ws = try CDCWorkspace("origin")
        let origin = "origin_\(ws.database)"
        defer {
            ws.tearDown()
            _ = try? ws.server.execute("SELECT pg_replication_origin_drop('\(origin)')")
        }
        try ws.initialize()
        do {
            let session = try ws.server.connect(database: ws.database)
            try session.execute("SELECT pg_replication_origin_create('\(origin)')")
            try session.execute("SELECT pg_replication_origin_session_setup('\(origin)')")
            try session.execute("INSERT INTO surgeons VALUES ('S-ORIGIN', 'Dr Origin', 'Urology', 1, 'Basic')")
            try session.execute("BEGIN; INSERT INTO facilities VALUES ('F-ORIGIN', 'Replicated', NULL, NULL, NULL, NULL, 1); UPDATE surgeons SET years_experience = 2 WHERE surgeon_id = 'S-ORIGIN'; COMMIT")
        }
        try ws.sql("INSERT INTO surgeons VALUES ('S-LOCAL', 'Dr Local', 'Urology', 1, 'Basic')")
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let rows = events.filter { $0["op"] as? String != "relation" }
        // Each transaction of the session with an origin starts with an origin record naming it; the
        // local one has none.
        #expect(rows.map { "\($0["op"] ?? "?") \($0["table"] as? String ?? $0["origin"] as? String ?? "?")" } == [
            "origin \(origin)", "insert public.surgeons", "origin \(origin)", "insert public.facilities", "update public.surgeons",
            "insert public.surgeons",
        ])
        #expect(row(rows[1])?["surgeon_id"] as? String == "S-ORIGIN")
        #expect(row(rows.last)?["surgeon_id"] as? String == "S-LOCAL")
        #expect(rows.filter { $0["table"] is String }.map { $0["origin"] as? String } == [origin, origin, origin, nil])
    }

    @Test func rolledBackWorkIsAbsentAndTheRestOfItsTransactionPresent() throws {
        let ws = try CDCWorkspace("rollback")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.sql("""
            BEGIN;
            INSERT INTO surgeons VALUES ('S-A', 'Dr A', 'Urology', 1, 'Basic');
            SAVEPOINT s1;
            INSERT INTO surgeons VALUES ('S-B', 'Dr B', 'Urology', 1, 'Basic');
            UPDATE surgeons SET surgeon_name = 'Dr A (undone)' WHERE surgeon_id = 'S-A';
            ROLLBACK TO SAVEPOINT s1;
            INSERT INTO surgeons VALUES ('S-C', 'Dr C', 'Urology', 1, 'Basic');
            SAVEPOINT s2;
            INSERT INTO facilities VALUES ('F-D', 'Kept', NULL, NULL, NULL, NULL, 1);
            RELEASE SAVEPOINT s2;
            COMMIT;
            """)
        try ws.sql("""
            BEGIN;
            INSERT INTO surgeons VALUES ('S-E', 'Dr E', 'Urology', 1, 'Basic');
            ROLLBACK;
            """)
        try ws.sql("INSERT INTO surgeons VALUES ('S-F', 'Dr F', 'Urology', 1, 'Basic')")
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let rows = events.filter { $0["op"] as? String != "relation" }
        #expect(rows.map { (row($0)?["surgeon_id"] ?? row($0)?["facility_id"]) as? String } == ["S-A", "S-C", "F-D", "S-F"])
        #expect(row(rows.first)?["surgeon_name"] as? String == "Dr A", "the rolled-back update is absent")
        try #require(rows.count == 4)
        #expect(Set(rows[0...2].map { $0["xid"] as? Int }).count == 1, "one transaction")
        #expect(Set(rows[0...2].map { $0["lsn"] as? String }).count == 1)
        #expect(rows[3]["xid"] as? Int != rows[0]["xid"] as? Int)
    }

    @Test func interleavedTransactionsAreWholeContiguousAndInCommitOrder() throws {
        let ws = try CDCWorkspace("interleave")
        defer { ws.tearDown() }
        try ws.sql("INSERT INTO facilities VALUES ('F0', 'Before', NULL, NULL, NULL, NULL, 1)")
        try ws.initialize()
        let first = try ws.server.connect(database: ws.database)
        let second = try ws.server.connect(database: ws.database)
        try first.execute("BEGIN")
        try first.execute("INSERT INTO surgeons VALUES ('S1', 'Dr 1', 'Urology', 1, 'Basic')")
        try second.execute("BEGIN")
        try second.execute("INSERT INTO facilities VALUES ('F1', 'One', NULL, NULL, NULL, NULL, 10)")
        try first.execute("INSERT INTO surgeons VALUES ('S2', 'Dr 2', 'Urology', 2, 'Basic')")
        try second.execute("UPDATE facilities SET bed_count = 11 WHERE facility_id = 'F1'")
        try first.execute("UPDATE facilities SET bed_count = 5 WHERE facility_id = 'F0'")
        try second.execute("INSERT INTO facilities VALUES ('F2', 'Two', NULL, NULL, NULL, NULL, 20)")
        try second.execute("COMMIT")
        try first.execute("INSERT INTO surgeons VALUES ('S3', 'Dr 3', 'Urology', 3, 'Basic')")
        try first.execute("DELETE FROM surgeons WHERE surgeon_id = 'S2'")
        try first.execute("COMMIT")
        try ws.sql("UPDATE facilities SET bed_count = 12 WHERE facility_id = 'F1'")
        try ws.catchUp()
        try ws.sql("INSERT INTO surgeons VALUES ('S4', 'Dr 4', 'Urology', 4, 'Basic')")
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let rows = events.filter { $0["op"] as? String != "relation" }
        let summary = rows.map { event -> String in
            let values = row(event) ?? row(event, "before") ?? [:]
            return "\(event["op"] ?? "?") \(values["facility_id"] ?? values["surgeon_id"] ?? "?")"
        }
        // The second transaction committed first: it comes first, whole; then the first, whole.
        #expect(summary == ["snapshot F0", "insert F1", "update F1", "insert F2",
                            "insert S1", "insert S2", "update F0", "insert S3", "delete S2",
                            "update F1", "insert S4"])
        try #require(rows.count == 11)
        let xids = rows.map { $0["xid"] as? Int }
        #expect(Set(xids[1...3]).count == 1 && Set(xids[4...8]).count == 1 && xids[1] != xids[4])
        #expect(lsnValue(rows[1]["lsn"] as? String)! < lsnValue(rows[4]["lsn"] as? String)!)
        #expect(lsnValue(rows[0]["lsn"] as? String)! <= lsnValue(rows[1]["lsn"] as? String)!,
                "the snapshot's consistent point precedes every streamed commit")
        // A third run with nothing new appends nothing.
        try ws.catchUp()
        #expect(try ws.export().count == events.count)
    }
}
