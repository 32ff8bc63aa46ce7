import Crypto
import EventLog
import Foundation
import Testing
import TestSupport

/// RFC 9162 proofs and C2SP signed notes, against published vectors (Tests/Fixtures/merkle-proofs) and
/// against real logs written by EventLogWriter, at every tree size.
@Suite(.timeLimit(.minutes(15))) struct ProofTests {
    struct Vectors: Decodable {
        struct Inclusion: Decodable { var leaf: UInt64; var size: UInt64; var proof: [String] }
        struct Consistency: Decodable { var size1: UInt64; var size2: UInt64; var proof: [String] }
        struct Note: Decodable { var signer_key: String; var verifier_key: String; var text: String; var signed: String }
        var leaves: [String]
        var roots: [String]
        var inclusion: [Inclusion]
        var consistency: [Consistency]
        var note: Note
    }

    static let vectors: Vectors = {
        let path = PostgresServer.repositoryRoot + "/Tests/Fixtures/merkle-proofs/vectors.json"
        return try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }()

    static func h(_ text: String) -> Hash { hexBytes(text)! }
    static let leafHashes: [Hash] = vectors.leaves.map { h in hexBytes(h)!.withUnsafeBytes { MerkleFrontier.leafHash($0) } }

    /// Perfect subtrees from a list of leaf hashes, the slow way.
    static func perfect(_ leaves: [Hash]) -> (UInt64, UInt8) -> Hash {
        func p(_ start: UInt64, _ height: UInt8) -> Hash {
            height == 0 ? leaves[Int(start)]
                : MerkleFrontier.nodeHash(p(start, height - 1), p(start + (1 << UInt64(height - 1)), height - 1))
        }
        return p
    }

    @Test func inclusionProofsEqualThePublishedVectorsAndVerify() throws {
        for v in Self.vectors.inclusion {
            let path = MerkleProof.inclusionPath(index: v.leaf - 1, size: v.size, perfect: Self.perfect(Self.leafHashes))
            #expect(path.map(hex) == v.proof, "leaf \(v.leaf) size \(v.size)")
            let root = Self.h(Self.vectors.roots[Int(v.size) - 1])
            try MerkleProof.verifyInclusion(index: v.leaf - 1, size: v.size, leafHash: Self.leafHashes[Int(v.leaf) - 1],
                                            path: v.proof.map(Self.h), root: root)
            // Forged: each bit flip, a wrong index, a wrong size, a removed or an added hash.
            for i in v.proof.indices {
                var forged = v.proof.map(Self.h); forged[i][0] ^= 8
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyInclusion(index: v.leaf - 1, size: v.size, leafHash: Self.leafHashes[Int(v.leaf) - 1], path: forged, root: root)
                }
            }
            if !v.proof.isEmpty {
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyInclusion(index: v.leaf - 1, size: v.size, leafHash: Self.leafHashes[Int(v.leaf) - 1],
                                                    path: Array(v.proof.map(Self.h).dropLast()), root: root)
                }
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyInclusion(index: v.leaf - 1, size: v.size * 2, leafHash: Self.leafHashes[Int(v.leaf) - 1],
                                                    path: v.proof.map(Self.h), root: root)
                }
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyInclusion(index: v.leaf % v.size, size: v.size, leafHash: Self.leafHashes[Int(v.leaf) - 1],
                                                    path: v.proof.map(Self.h), root: root)
                }
            }
            #expect(throws: MerkleProof.Failure.self) {
                try MerkleProof.verifyInclusion(index: v.leaf - 1, size: v.size, leafHash: Self.leafHashes[Int(v.leaf) - 1],
                                                path: v.proof.map(Self.h) + [root], root: root)
            }
        }
    }

    @Test func consistencyProofsEqualThePublishedVectorsAndVerify() throws {
        for v in Self.vectors.consistency {
            let path = MerkleProof.consistencyPath(from: v.size1, to: v.size2, perfect: Self.perfect(Self.leafHashes))
            #expect(path.map(hex) == v.proof, "sizes \(v.size1) \(v.size2)")
            let (r1, r2) = (Self.h(Self.vectors.roots[Int(v.size1) - 1]), Self.h(Self.vectors.roots[Int(v.size2) - 1]))
            try MerkleProof.verifyConsistency(oldSize: v.size1, newSize: v.size2, oldRoot: r1, newRoot: r2, path: v.proof.map(Self.h))
            for i in v.proof.indices {
                var forged = v.proof.map(Self.h); forged[i][0] ^= 16
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyConsistency(oldSize: v.size1, newSize: v.size2, oldRoot: r1, newRoot: r2, path: forged)
                }
            }
            if !v.proof.isEmpty {
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyConsistency(oldSize: v.size1, newSize: v.size2, oldRoot: r2, newRoot: r1, path: v.proof.map(Self.h))
                }
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyConsistency(oldSize: v.size1, newSize: v.size2, oldRoot: r1, newRoot: r2, path: [])
                }
                #expect(throws: MerkleProof.Failure.self) {
                    try MerkleProof.verifyConsistency(oldSize: v.size1 + 1, newSize: v.size2, oldRoot: r1, newRoot: r2, path: v.proof.map(Self.h))
                }
            }
        }
    }

    /// RFC 9162 2.1.4.2 checks both roots: a valid path with another old root (or another new root) is
    /// refused, also when the old size is not a power of two (the old root is then not on the path).
    @Test func consistencyVerificationChecksTheOldRootAndTheNewRoot() throws {
        for v in Self.vectors.consistency where !v.proof.isEmpty && v.size1 > 0 && v.size1 < v.size2 {
            let (r1, r2) = (Self.h(Self.vectors.roots[Int(v.size1) - 1]), Self.h(Self.vectors.roots[Int(v.size2) - 1]))
            let path = v.proof.map(Self.h)
            var otherOld = r1; otherOld[31] ^= 1
            var otherNew = r2; otherNew[0] ^= 1
            #expect(throws: MerkleProof.Failure.self, "sizes \(v.size1) \(v.size2): another old root") {
                try MerkleProof.verifyConsistency(oldSize: v.size1, newSize: v.size2, oldRoot: otherOld, newRoot: r2, path: path)
            }
            #expect(throws: MerkleProof.Failure.self, "sizes \(v.size1) \(v.size2): another new root") {
                try MerkleProof.verifyConsistency(oldSize: v.size1, newSize: v.size2, oldRoot: r1, newRoot: otherNew, path: path)
            }
            // The root of a smaller old tree, with the path of the right one.
            if v.size1 > 1 {
                let smaller = Self.h(Self.vectors.roots[Int(v.size1) - 2])
                #expect(throws: MerkleProof.Failure.self, "sizes \(v.size1) \(v.size2): the old root of size \(v.size1 - 1)") {
                    try MerkleProof.verifyConsistency(oldSize: v.size1, newSize: v.size2, oldRoot: smaller, newRoot: r2, path: path)
                }
            }
        }
        #expect(Self.vectors.consistency.contains { $0.size1 > 0 && $0.size1 & ($0.size1 - 1) != 0 && !$0.proof.isEmpty }, "a vector with an old size that is not a power of two")
    }

    /// A log of `count` message records in transactions of 1 to 7 records, flushed every few transactions.
    static func writeLog(_ count: Int) throws -> (path: String, directory: String) {
        let directory = try TemporaryDirectory.make(prefix: "proofs")
        let path = directory + "/log"
        let writer = try EventLogWriter(path: path)
        var written = 0, txn = 0
        while written < count {
            txn += 1
            let size = min(1 + txn % 7, count - written)
            let lsn = LSN(UInt64(0x1000 + txn * 16))
            for i in 0..<size {
                writer.append(Record(header: RecordHeader(op: .message, flags: .transactional, lsn: lsn, xid: UInt32(txn), commitTime: 0, relationSeq: 0),
                                     body: .message(prefix: "p", content: Array("record \(written + i + 1)".utf8))))
            }
            written += size
            writer.endTransaction(commitLSN: lsn, commitTime: 0, resume: LSN(lsn.value + 1))
            if txn % 3 == 0 { try writer.flush() }
        }
        try writer.flush()
        return (path, directory)
    }

    @Test func proofsFromALogVerifyAtEveryTreeSizeAndEqualTheFrontiersRoots() throws {
        let (path, directory) = try Self.writeLog(300)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try EventLog.openForReading(path: path)
        var frontier = MerkleFrontier()
        var roots: [Hash] = [frontier.root]
        for seq in 1...UInt64(300) {
            let leaf = try log.leaf(seq)
            frontier.append(leaf: try #require(leaf))
            roots.append(frontier.root)
        }
        for size in UInt64(0)...300 {
            #expect(try log.root(size: size) == roots[Int(size)], "root at size \(size)")
        }
        for size in [UInt64(1), 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 299, 300] {
            for seq in Set([UInt64(1), 2, size / 2 + 1, size - 1, size, 17, 129].filter { $0 >= 1 && $0 <= size }) {
                let proof = try log.inclusionProof(seq: seq, size: size)
                #expect(proof.root == roots[Int(size)])
                try proof.verify()
                let reparsed = try ProofFile.parse(Data(proof.json.utf8))
                guard case .inclusion(let p) = reparsed else { Issue.record("not an inclusion proof"); continue }
                #expect(p == proof)
            }
            for old in [UInt64(0), 1, 2, 5, 16, 17, 64, 100, size - 1, size].filter({ $0 <= size }) {
                let proof = try log.consistencyProof(oldSize: old, newSize: size)
                #expect(proof.oldRoot == roots[Int(old)] && proof.newRoot == roots[Int(size)])
                try proof.verify()
            }
        }
        #expect(throws: ProofRequestError.self) { _ = try log.inclusionProof(seq: 301) }
        #expect(throws: ProofRequestError.self) { _ = try log.inclusionProof(seq: 5, size: 301) }
        #expect(throws: ProofRequestError.self) { _ = try log.consistencyProof(oldSize: 10, newSize: 5) }
        let report = try log.verify()
        #expect(report.nodesChecked > 0, "the writer stored interior nodes and verify compared them")
    }

    /// Proofs read the stored `nodes`, so a forged node makes them lie (another root, self-consistent
    /// paths); `verify` recomputes every stored node and names the first that does not match.
    @Test func aForgedStoredNodeIsCaughtByVerify() throws {
        let (path, directory) = try Self.writeLog(100)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let honest = try EventLog.openForReading(path: path).root(size: 60)
        do {
            let env = try LMDBEnvironment(path: path, readOnly: false)
            let nodes = try env.openDatabase("nodes", create: false)
            try env.withTransaction(readOnly: false) { txn in
                let key = MerkleNodes.key(endSeq: 48, height: 4)
                var hash = try #require(try txn.get(nodes, key: key)).map { $0 }
                hash[5] ^= 0x20
                try txn.put(nodes, key: key, value: hash)
            }
        }
        let log = try EventLog.openForReading(path: path)
        #expect(try log.root(size: 60) != honest, "the root of the tree of 60 records goes through the forged node of records 33...48")
        try log.inclusionProof(seq: 50, size: 60).verify()  // self-consistent: it takes verify to tell
        do {
            _ = try log.verify()
            Issue.record("verify passed a forged Merkle node")
        } catch let failure as VerificationFailure {
            #expect(failure.seq == 48 && failure.reason.contains("Merkle node of height 4"), "\(failure)")
        }
    }

    /// A stored node where the tree has none (a planted or misplaced entry) is named too — one between
    /// two real nodes and one past the last — and the real nodes are still compared.
    @Test func aStoredNodeTheTreeDoesNotHaveIsNamed() throws {
        for (endSeq, height) in [(UInt64(40), UInt8(4)), (UInt64(100), UInt8(6))] {
            let (path, directory) = try Self.writeLog(100)
            defer { try? FileManager.default.removeItem(atPath: directory) }
            do {
                let env = try LMDBEnvironment(path: path, readOnly: false)
                let nodes = try env.openDatabase("nodes", create: false)
                try env.withTransaction(readOnly: false) { txn in
                    try txn.put(nodes, key: MerkleNodes.key(endSeq: endSeq, height: height), value: [UInt8](repeating: 7, count: 32))
                }
            }
            do {
                _ = try EventLog.openForReading(path: path).verify()
                Issue.record("verify passed a stray node ending at \(endSeq)")
            } catch let failure as VerificationFailure {
                #expect(failure.seq == endSeq && failure.reason.contains("height \(height)") && failure.reason.contains("the tree does not have"),
                        "\(failure)")
            }
        }
    }

    @Test func signedNotesEqualGolangXModNoteVectors() throws {
        let v = Self.vectors.note
        let signer = try NoteSigner(privateKey: v.signer_key)
        #expect(signer.verifierKey == v.verifier_key)
        #expect(signer.privateKeyLine == v.signer_key + "\n")
        let verifier = try NoteVerifier(verifierKey: v.verifier_key)
        #expect(try verifier.open(v.signed) == v.text)
        let signed = try signer.sign(v.text)
        #expect(try verifier.open(signed) == v.text)
        #expect(signed == v.signed, "Ed25519 is deterministic: the same signature as x/mod/sumdb/note")
        // Tampered body, tampered signature, another key.
        #expect(throws: SignedNote.Failure.self) { _ = try verifier.open(v.signed.replacingOccurrences(of: "problem,", with: "problem;")) }
        #expect(throws: SignedNote.Failure.self) { _ = try verifier.open(v.signed.replacingOccurrences(of: "x08go/ZJ", with: "x08go/ZK")) }
        let other = try NoteSigner(generating: "PeterNeumann")
        #expect(throws: SignedNote.Failure.self) { _ = try NoteVerifier(verifierKey: other.verifierKey).open(v.signed) }
        #expect(throws: SignedNote.Failure.self) { _ = try NoteVerifier(verifierKey: "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW") }
    }

    @Test func checkpointBodiesFollowTlogCheckpoint() throws {
        let root = Self.h(Self.vectors.roots[7])
        let c = Checkpoint(origin: "example.com/log", size: 8, root: root)
        #expect(c.text == "example.com/log\n8\n" + Data(root).base64EncodedString() + "\n")
        #expect(try Checkpoint(text: c.text) == c)
        #expect(throws: SignedNote.Failure.self) { _ = try Checkpoint(text: "example.com/log\n08\nAAAA\n") }
        #expect(throws: SignedNote.Failure.self) { _ = try Checkpoint(text: "example.com/log\n8\n") }
    }

    /// Figures for the closing note (no timed assertion): CDC_PROOF_BENCH=1000000 swift test --filter proofFigures.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["CDC_PROOF_BENCH"] != nil)) func proofFigures() throws {
        let count = Int(ProcessInfo.processInfo.environment["CDC_PROOF_BENCH"] ?? "") ?? 1_000_000
        let (path, directory) = try Self.writeLog(count)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = try EventLog.openForReading(path: path)
        let n = UInt64(count)
        var bytes = 0, consistencyBytes = 0
        let clock = ContinuousClock()
        let samples = 1000
        let inclusion = try clock.measure {
            for i in 0..<samples {
                let seq = UInt64(i) * 7919 % n + 1
                bytes += try log.inclusionProof(seq: seq, size: n).json.utf8.count + 1
            }
        }
        let consistency = try clock.measure {
            for i in 0..<samples {
                consistencyBytes += try log.consistencyProof(oldSize: UInt64(i) * 7919 % n + 1, newSize: n).json.utf8.count + 1
            }
        }
        print("proof figures at \(count) records: inclusion \(bytes / samples) bytes, \(inclusion / samples) per proof; consistency \(consistencyBytes / samples) bytes, \(consistency / samples) per proof")
    }
}
