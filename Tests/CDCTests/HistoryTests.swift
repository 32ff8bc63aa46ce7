import Foundation
import Testing
import TestSupport

/// `cdc log history TABLE KEY...`: every change to one row, from the history index.
@Suite(.timeLimit(.minutes(15))) struct HistoryTests {
    /// The export's lines of the events whose old or new row has `column` = `value` in `table`.
    static func exportedLines(_ ws: CDCWorkspace, table: String, column: String, value: String) throws -> [String] {
        try ws.exportLines().filter { line in
            let event = try parseEvent(line)
            guard event["table"] as? String == table, event["op"] as? String != "relation" else { return false }
            return row(event)?[column] as? String == value || row(event, "before")?[column] as? String == value
        }
    }

    static func explained(_ stderr: String) -> (events: Int, fromIndex: Int, scanned: Int)? {
        guard let match = stderr.firstMatch(of: #/history: (\d+) events; (\d+) from the history index \(records 1\.\.\.\d+\), (\d+) records read after it/#) else {
            return nil
        }
        return (Int(match.1)!, Int(match.2)!, Int(match.3)!)
    }

    @Test func aRowWithTenThousandChangesIsServedFromTheIndex() throws {
        let ws = try CDCWorkspace("history_big")
        defer { ws.tearDown() }
        try ws.sql("\(Fixture.facility("F1", "General", type: "Academic", beds: 0)); \(Fixture.facility("F2", "Other", city: "Austin", state: "TX", type: "Community", beds: 0))")
        try ws.initialize()
        // 10,000 changes to F1, interleaved with 10,000 to F2 and 20,000 inserts of other rows.
        try ws.sql("""
            DO $$ BEGIN
              FOR i IN 1..10000 LOOP
                UPDATE facilities SET bed_count = i WHERE facility_id = 'F1';
                UPDATE facilities SET bed_count = i WHERE facility_id = 'F2';
                INSERT INTO facilities VALUES ('N' || i, 'n', 'x', 'MA', 'US', 'Clinic', i), ('M' || i, 'm', 'y', 'MA', 'US', 'Clinic', i);
              END LOOP;
            END $$
            """)
        try ws.catchUp()

        let result = try ws.cdc(["log", "history", "--log", ws.logPath, "public.facilities", "F1", "--format", "jsonl", "--explain"])
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let expected = try Self.exportedLines(ws, table: "public.facilities", column: "facility_id", value: "F1")
        #expect(expected.count == 10_001)
        #expect(lines == expected, "history prints exactly the export's events of that row, oldest first")
        let how = Self.explained(result.stderr)
        #expect(how?.events == 10_001 && how?.fromIndex == 10_001 && how?.scanned == 0, "served from the index: \(result.stderr)")
        #expect(FileManager.default.fileExists(atPath: ws.logPath + "/history/data.mdb"))

        // More changes: the next call indexes them first and still reads no record outside the index.
        try ws.sql("UPDATE facilities SET bed_count = -1 WHERE facility_id = 'F1'")
        try ws.catchUp()
        let again = try ws.cdc(["log", "history", "--log", ws.logPath, "facilities", "F1", "--format", "jsonl", "--explain"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.split(separator: "\n").count == 10_002)
        #expect(Self.explained(again.stderr)?.scanned == 0, "\(again.stderr)")
        let last = try parseEvent(String(again.stdout.split(separator: "\n").last!))
        #expect(row(last)?["bed_count"] as? Int == -1)
    }

    @Test func keyChangesDeletesReinsertsAndTruncatesBelongToTheRow() throws {
        let ws = try CDCWorkspace("history_rules")
        defer { ws.tearDown() }
        try ws.sql("""
            \(Fixture.facility("F1", "General", type: "Academic", beds: 100));
            CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
            INSERT INTO pairs VALUES (1, 'x', 'one'), (1, 'y', 'other');
            """)
        try ws.initialize()
        try ws.sql("UPDATE facilities SET bed_count = 101 WHERE facility_id = 'F1'")
        try ws.sql("UPDATE facilities SET facility_name = 'General Hospital' WHERE facility_id = 'F1'")
        try ws.sql("UPDATE facilities SET facility_id = 'F9' WHERE facility_id = 'F1'")
        try ws.sql(Fixture.facility("F1", "Newcomer", city: "Salem", type: "Clinic", beds: 10))
        try ws.sql("DELETE FROM facilities WHERE facility_id = 'F1'")
        try ws.sql("UPDATE pairs SET v = 'uno' WHERE a = 1 AND b = 'x'")
        try ws.sql("TRUNCATE pairs")
        try ws.sql("INSERT INTO pairs VALUES (1, 'x', 'again')")
        try ws.catchUp()

        func history(_ args: [String], format: String = "jsonl") throws -> [Event] {
            let result = try ws.cdc(["log", "history", "--log", ws.logPath] + args + ["--format", format])
            #expect(result.status == 0, "\(args): \(result.stderr)")
            return try result.stdout.split(separator: "\n").map { try parseEvent(String($0)) }
        }
        let f1 = try history(["facilities", "F1"])
        #expect(f1.map { $0["op"] as? String } == ["snapshot", "update", "update", "update", "insert", "delete"])
        #expect(row(f1[3])?["facility_id"] as? String == "F9", "the update that moved the row away")
        #expect(row(f1[4])?["facility_name"] as? String == "Newcomer", "a re-insert under the same key")
        let f9 = try history(["public.facilities", "F9"])
        #expect(f9.map { $0["op"] as? String } == ["update"], "F9 begins with the key change")

        let pair = try history(["pairs", "1", "x"])
        #expect(pair.map { $0["op"] as? String } == ["snapshot", "update", "truncate", "insert"])
        #expect(try history(["pairs", "1", "y"]).map { $0["op"] as? String } == ["snapshot", "truncate"])

        // The table for people says what changed.
        let table = try ws.cdc(["log", "history", "--log", ws.logPath, "facilities", "F1", "--format", "table"])
        let rows = table.stdout.split(separator: "\n").map(String.init)
        #expect(rows.count == 7, "header and six events: \(table.stdout)")
        #expect(rows[2].contains("bed_count: 100 → 101") && !rows[2].contains("facility_name"), "\(rows[2])")
        #expect(rows[3].contains("facility_name: General → General Hospital") && !rows[3].contains("bed_count"), "\(rows[3])")
        #expect(rows[4].contains("facility_id: F1 → F9"), "\(rows[4])")

        // Bad input: one line naming what is wrong.
        for (args, expected) in [(["pairs", "1"], "keyed by (a, b): give 2 values"),
                                 (["nosuch", "1"], "no table named nosuch"),
                                 (["facilities"], "key value")] {
            let bad = try ws.cdc(["log", "history", "--log", ws.logPath] + args)
            #expect(bad.status != 0 && bad.stderr.contains(expected), "\(args): \(bad.stderr)")
            #expect(bad.stderr.split(separator: "\n").count == 1, "\(args): \(bad.stderr)")
        }
        let none = try history(["facilities", "F404"])
        #expect(none.isEmpty, "a key the log never saw has no history")
    }

    /// Auditors read while the service writes: every log command works, sees whole transactions, and
    /// never stops `cdc run`.
    @Test func logCommandsRunWhileCdcRunWritesUnderLoad() throws {
        let ws = try CDCWorkspace("history_load")
        defer { ws.tearDown() }
        let load = try LedgerLoad(workspace: ws)
        try ws.initialize()
        load.start(pause: 2000, limit: 4000)
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"))
        var counts: [Int] = []
        var digests: [(path: String, seq: Int)] = []
        var tails: [[String]] = []
        func readEverything() throws {
            let round = counts.count
            // history of the counter row: one update per committed transaction, 1...k without a gap.
            let history = try ws.cdc(["log", "history", "--log", ws.logPath, "counter", "1", "--format", "jsonl"])
            #expect(history.status == 0, "round \(round): \(history.stderr)")
            let events = try history.stdout.split(separator: "\n").map { try parseEvent(String($0)) }
            let ns = events.filter { $0["op"] as? String == "update" }.map { row($0)?["n"] as? Int ?? -1 }
            #expect(ns == (0..<ns.count).map { $0 + 1 }, "round \(round): whole transactions, in order")
            counts.append(ns.count)
            let historySeq = events.last?["seq"] as? Int ?? 0

            // digest: a head at or past what history read; kept, to verify against the final log.
            let digest = try ws.cdc(["log", "digest", "--log", ws.logPath])
            let digestSeq = (try? JSONSerialization.jsonObject(with: Data(digest.stdout.utf8)) as? [String: Any])?["seq"] as? Int ?? -1
            #expect(digest.status == 0 && digestSeq >= historySeq, "round \(round): digest at \(digestSeq), history read up to \(historySeq): \(digest.stdout)\(digest.stderr)")
            let path = ws.directory + "/digest-\(round).json"
            try digest.stdout.write(toFile: path, atomically: true, encoding: .utf8)
            digests.append((path, digestSeq))

            // verify: every record up to a head at or past the digest's.
            let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
            let verified = verify.stdout.firstMatch(of: #/^ok: (\d+) records and (\d+) transactions verified/#).map { (Int($0.1)!, Int($0.2)!) }
            #expect(verify.status == 0 && (verified?.0 ?? -1) >= digestSeq && (verified?.1 ?? -1) > ns.count,
                    "round \(round): verify read at least the digest's \(digestSeq) records and history's \(ns.count) transactions: \(verify.stdout)\(verify.stderr)")

            // stats: whole transactions (three ledger inserts per counter update), up to a head past the digest's.
            let stats = try ws.cdc(["log", "stats", "--format", "json", "--log", ws.logPath])
            let object = try? JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any]
            let byTable = object?["by_table"] as? [String: [String: Int]]
            let (inserts, updates) = (byTable?["public.ledger"]?["insert"] ?? -1, byTable?["public.counter"]?["update"] ?? -1)
            #expect(stats.status == 0 && inserts == 3 * updates && updates >= ns.count && (object?["head"] as? Int ?? -1) >= digestSeq,
                    "round \(round): stats: \(inserts) ledger inserts, \(updates) counter updates, head \(object?["head"] ?? "?") (digest \(digestSeq)): \(stats.stdout)\(stats.stderr)")

            // tail -n 5: five events, compared with the export at the end.
            let tail = try ws.cdc(["log", "tail", "-n", "5", "--format", "jsonl", "--log", ws.logPath])
            let lines = tail.stdout.split(separator: "\n").map(String.init)
            #expect(tail.status == 0 && lines.count == 5, "round \(round): tail -n 5: \(tail.stdout)\(tail.stderr)")
            tails.append(lines)
            #expect(run.isRunning, "cdc run keeps running while read: \(run.stderr)")
        }
        try readEverything()
        try poll(what: "the history grows while being read: counter updates \(counts)", timeout: 60) {
            try readEverything()
            return counts.count >= 4 && counts.last! > counts.first!
        }
        let transactions = try load.stop()
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        try ws.catchUp()
        #expect(LedgerLoad.check(try ws.export(), transactions: transactions).isEmpty)
        let final = try ws.cdc(["log", "history", "--log", ws.logPath, "counter", "1", "--format", "jsonl"])
        #expect(final.stdout.split(separator: "\n").filter { $0.contains(#""op":"update""#) }.count == transactions)

        // What the commands printed under load is what the finished log says.
        let exported = try ws.exportLines()
        for (round, lines) in tails.enumerated() {
            let seqs = lines.compactMap { try? parseEvent($0)["seq"] as? Int }
            #expect(seqs.count == 5 && seqs == (0..<5).map { seqs[0] + $0 } && lines == seqs.map { exported[$0 - 1] },
                    "round \(round): tail -n 5 printed five consecutive events as the export prints them: \(seqs)")
        }
        for (path, seq) in digests {
            let check = try ws.cdc(["log", "verify", "--log", ws.logPath, "--digest", path])
            #expect(check.status == 0 && check.stdout.contains("digest at seq \(seq) matched"),
                    "the digest taken at seq \(seq) under load still matches: \(check.stdout)\(check.stderr)")
        }
    }
}
