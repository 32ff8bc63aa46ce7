import EventLog
import Foundation
import Testing
import TestSupport

/// A signed checkpoint is only as good as the root it names: one signed by the right key for the right
/// origin but with another root (or the root of another tree size) is refused by `cdc log verify
/// --checkpoint` and `cdc log check-proof --checkpoint`; the signature alone proves nothing about the log.
@Suite(.timeLimit(.minutes(15))) struct ProofMutantTests {
    @Test func aValidlySignedCheckpointWithAnotherRootIsRefused() throws {
        let log = try GoldenLog.copy()
        let work = (log as NSString).deletingLastPathComponent
        let key = work + "/signing.key"
        let vkey = try ProofCommandTests.ok(["log", "keygen", "--name", "audit.example", "--out", key]).trimmingCharacters(in: .newlines)
        let signer = try NoteSigner(privateKey: try String(contentsOfFile: key, encoding: .utf8))
        let origin = String(try ProofCommandTests.ok(["log", "digest", "--sign", key, "--log", log]).prefix { $0 != "\n" })
        let (root20, root34) = try {
            let reader = try EventLog.openForReading(path: log)
            #expect(try reader.position().head == 34)
            return (try reader.root(size: 20), try reader.root(size: 34))
        }()
        func signed(size: UInt64, root: Hash, _ name: String) throws -> String {
            let path = work + "/" + name
            try ProofCommandTests.write(try signer.sign(Checkpoint(origin: origin, size: size, root: root).text), path)
            return path
        }
        try ProofCommandTests.write(try ProofCommandTests.ok(["log", "prove", "9", "--log", log]), work + "/p34.json")
        try ProofCommandTests.write(try ProofCommandTests.ok(["log", "prove", "9", "--size", "20", "--log", log]), work + "/p20.json")

        // The right root at a smaller size: accepted by both.
        let good20 = try signed(size: 20, root: root20, "good20")
        #expect(try ProofCommandTests.ok(["log", "verify", "--log", log, "--checkpoint", good20, "--key", vkey]).contains("signed checkpoint at seq 20 matched"))
        _ = try ProofCommandTests.ok(["log", "check-proof", work + "/p20.json", "--checkpoint", good20, "--key", vkey])

        // Another root at the head's size, and the head's root at size 20: the signature is valid, the root is not the log's.
        var forged = root34
        forged[0] ^= 0x80
        for (name, size, root) in [("forged34", UInt64(34), forged), ("wrongsize20", UInt64(20), root34), ("root20at34", UInt64(34), root20)] {
            let checkpoint = try signed(size: size, root: root, name)
            let verified = try ProofCommandTests.cdc(["log", "verify", "--log", log, "--checkpoint", checkpoint, "--key", vkey])
            #expect(verified.status == 1, "\(name): verify exited \(verified.status): \(verified.stdout)")
            #expect(verified.stderr.split(separator: "\n").count == 1 && verified.stderr.contains("rewritten"), "\(name): \(verified.stderr)")
            try ProofCommandTests.refused(["log", "check-proof", work + "/p\(size).json", "--checkpoint", checkpoint, "--key", vkey], "root check failed")
        }
    }
}
