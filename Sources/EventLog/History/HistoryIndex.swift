import CLMDB
import Foundation

/// The history index of a log: which records touched each row (table + replica-identity key).
///
/// It lives in its own LMDB environment, `<log>/history/`, so that building it never takes the log's
/// write lock: `cdc run` keeps it up to date from a background thread at low priority (capture never
/// waits for it), and `cdc log history` brings it up to the head itself when it is behind and it may
/// write. LMDB serialises the two.
///
/// - `entries` (sorted duplicates): 8-byte ``HistoryKey`` → 8-byte big-endian seqs of the records.
/// - `meta`: `through` (8-byte seq: records 1...through are indexed) and `leaf` (the log's Merkle leaf
///   hash of record `through`, so an index that does not belong to this log, or to a rewritten one, is
///   noticed and rebuilt).
///
/// The index is derived data: deleting the directory only costs a rebuild.
public final class HistoryIndex: @unchecked Sendable {
    public let log: EventLog
    public let readOnly: Bool
    let environment: LMDBEnvironment
    let entries: LMDBDatabase
    let meta: LMDBDatabase
    private var relationKeys: [UInt64: (table: [UInt8], keyColumns: [Int])] = [:]

    static let throughKey = Array("through".utf8)
    static let leafKey = Array("leaf".utf8)

    /// The index's directory inside the log directory.
    public static func directory(of log: EventLog) -> String { log.path + "/history" }

    /// Opens the index of `log`: read-write (created if missing) when the log directory is writable,
    /// read-only when only the files can be read, nil when there is no index and none can be made.
    public static func open(log: EventLog) throws -> HistoryIndex? {
        let path = directory(of: log)
        let exists = FileManager.default.fileExists(atPath: path + "/data.mdb")
        let writable = access(log.path, W_OK) == 0 && (!exists || access(path, W_OK) == 0 && access(path + "/data.mdb", W_OK) == 0)
        if !writable && !exists { return nil }
        if writable && !exists {
            try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        }
        return try HistoryIndex(log: log, path: path, readOnly: !writable)
    }

    /// Opens an existing index read-only, never creating or rebuilding it (for `cdc status`); nil when
    /// there is none.
    public static func openReadOnly(log: EventLog) throws -> HistoryIndex? {
        let path = directory(of: log)
        guard FileManager.default.fileExists(atPath: path + "/data.mdb") else { return nil }
        return try HistoryIndex(log: log, path: path, readOnly: true)
    }

    init(log: EventLog, path: String, readOnly: Bool) throws {
        self.log = log
        self.readOnly = readOnly
        do {
            environment = try LMDBEnvironment(path: path, readOnly: readOnly, mapSize: 256 << 20, maxDatabases: 4)
            if readOnly {
                guard let entries = try environment.existingDatabase("entries", sortedDuplicates: true),
                      let meta = try environment.existingDatabase("meta") else {
                    throw EventLogError(.historyIndexUnusable, "the history index at \(path) is incomplete: delete that directory (it is rebuilt from the log)")
                }
                (self.entries, self.meta) = (entries, meta)
            } else {
                entries = try environment.openDatabase("entries", create: true, sortedDuplicates: true)
                meta = try environment.openDatabase("meta", create: true)
            }
        } catch let error as LMDBError {
            throw EventLogError(.historyIndexUnusable, "cannot open the history index at \(path): \(error.message) — delete that directory (it is rebuilt from the log)", lmdb: error)
        }
    }

    /// Records 1...through are indexed (0: none).
    public func indexedThrough() throws -> UInt64 {
        try environment.withTransaction(readOnly: true) { txn in try txn.get(meta, key: Self.throughKey).flatMap(readU64) ?? 0 }
    }

