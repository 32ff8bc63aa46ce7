import Synchronization
import CLMDB
import Foundation

/// Errors about the log as a whole (as opposed to a bare ``LMDBError``): a stable ``Code``, a
/// message saying what to do, and, when a call failed, that call, its return code and the error.
public struct EventLogError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, as a stable identifier: `rawValue` is the snake_case form reported by the
    /// health endpoints and `status` (e.g. `writer_locked`). Never renamed once released.
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// There is no log at the path (`cdc init` not run, or the wrong path).
        case noLog = "no_log"
        /// The directory holds something that is not an initialised cdc event log.
        case notALog = "not_a_log"
        /// The log was written by a newer cdc.
        case formatTooNew = "format_too_new"
        /// The log is open read-only in this process and cannot be written.
        case readOnly = "read_only"
        /// The log directory (or a file in it) cannot be created.
        case createFailed = "create_failed"
        /// The log (or its writer lock, or the history index) cannot be opened.
        case openFailed = "open_failed"
        /// Another process holds the writer lock.
        case writerLocked = "writer_locked"
        /// The log contradicts itself (a record, relation or Merkle leaf is missing; meta unreadable).
        case corrupt
        /// The history index is incomplete or unreadable (delete it: it is rebuilt).
        case historyIndexUnusable = "history_index_unusable"
        /// A table name that the log does not have.
        case unknownTable = "unknown_table"
        /// A table name that matches several tables of the log.
        case ambiguousTable = "ambiguous_table"
        /// A table without a replica identity key where one is needed.
        case noKey = "no_key"
        /// A key with the wrong number of values.
        case wrongKey = "wrong_key"
        /// A write failed because of the storage (full, read-only, I/O errors, map cannot grow):
        /// ``EventLogError/storageFault`` says which; retrying after the condition clears is safe.
        case storage
        /// A bug in cdc.
        case `internal`
        /// Anything else.
        case other
    }

    public var code: Code
    public var message: String
    /// The call that failed, when one did: an LMDB function (`mdb_env_open(path)`) or a system call
    /// (`open(path)`, `flock(path)`).
    public var call: String?
    /// That call's return code: LMDB's (an `MDB_*` constant or an errno value) or the system call's errno.
    public var returnCode: Int32?
    /// The error that caused this one (an ``LMDBError``, a Foundation error, ...).
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, call: String? = nil, returnCode: Int32? = nil, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.call = call
        self.returnCode = returnCode
        self.underlying = underlying
    }

    /// What the storage fault is, for ``Code/storage``.
    public var storageFault: StorageFault? { faultOfUnderlying }
    private var faultOfUnderlying: StorageFault?

    /// A failed write to the environment at `path` (`log`, `history index`): a ``Code/storage`` error
    /// when the storage caused it (`log /var/lib/cdc/log: no space left on device (ENOSPC) committing
    /// 14 MiB`), else `code`.
    public static func write(_ error: LMDBError, what: String, path: String, operation: String, otherwise code: Code = .other) -> EventLogError {
        guard let fault = StorageFault(error, directory: path) else {
            return EventLogError(code, "\(what) \(path): \(operation) failed: \(error)", lmdb: error)
        }
        var wrapped = EventLogError(.storage, "\(what) \(path): \(fault.reason) \(operation)", lmdb: error)
        wrapped.faultOfUnderlying = fault
        return wrapped
    }

    /// Wraps a failed LMDB call: its name and return code are kept.
    public init(_ code: Code, _ message: String, lmdb error: LMDBError) {
        self.init(code, message, call: error.call, returnCode: error.code, underlying: error)
    }

    public var description: String { message }
}

/// An event log directory: the LMDB environment and its named databases.
///
/// Sub-databases (format version 1, see schemas/event-log.md):
/// - `events`: 8-byte big-endian sequence number → record (``RecordCodec``), appended with MDB_APPEND.
/// - `meta`: format version, source identity, state, head and stream position.
/// - `relations`: 4-byte big-endian table OID → 8-byte sequence number of its latest relation record.
/// - `leaves`, `roots`, `nodes`: Merkle leaf hashes, roots at heads, interior node hashes (``MerkleNodes``).
///
/// Records after `head` are an incomplete transaction (a crash cut it short, or a huge transaction is
/// still arriving): readers never show them and the writer deletes them when it opens.
public final class EventLog: @unchecked Sendable {
    /// The newest format this build reads and writes.
    public static let formatVersion: UInt32 = 1

