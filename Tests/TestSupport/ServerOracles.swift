import Foundation
import PGClient

// What the server itself says about a transaction, for tests to compare cdc's output with: the commit
// record in the WAL (pg_walinspect), the commit time (pg_xact_commit_timestamp, which needs the
// sandbox's track_commit_timestamp = on), and PostgreSQL's own logical decoding plugin test_decoding.
// None of it goes through cdc's code.

/// A transaction's commit as the server recorded it.
public struct ServerCommit: Sendable, Equatable, CustomStringConvertible {
    /// Where its WAL commit record starts: the commit LSN logical decoding reports (pgoutput's
    /// commit_lsn, the LSN cdc records).
    public let lsn: String
    /// Where that record ends (test_decoding's COMMIT line, pgoutput's end_lsn).
    public let end: String

    public var description: String { "commit record \(lsn)..\(end)" }
}

private let walinspectLock = NSLock()
nonisolated(unsafe) private var walinspectReady: Set<String> = []

extension PostgresServer {
    /// Creates pg_walinspect in the `postgres` database once per server (it reads the whole cluster's WAL).
    func ensureWalinspect() throws {
        walinspectLock.lock()
        defer { walinspectLock.unlock() }
        guard !walinspectReady.contains(directory) else { return }
        try execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        walinspectReady.insert(directory)
    }

    /// The WAL commit record of transaction `xid` (32-bit, as logical decoding reports it) between
    /// `from` and `to`, read from the WAL with pg_walinspect. The record must be flushed: `to` is capped
    /// at the flush position. Throws unless there is exactly one.
    public func commitRecord(xid: UInt32, from: String, to: String) throws -> ServerCommit {
        try ensureWalinspect()
        let rows = try execute("""
            SELECT start_lsn::text, end_lsn::text
            FROM pg_get_wal_records_info('\(from)', LEAST('\(to)'::pg_lsn, pg_current_wal_flush_lsn()))
            WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' AND xid = '\(xid)'::xid
            """)
        guard rows.count == 1, let start = rows[0][0], let end = rows[0][1] else {
            throw TestFailure("expected one WAL commit record of xid \(xid) in \(from)..\(to), found \(rows)")
        }
        return ServerCommit(lsn: start, end: end)
    }

    /// The WAL commit record of each of `transactions` (decoded since `from`), by xid.
    public func commitRecords(of transactions: [DecodedTransaction], from: String) throws -> [UInt32: ServerCommit] {
        let to = try currentLSN()
        return try Dictionary(uniqueKeysWithValues: transactions.map { ($0.xid, try commitRecord(xid: $0.xid, from: from, to: to)) })
    }

    /// `pg_xact_commit_timestamp(xid)` rendered as the export renders commit times.
    public func commitTime(xid: UInt32) throws -> String {
        let time = try execute("SELECT \(WarehouseWorkspace.rfc3339("pg_xact_commit_timestamp('\(xid)'::xid)"))")[0][0]
        guard let time else { throw TestFailure("the server has no commit timestamp for xid \(xid) (track_commit_timestamp off?)") }
        return time
    }
}

// MARK: test_decoding

/// One column value as test_decoding prints it.
public enum DecodedValue: Sendable, Equatable, CustomStringConvertible {
    case null
    /// `unchanged-toast-datum`: a TOASTed value the update did not change (and the WAL does not hold).
    case unchangedToast
    /// The type's text output (booleans as `true`/`false`).
    case text(String)

    public var description: String {
        switch self {
        case .null: "NULL"
        case .unchangedToast: "<unchanged toast>"
        case .text(let text): text.count <= 80 ? "'\(text)'" : "'\(text.prefix(60))…' (\(text.count) characters)"
        }
    }
}

/// One change of a decoded transaction, in a form an export event can be brought to as well.
public struct DecodedChange: Sendable, Equatable, CustomStringConvertible {
    /// `public.facilities`; nil for a message.
    public var table: String?
    /// insert, update, delete, truncate, message.
    public var op: String
    /// The old key or row (update, delete), without its NULL columns (test_decoding leaves them out);
    /// nil when the change has none.
    public var old: [String: DecodedValue]?
    /// The new row (insert, update).
    public var new: [String: DecodedValue]?
    /// truncate: ["cascade", "restart_identity"] as given; message: ["transactional"] when it is.
    public var flags: Set<String>
    /// message: prefix and content.
    public var prefix: String?
    public var content: String?

    public init(table: String?, op: String, old: [String: DecodedValue]? = nil, new: [String: DecodedValue]? = nil,
                flags: Set<String> = [], prefix: String? = nil, content: String? = nil) {
        self.table = table
        self.op = op
        self.old = old.map { $0.filter { $0.value != .null } }
        self.new = new
        self.flags = flags
        self.prefix = prefix
        self.content = content
    }