    /// Indexes the visible records after ``indexedThrough()``, at most `limit` of them, in one LMDB
    /// transaction of the index. Returns how many records it read (0: the index is at the head).
    /// An index whose last record's leaf hash differs from the log's is emptied and rebuilt.
    @discardableResult
    public func catchUp(limit: Int = 100_000) throws -> Int {
        precondition(!readOnly, "catchUp on a read-only history index")
        let head = try log.position().head
        while true {
            do {
                return try environment.withTransaction(readOnly: false) { txn -> Int in
                    var through = try txn.get(meta, key: Self.throughKey).flatMap(readU64) ?? 0
                    if try !matches(txn, through: through, head: head) {
                        try txn.empty(entries)
                        through = 0
                    }
                    guard through < head else {
                        if through == 0 { try txn.put(meta, key: Self.throughKey, value: keyBytes(UInt64(0))) }
                        return 0
                    }
                    let end = min(head, through + UInt64(limit))
                    // (key, seq) pairs as 16-byte entries, sorted before the puts: in-order B-tree inserts.
                    var pairs: [UInt8] = []
                    pairs.reserveCapacity(Int(end - through) * 16)
                    var read = 0
                    try log.scan(from: through + 1, to: end) { seq, bytes in
                        read += 1
                        for key in try keys(seq: seq, record: bytes) {
                            pairs += key
                            pairs += keyBytes(seq)
                        }
                        return true
                    }
                    try pairs.withUnsafeBytes { all in
                        var order = Array(0..<(all.count / 16))
                        order.sort { a, b in
                            memcmp(all.baseAddress! + a * 16, all.baseAddress! + b * 16, 16) < 0
                        }
                        for i in order {
                            try txn.addDuplicate(entries, key: UnsafeRawBufferPointer(rebasing: all[(i * 16)..<(i * 16 + 8)]),
                                                 value: UnsafeRawBufferPointer(rebasing: all[(i * 16 + 8)..<(i * 16 + 16)]))
                        }
                    }
                    guard let leaf = try log.leaf(end) else {
                        throw EventLogError(.corrupt, "record \(end) has no Merkle leaf: run `cdc log verify`")
                    }
                    try txn.put(meta, key: Self.throughKey, value: keyBytes(end))
                    try txn.put(meta, key: Self.leafKey, value: leaf)
                    return read
                }
            } catch let error as LMDBError where error.isMapFull {
                do {
                    try environment.setMapSize(environment.mapSize * 2)
                } catch let grow as LMDBError {
                    throw EventLogError.write(grow, what: "history index", path: Self.directory(of: log), operation: "growing its map")
                }
            } catch let error as LMDBError {
                throw EventLogError.write(error, what: "history index", path: Self.directory(of: log), operation: "indexing records after \(head)",
                                          otherwise: .historyIndexUnusable)
            }
        }
    }

    /// Whether the index belongs to the log as it is now: the last record it indexed is in the log, with
    /// the Merkle leaf the index recorded for it. An index of another log, or of one since restored from
    /// an older copy or rewritten, does not; it must not be used (``catchUp(limit:)`` rebuilds it).
    public func matchesLog() throws -> Bool {
        let head = try log.position().head
        return try environment.withTransaction(readOnly: true) { txn in
            try matches(txn, through: try txn.get(meta, key: Self.throughKey).flatMap(readU64) ?? 0, head: head)
        }
    }

    private func matches(_ txn: LMDBTransaction, through: UInt64, head: UInt64) throws -> Bool {
        guard through > 0 else { return true }
        guard through <= head, let stored = try txn.get(meta, key: Self.leafKey).map({ Array($0) }) else { return false }
        return try log.leaf(through) == stored
    }

    /// Brings the index to the log's head (as it was when called).
    public func catchUpToHead() throws {
        while try catchUp() > 0 {}
    }

    /// The seqs the index holds for `key` (a ``HistoryKey``), in order.
    public func seqs(_ key: [UInt8]) throws -> [UInt64] {
        try environment.withTransaction(readOnly: true) { txn in
            var result: [UInt64] = []
            try txn.duplicates(entries, key: key) { value in
                if let seq = readU64(value) { result.append(seq) }
            }
            return result
        }
    }

    /// Entries and bytes of the index, for `cdc log stats`.
    public func size() throws -> (entries: Int, bytes: UInt64) {
        let stat = try environment.stat(entries)
        let pages = UInt64(stat.ms_branch_pages + stat.ms_leaf_pages + stat.ms_overflow_pages)
        return (Int(stat.ms_entries), pages * UInt64(stat.ms_psize))
    }

    /// The history keys of record `seq`.
    private func keys(seq: UInt64, record: UnsafeRawBufferPointer) throws -> [[UInt8]] {
        guard let op = record.first.flatMap(Operation.init(rawValue:)) else { return [] }
        switch op {
        case .relation, .message, .origin:
            return []
        default:
            var r = ByteReader(record)
            let relationSeq = try RecordCodec.decodeHeader(&r).relationSeq
            guard let (table, keyColumns) = try relationKey(relationSeq) else { return [] }
            return try HistoryKey.keys(record: record, table: table, keyColumns: keyColumns)
        }
    }

    private func relationKey(_ seq: UInt64) throws -> (table: [UInt8], keyColumns: [Int])? {
        if let cached = relationKeys[seq] { return cached }
        guard let definition = try log.relationDefinition(seq) else { return nil }
        let value = (Array(definition.qualifiedName.utf8), definition.keyColumnIndices)
        relationKeys[seq] = value
        return value
    }
}
