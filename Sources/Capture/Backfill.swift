import Crypto
import EventLog
import Foundation
import Lifecycle
import Logging
import PGClient

/// The durable backfill progress: meta key `backfill` (JSON), written in the same LMDB transaction as
/// the chunk it describes (see schemas/event-log.md, "Backfill").
public struct BackfillState: Codable, Sendable {
    /// Tables (OIDs) whose rows `cdc init`'s snapshot wrote: the relation records of the log's first
    /// transaction (xid none, at the slot's consistent point). Computed once from the log.
    public var initTables: [UInt32] = []
    /// Requests received (`cdc.snapshot.request` messages) not yet turned into jobs.
    public var requests: [SnapshotRequest] = []
    /// Every backfill, oldest first; at most one runs at a time (the first not done).
    public var jobs: [Job] = []

    public struct Job: Codable, Sendable {
        public var request: String
        public var oid: UInt32
        public var table: String
        public var whereSQL: String?
        public var chunkSize: Int
        /// The key (text form) of the last row read, nil before the first chunk.
        public var lastKey: [String]?
        /// The largest key when the backfill started: it reads up to it (rows inserted later are streamed,
        /// and a busy table does not keep it running forever). Nil before the first chunk.
        public var maxKey: [String]?
        public var chunks: Int = 0
        /// Snapshot records written.
        public var rows: Int = 0
        public var done = false
        /// Why the job was refused (done without rows).
        public var error: String?

        enum CodingKeys: String, CodingKey {
            case request, oid, table, whereSQL = "where", chunkSize = "chunk_size", lastKey = "last_key", maxKey = "max_key", chunks, rows, done, error
        }
    }

    public init() {}

    enum CodingKeys: String, CodingKey { case initTables = "init_tables", requests, jobs }

    /// Tables whose existing rows are in the log: init's, and those of a completed backfill of the whole table.
    public var snapshotted: Set<UInt32> {
        Set(initTables).union(jobs.filter { $0.done && $0.whereSQL == nil && $0.error == nil }.map(\.oid))
    }
}

/// What `cdc snapshot` sends through the source (a transactional logical message, prefix
/// `cdc.snapshot.request`).
public struct SnapshotRequest: Codable, Sendable {
    public var id: String
    public var tables: [String]
    public var whereSQL: String?
    public var chunkSize: Int?
    /// HMAC-SHA-256 (hex) of the request without it, keyed by `<log>/snapshot.key`: any role of the
    /// source may emit a logical message, only one that can read the log's directory can sign one.
    public var mac: String?

    public init(id: String, tables: [String], whereSQL: String?, chunkSize: Int?) {
        self.id = id
        self.tables = tables
        self.whereSQL = whereSQL
        self.chunkSize = chunkSize
    }

    enum CodingKeys: String, CodingKey { case id, tables, whereSQL = "where", chunkSize = "chunk_size", mac }

    /// The key file of the log at `logPath`, created (0600, 32 random bytes) by `cdc run` when missing.
    public static func keyPath(log logPath: String) -> String { logPath + "/snapshot.key" }

    static func loadOrCreateKey(log logPath: String) throws -> [UInt8] {
        let path = keyPath(log: logPath)
        if let data = FileManager.default.contents(atPath: path), data.count == 32 { return Array(data) }
        let key = (0..<32).map { _ in UInt8.random(in: 0...255) }
        guard FileManager.default.createFile(atPath: path, contents: Data(key), attributes: [.posixPermissions: 0o600]) else {
            throw SnapshotRequester.Failure(description: "cannot write \(path)")
        }
        return key
    }

    /// The MAC of this request (its JSON with sorted keys and no mac) under `key`.
    public func authenticationCode(_ key: [UInt8]) throws -> String {
        var unsigned = self
        unsigned.mac = nil
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let code = HMAC<SHA256>.authenticationCode(for: try encoder.encode(unsigned), using: SymmetricKey(data: key))
        return code.map { String(format: "%02x", $0) }.joined()
    }
}

/// The content of a `cdc.backfill.chunk` message record (the last record of each chunk's log transaction).
public struct BackfillChunkRecord: Codable, Sendable {
    public var request: String
    public var table: String
    public var chunk: Int
    public var lastKey: [String]?
    /// Rows written by this chunk (read minus those the stream changed in the window).
    public var rows: Int
    /// Rows read by this chunk's SELECT.
    public var read: Int
    public var done: Bool
    public var error: String?
    /// Rows written by this backfill so far, this chunk included.
    public var total: Int

    enum CodingKeys: String, CodingKey { case request, table, chunk, lastKey = "last_key", rows, read, done, error, total }
}