    public var description: String {
        var parts = ["\(op) \(table ?? "-")"]
        if let old { parts.append("old \(old.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })") }
        if let new { parts.append("new \(new.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })") }
        if !flags.isEmpty { parts.append("flags \(flags.sorted())") }
        if let prefix { parts.append("prefix \(prefix)") }
        if let content { parts.append("content \(content)") }
        return parts.joined(separator: " ")
    }
}

/// A transaction as test_decoding decoded it.
public struct DecodedTransaction: Sendable, Equatable, CustomStringConvertible {
    public var xid: UInt32
    /// Commit time, RFC 3339 UTC with microseconds (as the export writes it).
    public var commitTime: String
    /// The end of its commit record (the LSN test_decoding reports for COMMIT).
    public var commitEnd: String
    public var changes: [DecodedChange]

    public init(xid: UInt32, commitTime: String, commitEnd: String, changes: [DecodedChange]) {
        self.xid = xid
        self.commitTime = commitTime
        self.commitEnd = commitEnd
        self.changes = changes
    }

    public var description: String {
        "xid \(xid) at \(commitTime) (commit end \(commitEnd)):\n" + changes.map { "  \($0)" }.joined(separator: "\n")
    }
}

/// A logical replication slot with PostgreSQL's own test_decoding plugin: an independent decoder of
/// the WAL that cdc's slot decodes. Create it before the changes it is to see; drop it when done.
public struct TestDecodingSlot: Sendable {
    public let server: PostgresServer
    public let database: String
    public let name: String

    /// Creates the slot in `database` (named after it: slots are cluster-wide).
    public static func create(server: PostgresServer, database: String, name: String? = nil) throws -> TestDecodingSlot {
        let slot = TestDecodingSlot(server: server, database: database, name: name ?? database + "_td")
        try server.execute("SELECT pg_create_logical_replication_slot('\(slot.name)', 'test_decoding')", database: database)
        return slot
    }

    /// Every transaction decoded so far, in commit order (peeked: the slot does not move, so the WAL
    /// stays until ``drop()``).
    public func transactions() throws -> [DecodedTransaction] {
        let rows = try server.execute("""
            SELECT lsn::text, data FROM pg_logical_slot_peek_changes('\(name)', NULL, NULL,
                'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1')
            """, database: database)
        var result: [DecodedTransaction] = []
        var open: (xid: UInt32, changes: [DecodedChange])?
        for row in rows {
            guard let lsn = row[0], let data = row[1] else { continue }
            if data.hasPrefix("BEGIN ") {
                guard open == nil, let xid = UInt32(data.dropFirst(6)) else { throw TestFailure("test_decoding: unexpected \(data)") }
                open = (xid, [])
            } else if data.hasPrefix("COMMIT ") {
                guard let current = open, let at = data.range(of: " (at "), data.hasSuffix(")"),
                      UInt32(data[data.index(data.startIndex, offsetBy: 7)..<at.lowerBound]) == current.xid else {
                    throw TestFailure("test_decoding: unexpected \(data)")
                }
                let time = try Self.rfc3339(String(data[at.upperBound..<data.index(before: data.endIndex)]))
                result.append(DecodedTransaction(xid: current.xid, commitTime: time, commitEnd: lsn, changes: current.changes))
                open = nil
            } else {
                guard open != nil else { throw TestFailure("test_decoding: a change outside a transaction: \(data)") }
                open!.changes += try Self.changes(data)
            }
        }
        return result
    }

    /// Drops the slot (no error if it is gone).
    public func drop() {
        _ = try? server.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '\(name)'")
    }

    /// `2026-12-02 04:58:55.4+00` (the session is UTC) as `2026-12-02T04:58:55.400000Z`.
    static func rfc3339(_ text: String) throws -> String {
        guard text.hasSuffix("+00"), text.count >= 22 else { throw TestFailure("test_decoding: commit time \(text) is not UTC") }
        let body = text.dropLast(3)
        let seconds = body.prefix(19), fraction = body.dropFirst(19)
        let digits = fraction.isEmpty ? "" : fraction.dropFirst()
        guard fraction.isEmpty || fraction.first == ".", digits.count <= 6 else { throw TestFailure("test_decoding: commit time \(text)") }
        return seconds.replacingOccurrences(of: " ", with: "T") + "." + digits + String(repeating: "0", count: 6 - digits.count) + "Z"
    }

