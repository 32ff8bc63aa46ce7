import EventLog
import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What README.md says about `cdc log history` on a read-only log and about its index, `cdc log stats`'
/// readers, and `cdc log verify --from/--to` and its checks of the head, the roots and meta: each claim
/// against the real binary and a log written by the real cdc.
@Suite(.timeLimit(.minutes(15))) struct LogClaimsTests {
    // MARK: History

    /// A log whose row F1 changed many times, interleaved with other rows' changes, captured by cdc.
    /// `shifted`: one more snapshot row first, so that every later record has another seq than in an
    /// unshifted log.
    static func historyLog(_ name: String, rounds: Int = 40, shifted: Bool = false) throws -> CDCWorkspace {
        let ws = try CDCWorkspace(name)
        do {
            if shifted { try ws.sql("INSERT INTO facilities VALUES ('F0', 'First', 'Salem', 'MA', 'US', 'Clinic', 0)") }
            try ws.sql("INSERT INTO facilities VALUES ('F1', 'General', 'Boston', 'MA', 'US', 'Academic', 0), ('F2', 'Other', 'Austin', 'TX', 'US', 'Community', 0)")
            try ws.initialize()
            try changeRows(ws, from: 1, rounds: rounds)
        } catch {
            ws.tearDown()
            throw error
        }
        return ws
    }

    /// `rounds` transactions changing F1 and F2 and inserting a row, then captured.
    static func changeRows(_ ws: CDCWorkspace, from first: Int, rounds: Int) throws {
        try ws.sql("""
            DO $$ BEGIN
              FOR i IN \(first)..\(first + rounds - 1) LOOP
                UPDATE facilities SET bed_count = i WHERE facility_id = 'F1';
                UPDATE facilities SET city = 'City ' || i WHERE facility_id = 'F2';
                INSERT INTO facilities VALUES ('N' || i, 'n', 'x', 'MA', 'US', 'Clinic', i);
                COMMIT;
              END LOOP;
            END $$
            """)
        try ws.catchUp()
    }

    /// What `cdc log history facilities F1 --format jsonl` must print: the export's events of F1.
    static func expectedF1(_ ws: CDCWorkspace) throws -> [String] {
        try HistoryTests.exportedLines(ws, table: "public.facilities", column: "facility_id", value: "F1")
    }

    /// `result` is history's success, printing exactly `expected` (else: where the lines part).
    static func expectHistory(_ result: Shell.Result, _ expected: [String], _ comment: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 0, "\(comment): \(result.stderr)", sourceLocation: sourceLocation)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let first = zip(lines, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(lines.count, expected.count)
        #expect(lines == expected, "\(comment): \(lines.count) events, expected \(expected.count); they part at line \(first): \(lines.dropFirst(first).first ?? "(none)") instead of \(expected.dropFirst(first).first ?? "(none)"); stderr: \(result.stderr)",
                sourceLocation: sourceLocation)
    }

    static func historyArguments(_ ws: CDCWorkspace) -> [String] {
        ["log", "history", "--log", ws.logPath, "facilities", "F1", "--format", "jsonl", "--explain"]
    }

    /// Runs `cdc ARGS...` in a private mount namespace in which the log directory is bind-mounted onto
    /// itself read-only: nobody, root included (whom chmod does not stop), can write there. Throws when
    /// the mount does not hold (a probe file can be created).
    static func onReadOnlyLog(_ ws: CDCWorkspace, _ arguments: [String]) throws -> Shell.Result {
        let script = #"""
            mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 97
            if touch "$1/.probe" 2>/dev/null; then exit 98; fi
            shift; exec "$@"
            """#
        let result = try Shell.run("/usr/bin/unshare", ["-m", "--propagation", "private", "/bin/sh", "-c", script, "sh", ws.logPath,
                                                        CDCWorkspace.executable] + arguments)
        guard result.status != 97 && result.status != 98 else {
            throw TestFailure("cannot mount \(ws.logPath) read-only (status \(result.status)): \(result.stderr)")
        }
        return result
    }

    /// The last record the log's history index covers, as the index itself records it.
    static func indexedThrough(_ ws: CDCWorkspace) throws -> UInt64? {
        try HistoryIndex.openReadOnly(log: try EventLog.openForReading(path: ws.logPath))?.indexedThrough()
    }

    func copyDirectory(_ from: String, to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    @Test func historyOnAReadOnlyLogAnswersFromTheIndexAndTheRecordsAfterIt() throws {
        let ws = try Self.historyLog("claims_histro")
        defer { ws.tearDown() }
        // An index at the head H1 (history brings it there), kept aside...
        let first = try ws.cdc(Self.historyArguments(ws))
        try #require(first.status == 0, "\(first.stderr)")
        let h1 = try ws.export().count
        let saved = ws.directory + "/history-at-h1"
        try copyDirectory(ws.logPath + "/history", to: saved)
        // ... then more changes (cdc run's background thread may index them), and the index put back at H1.
        try Self.changeRows(ws, from: 41, rounds: 30)
        try copyDirectory(saved, to: ws.logPath + "/history")
        let head = try ws.export().count
        try #require(head > h1)
        let expected = try Self.expectedF1(ws)
        try #require(expected.count == 71, "the snapshot row and 70 updates")

        let result = try Self.onReadOnlyLog(ws, Self.historyArguments(ws))
        Self.expectHistory(result, expected, "history on a read-only log: the export's events of F1, oldest first")
        let how = HistoryTests.explained(result.stderr)
        #expect(how?.fromIndex == 41 && how?.scanned == head - h1,
                "41 events from the index (records 1...\(h1)), the \(head - h1) records after it read one by one: \(result.stderr)")
        #expect(result.stderr.contains("(records 1...\(h1))"), "the index was not brought to the head: \(result.stderr)")

        // No index at all and none can be made: every record is read.
        try FileManager.default.removeItem(atPath: ws.logPath + "/history")
        let bare = try Self.onReadOnlyLog(ws, Self.historyArguments(ws))
        Self.expectHistory(bare, expected, "a read-only log without an index")
        #expect(bare.stderr.contains("no history index") && bare.stderr.contains("\(head) records read after it"), "\(bare.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ws.logPath + "/history"), "nothing was created")
    }

    @Test func aDeletedHistoryIndexIsRebuilt() throws {
        let ws = try Self.historyLog("claims_histdel")
        defer { ws.tearDown() }
        let before = try ws.cdc(Self.historyArguments(ws))
        let head = try ws.export().count
        Self.expectHistory(before, try Self.expectedF1(ws), "with the index")

        try FileManager.default.removeItem(atPath: ws.logPath + "/history")
        let after = try ws.cdc(Self.historyArguments(ws))
        Self.expectHistory(after, before.stdout.split(separator: "\n").map(String.init), "the same answer as before the index was deleted")
        #expect(FileManager.default.fileExists(atPath: ws.logPath + "/history/data.mdb"), "the index is back")
        let how = HistoryTests.explained(after.stderr)
        #expect(how?.fromIndex == 41 && how?.scanned == 0 && after.stderr.contains("(records 1...\(head))"),
                "every event from the rebuilt index, which covers the whole log: \(after.stderr)")
    }

    /// An index of another log (whose rows sit at other seqs, and which ends inside this one), and the
    /// index of a log since restored from an older copy (it ends past the head): neither is trusted.
    /// Where the directory is writable it is rebuilt; on a read-only log, where it cannot be, it is not used.
    @Test func aHistoryIndexThatDoesNotMatchTheLogIsRebuiltNotTrusted() throws {
        let ws = try Self.historyLog("claims_histmis")
        defer { ws.tearDown() }
        let other = try Self.historyLog("claims_histoth", rounds: 25, shifted: true)
        defer { other.tearDown() }
        let otherIndexed = try other.cdc(Self.historyArguments(other))
        try #require(otherIndexed.status == 0, "\(otherIndexed.stderr)")
        let head = try ws.export().count
        let expected = try Self.expectedF1(ws)
        try #require(try other.export().count < head)

        // Read-only, with the other log's index: not used, every record is read.
        try copyDirectory(other.logPath + "/history", to: ws.logPath + "/history")
        let readOnly = try Self.onReadOnlyLog(ws, Self.historyArguments(ws))
        #expect(readOnly.status == 0, "\(readOnly.stderr)")
        Self.expectHistory(readOnly, expected, "the other log's index is not used")
        #expect(readOnly.stderr.contains("does not match this log") && readOnly.stderr.contains("\(head) records read after it"),
                "every record read: \(readOnly.stderr)")

        // Writable: rebuilt for this log.
        let rebuilt = try ws.cdc(Self.historyArguments(ws))
        Self.expectHistory(rebuilt, expected, "writable, with the other log's index")
        let how = HistoryTests.explained(rebuilt.stderr)
        #expect(how?.fromIndex == expected.count && how?.scanned == 0 && rebuilt.stderr.contains("(records 1...\(head))"), "\(rebuilt.stderr)")

        // A log restored from an older copy, with the index of the later log: it ends past the head.
        let backup = ws.directory + "/log-backup"
        try copyDirectory(ws.logPath, to: backup)
        try Self.changeRows(ws, from: 41, rounds: 10)
        let later = try ws.cdc(Self.historyArguments(ws))
        try #require(later.status == 0 && later.stdout.split(separator: "\n").count == expected.count + 10, "\(later.stderr)")
        let laterHead = try #require(try Self.indexedThrough(ws))
        for file in ["data.mdb", "lock.mdb"] {
            try FileManager.default.removeItem(atPath: ws.logPath + "/" + file)
            try FileManager.default.copyItem(atPath: backup + "/" + file, toPath: ws.logPath + "/" + file)
        }
        try #require(try ws.export().count == head && laterHead > UInt64(head), "the log is back at \(head), the index at \(laterHead)")
        let restoredReadOnly = try Self.onReadOnlyLog(ws, Self.historyArguments(ws))
        Self.expectHistory(restoredReadOnly, expected, "a restored read-only log, the later log's index")
        let restored = try ws.cdc(Self.historyArguments(ws))
        Self.expectHistory(restored, expected, "a restored log, the later log's index: the later changes are not shown")
        #expect(HistoryTests.explained(restored.stderr)?.scanned == 0, "\(restored.stderr)")
        #expect(try Self.indexedThrough(ws) == UInt64(head), "the index was rebuilt for the restored log, not kept at \(laterHead)")
    }

    // MARK: Stats

    /// `cdc log stats --format json`'s `open_readers` pids.
    static func readerPIDs(_ ws: CDCWorkspace) throws -> [Int32] {
        let stats = try ws.stats()
        guard let readers = stats["open_readers"] as? [[String: Any]] else { throw TestFailure("no open_readers in \(stats)") }
        return readers.compactMap { ($0["pid"] as? Int).map(Int32.init) }.sorted()
    }

    /// Starts `cdc log verify` until one is stopped (SIGSTOP) while it holds a read transaction, and
    /// returns its pid. Verify spends nearly all its time inside read transactions: a few tries do.
    static func verifyStoppedInsideATransaction(_ ws: CDCWorkspace, _ environment: LMDBEnvironment) throws -> pid_t {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let pid = try Shell.spawn(CDCWorkspace.executable, ["log", "verify", "--log", ws.logPath], stdout: "/dev/null", stderr: "/dev/null")
            func reading() throws -> Bool { try environment.readers().contains { $0.pid == pid && $0.txnid != nil } }
            var status: Int32 = 0
            while waitpid(pid, &status, WNOHANG) == 0 {
                guard try reading() else { continue }
                kill(pid, SIGSTOP)
                if try reading() { return pid }
                kill(pid, SIGCONT)
            }
        }
        throw TestFailure("no cdc log verify was caught inside a read transaction in 60 s")
    }

    @Test func statsListsTheProcessesReadingTheLog() throws {
        let ws = try CDCWorkspace("claims_readers")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.sql("DO $$ BEGIN FOR i IN 1..20 LOOP INSERT INTO facilities SELECT 'N' || i || '-' || g, 'n', 'x', 'MA', 'US', 'Clinic', g FROM generate_series(1, 2000) g; COMMIT; END LOOP; END $$")
        try ws.catchUp()
        #expect(try Self.readerPIDs(ws).isEmpty, "nobody reads the log")

        // This test process holds a read transaction, and a `cdc log verify` is stopped inside one.
        let environment = try LMDBEnvironment(path: ws.logPath, readOnly: true)
        try environment.withTransaction(readOnly: true) { _ in
            let verify = try Self.verifyStoppedInsideATransaction(ws, environment)
            var killed = false
            defer { if !killed { kill(verify, SIGKILL); _ = Shell.wait(verify) } }
            #expect(try Self.readerPIDs(ws) == [getpid(), verify].sorted(), "both readers are listed")
            let text = try ws.cdc(["log", "stats", "--log", ws.logPath, "--format", "text"])
            let line = text.stdout.split(separator: "\n").first { $0.hasPrefix("readers") }.map(String.init) ?? ""
            #expect(line.contains("pid \(getpid()) (txn ") && line.contains("pid \(verify) (txn "), "\(text.stdout)")

            // Killed inside its transaction, verify leaves its slot in LMDB's reader table: a dead process
            // reads nothing and is not listed.
            kill(verify, SIGKILL)
            killed = true
            #expect(Shell.wait(verify) == 128 + SIGKILL)
            #expect(try Self.readerPIDs(ws) == [getpid()], "the dead reader is not listed")
        }
        #expect(try Self.readerPIDs(ws).isEmpty, "the test's transaction ended")
        let text = try ws.cdc(["log", "stats", "--log", ws.logPath, "--format", "text"])
        #expect(text.stdout.split(separator: "\n").contains { $0.hasPrefix("readers") && $0.hasSuffix("no read transaction open") }, "\(text.stdout)")
    }

    // MARK: Verify

    /// The log's source transactions (and the snapshot) as seq ranges, in order.
    static func transactions(_ ws: CDCWorkspace) throws -> [ClosedRange<Int>] {
        var ranges: [ClosedRange<Int>] = []
        var current: (key: String, first: Int, last: Int)?
        for event in try ws.export() {
            let seq = event["seq"] as! Int
            let key = "\(event["lsn"] ?? "")/\(event["xid"] ?? "-")"
            if let c = current, c.key == key {
                current!.last = seq
            } else {
                if let c = current { ranges.append(c.first...c.last) }
                current = (key, seq, seq)
            }
        }
        if let c = current { ranges.append(c.first...c.last) }
        return ranges
    }

    /// The `roots` sub-database: head seq → stored Merkle root.
    static func storedRoots(_ ws: CDCWorkspace) throws -> [Int: [UInt8]] {
        var roots: [Int: [UInt8]] = [:]
        try LogVerifyTests().tamper(ws) { txn, db in
            try txn.scan(db.roots, from: nil) { key, value in
                roots[Int(readU64(key)!)] = Array(value)
                return true
            }
        }
        return roots
    }

    /// Flips a bit of the value stored under `seq` in `database` (events, leaves or roots), runs `body`,
    /// and puts the value back.
    func withFlippedBit(_ ws: CDCWorkspace, _ database: KeyPath<LogVerifyTests.Databases, LMDBDatabase>, at seq: Int,
                        _ body: () throws -> Void) throws {
        let log = LogVerifyTests()
        var original: [UInt8] = []
        try log.tamper(ws) { txn, db in
            original = try log.value(txn, db[keyPath: database], UInt64(seq))
            var changed = original
            changed[changed.count - 1] ^= 0x01
            try txn.put(db[keyPath: database], key: keyBytes(UInt64(seq)), value: changed)
        }
        try body()
        try log.tamper(ws) { txn, db in try txn.put(db[keyPath: database], key: keyBytes(UInt64(seq)), value: original) }
    }

    /// `verify` failed with exit status 1 (as README promises) naming `seq` and, when given, `words`.
    static func expectFailure(_ result: Shell.Result, at seq: Int, naming words: [String] = [], _ comment: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 1, "\(comment): exit 1, not \(result.status): \(result.stdout)\(result.stderr)", sourceLocation: sourceLocation)
        expectOneLineError(result, naming: ["at seq \(seq):"] + words, sourceLocation: sourceLocation)
    }

    @Test func verifyFromToChecksThatRangeAndOnlyIt() throws {
        let log = LogVerifyTests()
        let ws = try log.makeLog("claims_range")
        defer { ws.tearDown() }
        let transactions = try Self.transactions(ws)
        try #require(transactions.count == 6, "the snapshot and five transactions: \(transactions)")
        let head = transactions.last!.upperBound
        // The second and third transactions.
        let (from, to) = (transactions[2].lowerBound, transactions[3].upperBound)
        let range = ["--from", String(from), "--to", String(to)]
        let clean = try log.verify(ws, range)
        #expect(clean.status == 0 && clean.stdout.hasPrefix("ok: \(to - from + 1) records and 2 transactions verified"), "\(clean.stdout)\(clean.stderr)")

        try withFlippedBit(ws, \.events, at: (from + to) / 2) {
            Self.expectFailure(try log.verify(ws, range), at: (from + to) / 2, naming: ["changed"], "a changed record inside the range")
        }
        try withFlippedBit(ws, \.events, at: head) {
            #expect(try log.verify(ws, range).status == 0, "a changed record after --to is not read")
            Self.expectFailure(try log.verify(ws), at: head, "the whole log")
        }
        try withFlippedBit(ws, \.events, at: from - 1) {
            #expect(try log.verify(ws, range).status == 0, "a changed record before --from is not read (its stored hash is taken)")
            Self.expectFailure(try log.verify(ws), at: from - 1, "the whole log")
        }
        // A stored hash before --from is taken as stored, but the first stored hash over it catches it: a
        // root in the range, or the Merkle node (a complete, aligned subtree of 16 leaves) holding the leaf.
        let root = try #require(try Self.storedRoots(ws).keys.filter { $0 >= from }.min())
        let nodeEnd = (from - 1 + 15) / 16 * 16
        let node = nodeEnd <= head ? nodeEnd : Int.max
        try withFlippedBit(ws, \.leaves, at: from - 1) {
            Self.expectFailure(try log.verify(ws, ["--from", String(from)]), at: min(root, node),
                               naming: [node <= root ? "merkle node" : "root"], "a rewritten leaf before --from")
        }
        #expect(try log.verify(ws).status == 0, "the log is back as it was")
    }

    /// The value of meta `key`.
    static func meta(_ ws: CDCWorkspace, _ key: String) throws -> [UInt8] {
        var value: [UInt8]?
        try LogVerifyTests().tamper(ws) { txn, db in value = try txn.get(db.meta, key: Array(key.utf8)).map { Array($0) } }
        return try #require(value, "meta \(key)")
    }

    /// Sets meta `key` to `value`, runs `body`, and puts the old value back.
    func withMeta(_ ws: CDCWorkspace, _ key: String, _ value: [UInt8], _ body: () throws -> Void) throws {
        let original = try Self.meta(ws, key)
        try LogVerifyTests().tamper(ws) { txn, db in try txn.put(db.meta, key: Array(key.utf8), value: value) }
        try body()
        try LogVerifyTests().tamper(ws) { txn, db in try txn.put(db.meta, key: Array(key.utf8), value: original) }
    }

    /// The header of record `seq`.
    static func header(_ ws: CDCWorkspace, _ seq: Int) throws -> RecordHeader {
        var header: RecordHeader?
        try LogVerifyTests().tamper(ws) { txn, db in
            header = try RecordCodec.decode(try #require(try txn.get(db.events, key: keyBytes(UInt64(seq))))).header
        }
        return try #require(header)
    }

    /// Someone cuts the last transactions off the log and rewrites, step by step, what would give it
    /// away: the head, the frontier, the roots. Verify names the cut at every step until every stored
    /// hash is consistent again; from there only a digest kept outside can tell, and does.
    @Test func aTruncatedTailIsCaughtEvenWithARewrittenHead() throws {
        let log = LogVerifyTests()
        let ws = try log.makeLog("claims_trunc")
        defer { ws.tearDown() }
        let digest = try ws.cdc(["log", "digest", "--log", ws.logPath])
        try #require(digest.status == 0)
        let digestFile = ws.directory + "/digest.json"
        try digest.stdout.write(toFile: digestFile, atomically: true, encoding: .utf8)
        let transactions = try Self.transactions(ws)
        let head = transactions.last!.upperBound
        let cut = transactions[transactions.count - 3].upperBound  // the last two transactions go
        let (kept, firstGone) = (try Self.header(ws, cut), try Self.header(ws, cut + 1))

        try log.tamper(ws) { txn, db in
            for seq in (cut + 1)...head {
                _ = try txn.delete(db.events, key: keyBytes(UInt64(seq)))
                _ = try txn.delete(db.leaves, key: keyBytes(UInt64(seq)))
            }
        }
        Self.expectFailure(try log.verify(ws), at: cut + 1, naming: ["missing"], "records and their hashes cut off the end")

        // The head moved back, with the kept transaction's position, resuming where the first cut one commits.
        try log.tamper(ws) { txn, db in
            try txn.put(db.meta, key: Array("head".utf8), value: keyBytes(UInt64(cut)))
            try txn.put(db.meta, key: Array("last_commit_lsn".utf8), value: keyBytes(kept.lsn.value))
            try txn.put(db.meta, key: Array("last_commit_time".utf8), value: keyBytes(UInt64(bitPattern: kept.commitTime ?? RecordCodec.noTime)))
            try txn.put(db.meta, key: Array("resume_lsn".utf8), value: keyBytes(firstGone.lsn.value))
        }
        Self.expectFailure(try log.verify(ws), at: cut, naming: ["frontier"], "a head moved back over the cut")

        // The frontier recomputed for records 1...cut: the roots stored at the removed heads remain.
        try log.tamper(ws) { txn, db in
            var frontier = MerkleFrontier()
            for seq in 1...cut { frontier.append(leaf: try log.value(txn, db.leaves, UInt64(seq))) }
            try txn.put(db.meta, key: Array("merkle_frontier".utf8), value: frontier.encoded)
        }
        Self.expectFailure(try log.verify(ws), at: cut, naming: ["root", "seq \(head)"], "roots stored past the head")

        // Those roots deleted too: every stored hash is consistent with the shorter log.
        let removedRoots = try Self.storedRoots(ws).keys.filter { $0 > cut }
        try log.tamper(ws) { txn, db in
            for seq in removedRoots { _ = try txn.delete(db.roots, key: keyBytes(UInt64(seq))) }
        }
        let consistent = try log.verify(ws)
        #expect(consistent.status == 0 && consistent.stdout.hasPrefix("ok: \(cut) records"),
                "a consistent truncation passes the internal checks (what the digest is for): \(consistent.stdout)\(consistent.stderr)")
        Self.expectFailure(try log.verify(ws, ["--digest", digestFile]), at: cut, naming: ["removed", "\(head)"], "the digest kept outside")
    }

    /// Records untouched; one stored root, or one value of meta, changed.
    @Test func tamperingWithRootsOrMetaAloneIsCaught() throws {
        let log = LogVerifyTests()
        let ws = try log.makeLog("claims_meta")
        defer { ws.tearDown() }
        let transactions = try Self.transactions(ws)
        let head = transactions.last!.upperBound
        let roots = try Self.storedRoots(ws).keys.sorted()
        try #require(roots.count >= 2 && roots.last == head, "a root at each durable head: \(roots)")
        for seq in roots {
            try withFlippedBit(ws, \.roots, at: seq) {
                Self.expectFailure(try log.verify(ws), at: seq, naming: ["root"], "the root stored at \(seq)")
            }
        }
        var frontier = try Self.meta(ws, "merkle_frontier")
        frontier[frontier.count - 1] ^= 0x01
        try withMeta(ws, "merkle_frontier", frontier) {
            Self.expectFailure(try log.verify(ws), at: head, naming: ["frontier"], "meta merkle_frontier")
        }

        let earlier = transactions[3].upperBound
        try withMeta(ws, "head", keyBytes(UInt64(earlier))) {
            Self.expectFailure(try log.verify(ws), at: earlier, "meta head moved back to an earlier transaction's end")
        }
        try withMeta(ws, "head", keyBytes(UInt64(earlier - 1))) {
            Self.expectFailure(try log.verify(ws), at: earlier - 1, naming: ["end of a transaction"], "meta head inside a transaction")
        }
        try withMeta(ws, "head", keyBytes(UInt64(head + 3))) {
            Self.expectFailure(try log.verify(ws), at: head + 1, naming: ["missing"], "meta head past the records")
        }
        // The exactly-once position: a resume position at the last commit would capture it again.
        let last = try Self.header(ws, head)
        try withMeta(ws, "resume_lsn", keyBytes(last.lsn.value)) {
            Self.expectFailure(try log.verify(ws), at: head, naming: ["resume_lsn"], "meta resume_lsn at the last commit")
        }
        try withMeta(ws, "last_commit_lsn", keyBytes(try Self.header(ws, earlier).lsn.value)) {
            Self.expectFailure(try log.verify(ws), at: head, naming: ["last_commit_lsn"], "meta last_commit_lsn of an earlier transaction")
        }
        #expect(try log.verify(ws).status == 0, "the log is back as it was")
    }
}
