import ArgumentParser
import CDCService
import EventLog
import Foundation

/// A bad input to the proof and checkpoint commands: one line naming the check that failed.
struct ProofInputError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func readFile(_ path: String, what: String) throws -> Data {
    guard let data = FileManager.default.contents(atPath: path) else { throw ProofInputError("cannot read \(what) \(path)") }
    return data
}

func readDigest(_ path: String) throws -> LogDigest {
    let data = try readFile(path, what: "digest file")
    guard let digest = try? JSONDecoder().decode(LogDigest.self, from: data), digest.format == "cdc-log-digest-1" else {
        throw ProofInputError("\(path) is not a digest written by `cdc log digest`")
    }
    return digest
}

/// Reads a digest and checks that it is of this log: its source, and its root equal to the log's at its seq.
func readDigest(_ path: String, checkedAgainst log: EventLog) throws -> LogDigest {
    let digest = try readDigest(path)
    if let id = digest.systemIdentifier, let source = try log.sourceIdentity(), id != source.systemIdentifier {
        throw ProofInputError("digest check failed: \(path) belongs to another source (system identifier \(id), the log's is \(source.systemIdentifier))")
    }
    let head = try log.position().head
    guard digest.seq <= head else { throw ProofInputError("digest check failed: \(path) covers \(digest.seq) records but the log has only \(head)") }
    let root = hex(try log.root(size: digest.seq))
    guard root == digest.root else {
        throw ProofInputError("digest check failed: the log's root at seq \(digest.seq) is \(root), not the digest's \(digest.root): another log, or history rewritten")
    }
    return digest
}

/// Reads a signed checkpoint and checks its signature with the verifier key (a file or the key itself).
func openCheckpoint(_ path: String, key: String) throws -> Checkpoint {
    let keyText = FileManager.default.fileExists(atPath: key) ? String(decoding: try readFile(key, what: "verifier key"), as: UTF8.self) : key
    let verifier: NoteVerifier
    do { verifier = try NoteVerifier(verifierKey: keyText) } catch { throw ProofInputError("verifier key check failed: \(error)") }
    let note = String(decoding: try readFile(path, what: "checkpoint"), as: UTF8.self)
    let text: String
    do { text = try verifier.open(note) } catch { throw ProofInputError("checkpoint signature check failed: \(error)") }
    do { return try Checkpoint(text: text) } catch { throw ProofInputError("checkpoint check failed: \(error)") }
}

struct Prove: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print an RFC 9162 inclusion proof of one record, or a consistency proof between two tree sizes, as one JSON line.",
        discussion: """
            `cdc log prove SEQ` proves record SEQ (leaf index SEQ-1) in the tree of the first --size records \
            (default: the head; with --digest FILE, the digest's seq, and the log's root there must equal the \
            digest's). `cdc log prove --consistency --from-size M [--size N]` (or --from-digest OLD [--digest NEW]) \
            proves that the tree of M records is a prefix of the tree of N. Proofs read O(log n) stored hashes.
            """)

    @OptionGroup var location: LogLocation

    @Argument(help: "The record's sequence number (inclusion proof).")
    var seq: UInt64?

    @Flag(help: "A consistency proof instead of an inclusion proof.")
    var consistency = false

    @Option(help: "Tree size (default: the head).")
    var size: UInt64?

    @Option(help: "A digest from `cdc log digest`: its seq is the tree size and its root is checked.")
    var digest: String?

    @Option(help: "Consistency: the old tree size.")
    var fromSize: UInt64?

    @Option(help: "Consistency: a digest of the old tree.")
    var fromDigest: String?

    func run() async throws {
        do {
            guard size == nil || digest == nil else { throw ProofInputError("give --size or --digest, not both") }
            let log = try EventLog.openForReading(path: try location.path())
            var treeSize = size
            if let digest { treeSize = try readDigest(digest, checkedAgainst: log).seq }
            if let treeSize {
                let head = try log.position().head
                guard treeSize <= head else { throw ProofInputError("tree size check failed: tree size \(treeSize) is past the head \(head)") }
            }
            if consistency {
                guard seq == nil else { throw ProofInputError("--consistency takes no SEQ") }
                guard (fromSize == nil) != (fromDigest == nil) else { throw ProofInputError("--consistency needs --from-size M or --from-digest FILE") }
                let old = try fromDigest.map { try readDigest($0, checkedAgainst: log).seq } ?? fromSize ?? 0
                let newSize = try treeSize ?? log.position().head
                guard old <= newSize else { throw ProofInputError("tree size check failed: the old tree size \(old) is past the new tree size \(newSize)") }
                print(try log.consistencyProof(oldSize: old, newSize: newSize).json)
            } else {
                guard let seq else { throw ProofInputError("give the record's SEQ, or --consistency") }
                guard fromSize == nil, fromDigest == nil else { throw ProofInputError("--from-size and --from-digest need --consistency") }
                let n = try treeSize ?? log.position().head
                guard seq >= 1 else { throw ProofInputError("seq check failed: seq must be 1 or more") }
                guard seq <= n else { throw ProofInputError("seq check failed: seq \(seq) is past the tree size \(n)") }
                print(try log.inclusionProof(seq: seq, size: n).json)
            }
        } catch {
            fail(error)
        }
    }
}

