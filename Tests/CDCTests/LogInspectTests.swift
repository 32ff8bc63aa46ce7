import EventLog
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A log written by the real cdc from a real PostgreSQL, shared by the read-only inspection tests:
/// a snapshot (facilities with REPLICA IDENTITY FULL, surgeons with DEFAULT), then
/// A: insert a surgeon, update a bed count (FULL: old row known);
/// B: update two columns of a facility, update a surgeon (DEFAULT, key kept: no old values), change a
///    surgeon's key (DEFAULT: old key only);
/// C: delete that surgeon;
/// D: truncate robot_maintenance and emit a transactional message.
/// A test_decoding slot, created before A, decodes the same transactions independently of cdc.
struct InspectLog: Sendable {
    let ws: CDCWorkspace
    /// `cdc log export` lines.
    let lines: [String]
    /// A..D as PostgreSQL's test_decoding plugin decoded them, in commit order.
    let decoded: [DecodedTransaction]
    /// Their commit records in the WAL (pg_walinspect), by xid.
    let commitRecords: [UInt32: ServerCommit]
    let xidA, xidB, xidC: Int
    let lsnA, lsnB, lsnC, snapshotLSN: String
    let timeB, timeC: String

    static func build() throws -> InspectLog {
        let ws = try CDCWorkspace("inspect")
        try ws.sql("""
            ALTER TABLE facilities REPLICA IDENTITY FULL;
            INSERT INTO facilities VALUES ('F1', 'Mercy', 'Boston', 'MA', 'US', 'Academic', 300),
                                          ('F2', 'General', 'Austin', 'TX', 'US', 'Teaching', 120);
            INSERT INTO surgeons VALUES ('S1', 'Dr 1', 'Urology', 6, 'Basic');
            """)
        try ws.initialize()
        let decoder = try TestDecodingSlot.create(server: ws.server, database: ws.database)
        defer { decoder.drop() }
        let from = try ws.server.currentLSN()
        try ws.sql("""
            BEGIN;
            INSERT INTO surgeons VALUES ('S2', 'Dr 2', 'Cardiology', 3, 'Advanced');
            UPDATE facilities SET bed_count = 301 WHERE facility_id = 'F1';
            COMMIT;
            """)
        try ws.sql("""
            BEGIN;
            UPDATE facilities SET bed_count = 302, city = 'Cambridge' WHERE facility_id = 'F1';
            UPDATE surgeons SET years_experience = 7 WHERE surgeon_id = 'S1';
            UPDATE surgeons SET surgeon_id = 'S3' WHERE surgeon_id = 'S2';
            COMMIT;
            """)
        try ws.sql("DELETE FROM surgeons WHERE surgeon_id = 'S3'")
        try ws.sql("BEGIN; TRUNCATE robot_maintenance; SELECT pg_logical_emit_message(true, 'audit', 'nightly check'); COMMIT;")
        try ws.catchUp()
        // Read while the test_decoding slot still holds the WAL.
        let decoded = try decoder.transactions()
        let commitRecords = try ws.server.commitRecords(of: decoded, from: from)
        let lines = try ws.exportLines()
        let events = try lines.map(parseEvent)
        func find(_ op: String, _ table: String, _ test: (Event) -> Bool = { _ in true }) throws -> Event {
            guard let event = events.first(where: { $0["op"] as? String == op && $0["table"] as? String == "public." + table && test($0) }) else {
                throw TestFailure("no \(op) of \(table) in the export")
            }
            return event
        }
        let a = try find("insert", "surgeons")
        let b = try find("update", "facilities") { row($0)?["city"] as? String == "Cambridge" }
        let c = try find("delete", "surgeons")
        let snapshot = try find("snapshot", "facilities")
        return InspectLog(ws: ws, lines: lines, decoded: decoded, commitRecords: commitRecords,
                          xidA: a["xid"] as! Int, xidB: b["xid"] as! Int, xidC: c["xid"] as! Int,
                          lsnA: a["lsn"] as! String, lsnB: b["lsn"] as! String, lsnC: c["lsn"] as! String,
                          snapshotLSN: snapshot["lsn"] as! String,
                          timeB: b["commit_time"] as! String, timeC: c["commit_time"] as! String)
    }

