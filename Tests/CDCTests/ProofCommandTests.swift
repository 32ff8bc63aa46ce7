import EventLog
import Foundation
import Testing
import TestSupport

/// `cdc log prove`, `check-proof`, `keygen`, `digest --sign` and `verify --checkpoint` on the golden
/// log (written by a real capture) and on a log written by EventLogWriter; every bad input is one line
/// on stderr naming the failed check, exit 1.
@Suite(.timeLimit(.minutes(15))) struct ProofCommandTests {
    static func cdc(_ arguments: [String]) throws -> Shell.Result {
        try Shell.run(CDCWorkspace.executable, arguments)
    }

    static func ok(_ arguments: [String]) throws -> String {
        let result = try cdc(arguments)
        #expect(result.status == 0, "cdc \(arguments.joined(separator: " ")): \(result.stderr)")
        return result.stdout
    }

    /// Exit 1 and one stderr line containing `check`.
    static func refused(_ arguments: [String], _ check: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try cdc(arguments)
        #expect(result.status == 1, "cdc \(arguments.joined(separator: " ")) exited \(result.status)", sourceLocation: sourceLocation)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && result.stderr.contains(check), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
    }

    /// `json` with one character changed, `offset` places after the first `marker` (e.g. `"path":["`):
    /// `a` becomes `b`, anything else becomes `a`. A forged hex digit or base64 character of a proof.
    static func changing(_ json: String, after marker: String, offset: Int, _ a: Character = "0", _ b: Character = "1") throws -> String {
        let start = try #require(json.range(of: marker)).upperBound
        var changed = json
        let at = changed.index(start, offsetBy: offset)
        changed.replaceSubrange(at...at, with: String(changed[at] == a ? b : a))
        return changed
    }

    static func write(_ text: String, _ path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    @Test func inclusionAndConsistencyProofsOfTheGoldenLogCheckOffline() throws {
        let log = try GoldenLog.copy()
        let work = (log as NSString).deletingLastPathComponent
        let digestFile = GoldenLog.directory + "/digest.json"
        let digest = try JSONDecoder().decode(LogDigest.self, from: Data(try GoldenLog.file("digest.json").utf8))
        for seq in 1...digest.seq {
            let proof = try Self.ok(["log", "prove", String(seq), "--log", log])
            #expect(proof.hasPrefix("{\"format\":\"cdc-inclusion-proof-1\",\"seq\":\(seq),\"tree_size\":\(digest.seq),\"leaf_hash\":\""))
            #expect(proof.contains("\"root\":\"\(digest.root)\"}"))
            try Self.write(proof, work + "/p.json")
            let checked = try Self.ok(["log", "check-proof", work + "/p.json", "--digest", digestFile]).split(separator: "\n")
            #expect(checked.count == 2 && checked[0].hasPrefix("ok: record \(seq) is in the tree of \(digest.seq) records"))
            #expect(checked.count == 2 && checked[1].hasPrefix("{\"seq\":\(seq),"))
        }
        // Smaller trees: roots equal the verifier's recomputation through consistency proofs.
        for old in [UInt64(0), 1, 2, 7, 16, 17, 33, 34] {
            let proof = try Self.ok(["log", "prove", "--consistency", "--from-size", String(old), "--log", log])
            #expect(proof.hasPrefix("{\"format\":\"cdc-consistency-proof-1\",\"old_size\":\(old),\"new_size\":34,"))
            try Self.write(proof, work + "/c.json")
            _ = try Self.ok(["log", "check-proof", work + "/c.json", "--digest", digestFile])
        }
        let proof = try Self.ok(["log", "prove", "5", "--size", "20", "--log", log])
        #expect(proof.contains("\"tree_size\":20,"))
        _ = try Self.ok(["log", "prove", "--consistency", "--from-digest", digestFile, "--log", log])
        _ = try Self.ok(["log", "prove", "3", "--digest", digestFile, "--log", log])
    }

    @Test func signedCheckpointsVerifyAndBadInputsNameTheFailedCheck() throws {
        let log = try GoldenLog.copy()
        let work = (log as NSString).deletingLastPathComponent
        let key = work + "/signing.key"
        let vkey = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", key]).trimmingCharacters(in: .newlines)
        #expect(vkey.hasPrefix("audit.example+") && vkey.split(separator: "+", maxSplits: 2).count == 3)
        let mode = try FileManager.default.attributesOfItem(atPath: key)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try String(contentsOfFile: key, encoding: .utf8).hasPrefix("PRIVATE+KEY+audit.example+"))
        try Self.refused(["log", "keygen", "--name", "audit.example", "--out", key], "refusing to overwrite")

        let note = try Self.ok(["log", "digest", "--sign", key, "--log", log])
        let lines = note.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == 6 && lines[0] == "cdc/7714581062302697163/golden/" + lines[0].split(separator: "/").last! && lines[1] == "34" && lines[3] == "" && lines[4].hasPrefix("— audit.example ") && lines[5] == "")
        let checkpoint = work + "/checkpoint"
        try Self.write(note, checkpoint)
        let verified = try Self.ok(["log", "verify", "--log", log, "--checkpoint", checkpoint, "--key", vkey])
        #expect(verified.contains("signed checkpoint at seq 34 matched"))
        try Self.write(vkey + "\n", work + "/vkey")
        _ = try Self.ok(["log", "verify", "--log", log, "--checkpoint", checkpoint, "--key", work + "/vkey"])
        _ = try Self.ok(["log", "digest", "--sign", key, "--origin", "example.com/cdc", "--log", log])

        try Self.write(try Self.ok(["log", "prove", "9", "--log", log]), work + "/p.json")
        _ = try Self.ok(["log", "check-proof", work + "/p.json", "--checkpoint", checkpoint, "--key", vkey])

        // A wrong key, a tampered body, a tampered signature.
        let otherKey = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", work + "/other.key"]).trimmingCharacters(in: .newlines)
        try Self.refused(["log", "verify", "--log", log, "--checkpoint", checkpoint, "--key", otherKey], "checkpoint signature check failed")
        try Self.refused(["log", "check-proof", work + "/p.json", "--checkpoint", checkpoint, "--key", otherKey], "checkpoint signature check failed")
        try Self.write(note.replacingOccurrences(of: "\n34\n", with: "\n33\n"), work + "/tampered")
        try Self.refused(["log", "verify", "--log", log, "--checkpoint", work + "/tampered", "--key", vkey], "checkpoint signature check failed")
        var signature = Array(lines[4].utf8)
        signature[signature.count - 5] = signature[signature.count - 5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        try Self.write(lines[0...3].joined(separator: "\n") + "\n" + String(decoding: signature, as: UTF8.self) + "\n", work + "/tampered-sig")
        try Self.refused(["log", "verify", "--log", log, "--checkpoint", work + "/tampered-sig", "--key", vkey], "checkpoint signature check failed")
        try Self.refused(["log", "verify", "--log", log, "--checkpoint", checkpoint, "--key", "not+a+key"], "verifier key check failed")

        // Seq past the tree size, tree size past the head.
        try Self.refused(["log", "prove", "35", "--log", log], "seq check failed")
        try Self.refused(["log", "prove", "10", "--size", "9", "--log", log], "seq check failed")
        try Self.refused(["log", "prove", "1", "--size", "35", "--log", log], "tree size check failed")
        try Self.refused(["log", "prove", "--consistency", "--from-size", "35", "--log", log], "tree size check failed")

        // A digest of another log: another system identifier, or another root.
        let digest = try GoldenLog.file("digest.json")
        try Self.write(digest.replacingOccurrences(of: "7714581062302697163", with: "1234"), work + "/other-source.json")
        try Self.refused(["log", "prove", "1", "--digest", work + "/other-source.json", "--log", log], "digest check failed")
        try Self.write(digest.replacingOccurrences(of: "\"root\":\"a", with: "\"root\":\"b"), work + "/other-root.json")
        try Self.refused(["log", "prove", "1", "--digest", work + "/other-root.json", "--log", log], "digest check failed")
        try Self.refused(["log", "check-proof", work + "/p.json", "--digest", work + "/other-root.json"], "root check failed")
        try Self.write(try Self.ok(["log", "prove", "9", "--size", "20", "--log", log]), work + "/p20.json")
        try Self.refused(["log", "check-proof", work + "/p20.json", "--digest", GoldenLog.directory + "/digest.json"], "tree size check failed")

        // A forged path, a forged record, malformed files.
        let proof = try String(contentsOfFile: work + "/p.json", encoding: .utf8)
        try Self.write(try Self.changing(proof, after: "\"path\":[\"", offset: 3), work + "/forged.json")
        try Self.refused(["log", "check-proof", work + "/forged.json"], "inclusion proof check failed")
        try Self.write(try Self.changing(proof, after: "\"record\":\"", offset: 10, "A", "B"), work + "/forged-record.json")
        try Self.refused(["log", "check-proof", work + "/forged-record.json"], "inclusion proof check failed")
        try Self.write("{\"format\":\"cdc-inclusion-proof-1\",\"seq\":1}", work + "/malformed.json")
        try Self.refused(["log", "check-proof", work + "/malformed.json"], "malformed proof")
        try Self.write("not json", work + "/garbage.json")
        try Self.refused(["log", "check-proof", work + "/garbage.json"], "malformed proof")
        try Self.write("garbage\n", work + "/garbage-checkpoint")
        try Self.refused(["log", "verify", "--log", log, "--checkpoint", work + "/garbage-checkpoint", "--key", vkey], "checkpoint signature check failed")
        try Self.write("garbage\n", work + "/garbage.key")
        try Self.refused(["log", "digest", "--sign", work + "/garbage.key", "--log", log], "private key check failed")
    }

    /// The golden log predates `nodes`: proofs compute subtrees from leaves, and a newer writer that
    /// opens it builds its nodes once, which `cdc log verify` then checks (34 records: the subtrees of
    /// 16 leaves ending at 16 and 32 and the one of 32 leaves).
    @Test func anOlderLogGetsItsNodesOnceAndVerifyChecksThem() throws {
        let log = try GoldenLog.copy()
        let before = try Self.ok(["log", "prove", "5", "--log", log])
        #expect(!(try Self.ok(["log", "verify", "--log", log]).contains("Merkle nodes")))
        do { _ = try EventLogWriter(path: log, create: false) }
        #expect(try Self.ok(["log", "verify", "--log", log, "--digest", GoldenLog.directory + "/digest.json"]).contains(", 3 stored Merkle nodes matched"))
        #expect(try Self.ok(["log", "prove", "5", "--log", log]) == before)
    }

    /// Writes a log of `transactions` small transactions (1 to 4 messages each, 250 records for 100)
    /// with EventLogWriter, flushing every 5, so that it has stored Merkle nodes.
    static func writerLog(_ path: String, transactions: Int = 100) throws {
        let writer = try EventLogWriter(path: path)
        for txn in 1...transactions {
            let lsn = LSN(UInt64(0x1000 + txn * 16))
            for i in 0..<(txn % 4 + 1) {
                writer.append(Record(header: RecordHeader(op: .message, flags: .transactional, lsn: lsn, xid: UInt32(txn), commitTime: 0, relationSeq: 0),
                                     body: .message(prefix: "t", content: Array("\(txn).\(i)".utf8))))
            }
            writer.endTransaction(commitLSN: lsn, commitTime: 0, resume: LSN(lsn.value + 1))
            if txn % 5 == 0 { try writer.flush() }
        }
        try writer.flush()
    }

    /// A log of many small transactions written by EventLogWriter: the CLI's proofs verify at many sizes,
    /// and `cdc log verify` checks the stored interior nodes.
    @Test func proofsOfAWriterLogAtManySizes() throws {
        let directory = try TemporaryDirectory.make(prefix: "proofcli")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/log"
        try Self.writerLog(path)
        let head = try EventLog.openForReading(path: path).position().head
        #expect(try Self.ok(["log", "verify", "--log", path]).contains("stored Merkle nodes matched"))
        for size in [UInt64(1), 16, 17, 64, 100, 128, head] where size <= head {
            for seq in [UInt64(1), size / 2 + 1, size] {
                try Self.write(try Self.ok(["log", "prove", String(seq), "--size", String(size), "--log", path]), directory + "/p.json")
                let out = try Self.ok(["log", "check-proof", directory + "/p.json"])
                #expect(out.contains("\"op\":\"message\",\"transactional\":true,\"prefix\":\"t\""))
            }
            try Self.write(try Self.ok(["log", "prove", "--consistency", "--from-size", String(size / 3), "--size", String(size), "--log", path]), directory + "/c.json")
            _ = try Self.ok(["log", "check-proof", directory + "/c.json"])
        }
    }

    /// A changed entry of `nodes` (the stored hash of the subtree of records 1...16, which the proofs of
    /// records 17...32 and the roots of trees of 16 to 31 records use): `cdc log verify` names its seq
    /// and the node, and the proofs built from it do not verify against the digest and checkpoint taken
    /// before, neither with `cdc log check-proof` nor with tools/audit-verify (x/mod's tlog).
    @Test func aTamperedMerkleNodeIsCaughtByVerifyAndByEveryProofOverIt() throws {
        let directory = try TemporaryDirectory.make(prefix: "proofnode")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/log"
        try Self.writerLog(path)
        let vkey = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", directory + "/signing.key"]).trimmingCharacters(in: .newlines)
        try Self.write(try Self.ok(["log", "digest", "--log", path]), directory + "/digest.json")
        try Self.write(try Self.ok(["log", "digest", "--sign", directory + "/signing.key", "--origin", "example.com/cdc-test", "--log", path]), directory + "/checkpoint")
        try Self.write(try Self.ok(["log", "prove", "--consistency", "--from-size", "20", "--size", "40", "--log", path]), directory + "/c20-40.json")
        let before = try Self.ok(["log", "prove", "20", "--log", path])
        let before20 = try Self.ok(["log", "prove", "17", "--size", "20", "--log", path])

        do {
            let env = try LMDBEnvironment(path: path, readOnly: false)
            let nodes = try env.openDatabase("nodes", create: false)
            let key = MerkleNodes.key(endSeq: 16, height: 4)
            try env.withTransaction(readOnly: false) { txn in
                var hash = Array(try #require(try txn.get(nodes, key: key)))
                hash[7] ^= 0x01
                try txn.put(nodes, key: key, value: hash)
            }
        }

        let verify = try Self.cdc(["log", "verify", "--log", path])
        #expect(verify.status == 1, "cdc log verify after a changed Merkle node: \(verify.stdout)")
        #expect(verify.stderr.contains("seq 16:") && verify.stderr.contains("Merkle node of height 4"), "stderr: \(verify.stderr)")

        let anchors = [["--digest", directory + "/digest.json"], ["--checkpoint", directory + "/checkpoint", "--key", vkey]]
        // Record 20 in the tree of all 250: its path holds the changed node, the root (from the stored
        // node of records 1...128) does not.
        let after = try Self.ok(["log", "prove", "20", "--log", path])
        #expect(after != before)
        try Self.write(after, directory + "/p20.json")
        for anchor in anchors {
            try Self.refused(["log", "check-proof", directory + "/p20.json"] + anchor, "inclusion proof check failed")
        }
        try ExternalVerifierTests.rejected(["-checkpoint", directory + "/checkpoint", "-key", vkey, directory + "/p20.json"], "inclusion proof check failed")
        // A consistency proof to the head from 20 records: the old tree's root is built from the node.
        try Self.write(try Self.ok(["log", "prove", "--consistency", "--from-size", "20", "--log", path]), directory + "/c20.json")
        for anchor in anchors {
            try Self.refused(["log", "check-proof", directory + "/c20.json"] + anchor, "consistency proof check failed")
        }
        try ExternalVerifierTests.rejected(["-checkpoint", directory + "/checkpoint", "-key", vkey, directory + "/c20.json"], "consistency proof check failed")
        // The tree of 20 records, whose root is built from the node: record 17's proof there holds
        // together (audit-verify alone accepts it), but its root is not the one the consistency proof
        // taken before the change reached: only a root kept outside the log catches it.
        func root(_ proof: String) throws -> String {
            try #require(try JSONSerialization.jsonObject(with: Data(proof.utf8)) as? [String: Any])["root"] as? String ?? ""
        }
        let old20 = try #require(try JSONSerialization.jsonObject(with: Data(try String(contentsOfFile: directory + "/c20-40.json", encoding: .utf8).utf8)) as? [String: Any])
        #expect(try root(before20) == old20["old_root"] as? String)
        let after20 = try Self.ok(["log", "prove", "17", "--size", "20", "--log", path])
        #expect(try root(after20) != old20["old_root"] as? String)
        try Self.write(after20, directory + "/p17-20.json")
        try ExternalVerifierTests.accepted([directory + "/p17-20.json"])
    }
}