    public let path: String
    public let environment: LMDBEnvironment
    let events: LMDBDatabase
    let meta: LMDBDatabase
    let relations: LMDBDatabase
    let leaves: LMDBDatabase
    let roots: LMDBDatabase
    /// Interior Merkle node hashes (``MerkleNodes``); nil in a log written before they existed, opened read-only.
    let nodes: LMDBDatabase?
    /// The relation definitions of this log, decoded once and shared by its readers.
    public let relationCatalog = RelationCatalog()

    enum MetaKey {
        static let format = Array("format".utf8)
        static let source = Array("source".utf8)
        static let state = Array("state".utf8)
        static let head = Array("head".utf8)
        static let resume = Array("resume_lsn".utf8)
        static let lastCommit = Array("last_commit_lsn".utf8)
        static let lastCommitTime = Array("last_commit_time".utf8)
        static let frontier = Array("merkle_frontier".utf8)
        static let privacy = Array("privacy".utf8)
        /// Backfill progress of tables that joined the publication later (JSON, see schemas/event-log.md).
        static let backfill = Array("backfill".utf8)
    }

    /// The LMDB data file, as error messages name it.
    public var dataFile: String { path + "/data.mdb" }

    /// True when `path` holds an LMDB environment (a log, or the start of one).
    public static func exists(at path: String) -> Bool {
        FileManager.default.fileExists(atPath: path + "/data.mdb")
    }

    /// One instance per log directory in this process (weakly held).
    ///
    /// LMDB forbids opening one environment twice in a process: the second open takes the first's
    /// POSIX locks for its own, may reset the shared reader table, and closing it drops the first's
    /// locks, after which the writer can reuse pages a reader of this process still reads. So the
    /// writer, the history indexer and the projector of `cdc run` all share one environment.
    private static let registry = Mutex<[String: WeakLog]>([:])

    private final class WeakLog: @unchecked Sendable {
        weak var log: EventLog?
        init(_ log: EventLog) { self.log = log }
    }

    /// The process's instance for `path`, opened when there is none. A log whose files this process
    /// may write is opened read-write (so that a writer can share it); `forWriting` requires that.
    static func shared(path: String, forWriting: Bool) throws -> EventLog {
        let key = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        return try registry.withLock { logs in
            if let log = logs[key]?.log {
                if forWriting && log.environment.readOnly {
                    throw EventLogError(.readOnly, "the log at \(path) is open read-only in this process and cannot be written")
                }
                return log
            }
            let writable = forWriting || (access(path + "/data.mdb", W_OK) == 0 && access(path + "/lock.mdb", W_OK) == 0)
            let log = try EventLog(path: path, readOnly: !forWriting, environmentReadOnly: !writable, create: forWriting)
            logs[key] = WeakLog(log)
            return log
        }
    }

    /// The map size a writable log opens with: 256 GiB of address space, or `CDC_LOG_MAP_SIZE` bytes (a
    /// multiple of 1 MiB) so that tools/chaos can make the map grow under load. LMDB never maps less
    /// than the data already written.
    static let initialMapSize: Int = {
        if let text = ProcessInfo.processInfo.environment["CDC_LOG_MAP_SIZE"], let bytes = Int(text), bytes > 0, bytes % (1 << 20) == 0 {
            return bytes
        }
        return 1 << 38
    }()