/// Backfill of tables that joined the publication after `cdc init`, and of `cdc snapshot` requests,
/// while streaming: Netflix DBLog's watermark algorithm (arXiv:2010.12597).
///
/// Per chunk, on an ordinary connection in autocommit: a low watermark (`pg_logical_emit_message(true,
/// 'cdc.watermark', …)`), the next chunk by primary key (keyset), a high watermark. The stream
/// delivers both watermarks in WAL order; between them, the keys of that table's changes are noted;
/// after the high watermark's transaction, the chunk's rows minus those keys are written as one log
/// transaction of `snapshot` records (xid none, LSN = the high watermark's commit LSN), ending with a
/// `cdc.backfill.chunk` message record; the progress (meta `backfill`) becomes durable with it. A
/// change after the high watermark is newer than the chunk, one inside the window may be: the chunk
/// drops the rows of those keys, whose own events in the stream carry the newer state. A change before
/// the low watermark is older than the SELECT's snapshot, which sees it, except when its transaction
/// had written its commit record but was not yet visible (the SELECT's snapshot lists it as in
/// progress; under synchronous replication it stays so until a standby confirms): such keys are
/// dropped too, the snapshot read in the SELECT's own REPEATABLE READ transaction, or, when the
/// transaction was delivered before the chunk started, the chunk is read again once it is visible.
///
/// Only one chunk is in flight, held in memory. Everything runs on the capture thread.
final class Backfill {
    static let watermarkPrefix = "cdc.watermark"
    static let requestPrefix = "cdc.snapshot.request"
    static let chunkPrefix = "cdc.backfill.chunk"
    static let defaultChunkSize = 5000
    /// Seconds between checks of the publication for tables the log never snapshotted.
    static let checkInterval: Duration = .seconds(5)

    let options: CaptureOptions
    let writer: EventLogWriter
    let logger: Logger
    let metrics: CaptureMetrics
    /// Chunks staged in the log and not yet counted: counted once durable (``takeWritten()``).
    private var written: [(relationSeq: UInt64, table: String, rows: Int)] = []
    private var state: BackfillState?
    private var sql: PGConnection?
    private var lastCheck: ContinuousClock.Instant?
    private var chunk: Chunk?
    private var relations: [UInt32: (seq: UInt64, definition: RelationDefinition)] = [:]
    /// Tables already warned about (no usable key), so that the warning is given once per session.
    private var warned: Set<UInt32> = []
    /// The last transactions the stream delivered committed (a ring of ``recentCapacity``), with the
    /// tables they changed: a chunk whose snapshot lists one that changed its table as in progress is
    /// read later (see ``startChunk()``).
    private var recent: [UInt32: Touched] = [:]
    private var recentOrder: [UInt32] = []
    private var recentNext = 0
    /// The newest xid the ring has forgotten (nil while it never did).
    private var forgottenNewest: UInt32?
    static let recentCapacity = 65536
    /// The tables changed by the transaction being written so far, each once; past
    /// ``maxTrackedTables`` the transaction counts as changing every table (bounded work per row).
    private var transactionTables: [UInt32] = []
    static let maxTrackedTables = 64
    enum Touched {
        case tables([UInt32])
        /// Not written (already in the log, or from a filtered origin): which tables it changed is unknown.
        case unknown
    }
    /// No chunk starts before this instant (a deferred chunk waits a little).
    private var notBefore: ContinuousClock.Instant?
    private let enabled: Bool
    /// Chunks read again later because of transactions not yet visible (see ``startChunk()``).
    private var deferred = 0
    private let retries = RateLimitedLog(interval: 60)

    private struct Chunk {
        enum Phase { case emitted, window, closed }
        var id: String
        var job: Int
        var oid: UInt32
        var definition: RelationDefinition
        var keyColumns: [Int]
        var rows: [(key: [[UInt8]?], tuple: [UInt8])] = []
        var read = 0
        var lastKey: [String]?
        var phase = Phase.emitted
        var changed: Set<[[UInt8]?]> = []
        var truncated = false
        var lsn = LSN.zero
        var time: Int64 = 0
        /// The chunk SELECT's snapshot: a transaction it does not see that commits before the low
        /// watermark (its commit record is in the WAL, it is not yet visible: the moment between the
        /// two, long under synchronous replication) changed rows the chunk holds in their older state.
        var snapshot: TransactionSnapshot?
        /// How many of `changed` came from such transactions (logged per chunk).
        var unseenBefore = 0
    }

    /// `pg_current_snapshot()` in 32-bit xids, as the stream names transactions.
    struct TransactionSnapshot: Equatable {
        var xmax: UInt32
        var inProgress: Set<UInt32>

        /// Parses `xmin:xmax:xip,...` (xid8 values; the low 32 bits are the xid).
        init?(_ text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 3, let xmax = UInt64(parts[1]) else { return nil }
            self.xmax = UInt32(truncatingIfNeeded: xmax)
            var xip = Set<UInt32>()
            for item in parts[2].split(separator: ",") {
                guard let xid = UInt64(item) else { return nil }
                xip.insert(UInt32(truncatingIfNeeded: xid))
            }
            inProgress = xip
        }

