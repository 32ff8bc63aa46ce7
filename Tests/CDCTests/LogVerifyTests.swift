import EventLog
import Foundation
import Testing
import TestSupport

/// Tamper evidence: `cdc log verify` recomputes every hash and names the first bad record; a digest
/// kept outside proves the history it covered is still there, even after a consistent rewrite.
@Suite(.timeLimit(.minutes(15))) struct LogVerifyTests {
    /// A log with a snapshot and a few transactions, written by the real cdc.
    func makeLog(_ name: String) throws -> CDCWorkspace {
        let ws = try CDCWorkspace(name)
        try ws.sql(Fixture.facility("F1", "Mercy", type: "Academic"))
        try ws.initialize()
        for i in 1...5 {
            try ws.sql("""
                BEGIN; INSERT INTO surgeons VALUES ('S\(i)', 'Dr \(i)', 'Urology', \(i), 'Basic');
                UPDATE facilities SET bed_count = \(300 + i) WHERE facility_id = 'F1'; COMMIT
                """)
        }
        try ws.catchUp()
        return ws
    }

    func verify(_ ws: CDCWorkspace, _ extra: [String] = []) throws -> Shell.Result {
        try ws.cdc(["log", "verify", "--log", ws.logPath] + extra)
    }

    struct Databases {
        var events, leaves, roots, meta: LMDBDatabase
    }

    /// Edits the log's LMDB environment directly, as someone with file access could.
    func tamper(_ ws: CDCWorkspace, _ body: (LMDBTransaction, Databases) throws -> Void) throws {
        let env = try LMDBEnvironment(path: ws.logPath, readOnly: false)
        let dbs = Databases(events: try env.openDatabase("events", create: false), leaves: try env.openDatabase("leaves", create: false),
                            roots: try env.openDatabase("roots", create: false), meta: try env.openDatabase("meta", create: false))
        try env.withTransaction(readOnly: false) { txn in try body(txn, dbs) }
    }

    func value(_ txn: LMDBTransaction, _ db: LMDBDatabase, _ seq: UInt64) throws -> [UInt8] {
        try #require(try txn.get(db, key: keyBytes(seq))).map { $0 }
    }

    @Test func cleanLogVerifies() throws {
        let ws = try makeLog("verifyok")
        defer { ws.tearDown() }
        let events = try ws.export()
        let result = try verify(ws)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("ok: \(events.count) records and 6 transactions verified"), "\(result.stdout)")
        #expect(try verify(ws, ["--from", "5", "--to", "9"]).status == 0)
    }

    @Test func oneChangedByteIsCaughtAndLocated() throws {
        let ws = try makeLog("verifybyte")
        defer { ws.tearDown() }
        let target = UInt64(try ws.export().count - 2)
        try tamper(ws) { txn, db in
            var bytes = try value(txn, db.events, target)
            bytes[bytes.count - 1] ^= 0x01  // one bit of the last value's last byte
            try txn.put(db.events, key: keyBytes(target), value: bytes)
        }
        let result = try verify(ws)
        #expect(result.status == 1, "README: verify exits 1 naming the first bad record; got \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("seq \(target):"), "\(result.stderr)")
    }

    @Test func deletedRecordIsCaughtAndLocated() throws {
        let ws = try makeLog("verifydel")
        defer { ws.tearDown() }
        try tamper(ws) { txn, db in try txn.delete(db.events, key: keyBytes(UInt64(10))) }
        let result = try verify(ws)
        #expect(result.status == 1, "README: verify exits 1 naming the first bad record; got \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("seq 10:") && result.stderr.contains("missing"), "\(result.stderr)")
    }

    /// Leaves before `--from` are taken as stored and folded into the tree without their records: one
    /// of the wrong length (a damaged file) is named, not a crash of the verifier.
    @Test func storedLeafOfTheWrongLengthIsNamed() throws {
        let ws = try makeLog("verifyleaflen")
        defer { ws.tearDown() }
        try tamper(ws) { txn, db in
            let leaf = try value(txn, db.leaves, 2)
            try txn.put(db.leaves, key: keyBytes(UInt64(2)), value: Array(leaf.dropLast()))
        }
        let result = try verify(ws, ["--from", "5"])
        #expect(result.status == 1, "README: verify exits 1 naming the first bad record; got \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("seq 2:") && result.stderr.contains("31 bytes, not 32"), "\(result.stderr)")
    }

    @Test func reorderedPairIsCaughtAndLocated() throws {
        let ws = try makeLog("verifyswap")
        defer { ws.tearDown() }
        let count = UInt64(try ws.export().count)
        let (a, b) = (count - 3, count - 2)
        try tamper(ws) { txn, db in
            // Swap the records and their leaf hashes, so each record still matches its own hash.
            let (ra, rb) = (try value(txn, db.events, a), try value(txn, db.events, b))
            let (la, lb) = (try value(txn, db.leaves, a), try value(txn, db.leaves, b))
            try txn.put(db.events, key: keyBytes(a), value: rb)
            try txn.put(db.events, key: keyBytes(b), value: ra)
            try txn.put(db.leaves, key: keyBytes(a), value: lb)
            try txn.put(db.leaves, key: keyBytes(b), value: la)
        }
        let result = try verify(ws)
        #expect(result.status == 1, "README: verify exits 1 naming the first bad record; got \(result.status): \(result.stderr)")
        let failed = result.stderr.split(separator: "\n").first { $0.hasPrefix("cdc: error:") }.map(String.init) ?? ""
        #expect(failed.contains("seq \(a):") || failed.contains("seq \(b):"), "\(result.stderr)")
    }

    @Test func digestProvesAppendOnlyAndCatchesAConsistentRewrite() throws {
        let ws = try makeLog("verifydigest")
        defer { ws.tearDown() }
        let digest = try ws.cdc(["log", "digest", "--log", ws.logPath])
        #expect(digest.status == 0)
        let digestFile = ws.directory + "/digest.json"
        try digest.stdout.write(toFile: digestFile, atomically: true, encoding: .utf8)
        let digestObject = try #require(try JSONSerialization.jsonObject(with: Data(digest.stdout.utf8)) as? [String: Any])
        let covered = try #require(digestObject["seq"] as? Int)
        #expect((digestObject["root"] as? String)?.count == 64)

        // More appends: the digest still verifies (append-only since).
        try ws.sql("INSERT INTO surgeons VALUES ('S9', 'Dr 9', 'Urology', 9, 'Expert')")
        try ws.catchUp()
        let after = try verify(ws, ["--digest", digestFile])
        #expect(after.status == 0, "\(after.stderr)")
        #expect(after.stdout.contains("digest at seq \(covered) matched"))

        // Rewrite one covered record and recompute every hash the log stores, consistently.
        let victim = UInt64(covered - 1)
        let log = try EventLog.openForReading(path: ws.logPath)
        let head = try log.position().head
        var records: [[UInt8]] = []
        try log.scan { _, bytes in records.append(Array(bytes)); return true }
        var record = try RecordCodec.decode(records[Int(victim) - 1].withUnsafeBytes { $0 })
        guard case .row(let old, let before, var after?) = record.body else { Issue.record("victim is not a row"); return }
        after[after.count - 1] = .text(Array("Master".utf8))
        record.body = .row(old: old, before: before, after: after)
        records[Int(victim) - 1] = RecordCodec.encode(record)
        try tamper(ws) { txn, db in
            var frontier = MerkleFrontier()
            var rootSeqs = Set<UInt64>()
            try txn.scan(db.roots, from: nil) { key, _ in rootSeqs.insert(readU64(key)!); return true }
            for (i, bytes) in records.enumerated() {
                let seq = UInt64(i + 1)
                let leaf = bytes.withUnsafeBytes { MerkleFrontier.leafHash($0) }
                try txn.put(db.events, key: keyBytes(seq), value: bytes)
                try txn.put(db.leaves, key: keyBytes(seq), value: leaf)
                frontier.append(leaf: leaf)
                if rootSeqs.contains(seq) { try txn.put(db.roots, key: keyBytes(seq), value: frontier.root) }
            }
            #expect(frontier.size == head)
            try txn.put(db.meta, key: Array("merkle_frontier".utf8), value: frontier.encoded)
        }
        // The rewrite is self-consistent: only the digest kept outside catches it.
        #expect(try verify(ws).status == 0, "a consistent rewrite passes the internal checks")
        let rewritten = try verify(ws, ["--digest", digestFile])
        #expect(rewritten.status == 1, "exit 1 when the digest does not match; got \(rewritten.status): \(rewritten.stderr)")
        #expect(rewritten.stderr.contains("seq \(covered):") && rewritten.stderr.contains("digest"), "\(rewritten.stderr)")
    }
}