    /// `readOnly`: only existing sub-databases, no format stamp. `environmentReadOnly`: MDB_RDONLY.
    private init(path: String, readOnly: Bool, environmentReadOnly: Bool, create: Bool) throws {
        self.path = path
        let exists = FileManager.default.fileExists(atPath: path + "/data.mdb")
        if !exists {
            guard create else {
                throw EventLogError(.noLog, "no event log at \(path): run `cdc init` first, or pass the right --log/--config")
            }
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw EventLogError(.createFailed, "cannot create log directory \(path): \(error.localizedDescription)", underlying: error)
            }
        }
        // A damaged data.mdb is refused here, before any transaction reads a data page (see DataFileCheck).
        let file = path + "/data.mdb"
        if exists { try DataFileCheck.checkBeforeOpen(file: file) }
        do {
            // A large map (address space, not disk) so that the writer almost never has to grow it
            // while readers of this process hold transactions.
            environment = try LMDBEnvironment(path: path, readOnly: environmentReadOnly, mapSize: EventLog.initialMapSize)
        } catch let error as LMDBError {
            if let damage = DataFileCheck.explainOpenFailure(file: file, error) { throw damage }
            throw EventLogError(.openFailed, "cannot open event log at \(path): \(error.message)", lmdb: error)
        }
        try DataFileCheck.check(environment, file: file, walkingPages: readOnly)
        if readOnly {
            guard let events = try environment.existingDatabase("events"),
                  let meta = try environment.existingDatabase("meta"),
                  let relations = try environment.existingDatabase("relations"),
                  let leaves = try environment.existingDatabase("leaves"),
                  let roots = try environment.existingDatabase("roots") else {
                throw EventLogError(.notALog, "\(path) is not a cdc event log (missing sub-databases): run `cdc init`")
            }
            (self.events, self.meta, self.relations, self.leaves, self.roots) = (events, meta, relations, leaves, roots)
            nodes = try environment.existingDatabase("nodes")
        } else {
            events = try environment.openDatabase("events", create: true)
            meta = try environment.openDatabase("meta", create: true)
            relations = try environment.openDatabase("relations", create: true)
            leaves = try environment.openDatabase("leaves", create: true)
            roots = try environment.openDatabase("roots", create: true)
            nodes = try environment.openDatabase("nodes", create: true)
        }
        try checkFormat(stampIfNew: !readOnly)
    }

    private func checkFormat(stampIfNew: Bool) throws {
        let found: UInt32? = try environment.withTransaction(readOnly: true) { txn in
            guard let bytes = try txn.get(meta, key: MetaKey.format) else { return nil }
            var r = ByteReader(bytes)
            return try r.u32()
        }
        if let found {
            if found > EventLog.formatVersion {
                throw EventLogError(.formatTooNew, "the log at \(path) has format version \(found), newer than this cdc's \(EventLog.formatVersion): upgrade cdc")
            }
        } else if stampIfNew {
            try environment.withTransaction(readOnly: false) { txn in
                try txn.put(meta, key: MetaKey.format, value: keyBytes(EventLog.formatVersion))
            }
        } else {
            throw EventLogError(.notALog, "\(path) is not an initialised cdc event log: run `cdc init`")
        }
    }

    // MARK: Meta

    /// The source this log belongs to, nil before `cdc init` recorded it.
    public func sourceIdentity() throws -> SourceIdentity? {
        let data: Data? = try environment.withTransaction(readOnly: true) { txn in
            try txn.get(meta, key: MetaKey.source).map { Data($0) }
        }
        guard let data else { return nil }
        return try JSONDecoder().decode(SourceIdentity.self, from: data)
    }

    /// The log's life-cycle state, nil before `cdc init`.
    public func state() throws -> LogState? {
        try environment.withTransaction(readOnly: true) { txn in
            try txn.get(meta, key: MetaKey.state).flatMap { LogState(rawValue: String(decoding: $0, as: UTF8.self)) }
        }
    }

    /// The backfill progress (meta key `backfill`, JSON), nil when nothing was ever backfilled.
    public func backfillState() throws -> [UInt8]? {
        try environment.withTransaction(readOnly: true) { txn in try txn.get(meta, key: MetaKey.backfill).map { Array($0) } }
    }

    /// The privacy policies the log was written under, oldest first (empty: nothing was ever protected).
    public func privacyHistory() throws -> [PrivacyEpoch] {
        let data: Data? = try environment.withTransaction(readOnly: true) { txn in
            try txn.get(meta, key: MetaKey.privacy).map { Data($0) }
        }
        guard let data else { return [] }
        do {
            return try JSONDecoder().decode([PrivacyEpoch].self, from: data)
        } catch {
            throw EventLogError(.corrupt, "the log's privacy history (meta key privacy) is unreadable: run `cdc log verify`", underlying: error)
        }
    }

    /// The visible head and the stream position, read in one transaction.
    public func position() throws -> LogPosition {
        try environment.withTransaction(readOnly: true) { txn in try readPosition(txn) }
    }

    func readPosition(_ txn: LMDBTransaction) throws -> LogPosition {
        func u64(_ key: [UInt8]) throws -> UInt64? { try txn.get(meta, key: key).flatMap(readU64) }
        let time = try u64(MetaKey.lastCommitTime).map { Int64(bitPattern: $0) }
        return LogPosition(head: try u64(MetaKey.head) ?? 0,
                           resumeLSN: LSN(try u64(MetaKey.resume) ?? 0),
                           lastCommitLSN: LSN(try u64(MetaKey.lastCommit) ?? 0),
                           lastCommitTime: time == RecordCodec.noTime ? nil : time)
    }

    func writePosition(_ p: LogPosition, _ txn: LMDBTransaction) throws {
        try txn.put(meta, key: MetaKey.head, value: keyBytes(p.head))
        try txn.put(meta, key: MetaKey.resume, value: keyBytes(p.resumeLSN.value))
        try txn.put(meta, key: MetaKey.lastCommit, value: keyBytes(p.lastCommitLSN.value))
        try txn.put(meta, key: MetaKey.lastCommitTime, value: keyBytes(UInt64(bitPattern: p.lastCommitTime ?? RecordCodec.noTime)))
    }

    /// The Merkle frontier over records 1...head, as stored with the head.
    public func frontier() throws -> MerkleFrontier {
        try environment.withTransaction(readOnly: true) { txn in try readFrontier(txn) }
    }

    func readFrontier(_ txn: LMDBTransaction) throws -> MerkleFrontier {
        guard let bytes = try txn.get(meta, key: MetaKey.frontier) else { return MerkleFrontier() }
        return try MerkleFrontier(encoded: bytes)
    }

    /// The Merkle leaf hash stored for record `seq`.
    public func leaf(_ seq: UInt64) throws -> [UInt8]? {
        try environment.withTransaction(readOnly: true) { txn in try txn.get(leaves, key: keyBytes(seq)).map { Array($0) } }
    }

    // MARK: Reading records

    /// Reads the record with sequence number `seq`, visible or not.
    public func record(_ seq: UInt64) throws -> Record? {
        try environment.withTransaction(readOnly: true) { txn in
            try txn.get(events, key: keyBytes(seq)).map { try RecordCodec.decode($0, seq: seq, file: dataFile) }
        }
    }

    /// The latest relation record for each table OID: OID → sequence number.
    public func relationIndex() throws -> [UInt32: UInt64] {
        try environment.withTransaction(readOnly: true) { txn in
            var index: [UInt32: UInt64] = [:]
            try txn.scan(relations, from: nil) { key, value in
                var k = ByteReader(key)
                if let seq = readU64(value) { index[try k.u32()] = seq }
                return true
            }
            return index
        }
    }

    /// Visits visible records in `from...to` (clamped to the head) in order, in short read transactions
    /// of at most `batch` records so that a long export never pins old pages. `body` returns false to stop.
    public func scan(from: UInt64 = 1, to: UInt64? = nil, batch: Int = 5000,
                     _ body: (UInt64, UnsafeRawBufferPointer) throws -> Bool) throws {
        try batchedScan(events, from: from, batch: batch, last: { min(try readPosition($0).head, to ?? UInt64.max) }) { _, seq, value in
            try body(seq, value)
        }
    }

    /// The one cursor loop over a database keyed by 8-byte sequence numbers: entries from `from` up
    /// to `last` (evaluated in each transaction), in read transactions of at most `batch` entries.
    /// Gaps in the keys are skipped, not reported. `body` returns false to stop.
    func batchedScan(_ db: LMDBDatabase, from: UInt64, batch: Int, last: (LMDBTransaction) throws -> UInt64,
                     _ body: (LMDBTransaction, UInt64, UnsafeRawBufferPointer) throws -> Bool) throws {
        var next = max(from, 1)
        var stop = false
        while !stop {
            var visited = 0
            try environment.withTransaction(readOnly: true) { txn in
                let end = try last(txn)
                guard next <= end else { stop = true; return }
                try txn.scan(db, from: keyBytes(next)) { key, value in
                    guard let seq = readU64(key), seq <= end else { stop = true; return false }
                    if try !body(txn, seq, value) { stop = true; return false }
                    next = seq + 1
                    visited += 1
                    return visited < batch
                }
                if next > end { stop = true }
            }
            if visited == 0 { stop = true }
        }
    }
}