        /// True when the transaction `xid` had not committed for this snapshot (xids compare modulo 2^32).
        func doesNotSee(_ xid: UInt32) -> Bool {
            inProgress.contains(xid) || Int32(bitPattern: xid &- xmax) >= 0
        }
    }

    init(options: CaptureOptions, writer: EventLogWriter, logger: Logger, metrics: CaptureMetrics) {
        self.options = options
        self.writer = writer
        self.logger = logger
        self.metrics = metrics
        _ = try? SnapshotRequest.loadOrCreateKey(log: writer.log.path)
        // `cdc run --endpos` stops at a position the watermarks of a backfill would lie beyond.
        enabled = options.endpos == nil
    }

    // MARK: Hooks called by CaptureStream

    /// A new replication session: a chunk in flight is dropped (its watermarks, if they come again,
    /// are orphans; the chunk is read again from the last durable key).
    func sessionStarted() {
        chunk = nil
        sql = nil
        lastCheck = nil
        relations = [:]
        transactionTables = []
    }

    /// True when a change of `oid` by transaction `xid` may be newer than the chunk's rows: inside the
    /// window, or before it by a transaction the chunk's snapshot does not see.
    @inline(__always)
    private func newerThanChunk(_ oid: UInt32, xid: UInt32) -> Bool {
        guard let c = chunk, c.oid == oid else { return false }
        switch c.phase {
        case .window: return true
        case .emitted: return c.snapshot?.doesNotSee(xid) ?? false
        case .closed: return false
        }
    }

    /// A row change of `oid` by transaction `xid`, being written (`tuple` and `other`: new and old tuple).
    @inline(__always)
    func changed(_ oid: UInt32, xid: UInt32, _ tuple: PgOutputMessage.Tuple, _ other: PgOutputMessage.Tuple? = nil) {
        if transactionTables.last != oid { noteTable(oid) }
        guard newerThanChunk(oid, xid: xid) else { return }
        for t in [tuple, other] {
            guard let t, let key = Self.key(t, chunk!.keyColumns) else { continue }
            if chunk!.changed.insert(key).inserted, chunk!.phase == .emitted { chunk!.unseenBefore += 1 }
        }
    }

    /// The chunks staged since the last call, once the log made them durable: (relation record, table, rows).
    func takeWritten() -> [(relationSeq: UInt64, table: String, rows: Int)] {
        defer { written.removeAll() }
        return written
    }

    @inline(__always)
    private func noteTable(_ oid: UInt32) {
        if transactionTables.count <= Self.maxTrackedTables, !transactionTables.contains(oid) { transactionTables.append(oid) }
    }

    /// A transaction the stream delivered committed: `written` to the log (its changes went through
    /// ``changed(_:xid:_:_:)``), or not (skipped as already logged, or filtered by origin).
    @inline(__always)
    func committed(xid: UInt32, written: Bool) {
        defer { transactionTables.removeAll(keepingCapacity: true) }
        guard enabled else { return }
        if recent[xid] == nil {
            if recentOrder.count < Self.recentCapacity {
                recentOrder.append(xid)
            } else {
                let old = recentOrder[recentNext]
                recent[old] = nil
                if forgottenNewest.map({ Int32(bitPattern: old &- $0) > 0 }) ?? true { forgottenNewest = old }
                recentOrder[recentNext] = xid
                recentNext = (recentNext + 1) % Self.recentCapacity
            }
        }
        recent[xid] = written && transactionTables.count <= Self.maxTrackedTables ? .tables(transactionTables) : .unknown
    }

    /// A truncate by transaction `xid`, being written.
    func truncated(_ oids: [UInt32], xid: UInt32) {
        for table in oids { noteTable(table) }
        guard let oid = chunk?.oid, oids.contains(oid), newerThanChunk(oid, xid: xid) else { return }
        chunk!.truncated = true
    }

    /// A transactional logical message of a transaction being written, at commit LSN `lsn`.
    func message(prefix: String, content: UnsafeRawBufferPointer, lsn: LSN, time: Int64) {
        switch prefix {
        case Self.watermarkPrefix where enabled:
            guard let mark = try? JSONDecoder().decode(Watermark.self, from: Data(content)), mark.id == chunk?.id else { return }
            if mark.kind == "low", chunk?.phase == .emitted {
                chunk!.phase = .window
            } else if mark.kind == "high", chunk?.phase == .window {
                chunk!.phase = .closed
                chunk!.lsn = lsn
                chunk!.time = time
            }
        case Self.requestPrefix:
            // Queued under --endpos too (the log confirms past the message): the next `cdc run` serves it.
            guard let request = try? JSONDecoder().decode(SnapshotRequest.self, from: Data(content)) else {
                logger.warning("ignoring an unreadable snapshot request", metadata: ["cdc.lsn": "\(lsn)"])
                return
            }
            guard let key = try? SnapshotRequest.loadOrCreateKey(log: writer.log.path), let mac = request.mac,
                  (try? request.authenticationCode(key)) == mac else {
                logger.warning("ignoring a snapshot request not signed with this log's snapshot.key (sent by something other than `cdc snapshot` with access to the log)",
                               metadata: ["cdc.lsn": "\(lsn)", "cdc.request": "\(request.id)"])
                return
            }
            do {
                var state = try loadState()
                // Sent again after a restart before it was durable: once only.
                guard !state.requests.contains(where: { $0.id == request.id }), !state.jobs.contains(where: { $0.request == request.id }) else { return }
                state.requests.append(request)
                save(state)
                logger.notice("snapshot requested", metadata: ["cdc.request": "\(request.id)", "cdc.tables": "\(request.tables.joined(separator: ","))"])
            } catch {
                logger.warning("cannot read the backfill state: \(error)", metadata: [:])
            }
        default:
            break
        }
    }

