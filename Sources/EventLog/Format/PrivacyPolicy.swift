import Crypto
import Foundation

/// Which source columns are protected before anything is written to the log, and how.
///
/// Recorded in the log's meta (`privacy`) as a history: each entry says from which sequence number on
/// it applied, so an auditor reading the log alone knows which values are hashes, which were redacted,
/// and since when. Values are protected at capture (snapshot and stream alike): the clear text never
/// reaches the log's pages.
public struct PrivacyPolicy: Codable, Equatable, Sendable {
    /// How one column is protected.
    public enum Method: String, Codable, Sendable {
        /// Keyed HMAC-SHA-256 of the value's text, written as 64 lowercase hex digits: equal values
        /// still correlate (joins, counts, history), the value itself cannot be read back.
        case hash
        /// The value is written as NULL.
        case redact
    }

    /// `schema.table.column` → method.
    public var columns: [String: Method]
    /// Identifies the HMAC key without revealing it (first 8 bytes of SHA-256("cdc-privacy-key" ‖ key),
    /// hex); nil when no column is hashed.
    public var keyID: String?

    public init(columns: [String: Method], keyID: String?) {
        self.columns = columns
        self.keyID = keyID
    }

    enum CodingKeys: String, CodingKey {
        case columns, keyID = "key_id"
    }

    /// Nothing protected.
    public static let none = PrivacyPolicy(columns: [:], keyID: nil)

    /// True when nothing is protected.
    public var isEmpty: Bool { columns.isEmpty }

    /// The key identifier of `key` (see ``keyID``).
    public static func keyID(of key: [UInt8]) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("cdc-privacy-key".utf8))
        hasher.update(data: key)
        return Array(hasher.finalize()).prefix(8).map { String(format: "%02x", $0) }.joined()
    }
}

/// One entry of the log's privacy history: the policy in force from record `sinceSeq` on.
public struct PrivacyEpoch: Codable, Equatable, Sendable {
    public var sinceSeq: UInt64
    public var policy: PrivacyPolicy

    public init(sinceSeq: UInt64, policy: PrivacyPolicy) {
        self.sinceSeq = sinceSeq
        self.policy = policy
    }

    enum CodingKeys: String, CodingKey {
        case sinceSeq = "since_seq", policy
    }
}
