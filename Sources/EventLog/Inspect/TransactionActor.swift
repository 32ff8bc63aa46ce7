import Foundation

/// Who made a source transaction: the content of its `cdc.actor` message, which the actor trigger
/// (`[audit] actor = true`, schemas/audit/actor.sql) emits once per transaction, before its rows.
///
/// The rule readers apply: a transaction's actor is the first transactional `cdc.actor` message among
/// its records before its first row or truncate record. (The trigger fires BEFORE the first statement on
/// a published table, so its message is the transaction's first record; a transaction that wrote a table
/// without the trigger first has no actor.)
public struct TransactionActor: Equatable, Sendable {
    /// The message prefix.
    public static let prefix = "cdc.actor"
    /// The keys, in the order readers render them.
    public static let keys = ["db_user", "current_user", "application_name", "client_addr", "backend_pid", "app_user"]

    public var dbUser: String?
    public var currentUser: String?
    public var applicationName: String?
    public var clientAddr: String?
    public var backendPID: Int64?
    public var appUser: String?

    public init(dbUser: String?, currentUser: String?, applicationName: String?, clientAddr: String?, backendPID: Int64?, appUser: String?) {
        self.dbUser = dbUser
        self.currentUser = currentUser
        self.applicationName = applicationName
        self.clientAddr = clientAddr
        self.backendPID = backendPID
        self.appUser = appUser
    }

    /// The actor a record names, nil unless it is a transactional `cdc.actor` message holding a JSON
    /// object (keys other than ``keys`` are ignored; a missing key is null).
    public init?(_ record: Record) {
        guard case .message(let prefix, let content) = record.body, prefix == Self.prefix,
              record.header.flags.contains(.transactional),
              let object = try? JSONSerialization.jsonObject(with: Data(content)) as? [String: Any] else { return nil }
        func text(_ key: String) -> String? { object[key] as? String }
        self.init(dbUser: text("db_user"), currentUser: text("current_user"), applicationName: text("application_name"),
                  clientAddr: text("client_addr"), backendPID: (object["backend_pid"] as? NSNumber)?.int64Value,
                  appUser: text("app_user"))
    }

    /// True when `name` is the transaction's db_user or app_user (`--actor NAME`).
    public func matches(_ name: String) -> Bool { dbUser == name || appUser == name }

    /// The value of each of ``keys`` (nil: null), in that order.
    public var values: [(key: String, value: String?)] {
        [("db_user", dbUser), ("current_user", currentUser), ("application_name", applicationName),
         ("client_addr", clientAddr), ("backend_pid", backendPID.map(String.init)), ("app_user", appUser)]
    }
}

/// What a transaction's first records say about it: who made it (``TransactionActor``) and, for a
/// transaction that another node's logical replication applied, the replication origin's name (its
/// `origin` record, the transaction's first).
public struct TransactionContext: Equatable, Sendable {
    public var actor: TransactionActor?
    public var origin: String?

    public init(actor: TransactionActor? = nil, origin: String? = nil) {
        self.actor = actor
        self.origin = origin
    }

    /// Takes what `record`, one of the transaction's records before its first change, says.
    mutating func note(_ record: Record) {
        if actor == nil, let found = TransactionActor(record) { actor = found }
        if origin == nil, case .origin(let name, _) = record.body { origin = name }
    }
}

/// Follows the log in seq order and knows the context (actor, origin) of the transaction of each record
/// it is shown, looking a transaction up in the log only when it was not shown from its first record (a
/// reader that starts in the middle, or skipped records by a filter).
public struct TransactionTracker {
    let log: EventLog
    /// The transaction (commit LSN, xid) whose context is known, and that context.
    private var current: (lsn: LSN, xid: UInt32, context: TransactionContext, sawRow: Bool)?
    /// The seq of the last record shown, and whether it ended its transaction.
    private var previous: (seq: UInt64, endedTransaction: Bool)?

    public init(log: EventLog) { self.log = log }

    /// The actor of record `seq`'s transaction (nil: none, or not a transaction's record).
    public mutating func actor(seq: UInt64, record: Record) throws -> TransactionActor? {
        try context(seq: seq, record: record).actor
    }

    /// The context of record `seq`'s transaction (empty for the snapshot and non-transactional
    /// messages). Call it for every record a reader handles, in increasing seq order.
    public mutating func context(seq: UInt64, record: Record) throws -> TransactionContext {
        defer { previous = (seq, record.header.flags.contains(.endOfTransaction)) }
        let h = record.header
        guard let xid = h.xid, h.op != .snapshot else { return TransactionContext() }
        if let c = current, c.lsn == h.lsn, c.xid == xid {
            if !c.sawRow { current?.context.note(record) }
            if record.isChange { current?.sawRow = true }
            return current!.context
        }
        // A new transaction: seen from its start when the previous record shown ended the one before it.
        if let p = previous, p.endedTransaction, p.seq + 1 == seq {
            var context = TransactionContext()
            context.note(record)
            current = (h.lsn, xid, context, record.isChange)
        } else {
            current = (h.lsn, xid, try log.context(ofTransactionAt: h.lsn), true)
        }
        return current!.context
    }
}

extension Record {
    /// A row or truncate record (a change to a table's data).
    var isChange: Bool {
        switch body {
        case .row, .truncate: true
        case .message, .relation, .origin: false
        }
    }
}

extension EventLog {
    /// The actor of the visible transaction whose commit LSN is `lsn` (nil: none).
    public func actor(ofTransactionAt lsn: LSN) throws -> TransactionActor? {
        try context(ofTransactionAt: lsn).actor
    }

    /// The context of the visible transaction whose commit LSN is `lsn`: O(log n) reads to find its
    /// first record, then its records up to its first row.
    public func context(ofTransactionAt lsn: LSN) throws -> TransactionContext {
        let head = try position().head
        var found = TransactionContext()
        guard let range = try recordRange(commitLSN: lsn, head: head) else { return found }
        try visitRecords(from: range.lowerBound, to: range.upperBound, batch: 64) { seq, bytes in
            let record = try bytes.withUnsafeBytes { try RecordCodec.decode($0, seq: seq, file: dataFile) }
            if record.isChange { return false }
            found.note(record)
            return true
        }
        return found
    }
}