    /// After each message of the stream: once the high watermark's transaction is complete, the chunk
    /// is written right after it.
    func afterMessage(inTransaction: Bool) throws {
        guard !inTransaction, chunk?.phase == .closed else { return }
        try writeChunk()
    }

    /// When the socket ran dry: checks the publication (at start and every few seconds) and starts the
    /// next chunk when none is in flight. Problems with the source are logged, and retried later.
    func tick(inTransaction: Bool) {
        guard enabled, chunk == nil, !inTransaction else { return }
        do {
            let now = ContinuousClock.now
            if let notBefore, now < notBefore { return }
            if lastCheck == nil || now - lastCheck! >= Self.checkInterval {
                lastCheck = now
                try checkPublication()
            }
            try startChunk()
        } catch {
            sql = nil
            chunk = nil
            logger.warning("backfill: \(error); retrying later", metadata: [:])
        }
    }

    // MARK: State

    private func loadState() throws -> BackfillState {
        if let state { return state }
        var loaded: BackfillState
        if let bytes = try writer.log.backfillState() {
            loaded = try JSONDecoder().decode(BackfillState.self, from: Data(bytes))
        } else {
            loaded = BackfillState()
            loaded.initTables = try Self.initTables(writer.log)
        }
        state = loaded
        return loaded
    }

    private func save(_ new: BackfillState) {
        state = new
        metrics.backfillPending.record(new.jobs.filter { !$0.done }.count + new.requests.count)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        writer.stageBackfillState(Array((try? encoder.encode(new)) ?? Data()))
    }

    /// The OIDs of the relation records of the log's first transaction (`cdc init`'s snapshot: every
    /// record xid none at the consistent point, up to the first end-of-transaction flag). A log made
    /// before backfill existed has no meta `backfill`: this rule tells which tables its snapshot holds.
    static func initTables(_ log: EventLog) throws -> [UInt32] {
        var oids: [UInt32] = []
        try log.scan(from: 1) { _, bytes in
            var r = ByteReader(bytes)
            let header = try RecordCodec.decodeHeader(&r)
            guard header.xid == nil else { return false }
            if header.op == .relation, case .relation(let definition) = try RecordCodec.decode(bytes).body {
                oids.append(definition.oid)
            }
            return !header.flags.contains(.endOfTransaction)
        }
        return oids
    }

    private func connection() throws -> PGConnection {
        if let sql { return sql }
        let opened = try SourceInitializer.connect(options.conninfo)
        // The high watermark must reach the stream at once: under synchronous_commit = off the WAL
        // writer would flush it (and the walsender send it) only after wal_writer_delay. `local`, not
        // `on`: a synchronous standby that is slow or gone must not stall the backfill (the walsender
        // sends what is flushed locally).
        try opened.execute("SET synchronous_commit = local")
        sql = opened
        return opened
    }

    // MARK: Jobs

    /// Adds a job for each published table the log never snapshotted, and for each pending request.
    private func checkPublication() throws {
        var state = try loadState()
        let sql = try connection()
        let published = try Self.publishedTables(sql, publication: options.publication)
        var changed = false
        let snapshotted = state.snapshotted
        for table in published where !snapshotted.contains(table.oid) {
            guard !state.jobs.contains(where: { $0.oid == table.oid && !$0.done }) else { continue }
            guard let key = try Self.keyColumns(sql, table) else {
                if !warned.contains(table.oid) {
                    warned.insert(table.oid)
                    logger.warning("cannot backfill \(table.name): it has no primary key and no replica identity index, so its rows before it joined the publication are not in the log — add a primary key (or ALTER TABLE … REPLICA IDENTITY USING INDEX), then run `cdc snapshot \(table.name)`", metadata: ["cdc.table": "\(table.name)"])
                }
                continue
            }
            _ = key
            // An empty table needs no backfill (and no watermarks in the log): every row it will get is streamed.
            if try sql.query("SELECT 1 FROM ONLY \(table.quoted(sql)) LIMIT 1").rowCount == 0 {
                state.initTables.append(table.oid)
                changed = true
                continue
            }
            state.jobs.append(.init(request: "auto-\(table.oid)", oid: table.oid, table: table.name, whereSQL: nil,
                                    chunkSize: options.backfillChunkSize))
            logger.notice("backfilling a table that joined the publication", metadata: ["cdc.table": "\(table.name)"])
            changed = true
        }
        for request in state.requests {
            for name in request.tables {
                let table = published.first { $0.name == name || ($0.schema == "public" && $0.table == name) }
                var job = BackfillState.Job(request: request.id, oid: table?.oid ?? 0, table: table?.name ?? name, whereSQL: request.whereSQL,
                                            chunkSize: max(1, request.chunkSize ?? Self.defaultChunkSize))
                if let table {
                    if try Self.keyColumns(sql, table) == nil { job.error = "\(table.name) has no primary key and no replica identity index" }
                } else {
                    job.error = "\(name) is not in publication \(options.publication)"
                }
                state.jobs.append(job)
                if let error = job.error { refuse(&state, state.jobs.count - 1, error) }
            }
            changed = true
        }
        state.requests = []
        if changed { save(state) }
    }

