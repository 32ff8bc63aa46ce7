import Crypto
import EventLog
import Foundation
import PGClient

/// Applies a ``PrivacyPolicy`` to row values at capture, before they reach the log's writer.
///
/// `hash` writes HMAC-SHA-256(key, value text) as 64 lowercase hex digits, so equal values still
/// correlate; `redact` writes NULL. NULL stays NULL and an unchanged TOASTed value stays unchanged
/// (its earlier version was protected when it was written).
public struct ColumnProtector: Sendable {
    /// The policy, as recorded in the log.
    public let policy: PrivacyPolicy
    /// The HMAC key's bytes (SymmetricKey is not Sendable; one is made per value hashed).
    private let key: [UInt8]?

    /// - Parameters:
    ///   - columns: `schema.table.column` → method.
    ///   - key: the HMAC key; required when any column is hashed.
    public init(columns: [String: PrivacyPolicy.Method], key: [UInt8]?) throws {
        let hashes = columns.values.contains(.hash)
        if hashes, key == nil {
            throw CaptureError(.privacyKeyMissing, "privacy: hashed columns need a key: set [privacy] key_file")
        }
        self.key = hashes ? key : nil
        self.policy = PrivacyPolicy(columns: columns, keyID: hashes ? key.map(PrivacyPolicy.keyID(of:)) : nil)
    }

    /// The smallest key accepted, in bytes.
    public static let minimumKeyBytes = 32

    /// Reads a key file: at least 32 bytes, not readable by other users.
    public static func loadKey(path: String) throws -> [UInt8] {
        var info = stat()
        guard stat(path, &info) == 0 else {
            let failure = errno
            throw CaptureError(.privacyKeyUnreadable, "privacy: cannot read key_file \(path): \(String(cString: strerror(failure))) — create one with: head -c 32 /dev/urandom > \(path) && chmod 600 \(path)",
                               underlying: POSIXErrorCode(rawValue: failure).map { POSIXError($0) })
        }
        guard info.st_mode & 0o007 == 0 else {
            throw CaptureError(.privacyKeyInsecure, "privacy: key_file \(path) is accessible to other users: run chmod 600 \(path)")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CaptureError(.privacyKeyUnreadable, "privacy: cannot read key_file \(path): permission denied")
        }
        guard data.count >= minimumKeyBytes else {
            throw CaptureError(.privacyKeyTooShort, "privacy: key_file \(path) holds \(data.count) bytes, at least \(minimumKeyBytes) are needed — create one with: head -c 32 /dev/urandom > \(path)")
        }
        return Array(data)
    }

    /// The method for each column of `relation` (nil entries are written as they are), or nil when
    /// none of its columns is protected. Throws when a method cannot apply: `hash` on a column whose
    /// type is not text (its 64 hex digits would not fit the column's type downstream), `redact` on a
    /// replica-identity column (the row's key would be lost).
    public func methods(for relation: RelationDefinition) throws -> [PrivacyPolicy.Method?]? {
        guard !policy.columns.isEmpty else { return nil }
        let prefix = relation.qualifiedName + "."
        var methods: [PrivacyPolicy.Method?] = []
        var any = false
        for column in relation.columns {
            let method = policy.columns[prefix + column.name]
            if let method {
                any = true
                switch method {
                case .hash where !Self.isTextType(column.typeName):
                    throw CaptureError(.privacyPolicyInvalid, "privacy: \(prefix + column.name) is of type \(column.typeName); hash applies to text columns only (text, varchar, char) — use redact, or hash it in a text column")
                case .redact where column.isKey:
                    throw CaptureError(.privacyPolicyInvalid, "privacy: \(prefix + column.name) is part of the table's replica identity; redacting it would lose the row's key — use hash")
                default: break
                }
            }
            methods.append(method)
        }
        return any ? methods : nil
    }

    static func isTextType(_ name: String) -> Bool {
        ["text", "varchar", "bpchar", "name"].contains(name) || name.hasSuffix(".citext")
    }

    /// Writes one protected text value as a tuple column (`t` + hex, or `n`).
    @inline(__always)
    func write(_ method: PrivacyPolicy.Method, value: UnsafeRawBufferPointer, into w: inout ByteWriter) {
        switch method {
        case .redact:
            TupleWriter.null(into: &w)
        case .hash:
            let code = HMAC<SHA256>.authenticationCode(for: value, using: SymmetricKey(data: key!))
            var hex = [UInt8](repeating: 0, count: 64)
            let digits = Array("0123456789abcdef".utf8)
            var i = 0
            for byte in code {
                hex[i] = digits[Int(byte >> 4)]
                hex[i + 1] = digits[Int(byte & 15)]
                i += 2
            }
            hex.withUnsafeBytes { TupleWriter.text($0, into: &w) }
        }
    }

    /// The HMAC of `value` as written to the log (for tests and for looking a value up: `cdc log
    /// history` with a clear-text key of a hashed key column).
    public func hashed(_ value: String) -> String {
        var w = ByteWriter()
        Array(value.utf8).withUnsafeBytes { write(.hash, value: $0, into: &w) }
        return String(decoding: w.bytes.dropFirst(2), as: UTF8.self)
    }

    /// Throws naming the policy's columns that the source does not have (a typo would leak data).
    /// Uses the simple query protocol, so it works on a replication connection too.
    public func requireColumns(_ connection: PGConnection) throws {
        let missing = try missingColumns(connection)
        if !missing.isEmpty {
            throw CaptureError(.privacyColumnMissing, "privacy: the source has no column \(missing.joined(separator: ", ")) — name protected columns as schema.table.column in [privacy] of cdc.toml")
        }
    }

    /// The policy's columns that the source does not have.
    func missingColumns(_ connection: PGConnection) throws -> [String] {
        guard !policy.columns.isEmpty else { return [] }
        var missing: [String] = []
        for name in policy.columns.keys.sorted() {
            let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
            guard parts.count == 3 else { missing.append(name); continue }
            let found = try connection.execute("""
                SELECT 1 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = \(connection.quoteLiteral(parts[0])) AND c.relname = \(connection.quoteLiteral(parts[1]))
                  AND a.attname = \(connection.quoteLiteral(parts[2])) AND a.attnum > 0 AND NOT a.attisdropped
                """)
            if found.rowCount == 0 { missing.append(name) }
        }
        return missing
    }
}