    /// The change(s) of one test_decoding line (a TRUNCATE of several tables is one line).
    static func changes(_ line: String) throws -> [DecodedChange] {
        var s = Substring(line)
        if s.hasPrefix("message: ") {
            // message: transactional: 1 prefix: audit, sz: 13 content:nightly check
            guard let t = s.range(of: "transactional: "), let p = s.range(of: " prefix: "),
                  let z = s.range(of: ", sz: "), let c = s.range(of: " content:") else {
                throw TestFailure("test_decoding: unexpected \(line)")
            }
            let transactional = s[t.upperBound..<p.lowerBound] == "1"
            return [DecodedChange(table: nil, op: "message", flags: transactional ? ["transactional"] : [],
                                  prefix: String(s[p.upperBound..<z.lowerBound]), content: String(s[c.upperBound...]))]
        }
        guard s.hasPrefix("table ") else { throw TestFailure("test_decoding: unexpected \(line)") }
        s = s.dropFirst(6)
        // Table names up to ": ", skipping quoted identifiers.
        var tables: [String] = []
        var name = ""
        while true {
            guard let c = s.first else { throw TestFailure("test_decoding: unexpected \(line)") }
            if c == "\"" {
                name.append(contentsOf: try quoted(&s))
            } else if s.hasPrefix(": ") {
                tables.append(name); s = s.dropFirst(2); break
            } else if s.hasPrefix(", ") {
                tables.append(name); name = ""; s = s.dropFirst(2)
            } else {
                name.append(c); s = s.dropFirst()
            }
        }
        guard let colon = s.range(of: ": ") ?? (s.hasSuffix(":") ? s.index(before: s.endIndex)..<s.endIndex : nil) else {
            throw TestFailure("test_decoding: unexpected \(line)")
        }
        let op = s[..<colon.lowerBound].lowercased()
        s = s[colon.upperBound...]
        if op == "truncate" {
            let flags: Set<String> = s == "(no-flags)" ? [] : Set(s.split(separator: " ").map(String.init))
            return tables.map { DecodedChange(table: $0, op: op, flags: flags) }
        }
        guard tables.count == 1, ["insert", "update", "delete"].contains(op) else { throw TestFailure("test_decoding: unexpected \(line)") }
        var old: [String: DecodedValue]?, new: [String: DecodedValue]?
        if s == "(no-tuple-data)" {
        } else if s.hasPrefix("old-key: ") {
            s = s.dropFirst("old-key: ".count)
            old = try tuple(&s, until: " new-tuple: ")
            guard s.hasPrefix(" new-tuple: ") else { throw TestFailure("test_decoding: unexpected \(line)") }
            s = s.dropFirst(" new-tuple: ".count)
            new = try tuple(&s, until: nil)
        } else if op == "delete" {
            old = try tuple(&s, until: nil)
        } else {
            new = try tuple(&s, until: nil)
        }
        return [DecodedChange(table: tables[0], op: op, old: old, new: new)]
    }

    /// `name[type]:value name[type]:value ...` up to `stop` (left in `s`) or the end.
    static func tuple(_ s: inout Substring, until stop: String?) throws -> [String: DecodedValue] {
        var values: [String: DecodedValue] = [:]
        while !s.isEmpty {
            if let stop, s.hasPrefix(stop) { break }
            if s.first == " " { s = s.dropFirst(); continue }
            var name = ""
            if s.first == "\"" {
                name = try quoted(&s)
            } else {
                guard let bracket = s.firstIndex(of: "[") else { throw TestFailure("test_decoding: no type in \(s)") }
                name = String(s[..<bracket])
                s = s[bracket...]
            }
            guard s.first == "[", let end = s.range(of: "]:") else { throw TestFailure("test_decoding: no type in \(s)") }
            s = s[end.upperBound...]
            if s.first == "'" {
                values[name] = .text(try quoted(&s))
            } else {
                let end = s.firstIndex(of: " ") ?? s.endIndex
                let word = String(s[..<end])
                s = s[end...]
                values[name] = word == "null" ? .null : word == "unchanged-toast-datum" ? .unchangedToast : .text(word)
            }
        }
        return values
    }

    /// The quoted text at the start of `s`, up to its closing quote (the quote doubled inside it):
    /// `'it''s'` is it's, `"a""b"` is a"b.
    static func quoted(_ s: inout Substring) throws -> String {
        guard let quote = s.first else { throw TestFailure("test_decoding: a quoted text expected") }
        var text = ""
        s = s.dropFirst()
        while true {
            guard let c = s.first else { throw TestFailure("test_decoding: unterminated \(quote)\(text)") }
            s = s.dropFirst()
            if c == quote {
                if s.first == quote { text.append(quote); s = s.dropFirst() } else { return text }
            } else {
                text.append(c)
            }
        }
    }
}