    private func startChunk() throws {
        var state = try loadState()
        guard let index = state.jobs.firstIndex(where: { !$0.done }) else { return }
        let job = state.jobs[index]
        let sql = try connection()
        guard let table = try Self.publishedTables(sql, publication: options.publication).first(where: { $0.oid == job.oid }) else {
            refuse(&state, index, "\(job.table) left the publication")
            save(state)
            return
        }
        guard let keyNames = try Self.keyColumns(sql, table) else {
            refuse(&state, index, "\(job.table) has no primary key and no replica identity index")
            save(state)
            return
        }
        let definition = try SourceInitializer.relationDefinition(sql, publishedRow: table.row)
        let keyColumns = keyNames.compactMap { name in definition.columns.firstIndex { $0.name == name } }
        guard keyColumns.count == keyNames.count else {
            refuse(&state, index, "\(job.table)'s key columns are not all published (column list)")
            save(state)
            return
        }
        let methods = try options.protector?.methods(for: definition)

        var c = Chunk(id: UUID().uuidString.lowercased(), job: index, oid: job.oid, definition: definition, keyColumns: keyColumns)
        // The query: one statement with the last key as parameters, in a read-only transaction (the
        // operator's --where can read, not write; identifiers are quoted).
        var conditions: [String] = []
        if let filter = table.rowFilter { conditions.append("(\(filter))") }
        if let whereSQL = job.whereSQL { conditions.append("(\(whereSQL))") }
        let keyList = keyNames.map { sql.quoteIdentifier($0) }.joined(separator: ", ")
        if job.maxKey == nil {
            let base = "SELECT \(keyList) FROM ONLY \(table.quoted(sql))"
                + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
                + " ORDER BY " + keyNames.map { sql.quoteIdentifier($0) + " DESC" }.joined(separator: ", ") + " LIMIT 1"
            try sql.execute("BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY")
            defer { _ = try? sql.execute("ROLLBACK") }
            let top = try sql.query(base)
            state.jobs[index].maxKey = top.rowCount == 0 ? [] : (0..<keyNames.count).map { top.value(0, $0) ?? "" }
            self.state = state
        }
        let maxKey = state.jobs[index].maxKey ?? []
        var parameters: [String?] = []
        if let last = job.lastKey {
            conditions.append("(\(keyList)) > (\((1...last.count).map { "$\($0)" }.joined(separator: ", ")))")
            parameters += last
        }
        if maxKey.isEmpty {
            conditions.append("false")  // nothing to read: the table was empty when the backfill started
        } else {
            let first = parameters.count + 1
            conditions.append("(\(keyList)) <= (\((first..<(first + maxKey.count)).map { "$\($0)" }.joined(separator: ", ")))")
            parameters += maxKey
        }
        let columns = definition.columns.map { sql.quoteIdentifier($0.name) }.joined(separator: ", ")
        let query = "SELECT \(columns) FROM ONLY \(table.quoted(sql))"
            + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
            + " ORDER BY \(keyList) LIMIT \(job.chunkSize)"

        try emit(sql, c.id, "low", job)
        // One snapshot for the rows and for the list of transactions they do not see (see Chunk.snapshot).
        try sql.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        let result: PGResult
        do {
            let text = try sql.query("SELECT pg_current_snapshot()::text").value(0, 0) ?? ""
            guard let snapshot = TransactionSnapshot(text) else {
                throw CaptureError.protocolViolation("pg_current_snapshot() returned \(text), not xmin:xmax:xip")
            }
            c.snapshot = snapshot
            // A transaction the stream delivered committed, which changed this table, but that this
            // snapshot does not see yet: the rows it changed would be read in their older state and
            // written after its events. Read the chunk again once it is visible. (One the stream has
            // not delivered yet is handled as it arrives: before the low watermark by its keys, see
            // newerThanChunk, after it by the window.)
            var unseen = snapshot.inProgress.filter { xid in
                switch recent[xid] {
                case .unknown: return true
                case .tables(let tables): return tables.contains(job.oid)
                case nil: return false
                }
            }
            // Committed in the commit log and not in the ring: not delivered yet, or delivered so long
            // ago that the ring forgot it (xids at or before the newest it forgot are taken as such).
            if unseen.isEmpty, let forgottenNewest, !snapshot.inProgress.isEmpty {
                let committed = try sql.query("SELECT x::text FROM unnest(pg_snapshot_xip(pg_current_snapshot())) x WHERE pg_xact_status(x) = 'committed'")
                unseen = Set((0..<committed.rowCount).compactMap { committed.value($0, 0).flatMap(UInt64.init).map { UInt32(truncatingIfNeeded: $0) } }
                    .filter { recent[$0] == nil && Int32(bitPattern: $0 &- forgottenNewest) <= 0 })
            }
            if !unseen.isEmpty {
                _ = try? sql.execute("ROLLBACK")
                notBefore = ContinuousClock.now + .milliseconds(200)
                deferred += 1
                metrics.deferredChunks(job.table).increment()
                retries.log(logger, .info, key: "deferred", "backfill chunk deferred: a committed transaction is not yet visible to new snapshots (waiting for a synchronous standby?)", metadata: [
                    "cdc.table": "\(job.table)", "cdc.xids": "\(unseen.sorted().prefix(5).map(String.init).joined(separator: ","))",
                    "cdc.deferred": "\(deferred)",
                ])
                return
            }
            result = try sql.query(query, parameters)
            try sql.execute("COMMIT")
        } catch {
            _ = try? sql.execute("ROLLBACK")
            throw error
        }
        try emit(sql, c.id, "high", job)

        c.read = result.rowCount
        c.rows.reserveCapacity(result.rowCount)
        let count = definition.columns.count
        for r in 0..<result.rowCount {
            var w = ByteWriter(capacity: 64)
            TupleWriter.count(count, into: &w)
            for column in 0..<count {
                result.withBytes(r, column) { raw in
                    guard let raw else { TupleWriter.null(into: &w); return }
                    if let methods, column < methods.count, let method = methods[column], let protector = options.protector {
                        protector.write(method, value: raw, into: &w)
                    } else {
                        TupleWriter.text(raw, into: &w)
                    }
                }
            }
            let key = keyColumns.map { column in result.withBytes(r, column) { $0.map { Array($0) } } }
            c.rows.append((key, w.bytes))
        }
        if result.rowCount > 0 {
            c.lastKey = keyColumns.map { result.value(result.rowCount - 1, $0) ?? "" }
        }
        chunk = c
    }

