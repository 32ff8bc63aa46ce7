import Crypto
import Foundation

/// C2SP signed-note (https://c2sp.org/signed-note) with Ed25519 keys, and C2SP tlog-checkpoint
/// (https://c2sp.org/tlog-checkpoint) bodies, byte for byte as golang.org/x/mod/sumdb/note writes them.
///
/// - key hash: the first 4 bytes (big-endian u32) of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key);
/// - verifier key: `name+<key hash, 8 lower-case hex>+<base64 of 0x01 ‖ public key>`;
/// - private key file (x/mod/sumdb/note's signer key): `PRIVATE+KEY+name+<key hash>+<base64 of 0x01 ‖ 32-byte seed>`;
/// - note: text (non-empty, ends with a newline), a blank line, then signature lines
///   `— name base64(key hash ‖ 64-byte signature)` (U+2014 em dash, space), each ending with a newline;
///   the signed message is the text, up to and including its final newline.
public enum SignedNote {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    static let ed25519: UInt8 = 0x01

    /// A key name: non-empty, no spaces or `+`, no control characters.
    public static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.unicodeScalars.allSatisfy { !$0.properties.isWhitespace && $0 != "+" && $0.value > 0x1F && $0.value != 0x7F }
    }

    public static func keyHash(name: String, publicKey: [UInt8]) -> UInt32 {
        let digest = Array(SHA256.hash(data: Array(name.utf8) + [0x0A, ed25519] + publicKey))
        return digest.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }

    static func hash8(_ h: UInt32) -> String {
        let s = String(h, radix: 16)
        return String(repeating: "0", count: 8 - s.count) + s
    }
}

/// An Ed25519 note signer.
public struct NoteSigner {
    public let name: String
    public let keyHash: UInt32
    let key: Curve25519.Signing.PrivateKey

    /// A new random key.
    public init(generating name: String) throws {
        guard SignedNote.isValidName(name) else { throw SignedNote.Failure("key name \"\(name)\" must be non-empty, without spaces or '+'") }
        self.name = name
        key = Curve25519.Signing.PrivateKey()
        keyHash = SignedNote.keyHash(name: name, publicKey: Array(key.publicKey.rawRepresentation))
    }

    /// Parses `PRIVATE+KEY+name+hash+base64(0x01 ‖ seed)` (surrounding whitespace ignored).
    public init(privateKey text: String) throws {
        let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
        // The base64 key may itself hold '+': the first four '+' separate the fields.
        let parts = line.split(separator: "+", maxSplits: 4, omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "PRIVATE", parts[1] == "KEY" else {
            throw SignedNote.Failure("not a signer key (PRIVATE+KEY+name+hash+key)")
        }
        let name = String(parts[2])
        guard SignedNote.isValidName(name), parts[3].count == 8, let hash = UInt32(parts[3], radix: 16),
              let data = Data(base64Encoded: String(parts[4])), data.count == 33, data.first == SignedNote.ed25519,
              let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: data.dropFirst()) else {
            throw SignedNote.Failure("malformed signer key")
        }
        guard SignedNote.keyHash(name: name, publicKey: Array(key.publicKey.rawRepresentation)) == hash else {
            throw SignedNote.Failure("the signer key's hash does not match its name and key")
        }
        (self.name, self.keyHash, self.key) = (name, hash, key)
    }

    /// The private key file's one line (with its newline).
    public var privateKeyLine: String {
        "PRIVATE+KEY+\(name)+\(SignedNote.hash8(keyHash))+" + Data([SignedNote.ed25519] + Array(key.rawRepresentation)).base64EncodedString() + "\n"
    }

    /// The verifier key: `name+hash+base64(0x01 ‖ public key)`.
    public var verifierKey: String {
        "\(name)+\(SignedNote.hash8(keyHash))+" + Data([SignedNote.ed25519] + Array(key.publicKey.rawRepresentation)).base64EncodedString()
    }

    /// The signed note: `text`, a blank line and this key's signature line.
    public func sign(_ text: String) throws -> String {
        guard text.hasSuffix("\n"), !text.hasPrefix("\n"), !text.contains("\n\n") else { throw SignedNote.Failure("malformed note text") }
        let signature = Array(try key.signature(for: Data(text.utf8)))
        let blob = withUnsafeBytes(of: keyHash.bigEndian) { Array($0) } + signature
        return text + "\n— \(name) " + Data(blob).base64EncodedString() + "\n"
    }
}

