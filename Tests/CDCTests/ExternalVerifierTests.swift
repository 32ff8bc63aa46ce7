import EventLog
import Foundation
import Testing
import TestSupport

/// cdc's proofs and signed checkpoints checked without cdc, by the reference implementations: the Go
/// program tools/audit-verify (golang.org/x/mod/sumdb/note, where the C2SP signed-note format comes
/// from, and sumdb/tlog's RFC 6962 proof checks), built from Debian's golang-go and
/// golang-golang-x-mod-dev (tools/install-deps installs them). It must accept what cdc writes and reject
/// what was changed, naming the same check cdc's own `check-proof` names.
@Suite(.timeLimit(.minutes(15))) struct ExternalVerifierTests {
    static let gopath = "/usr/share/gocode"

    /// Builds the Go program in `source` (a directory) into a temporary directory, offline (GOPATH mode,
    /// x/mod from the Debian package). Fails naming tools/install-deps when Go or x/mod is missing.
    static func buildGo(_ source: String, name: String) throws -> String {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":").map { String($0) + "/go" }
        guard let go = (path + ["/usr/lib/go/bin/go"]).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw TestFailure("go is not installed: run tools/install-deps (Debian packages golang-go and golang-golang-x-mod-dev)")
        }
        guard FileManager.default.fileExists(atPath: gopath + "/src/golang.org/x/mod/sumdb/note/note.go") else {
            throw TestFailure("golang.org/x/mod is not in \(gopath): run tools/install-deps (Debian package golang-golang-x-mod-dev)")
        }
        let directory = try TemporaryDirectory.make(prefix: name)
        let binary = directory + "/" + name
        // GOPATH mode does not build a package by absolute path: name its files.
        let files = try FileManager.default.contentsOfDirectory(atPath: source).filter { $0.hasSuffix(".go") && !$0.hasSuffix("_test.go") }.sorted()
        let result = try Shell.run(go, ["build", "-o", binary] + files.map { source + "/" + $0 },
                                   environment: ["GO111MODULE": "off", "GOPATH": gopath, "GOCACHE": directory + "/cache", "GOFLAGS": ""])
        guard result.status == 0 else { throw TestFailure("go build \(source) failed: \(result.stderr)") }
        return binary
    }

    private static let built = Result { try buildGo(PostgresServer.repositoryRoot + "/tools/audit-verify", name: "audit-verify") }

    /// tools/audit-verify, built once per test process.
    static func auditVerify() throws -> String { try built.get() }

    /// A Go helper for the other direction: keys and notes made by x/mod/sumdb/note that cdc must read.
    /// `sign SKEYFILE BODYFILE` prints the note signed by note.Sign; `keygen NAME SKEYFILE` writes
    /// note.GenerateKey's signer key and prints its verifier key.
    static let noteToolSource = """
        package main

        import (
        	"crypto/rand"
        	"fmt"
        	"os"
        	"strings"

        	"golang.org/x/mod/sumdb/note"
        )

        func check(err error) {
        	if err != nil {
        		fmt.Fprintln(os.Stderr, err)
        		os.Exit(1)
        	}
        }

        func main() {
        	switch os.Args[1] {
        	case "sign":
        		skey, err := os.ReadFile(os.Args[2])
        		check(err)
        		body, err := os.ReadFile(os.Args[3])
        		check(err)
        		signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
        		check(err)
        		msg, err := note.Sign(&note.Note{Text: string(body)}, signer)
        		check(err)
        		os.Stdout.Write(msg)
        	case "keygen":
        		skey, vkey, err := note.GenerateKey(rand.Reader, os.Args[2])
        		check(err)
        		check(os.WriteFile(os.Args[3], []byte(skey+"\\n"), 0o600))
        		fmt.Println(vkey)
        	}
        }
        """

    private static let builtNoteTool = Result {
        let source = try TemporaryDirectory.make(prefix: "note-tool-src")
        try noteToolSource.write(toFile: source + "/main.go", atomically: true, encoding: .utf8)
        return try buildGo(source, name: "note-tool")
    }

    static func noteTool(_ arguments: [String]) throws -> String {
        let result = try Shell.run(try builtNoteTool.get(), arguments)
        #expect(result.status == 0, "note-tool \(arguments.joined(separator: " ")): \(result.stderr)")
        return result.stdout
    }

    /// Runs tools/audit-verify: exit 0 and one `ok:` line per checkpoint and proof.
    static func accepted(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try Shell.run(try auditVerify(), arguments)
        #expect(result.status == 0, "audit-verify \(arguments.joined(separator: " ")): \(result.stderr)", sourceLocation: sourceLocation)
        let lines = result.stdout.split(separator: "\n")
        let expected = arguments.filter { $0.hasSuffix(".json") }.count + (arguments.contains("-checkpoint") ? 1 : 0)
        #expect(lines.count == expected && lines.allSatisfy { $0.hasPrefix("ok: ") }, "audit-verify: \(result.stdout)", sourceLocation: sourceLocation)
    }

    /// Runs tools/audit-verify: exit 1 and one stderr line containing `check`.
    static func rejected(_ arguments: [String], _ check: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let result = try Shell.run(try auditVerify(), arguments)
        #expect(result.status == 1, "audit-verify \(arguments.joined(separator: " ")) exited \(result.status): \(result.stdout)", sourceLocation: sourceLocation)
        #expect(result.stderr.split(separator: "\n").count == 1 && result.stderr.contains(check), "stderr: \(result.stderr)", sourceLocation: sourceLocation)
    }

    static func ok(_ arguments: [String]) throws -> String { try ProofCommandTests.ok(arguments) }
    static func write(_ text: String, _ path: String) throws { try ProofCommandTests.write(text, path) }

    /// The golden log (written by the real `cdc init` and `cdc run`): x/mod's note.Open accepts cdc's
    /// checkpoint with cdc's verifier key, and tlog's checks accept cdc's proofs of every record and
    /// consistency proofs from many sizes, all matching the checkpoint's root.
    @Test func theReferenceImplementationAcceptsTheGoldenLogsCheckpointAndProofs() throws {
        let log = try GoldenLog.copy()
        let work = (log as NSString).deletingLastPathComponent
        let vkey = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", work + "/signing.key"]).trimmingCharacters(in: .newlines)
        try Self.write(try Self.ok(["log", "digest", "--sign", work + "/signing.key", "--log", log]), work + "/checkpoint")
        try Self.write(vkey + "\n", work + "/vkey")
        try Self.accepted(["-checkpoint", work + "/checkpoint", "-key", vkey])
        try Self.accepted(["-checkpoint", work + "/checkpoint", "-key", work + "/vkey"])

        var proofs: [String] = []
        for seq in 1...34 {
            proofs.append(work + "/p\(seq).json")
            try Self.write(try Self.ok(["log", "prove", String(seq), "--log", log]), proofs.last!)
        }
        for old in [0, 1, 2, 3, 7, 8, 16, 17, 31, 32, 33, 34] {
            proofs.append(work + "/c\(old).json")
            try Self.write(try Self.ok(["log", "prove", "--consistency", "--from-size", String(old), "--log", log]), proofs.last!)
        }
        try Self.accepted(["-checkpoint", work + "/checkpoint", "-key", vkey] + proofs)

        // Smaller trees, without the checkpoint (its size is the head's).
        var smaller: [String] = []
        for (size, seqs) in [(1, [1]), (2, [1, 2]), (5, [1, 3, 5]), (16, [1, 9, 16]), (17, [1, 16, 17]), (33, [1, 17, 33])] {
            for seq in seqs {
                smaller.append(work + "/s\(size)-\(seq).json")
                try Self.write(try Self.ok(["log", "prove", String(seq), "--size", String(size), "--log", log]), smaller.last!)
            }
            for old in [1, size / 2, size - 1] where old >= 1 {
                smaller.append(work + "/s\(old)-\(size).json")
                try Self.write(try Self.ok(["log", "prove", "--consistency", "--from-size", String(old), "--size", String(size), "--log", log]), smaller.last!)
            }
        }
        try Self.accepted(smaller)
        try Self.rejected(["-checkpoint", work + "/checkpoint", "-key", vkey, work + "/s17-1.json"], "tree size check failed")
    }

    /// A log of 100 transactions (250 records) by EventLogWriter, so with stored Merkle nodes: tlog
    /// accepts, at every tree size 1...250, inclusion proofs of the first, middle and last records and
    /// consistency proofs from sizes around powers of two (and from 0, which tlog cannot check: by RFC
    /// 9162's empty root). These are the JSON lines `cdc log prove` prints (InclusionProof.json and
    /// ConsistencyProof.json), made in process to cover every size in seconds; the CLI's own output is
    /// checked at the head against the signed checkpoint, and above on the golden log.
    @Test func theReferenceImplementationAcceptsProofsAtEverySize() throws {
        let directory = try TemporaryDirectory.make(prefix: "extproofs")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/log"
        try ProofCommandTests.writerLog(path, transactions: 100)
        var proofs: [String] = []
        do {
            let log = try EventLog.openForReading(path: path)
            let head = try log.position().head
            #expect(head == 250)
            for size in 1...head {
                for seq in Set([1, size / 2 + 1, size]) {
                    proofs.append(directory + "/p\(seq)-\(size).json")
                    try Self.write(try log.inclusionProof(seq: seq, size: size).json, proofs.last!)
                }
                for old in Set([0, 1, 3, 8, 15, 16, 17, 32, 64, 129, size - 1, size]) where old <= size {
                    proofs.append(directory + "/c\(old)-\(size).json")
                    try Self.write(try log.consistencyProof(oldSize: old, newSize: size).json, proofs.last!)
                }
            }
        }
        try Self.accepted(proofs)

        let vkey = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", directory + "/signing.key"]).trimmingCharacters(in: .newlines)
        try Self.write(try Self.ok(["log", "digest", "--sign", directory + "/signing.key", "--origin", "example.com/cdc-test", "--log", path]), directory + "/checkpoint")
        var cli: [String] = []
        for seq in [1, 16, 17, 100, 126, 128, 129, 249, 250] {
            cli.append(directory + "/cli-p\(seq).json")
            let printed = try Self.ok(["log", "prove", String(seq), "--log", path])
            if [1, 126, 250].contains(seq) {
                #expect(printed == (try String(contentsOfFile: directory + "/p\(seq)-250.json", encoding: .utf8)) + "\n", "the CLI prints InclusionProof.json")
            }
            try Self.write(printed, cli.last!)
        }
        for old in [1, 17, 64, 200, 249] {
            cli.append(directory + "/cli-c\(old).json")
            try Self.write(try Self.ok(["log", "prove", "--consistency", "--from-size", String(old), "--log", path]), cli.last!)
        }
        try Self.accepted(["-checkpoint", directory + "/checkpoint", "-key", vkey] + cli)
    }

    /// The key and note formats both ways: x/mod's note.Sign with cdc's private key file writes the very
    /// bytes `cdc log digest --sign` does (Ed25519 is deterministic), and cdc signs with a key made by
    /// note.GenerateKey and verifies with its verifier key.
    @Test func keysAndNotesAreInterchangeableWithXModSumdbNote() throws {
        let log = try GoldenLog.copy()
        let work = (log as NSString).deletingLastPathComponent
        _ = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", work + "/cdc.key"])
        let note = try Self.ok(["log", "digest", "--sign", work + "/cdc.key", "--log", log])
        let body = try #require(note.range(of: "\n\n")).lowerBound
        try Self.write(String(note[...body]), work + "/body")
        let goNote = try Self.noteTool(["sign", work + "/cdc.key", work + "/body"])
        #expect(goNote == note, "note.Sign with cdc's key:\n\(goNote)\ncdc log digest --sign:\n\(note)")

        let goVkey = try Self.noteTool(["keygen", "go.example", work + "/go.key"]).trimmingCharacters(in: .newlines)
        let cdcSigned = try Self.ok(["log", "digest", "--sign", work + "/go.key", "--log", log])
        try Self.write(cdcSigned, work + "/checkpoint")
        #expect(try Self.ok(["log", "verify", "--log", log, "--checkpoint", work + "/checkpoint", "--key", goVkey]).contains("signed checkpoint at seq 34 matched"))
        try Self.accepted(["-checkpoint", work + "/checkpoint", "-key", goVkey])
        #expect(cdcSigned == (try Self.noteTool(["sign", work + "/go.key", work + "/body"])))
    }

    /// What was changed is rejected, with one line naming the failed check: a flipped path hash, another
    /// seq or old size, a changed record, a checkpoint whose size or root line was edited, a wrong key,
    /// and a checkpoint validly signed over another root; cdc's own checks name the same failures.
    @Test func theReferenceImplementationRejectsWhatWasChanged() throws {
        let log = try GoldenLog.copy()
        let work = (log as NSString).deletingLastPathComponent
        let key = work + "/signing.key"
        let vkey = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", key]).trimmingCharacters(in: .newlines)
        let note = try Self.ok(["log", "digest", "--sign", key, "--log", log])
        let checkpoint = work + "/checkpoint"
        try Self.write(note, checkpoint)
        let inclusion = try Self.ok(["log", "prove", "9", "--log", log])
        let consistency = try Self.ok(["log", "prove", "--consistency", "--from-size", "13", "--log", log])
        try Self.write(inclusion, work + "/p.json")
        try Self.write(consistency, work + "/c.json")
        try Self.accepted(["-checkpoint", checkpoint, "-key", vkey, work + "/p.json", work + "/c.json"])

        // One hex digit of the first path hash flipped.
        for (name, text, check) in [("p", inclusion, "inclusion proof check failed"), ("c", consistency, "consistency proof check failed")] {
            try Self.write(try ProofCommandTests.changing(text, after: "\"path\":[\"", offset: 5), work + "/\(name)-path.json")
            try Self.rejected([work + "/\(name)-path.json"], check)
            try ProofCommandTests.refused(["log", "check-proof", work + "/\(name)-path.json"], check)
        }

        // Another leaf index for the same leaf and path; another old size for the same consistency path.
        try Self.write(inclusion.replacingOccurrences(of: "\"seq\":9,", with: "\"seq\":10,"), work + "/seq.json")
        try Self.rejected([work + "/seq.json"], "inclusion proof check failed")
        try ProofCommandTests.refused(["log", "check-proof", work + "/seq.json"], "inclusion proof check failed")
        try Self.write(consistency.replacingOccurrences(of: "\"old_size\":13,", with: "\"old_size\":12,"), work + "/old-size.json")
        try Self.rejected([work + "/old-size.json"], "consistency proof check failed")
        try ProofCommandTests.refused(["log", "check-proof", work + "/old-size.json"], "consistency proof check failed")

        // A changed record: its leaf hash no longer matches; with the leaf hash recomputed, the path fails.
        let changedRecord = try ProofCommandTests.changing(inclusion, after: "\"record\":\"", offset: 12, "A", "B")
        try Self.write(changedRecord, work + "/record.json")
        try Self.rejected([work + "/record.json"], "leaf hash check failed")
        try ProofCommandTests.refused(["log", "check-proof", work + "/record.json"], "inclusion proof check failed")
        let parsed = try JSONSerialization.jsonObject(with: Data(changedRecord.utf8)) as? [String: Any]
        let base64 = try #require(parsed?["record"] as? String)
        let bytes = try #require(Data(base64Encoded: base64))
        let leaf = try JSONSerialization.jsonObject(with: Data(inclusion.utf8)) as? [String: Any]
        let rehashed = changedRecord.replacingOccurrences(of: try #require(leaf?["leaf_hash"] as? String),
                                                          with: hex(bytes.withUnsafeBytes { MerkleFrontier.leafHash($0) }))
        try Self.write(rehashed, work + "/rehashed.json")
        try Self.rejected([work + "/rehashed.json"], "inclusion proof check failed")
        try ProofCommandTests.refused(["log", "check-proof", work + "/rehashed.json"], "inclusion proof check failed")

        // The checkpoint's size line, its root line; a wrong key of the same name, a key of another name.
        let lines = note.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var otherRoot = Array(lines[2].utf8)
        otherRoot[3] = otherRoot[3] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        for (name, changed) in [("size", [lines[0], "33"] + lines[2...]), ("root", [lines[0], lines[1], String(decoding: otherRoot, as: UTF8.self)] + lines[3...])] {
            try Self.write(changed.joined(separator: "\n"), work + "/\(name).checkpoint")
            try Self.rejected(["-checkpoint", work + "/\(name).checkpoint", "-key", vkey], "signature check failed")
            try ProofCommandTests.refused(["log", "verify", "--log", log, "--checkpoint", work + "/\(name).checkpoint", "--key", vkey], "checkpoint signature check failed")
        }
        let sameName = try Self.ok(["log", "keygen", "--name", "audit.example", "--out", work + "/other.key"]).trimmingCharacters(in: .newlines)
        let otherName = try Self.ok(["log", "keygen", "--name", "other.example", "--out", work + "/other-name.key"]).trimmingCharacters(in: .newlines)
        for wrong in [sameName, otherName] {
            try Self.rejected(["-checkpoint", checkpoint, "-key", wrong, work + "/p.json"], "signature check failed")
            try ProofCommandTests.refused(["log", "check-proof", work + "/p.json", "--checkpoint", checkpoint, "--key", wrong], "checkpoint signature check failed")
        }
        try Self.rejected(["-checkpoint", checkpoint, "-key", "not+a+key"], "verifier key check failed")

        // A checkpoint validly signed (by x/mod's note.Sign, with the right key) over another root.
        try Self.write([lines[0], lines[1], String(decoding: otherRoot, as: UTF8.self), ""].joined(separator: "\n"), work + "/other-body")
        try Self.write(try Self.noteTool(["sign", key, work + "/other-body"]), work + "/other-root.checkpoint")
        try Self.accepted(["-checkpoint", work + "/other-root.checkpoint", "-key", vkey])
        try Self.rejected(["-checkpoint", work + "/other-root.checkpoint", "-key", vkey, work + "/p.json"], "root check failed")
        try ProofCommandTests.refused(["log", "check-proof", work + "/p.json", "--checkpoint", work + "/other-root.checkpoint", "--key", vkey], "root check failed")
        try ProofCommandTests.refused(["log", "verify", "--log", log, "--checkpoint", work + "/other-root.checkpoint", "--key", vkey], "differs from the digest")
    }
}