    /// Ends job `index` without rows: a final chunk record naming `reason` (so that a waiting `cdc
    /// snapshot` stops and says why), as a log transaction of its own after the last one. Call it
    /// between transactions only; the caller saves `state`.
    private func refuse(_ state: inout BackfillState, _ index: Int, _ reason: String) {
        state.jobs[index].done = true
        state.jobs[index].error = reason
        let job = state.jobs[index]
        logger.warning("backfill refused: \(reason)", metadata: ["cdc.table": "\(job.table)", "cdc.request": "\(job.request)"])
        appendChunkRecord(BackfillChunkRecord(request: job.request, table: job.table, chunk: job.chunks, lastKey: job.lastKey,
                                              rows: 0, read: 0, done: true, error: reason, total: job.rows),
                          lsn: writer.staged.lastCommitLSN, time: writer.staged.lastCommitTime)
        writer.endTransaction(commitLSN: writer.staged.lastCommitLSN, commitTime: writer.staged.lastCommitTime, resume: writer.staged.resumeLSN)
    }

    private struct Watermark: Codable {
        var id: String
        var kind: String
        var table: String
        var request: String
    }

    private func emit(_ sql: PGConnection, _ id: String, _ kind: String, _ job: BackfillState.Job) throws {
        let json = String(decoding: try JSONEncoder().encode(Watermark(id: id, kind: kind, table: job.table, request: job.request)), as: UTF8.self)
        try sql.query("SELECT pg_logical_emit_message(true, $1, $2)", [Self.watermarkPrefix, json])
    }