/// An Ed25519 note verifier.
public struct NoteVerifier {
    public let name: String
    public let keyHash: UInt32
    let key: Curve25519.Signing.PublicKey

    /// Parses `name+hash+base64(0x01 ‖ public key)`.
    public init(verifierKey text: String) throws {
        let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
        let parts = line.split(separator: "+", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw SignedNote.Failure("not a verifier key (name+hash+key)") }
        let name = String(parts[0])
        guard SignedNote.isValidName(name), parts[1].count == 8, let hash = UInt32(parts[1], radix: 16),
              let data = Data(base64Encoded: String(parts[2])), data.count == 33, data.first == SignedNote.ed25519,
              let key = try? Curve25519.Signing.PublicKey(rawRepresentation: data.dropFirst()) else {
            throw SignedNote.Failure("malformed verifier key")
        }
        guard SignedNote.keyHash(name: name, publicKey: Array(data.dropFirst())) == hash else {
            throw SignedNote.Failure("the verifier key's hash does not match its name and key")
        }
        (self.name, self.keyHash, self.key) = (name, hash, key)
    }

    /// Checks `note` and returns its text (the signed part): there must be a signature by this key
    /// (same name and key hash) and it must be valid. Signatures by other keys are ignored.
    public func open(_ note: String) throws -> String {
        let bytes = Array(note.utf8)
        guard bytes.last == 0x0A else { throw SignedNote.Failure("malformed note: it does not end with a newline") }
        // The text ends at the last blank line: signatures never contain one.
        var split: Int?
        var i = bytes.count - 2
        while i >= 0 {
            if bytes[i] == 0x0A, bytes[i + 1] == 0x0A { split = i; break }
            i -= 1
        }
        guard let split, split > 0 else { throw SignedNote.Failure("malformed note: no blank line before the signatures") }
        let text = Array(bytes[...split])
        let signatures = String(decoding: bytes[(split + 2)...], as: UTF8.self)
        var found = false
        for line in signatures.split(separator: "\n", omittingEmptySubsequences: false).dropLast() {
            guard line.hasPrefix("— ") else { throw SignedNote.Failure("malformed note: a signature line does not start with an em dash") }
            let fields = line.dropFirst(2).split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count == 2, SignedNote.isValidName(String(fields[0])),
                  let blob = Data(base64Encoded: String(fields[1])), blob.count >= 5 else {
                throw SignedNote.Failure("malformed note: bad signature line")
            }
            let hash = blob.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard String(fields[0]) == name, hash == keyHash else { continue }
            guard blob.count == 68, key.isValidSignature(blob.dropFirst(4), for: Data(text)) else {
                throw SignedNote.Failure("invalid signature for key \(name)+\(SignedNote.hash8(keyHash)): the note was changed or signed by another key")
            }
            found = true
        }
        guard found else {
            throw SignedNote.Failure("the note has no signature by key \(name)+\(SignedNote.hash8(keyHash)) (wrong key?)")
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// A C2SP tlog-checkpoint body: origin, tree size, root hash (and optional extension lines).
public struct Checkpoint: Equatable, Sendable {
    public var origin: String
    public var size: UInt64
    public var root: Hash
    public var extensions: [String] = []

    public init(origin: String, size: UInt64, root: Hash) {
        (self.origin, self.size, self.root) = (origin, size, root)
    }

    /// `origin\nsize\nbase64(root)\n`.
    public var text: String {
        ([origin, String(size), Data(root).base64EncodedString()] + extensions).map { $0 + "\n" }.joined()
    }

    public init(text: String) throws {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.last == "" else { throw SignedNote.Failure("malformed checkpoint: the body does not end with a newline") }
        lines.removeLast()
        guard lines.count >= 3, !lines[0].isEmpty else { throw SignedNote.Failure("malformed checkpoint: origin, size and root lines expected") }
        guard let size = UInt64(lines[1]), String(size) == lines[1] else {
            throw SignedNote.Failure("malformed checkpoint: tree size \"\(lines[1])\" is not a decimal number")
        }
        guard let root = Data(base64Encoded: lines[2]), root.count == 32 else {
            throw SignedNote.Failure("malformed checkpoint: the root hash is not 32 bytes of base64")
        }
        (origin, self.size, self.root, extensions) = (lines[0], size, Array(root), Array(lines.dropFirst(3)))
    }
}

extension SourceIdentity {
    /// The default checkpoint origin: `cdc/<system identifier>/<database>/<slot>`.
    public var checkpointOrigin: String { "cdc/\(systemIdentifier)/\(database)/\(slot)" }
}