    var events: [Event] { lines.map { try! parseEvent($0) } }

    /// `cdc log ARGS... --log DIR`.
    func log(_ arguments: [String], environment: [String: String] = [:]) throws -> Shell.Result {
        try ws.cdc(["log"] + arguments + ["--log", ws.logPath], environment: environment)
    }

    /// `cdc log ARGS...` that must succeed; its stdout lines.
    func lines(_ arguments: [String], environment: [String: String] = [:],
               sourceLocation: SourceLocation = #_sourceLocation) throws -> [String] {
        let result = try log(arguments, environment: environment)
        #expect(result.status == 0, "cdc log \(arguments.joined(separator: " ")): \(result.stderr)", sourceLocation: sourceLocation)
        #expect(result.stderr.isEmpty, "nothing on stderr: \(result.stderr)", sourceLocation: sourceLocation)
        return result.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    /// Export lines whose event satisfies `test`.
    func export(where test: (Event) -> Bool) -> [String] {
        lines.filter { test(try! parseEvent($0)) }
    }
}

@Suite(.timeLimit(.minutes(15))) struct LogInspectTests {
    nonisolated(unsafe) static var built: InspectLog?
    static let shared: Result<InspectLog, any Error> = Result {
        let log = try InspectLog.build()
        built = log
        atexit { LogInspectTests.built?.ws.tearDown() }
        return log
    }

    func fixture() throws -> InspectLog { try Self.shared.get() }

    @Test func showBySeqAndByCommitLSN() throws {
        let f = try fixture()
        #expect(f.lines.count >= 15)
        for seq in [1, 2, f.lines.count / 2, f.lines.count] {
            #expect(try f.lines(["show", String(seq), "--format", "jsonl"]) == [f.lines[seq - 1]])
        }
        // A commit LSN: every event of that transaction, exactly as exported.
        let b = try f.lines(["show", f.lsnB, "--format", "jsonl"])
        #expect(b == f.export { $0["lsn"] as? String == f.lsnB })
        #expect(b.count == 3)
        // The snapshot's consistent point: the whole snapshot (relations and rows).
        let snapshot = try f.lines(["show", f.snapshotLSN])
        #expect(snapshot == f.export { $0["lsn"] as? String == f.snapshotLSN })
        #expect(snapshot.contains { $0.contains("\"op\":\"snapshot\"") })
        // --config instead of --log; lower-case hex is an LSN too.
        let viaConfig = try f.ws.cdc(["log", "show", f.lsnC.lowercased(), "--config", f.ws.configPath])
        #expect(viaConfig.status == 0, "\(viaConfig.stderr)")
        #expect(viaConfig.stdout == f.export { $0["lsn"] as? String == f.lsnC }.map { $0 + "\n" }.joined())
    }

    @Test func txnPrintsEveryEventOfTheTransaction() throws {
        let f = try fixture()
        let b = try f.lines(["txn", String(f.xidB)])
        #expect(b == f.export { $0["xid"] as? Int == f.xidB })
        #expect(b.count == 3)
        #expect(try f.lines(["txn", String(f.xidA), "--op", "update"]) == f.export { $0["xid"] as? Int == f.xidA && $0["op"] as? String == "update" })
        #expect(try f.lines(["txn", String(f.xidB), "--table", "surgeons"]).count == 2)
        // Filters that exclude everything print nothing (the xid exists).
        #expect(try f.lines(["txn", String(f.xidB), "--op", "delete"]).isEmpty)
    }

    @Test func txnGroupsTransactionsThatShareAnXid() throws {
        let f = try fixture()
        // Give transaction C the xid of A, as after an xid wraparound: copy the log and edit C's records.
        let directory = try TemporaryDirectory.make(prefix: "inspect-xid")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.copyItem(atPath: f.ws.logPath + "/data.mdb", toPath: directory + "/data.mdb")
        let cSeqs = f.events.filter { $0["xid"] as? Int == f.xidC }.map { UInt64($0["seq"] as! Int) }
        do {
            let env = try LMDBEnvironment(path: directory, readOnly: false)
            let events = try env.openDatabase("events", create: false)
            try env.withTransaction(readOnly: false) { txn in
                for seq in cSeqs {
                    var bytes = try #require(try txn.get(events, key: keyBytes(seq))).map { $0 }
                    bytes.replaceSubrange(10..<14, with: keyBytes(UInt32(f.xidA)))  // header: op, flags, lsn, xid
                    try txn.put(events, key: keyBytes(seq), value: bytes)
                }
            }
        }
        let jsonl = try f.ws.cdc(["log", "txn", String(f.xidA), "--log", directory])
        #expect(jsonl.status == 0, "\(jsonl.stderr)")
        let events = try jsonl.stdout.split(separator: "\n").map { try parseEvent(String($0)) }
        let expected = f.events.filter { [f.xidA, f.xidC].contains($0["xid"] as? Int) }.map { $0["seq"] as! Int }
        #expect(events.map { $0["seq"] as! Int } == expected)
        #expect(events.map { $0["lsn"] as! String } == f.events.filter { [f.xidA, f.xidC].contains($0["xid"] as? Int) }.map { $0["lsn"] as! String })
        #expect(Set(events.map { $0["xid"] as! Int }) == [f.xidA])
        let table = try f.ws.cdc(["log", "txn", String(f.xidA), "--log", directory, "--format", "table"], environment: ["COLUMNS": "300"])
        let banners = table.stdout.split(separator: "\n").filter { $0.hasPrefix("── transaction") }
        #expect(banners.count == 2, "\(table.stdout)")
        #expect(banners.first?.contains("commit LSN \(f.lsnA)") == true && banners.last?.contains("commit LSN \(f.lsnC)") == true)
    }

    @Test func tailPrintsTheLastEvents() throws {
        let f = try fixture()
        // Not a terminal: jsonl by default.
        #expect(try f.lines(["tail", "-n", "3"]) == Array(f.lines.suffix(3)))
        #expect(try f.lines(["tail"]) == Array(f.lines.suffix(10)))
        #expect(try f.lines(["tail", "-n", "1000"]) == f.lines)
        #expect(try f.lines(["tail", "-n", "0"]).isEmpty)
        let updates = f.export { $0["op"] as? String == "update" }
        #expect(try f.lines(["tail", "-n", "2", "--op", "update"]) == Array(updates.suffix(2)))
        #expect(try f.lines(["tail", "-n", "2", "--to", "5"]) == Array(f.lines[3..<5]))
    }

    @Test func filtersSelectByTableOpTimeAndSeq() throws {
        let f = try fixture()
        func table(_ e: Event) -> String? { e["table"] as? String }
        func op(_ e: Event) -> String? { e["op"] as? String }
        let facilities = f.export { table($0) == "public.facilities" }
        #expect(try f.lines(["export", "--table", "facilities"]) == facilities)
        #expect(try f.lines(["export", "--table", "public.facilities"]) == facilities)
        #expect(try f.lines(["export", "--table", "facilities,surgeons"]) == f.export { ["public.facilities", "public.surgeons"].contains(table($0)) })
        #expect(try f.lines(["export", "--op", "update"]) == f.export { op($0) == "update" })
        #expect(try f.lines(["export", "--op", "update"]).count == 4)
        let insertsAndDeletes = f.export { ["insert", "delete"].contains(op($0)) }
        #expect(try f.lines(["export", "--op", "insert,delete"]) == insertsAndDeletes)
        #expect(try f.lines(["export", "--op", "insert", "--op", "delete"]) == insertsAndDeletes)
        #expect(try f.lines(["export", "--table", "surgeons", "--op", "update"]).count == 2)
        // --since inclusive, --until exclusive: exactly transaction B.
        let b = try f.lines(["export", "--since", f.timeB, "--until", f.timeC])
        #expect(b == f.export { $0["xid"] as? Int == f.xidB })
        // The same instants with an offset.
        #expect(try f.lines(["export", "--since", Self.shifted(f.timeB), "--until", Self.shifted(f.timeC)]) == b)
        // A date is midnight UTC: everything is at or after the first event's date, nothing before it.
        let day = String((f.events[0]["commit_time"] as! String).prefix(10))
        #expect(try f.lines(["export", "--since", day]) == f.lines)
        #expect(try f.lines(["export", "--until", day]).isEmpty)
        #expect(try f.lines(["export", "--from", "3", "--to", "7"]) == Array(f.lines[2..<7]))
        #expect(try f.lines(["export", "--from", "0", "--to", "2"]) == Array(f.lines[0..<2]), "--from 0 is the start, as before")
        #expect(try f.lines(["export", "--from", "3", "--to", "7", "--op", "relation"]) == Array(f.lines[2..<7]).filter { $0.contains("\"op\":\"relation\"") })
    }

    /// The export against an independent decoder of the same WAL: PostgreSQL's test_decoding plugin.
    /// Every streamed transaction (the snapshot has no WAL of its own) in commit order, with its xid,
    /// commit LSN (the WAL's commit record) and commit time, and each row change, truncate and message
    /// in order with its table, op and every column value.
    @Test func theExportHoldsWhatTestDecodingDecoded() throws {
        let f = try fixture()
        try #require(f.decoded.count == 4, "test_decoding saw A, B, C and D: \(f.decoded)")
        #expect(f.decoded.map(\.changes.count) == [2, 3, 1, 2], "\(f.decoded)")
        try Self.expectSame(f.events, f.decoded, f.commitRecords)
    }

    /// The same comparison over values of many types: quotes, newlines and backslashes in text, NULLs,
    /// booleans, numeric, float, arrays, jsonb, bytea, timestamptz, an unchanged TOASTed value; old rows
    /// of REPLICA IDENTITY FULL updates and deletes; a quoted table name.
    @Test func valuesOfEveryKindAreExportedAsTestDecodingDecodesThem() throws {
        let ws = try CDCWorkspace("inspect_kinds", schema: false)
        defer { ws.tearDown() }
        try ws.sql(#"""
            CREATE TABLE "Kinds ""x"" y" (id int PRIMARY KEY, t text, b bool, n numeric(12, 4), f float8, a text[], j jsonb,
                                        raw bytea, at timestamptz, big text);
            ALTER TABLE "Kinds ""x"" y" ALTER COLUMN big SET STORAGE EXTERNAL;
            ALTER TABLE "Kinds ""x"" y" REPLICA IDENTITY FULL;
            CREATE TABLE plain (id text PRIMARY KEY, v int)
            """#)
        try ws.initialize()
        let decoder = try TestDecodingSlot.create(server: ws.server, database: ws.database)
        defer { decoder.drop() }
        let from = try ws.server.currentLSN()
        try ws.sql(#"""
            BEGIN;
            INSERT INTO "Kinds ""x"" y" VALUES
                (1, E'it''s "quoted"\nand\\back', true, 1234.5600, 2.5, '{"a b",NULL,c}', '{"k": [1, "two"]}', '\x00ff10',
                 '2026-03-14 10:00:00.5+00', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 320) i)),
                (2, NULL, false, NULL, -0.25, NULL, NULL, NULL, NULL, NULL);
            INSERT INTO plain VALUES ('p''1', 7);
            COMMIT;
            """#)
        try ws.sql(#"UPDATE "Kinds ""x"" y" SET b = NOT b, t = 'x y' WHERE id = 1"#)
        try ws.sql(#"BEGIN; DELETE FROM "Kinds ""x"" y" WHERE id = 2; UPDATE plain SET v = NULL; DELETE FROM plain; COMMIT"#)
        try ws.catchUp()
        let decoded = try decoder.transactions()
        let records = try ws.server.commitRecords(of: decoded, from: from)
        try #require(decoded.map(\.changes.count) == [3, 1, 3], "\(decoded)")
        try #require(decoded[1].changes.first?.new?["big"] == .unchangedToast, "the update does not send the TOASTed value: \(decoded[1])")
        try Self.expectSame(try ws.exportLines().map(parseEvent), decoded, records)
    }

    /// The export's streamed transactions (the snapshot has no WAL of its own) against test_decoding's,
    /// in commit order: xid, commit LSN (the WAL's commit record, which ends where test_decoding's
    /// COMMIT is), commit time, and every change in order.
    static func expectSame(_ events: [Event], _ decoded: [DecodedTransaction], _ commitRecords: [UInt32: ServerCommit],
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
        struct Exported { var xid: Int; var lsn: String; var time: String?; var changes: [DecodedChange] }
        var exported: [Exported] = []
        for event in events where event["op"] as? String != "relation" {
            guard let xid = event["xid"] as? Int else { continue }  // the snapshot
            let lsn = event["lsn"] as? String ?? "?"
            if exported.last?.xid != xid || exported.last?.lsn != lsn {
                exported.append(Exported(xid: xid, lsn: lsn, time: event["commit_time"] as? String, changes: []))
            }
            exported[exported.count - 1].changes.append(try decodedChange(event))
        }
        #expect(exported.map(\.xid) == decoded.map { Int($0.xid) }, "the same transactions, in commit order", sourceLocation: sourceLocation)
        for (log, server) in zip(exported, decoded) {
            let record = commitRecords[server.xid]
            #expect(log.lsn == record?.lsn, "xid \(server.xid): commit LSN \(log.lsn) in the log, \(record?.description ?? "?") in the WAL",
                    sourceLocation: sourceLocation)
            #expect(record?.end == server.commitEnd, "xid \(server.xid): test_decoding's COMMIT is the end of that record",
                    sourceLocation: sourceLocation)
            #expect(log.time == server.commitTime, "xid \(server.xid): commit time", sourceLocation: sourceLocation)
            #expect(log.changes == server.changes,
                    "xid \(server.xid):\nlog:\n\(log.changes.map { "  \($0)" }.joined(separator: "\n"))\ntest_decoding:\n\(server)",
                    sourceLocation: sourceLocation)
        }
    }

    /// An export event in test_decoding's terms: text values (booleans as true/false), the old row
    /// without its NULL columns.
    static func decodedChange(_ event: Event) throws -> DecodedChange {
        func value(_ any: Any) throws -> DecodedValue {
            switch any {
            case is NSNull: return .null
            case let marker as [String: Any] where marker["unchanged_toast"] != nil: return .unchangedToast
            case let text as String: return .text(text)
            case let number as NSNumber: return .text(isJSONBool(number) ? (number.boolValue ? "true" : "false") : number.stringValue)
            default: throw TestFailure("unexpected value \(any) in \(event)")
            }
        }
        func values(_ side: String) throws -> [String: DecodedValue]? {
            try (event[side] as? [String: Any])?.mapValues(value)
        }
        let op = event["op"] as? String ?? "?"
        var flags: Set<String> = []
        for flag in ["cascade", "restart_identity", "transactional"] where event[flag] as? Bool == true { flags.insert(flag) }
        if op == "message" {
            return DecodedChange(table: nil, op: op, flags: flags, prefix: event["prefix"] as? String, content: event["content"] as? String)
        }
        return DecodedChange(table: event["table"] as? String, op: op, old: try values("before"), new: try values("after"), flags: flags)
    }

    /// `2026-11-22T02:02:55.254715Z` as the same instant at +05:30.
    static func shifted(_ utc: String) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        let seconds = formatter.date(from: String(utc.prefix(19)) + "Z")!.addingTimeInterval(5.5 * 3600)
        formatter.timeZone = TimeZone(secondsFromGMT: 0)
        let local = formatter.string(from: seconds).dropLast()  // no Z
        let fraction = utc.dropFirst(19).dropLast()  // .254715
        return local + fraction + "+05:30"
    }

    @Test func statsCountWhatTheExportHolds() throws {
        let f = try fixture()
        let result = try f.log(["stats", "--format", "json"])
        #expect(result.status == 0, "\(result.stderr)")
        let stats = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let events = f.events
        var expected: [String: [String: Int]] = [:]
        for e in events { if let table = e["table"] as? String { expected[table, default: [:]][e["op"] as! String, default: 0] += 1 } }
        let byTable = try #require(stats["by_table"] as? [String: [String: Int]])
        #expect(byTable == expected)
        #expect(stats["events"] as? Int == events.count)
        #expect(stats["head"] as? Int == events.count)
        #expect(stats["messages"] as? Int == events.filter { $0["op"] as? String == "message" }.count)
        #expect(stats["messages"] as? Int == 1)
        let transactions = Set(events.compactMap { e in (e["xid"] as? Int).map { "\($0)@\(e["lsn"]!)" } })
        #expect(stats["transactions"] as? Int == transactions.count)
        #expect(transactions.count == 4)
        let first = try #require(stats["first_commit"] as? [String: Any])
        let last = try #require(stats["last_commit"] as? [String: Any])
        #expect(first["lsn"] as? String == f.lsnA && first["xid"] as? Int == f.xidA)
        let lastEvent = try #require(events.last)
        #expect(last["lsn"] as? String == lastEvent["lsn"] as? String && last["time"] as? String == lastEvent["commit_time"] as? String)
        let snapshot = try #require(stats["snapshot"] as? [String: Any])
        #expect(snapshot["rows"] as? Int == 3 && snapshot["lsn"] as? String == f.snapshotLSN)
        #expect(LSN(stats["resume_lsn"] as? String ?? "") ?? .zero > LSN(f.lsnC)!)
        let size = try #require(stats["size"] as? [String: Any])
        #expect(size["data_mdb_bytes"] as? Int == f.ws.dataFileSize)
        #expect((size["bytes_per_event"] as? Double ?? 0) > 0)
        #expect((size["record_bytes_per_event"] as? Double ?? 0) > 0)

        // The text report names the same numbers.
        let text = try f.log(["stats", "--format", "text"])
        #expect(text.status == 0)
        #expect(text.stdout.contains("head") && text.stdout.contains("resume LSN \(stats["resume_lsn"] as! String)"), "\(text.stdout)")
        #expect(text.stdout.contains("\(events.count): \(transactions.count) transactions and the snapshot; 1 message"), "\(text.stdout)")
        let facilitiesRow = text.stdout.split(separator: "\n").first { $0.hasPrefix("public.facilities ") }
        #expect(facilitiesRow != nil, "\(text.stdout)")
    }

    @Test func tableFormatShowsWhatChanged() throws {
        let f = try fixture()
        let wide = ["COLUMNS": "400"]
        let a = try f.lines(["show", f.lsnA, "--format", "table"], environment: wide)
        #expect(a.first?.hasPrefix("seq") == true && a.first?.contains("commit time (UTC)") == true, "\(a)")
        #expect(a.contains { $0.contains("public.facilities") && $0.hasSuffix("update    -    bed_count: 300 → 301") }, "\(a.joined(separator: "\n"))")
        #expect(a.contains { $0.contains("insert    -    surgeon_id: S2, surgeon_name: Dr 2, specialization: Cardiology, years_experience: 3, certification_level: Advanced") })
        let b = try f.lines(["txn", String(f.xidB), "--format", "table"], environment: wide).joined(separator: "\n")
        // REPLICA IDENTITY FULL: only the two columns that changed.
        #expect(b.contains("update    -    city: Boston → Cambridge, bed_count: 301 → 302\n"), "\(b)")
        // REPLICA IDENTITY DEFAULT, key kept: no old values, just the new ones.
        #expect(b.contains("update    -    surgeon_id: S1, surgeon_name: Dr 1, specialization: Urology, years_experience: 7, certification_level: Basic"), "\(b)")
        // DEFAULT, key changed: the old key only; other old values unknown.
        #expect(b.contains("update    -    surgeon_id: S2 → S3, surgeon_name: → Dr 2, specialization: → Cardiology"), "\(b)")
        #expect(b.contains("── transaction xid \(f.xidB), commit LSN \(f.lsnB)"), "\(b)")
        let c = try f.lines(["show", f.lsnC, "--format", "table"], environment: wide)
        #expect(c.last?.hasSuffix("delete    -    surgeon_id: S3") == true, "\(c)")
        let tail = try f.lines(["tail", "-n", "2", "--format", "table"], environment: wide).joined(separator: "\n")
        #expect(tail.contains("public.robot_maintenance") && tail.contains("truncate  -    all rows"), "\(tail)")
        #expect(tail.contains("message   -    audit: nightly check"), "\(tail)")

        // Cut to the terminal width.
        let narrow = try f.lines(["tail", "-n", "20", "--format", "table"], environment: ["COLUMNS": "70"])
        #expect(narrow.count == min(20, f.lines.count) + 1)
        #expect(narrow.allSatisfy { $0.unicodeScalars.count <= 70 }, "\(narrow.joined(separator: "\n"))")
        #expect(narrow.contains { $0.hasSuffix("…") })
        // Nothing matches: said so.
        #expect(try f.lines(["tail", "--op", "delete", "--table", "facilities", "--format", "table"]).last == "(no matching events)")
    }

    @Test func badInputsGiveOneErrorLine() throws {
        let f = try fixture()
        let cases: [([String], [String])] = [
            (["show", "99999"], ["no event with seq 99999"]),
            (["show", "0"], ["no event with seq 0"]),
            (["show", "0/ZZ"], ["0/ZZ", "LSN"]),
            (["show", "12/"], ["12/", "LSN"]),
            (["show", "5F/0"], ["no transaction with commit LSN 5F/0"]),
            (["txn", "4000000000"], ["no transaction with xid 4000000000"]),
            (["txn", "abc"], ["abc", "transaction id"]),
            (["export", "--op", "upsert"], ["unknown --op", "upsert"]),
            (["tail", "--op", "update,nope"], ["unknown --op", "nope"]),
            (["txn", String(f.xidB), "--since", "yesterday"], ["--since", "yesterday"]),
            (["export", "--until", "2026-13-01"], ["--until", "2026-13-01"]),
            (["export", "--since", "2026-02-30"], ["--since"]),
            (["export", "--since", f.timeC, "--until", f.timeB], ["--since", "before --until"]),
            (["export", "--from", "x"], ["--from", "x"]),
            (["tail", "--to", "0"], ["--to 0"]),
            (["export", "--from", "5", "--to", "2"], ["--from 5", "--to 2"]),
            (["tail", "-n", "x"], ["-n", "x"]),
            (["tail", "--format", "csv"], ["--format csv"]),
            (["export", "--format", "table"], ["--format table"]),
            (["stats", "--format", "xml"], ["--format xml"]),
        ]
        for (arguments, words) in cases {
            let result = try f.log(arguments)
            expectOneLineError(result, naming: words)
            #expect(result.stdout.isEmpty, "\(arguments): \(result.stdout)")
        }
        let missing = try f.ws.cdc(["log", "show", "1", "--log", f.ws.directory + "/nowhere"])
        expectOneLineError(missing, naming: ["no event log"])
        // A --table the log does not have warns, and matches nothing.
        let unknown = try f.log(["export", "--table", "facilitys"])
        #expect(unknown.status == 0 && unknown.stdout.isEmpty)
        #expect(unknown.stderr.hasPrefix("cdc: warning: no table named facilitys"), "\(unknown.stderr)")
    }

    // MARK: tail -f

    static func waitFor(_ path: String, timeout: Double, _ condition: (String) -> Bool) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        var text = ""
        while Date() < deadline {
            text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if condition(text) { return text }
            usleep(50_000)
        }
        return text
    }

    @Test func tailFollowPrintsNewEventsAndStopsOnSignals() throws {
        let ws = try CDCWorkspace("inspectf")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy", type: "Academic"))
        try ws.initialize()
        let before = try ws.exportLines()

        let out = ws.directory + "/tail.out", err = ws.directory + "/tail.err"
        let pid = try Shell.spawn(CDCWorkspace.executable, ["log", "tail", "-f", "-n", "1", "--log", ws.logPath], stdout: out, stderr: err)
        var exited: Int32?
        defer { if exited == nil { kill(pid, SIGKILL); _ = Shell.wait(pid, timeout: 5) } }
        let first = Self.waitFor(out, timeout: 20) { $0.hasSuffix("\n") }
        #expect(first == before.last! + "\n")

        // Commit after tail started; cdc run makes it visible; tail prints it.
        try ws.sql("BEGIN; INSERT INTO surgeons VALUES ('S7', 'Dr Follow', 'Urology', 9, 'Expert'); UPDATE facilities SET bed_count = 301; COMMIT")
        try ws.catchUp()
        let after = try ws.exportLines()
        let text = Self.waitFor(out, timeout: 20) { $0.split(separator: "\n").count >= after.count - before.count + 1 }
        #expect(text.contains("Dr Follow"), "\(text)")
        #expect(text.split(separator: "\n").map(String.init) == Array(after[(before.count - 1)...]), "exactly the export's lines, in order")

        // Between polls no read transaction is held: tail's reader slot is seen idle again and again.
        let env = try LMDBEnvironment(path: ws.logPath, readOnly: true)
        var idleInARow = 0
        try poll(what: "tail's reader slot idle in 10 samples in a row (a read transaction held between polls?)") {
            idleInARow = try env.readers().contains { $0.pid == pid && $0.txnid != nil } ? 0 : idleInARow + 1
            return idleInARow >= 10
        }

        kill(pid, SIGTERM)
        exited = Shell.wait(pid, timeout: 10)
        #expect(exited == 0, "SIGTERM: exit 0, stderr: \((try? String(contentsOfFile: err, encoding: .utf8)) ?? "")")
        #expect(((try? String(contentsOfFile: err, encoding: .utf8)) ?? "").isEmpty)

        // SIGINT too, with a filter and the table format.
        let out2 = ws.directory + "/tail2.out"
        let pid2 = try Shell.spawn(CDCWorkspace.executable, ["log", "tail", "-f", "-n", "1", "--op", "insert", "--format", "table", "--log", ws.logPath],
                                   environment: ["COLUMNS": "400"], stdout: out2, stderr: err)
        let table = Self.waitFor(out2, timeout: 20) { $0.split(separator: "\n").count >= 2 }
        #expect(table.contains("insert    -    surgeon_id: S7, surgeon_name: Dr Follow"), "\(table)")
        kill(pid2, SIGINT)
        let status2 = Shell.wait(pid2, timeout: 10)
        #expect(status2 == 0, "SIGINT: exit 0")
    }
}