    /// Writes the closed chunk as one log transaction right after its high watermark's.
    private func writeChunk() throws {
        guard let c = chunk else { return }
        chunk = nil
        var state = try loadState()
        var job = state.jobs[c.job]
        let rows = c.truncated ? [] : c.rows.filter { !c.changed.contains($0.key) }
        var relationSeq: UInt64 = 0
        if !rows.isEmpty {
            relationSeq = self.relationSeq(c.definition, lsn: c.lsn, time: c.time)
            let header = RecordHeader(op: .snapshot, lsn: c.lsn, xid: nil, commitTime: c.time, relationSeq: relationSeq)
            for row in rows {
                writer.append { w in
                    RecordCodec.writeHeader(header, to: &w)
                    w.bytes.append(contentsOf: row.tuple)
                }
            }
        }
        job.chunks += 1
        job.rows += rows.count
        written.append((relationSeq, job.table, rows.count))
        if let last = c.lastKey { job.lastKey = last }
        job.done = c.read < job.chunkSize || (job.maxKey.map { $0.isEmpty || $0 == job.lastKey } ?? false)
        appendChunkRecord(BackfillChunkRecord(request: job.request, table: job.table, chunk: job.chunks, lastKey: job.lastKey,
                                              rows: rows.count, read: c.read, done: job.done, error: nil, total: job.rows),
                          lsn: c.lsn, time: c.time)
        writer.endTransaction(commitLSN: c.lsn, commitTime: c.time, resume: writer.staged.resumeLSN)
        state.jobs[c.job] = job
        save(state)
        retries.reset(key: "deferred")
        logger.info(job.done ? "backfill done" : "backfill chunk", metadata: [
            "cdc.table": "\(job.table)", "cdc.request": "\(job.request)", "cdc.chunk": "\(job.chunks)",
            "cdc.rows": "\(rows.count)", "cdc.rows_read": "\(c.read)", "cdc.rows_total": "\(job.rows)",
            "cdc.changed_in_window": "\(c.read - rows.count)", "cdc.changed_unseen": "\(c.unseenBefore)", "cdc.lsn": "\(c.lsn)",
        ])
    }

    private func appendChunkRecord(_ record: BackfillChunkRecord, lsn: LSN, time: Int64?) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let content = Array((try? encoder.encode(record)) ?? Data())
        writer.append { w in
            RecordCodec.writeHeader(RecordHeader(op: .message, flags: .transactional, lsn: lsn, xid: nil, commitTime: time,
                                                 relationSeq: 0), to: &w)
            w.string(Self.chunkPrefix)
            content.withUnsafeBytes { w.blob($0) }
        }
    }

    /// The relation record for the chunk's rows: the latest logged one when it is the same definition,
    /// else a new one, written in the chunk's transaction.
    private func relationSeq(_ definition: RelationDefinition, lsn: LSN, time: Int64) -> UInt64 {
        if let known = relations[definition.oid], known.definition == definition { return known.seq }
        if let seq = try? writer.log.relationIndex()[definition.oid], let logged = try? writer.log.relationDefinition(seq),
           logged == definition {
            relations[definition.oid] = (seq, logged)
            return seq
        }
        let seq = writer.append { w in
            RecordCodec.writeHeader(RecordHeader(op: .relation, lsn: lsn, xid: nil, commitTime: time, relationSeq: 0), to: &w)
            RecordCodec.writeRelation(definition, to: &w)
        }
        writer.noteRelation(oid: definition.oid, seq: seq)
        relations[definition.oid] = (seq, definition)
        return seq
    }

    // MARK: Catalog

    struct PublishedTable {
        var oid: UInt32
        var schema: String
        var table: String
        var row: [String?]
        var rowFilter: String? { row[5] }
        var name: String { schema + "." + table }
        func quoted(_ sql: PGConnection) -> String { sql.quoteIdentifier(schema) + "." + sql.quoteIdentifier(table) }
    }

    static func publishedTables(_ sql: PGConnection, publication: String) throws -> [PublishedTable] {
        try sql.query("""
            SELECT c.oid, pt.schemaname, pt.tablename, c.relreplident, pt.attnames, pt.rowfilter
            FROM pg_publication_tables pt
            JOIN pg_namespace n ON n.nspname = pt.schemaname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
            WHERE pt.pubname = $1
            ORDER BY pt.schemaname, pt.tablename
            """, [publication]).rows.compactMap { row in
            guard let oid = UInt32(row[0] ?? ""), let schema = row[1], let table = row[2] else { return nil }
            return PublishedTable(oid: oid, schema: schema, table: table, row: row)
        }
    }

    /// The unique, ordered key a backfill reads the table by: the replica identity index under
    /// REPLICA IDENTITY USING INDEX, else the primary key (DEFAULT or FULL); nil when there is none.
    static func keyColumns(_ sql: PGConnection, _ table: PublishedTable) throws -> [String]? {
        let result = try sql.query("""
            SELECT (SELECT array_agg(a.attname ORDER BY k.n)
                    FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n), pg_attribute a
                    WHERE i.indrelid = c.oid AND a.attrelid = c.oid AND a.attnum = k.attnum
                      AND ((c.relreplident = 'i' AND i.indisreplident) OR (c.relreplident IN ('d', 'f') AND i.indisprimary)))
            FROM pg_class c WHERE c.oid = $1
            """, [String(table.oid)])
        guard let text = result.value(0, 0) else { return nil }
        let names = SourceInitializer.parseNameArray(text)
        return names.isEmpty ? nil : names
    }

    /// The key of a pgoutput tuple: the text of `columns` (nil for null; nil key when a column is
    /// missing or an unchanged TOAST value).
    static func key(_ tuple: PgOutputMessage.Tuple, _ columns: [Int]) -> [[UInt8]?]? {
        var r = WireReader(tuple.bytes)
        guard let count = try? Int(r.u16()) else { return nil }
        var values: [Int: [UInt8]?] = [:]
        let wanted = Set(columns)
        for index in 0..<count {
            guard let kind = try? r.u8() else { return nil }
            switch kind {
            case 0x6E: if wanted.contains(index) { values[index] = .some(nil) }
            case 0x74:
                guard let length = try? Int(r.u32()), let value = try? r.bytes(length) else { return nil }
                if wanted.contains(index) { values[index] = .some(Array(value)) }
            default: if wanted.contains(index) { return nil }
            }
        }
        var key: [[UInt8]?] = []
        for column in columns {
            guard let value = values[column] else { return nil }
            key.append(value)
        }
        return key
    }
}