struct CheckProof: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-proof",
        abstract: "Verify a proof from `cdc log prove` offline, without the log (RFC 9162 verification).",
        discussion: """
            With --digest FILE or --checkpoint FILE --key VKEY the proof's root must also be that digest's or \
            checkpoint's, at the same tree size. Prints `ok: ...`, and for an inclusion proof the record it \
            proves as one JSON line (rows by column position: names are in the relation record, not in the proof).
            """)

    @Argument(help: "The proof file.")
    var file: String

    @Option(help: "A digest from `cdc log digest` the proof's root must equal.")
    var digest: String?

    @Option(help: "A signed checkpoint from `cdc log digest --sign` the proof's root must equal (with --key).")
    var checkpoint: String?

    @Option(help: "The checkpoint's verifier key (name+hash+key), or a file holding it.")
    var key: String?

    func run() async throws {
        do {
            let proof: ProofFile
            do { proof = try ProofFile.parse(try readFile(file, what: "proof file")) } catch let error as MerkleProof.Failure {
                throw ProofInputError("malformed proof \(file): \(error)")
            }
            var anchor: (size: UInt64, root: Hash, what: String)?
            if let digest {
                guard checkpoint == nil else { throw ProofInputError("give --digest or --checkpoint, not both") }
                let d = try readDigest(digest)
                guard let root = hexBytes(d.root), root.count == 32 else { throw ProofInputError("\(digest) is not a digest written by `cdc log digest`") }
                anchor = (d.seq, root, "digest \(digest)")
            } else if let checkpoint {
                guard let key else { throw ProofInputError("--checkpoint needs --key VKEY") }
                let c = try openCheckpoint(checkpoint, key: key)
                anchor = (c.size, c.root, "checkpoint \(checkpoint)")
            }
            switch proof {
            case .inclusion(let p):
                do { try p.verify() } catch { throw ProofInputError("inclusion proof check failed: \(error)") }
                if let anchor {
                    guard anchor.size == p.treeSize else { throw ProofInputError("tree size check failed: the proof is for tree size \(p.treeSize), the \(anchor.what) for \(anchor.size)") }
                    guard anchor.root == p.root else { throw ProofInputError("root check failed: the proof's root is not the \(anchor.what)'s") }
                }
                let record: Record
                do { record = try p.record.withUnsafeBytes { try RecordCodec.decode($0) } } catch {
                    throw ProofInputError("record check failed: the proven record does not decode: \(error)")
                }
                print("ok: record \(p.seq) is in the tree of \(p.treeSize) records with root \(hex(p.root))" + (anchor.map { "; matches the \($0.what)" } ?? ""))
                print(renderRecord(seq: p.seq, record))
            case .consistency(let p):
                do { try p.verify() } catch { throw ProofInputError("consistency proof check failed: \(error)") }
                if let anchor {
                    guard anchor.size == p.newSize else { throw ProofInputError("tree size check failed: the proof's new size is \(p.newSize), the \(anchor.what)'s \(anchor.size)") }
                    guard anchor.root == p.newRoot else { throw ProofInputError("root check failed: the proof's new root is not the \(anchor.what)'s") }
                }
                print("ok: the tree of \(p.oldSize) records (root \(hex(p.oldRoot))) is a prefix of the tree of \(p.newSize) (root \(hex(p.newRoot)))"
                      + (anchor.map { "; matches the \($0.what)" } ?? ""))
            }
        } catch {
            fail(error)
        }
    }

    /// The record as the export renders it, without the relation lookup (offline: row values by position).
    func renderRecord(seq: UInt64, _ record: Record) -> String {
        var w = JSONWriter(capacity: 1024)
        let h = record.header
        JSONLExporter.renderHeader(seq: seq, h, into: &w)
        w.raw(",\"op\":\""); w.raw(h.op.name); w.raw("\"")
        func values(_ tuple: [Datum]?) {
            guard let tuple else { w.raw("null"); return }
            w.raw("[")
            for (i, d) in tuple.enumerated() {
                if i > 0 { w.raw(",") }
                switch d {
                case .null: w.raw("null")
                case .unchangedToast: w.raw("{\"unchanged_toast\":true}")
                case .text(let bytes): w.string(bytes)
                }
            }
            w.raw("]")
        }
        switch record.body {
        case .row(let old, let before, let after):
            w.raw(",\"relation_seq\":"); w.number(h.relationSeq)
            w.raw(",\"before\":"); values(before)
            w.raw(",\"after\":"); values(after)
            if old != .none { w.raw(old == .key ? ",\"before_kind\":\"key\"" : ",\"before_kind\":\"row\"") }
        case .truncate:
            w.raw(",\"relation_seq\":"); w.number(h.relationSeq)
            w.raw(",\"cascade\":"); w.raw(h.flags.contains(.cascade) ? "true" : "false")
            w.raw(",\"restart_identity\":"); w.raw(h.flags.contains(.restartIdentity) ? "true" : "false")
        case .message(let prefix, let content):
            w.raw(",\"transactional\":"); w.raw(h.flags.contains(.transactional) ? "true" : "false")
            w.raw(",\"prefix\":"); w.string(prefix)
            if let text = String(validating: content, as: UTF8.self) {
                w.raw(",\"content\":"); w.string(text); w.raw(",\"content_encoding\":\"utf8\"")
            } else {
                w.raw(",\"content\":"); w.string(Data(content).base64EncodedString()); w.raw(",\"content_encoding\":\"base64\"")
            }
        case .relation(let d):
            w.raw(",\"table\":"); w.string(d.qualifiedName)
            w.raw(",\"relation\":{\"oid\":"); w.number(d.oid)
            w.raw(",\"columns\":[")
            for (i, c) in d.columns.enumerated() {
                if i > 0 { w.raw(",") }
                w.raw("{\"name\":"); w.string(c.name)
                w.raw(",\"type\":"); w.string(c.typeName)
                w.raw(",\"key\":"); w.raw(c.isKey ? "true" : "false"); w.raw("}")
            }
            w.raw("]}")
        case .origin(let name, let lsn):
            w.raw(",\"origin\":"); w.string(name)
            w.raw(",\"origin_lsn\":\""); w.raw(lsn.description); w.raw("\"")
        }
        w.raw("}")
        return String(decoding: w.bytes, as: UTF8.self)
    }
}

struct Keygen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a new Ed25519 signing key (mode 0600) and print its C2SP signed-note verifier key.",
        discussion: "The file holds one line, PRIVATE+KEY+NAME+<key hash>+<base64 of 0x01 and the 32-byte seed>, as golang.org/x/mod/sumdb/note reads it. An existing file is never overwritten.")

    @Option(help: "The key name (no spaces or '+'), e.g. the log's host name.")
    var name: String

    @Option(help: "The private key file to create.")
    var out: String

    func run() async throws {
        do {
            let signer: NoteSigner
            do { signer = try NoteSigner(generating: name) } catch { throw ProofInputError("\(error)") }
            let fd = open(out, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            guard fd >= 0 else {
                throw ProofInputError(errno == EEXIST ? "\(out) exists: refusing to overwrite a key" : "cannot create \(out): \(String(cString: strerror(errno)))")
            }
            let line = Array(signer.privateKeyLine.utf8)
            let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd)
            close(fd)
            guard written == line.count, synced == 0 else { throw ProofInputError("cannot write \(out)") }
            print(signer.verifierKey)
        } catch {
            fail(error)
        }
    }
}