/// `cdc snapshot`'s side: checks the tables and the filter, sends the request through the source, and
/// reads the log until the request's final chunk records are there.
public enum SnapshotRequester {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Checks every table (exists, published, has a key) and `whereSQL` against each; returns the
    /// tables' qualified names. Throws one line naming what is wrong and how to fix it.
    public static func check(_ sql: PGConnection, publication: String, tables: [String], whereSQL: String?) throws -> [String] {
        let published = try Backfill.publishedTables(sql, publication: publication)
        var names: [String] = []
        for name in tables {
            let parts = name.split(separator: ".", maxSplits: 1).map(String.init)
            let (schema, table) = parts.count == 2 ? (parts[0], parts[1]) : ("public", parts[0])
            guard let found = published.first(where: { $0.schema == schema && $0.table == table }) else {
                let exists = try sql.query("""
                    SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2
                    """, [schema, table]).rowCount > 0
                throw Failure(description: exists
                    ? "table \(schema).\(table) is not in publication \(publication): add it (ALTER PUBLICATION \(sql.quoteIdentifier(publication)) ADD TABLE \(sql.quoteIdentifier(schema)).\(sql.quoteIdentifier(table))) — `cdc run` then backfills it by itself"
                    : "unknown table \(name): no such table in the source database (write it as schema.table)")
            }
            guard try Backfill.keyColumns(sql, found) != nil else {
                throw Failure(description: "table \(found.name) has no primary key and no replica identity index, which a chunked backfill reads by: add a primary key, or ALTER TABLE \(found.quoted(sql)) REPLICA IDENTITY USING INDEX <unique index>")
            }
            if let whereSQL {
                try sql.execute("BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY")
                defer { _ = try? sql.execute("ROLLBACK") }
                do {
                    try sql.query("SELECT 1 FROM ONLY \(found.quoted(sql)) WHERE (\(whereSQL)) LIMIT 0")
                } catch let error as PGError {
                    throw Failure(description: "--where is not a valid condition on \(found.name): \(error.message) — write an SQL boolean expression over its columns, e.g. --where \"id < 1000\"")
                }
            }
            names.append(found.name)
        }
        return names
    }

    /// Sends the request as a transactional logical message (it reaches `cdc run` in WAL order, stays
    /// in the slot until the log holds it, and is recorded in the log).
    public static func send(_ sql: PGConnection, _ request: SnapshotRequest, log logPath: String) throws {
        let path = SnapshotRequest.keyPath(log: logPath)
        guard let key = FileManager.default.contents(atPath: path), key.count == 32 else {
            throw Failure(description: "cannot read \(path), the key requests are signed with: run cdc snapshot as the user that runs `cdc run` (which creates it at start), with --config naming its log")
        }
        var request = request
        request.mac = try request.authenticationCode(Array(key))
        let json = String(decoding: try JSONEncoder().encode(request), as: UTF8.self)
        // Flushed locally at once; a synchronous standby that is slow or gone does not hold the request.
        try sql.execute("SET synchronous_commit = local")
        try sql.query("SELECT pg_logical_emit_message(true, $1, $2)", [Backfill.requestPrefix, json])
    }

    /// The final chunk records of `request` found in the log from `seq` on: table → record; `seq`
    /// moves past what was read.
    public static func finalChunks(_ log: EventLog, request: String, from seq: inout UInt64) throws -> [String: BackfillChunkRecord] {
        var found: [String: BackfillChunkRecord] = [:]
        var next = seq
        try log.scan(from: seq) { s, bytes in
            next = s + 1
            var r = ByteReader(bytes)
            let header = try RecordCodec.decodeHeader(&r)
            guard header.op == .message, header.xid == nil,
                  case .message(let prefix, let content) = try RecordCodec.decode(bytes).body, prefix == Backfill.chunkPrefix,
                  let chunk = try? JSONDecoder().decode(BackfillChunkRecord.self, from: Data(content)),
                  chunk.request == request, chunk.done else { return true }
            found[chunk.table] = chunk
            return true
        }
        seq = next
        return found
    }
}
