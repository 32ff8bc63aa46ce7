import EventLog
import Lifecycle
import Logging
import Metrics
import PGClient
#if canImport(Glibc)
import Glibc
#endif

/// What `cdc run`'s capture needs to know.
public struct CaptureOptions: Sendable {
    /// The operator's libpq connection string (never logged).
    public var conninfo: String
    public var slot: String
    public var publication: String
    /// Stop once every transaction committed at or before this LSN is durable in the log.
    public var endpos: LSN?
    /// Seconds between standby status updates when nothing else prompts one.
    public var statusInterval: Double = 10
    /// A batch is flushed when the socket has nothing more to read or when it holds this many bytes.
    public var maxBatchBytes: Int = 16 << 20
    /// ... or this many records.
    public var maxBatchRecords: Int = 100_000
    /// Longest wait between reconnection attempts, in seconds.
    public var maxBackoff: Double = 30
    /// Column protection applied before values are written ([privacy] in cdc.toml).
    public var protector: ColumnProtector?
    /// Put the actor trigger on published tables that lack it, at each connect and when a table first
    /// appears in the stream ([audit] actor).
    public var auditActor = false
    /// Which transactions to capture by replication origin ([source] origins).
    public var origins: OriginFilter = .any
    /// Rows per chunk of an automatic backfill ([source] backfill_chunk_size; Backfill.swift).
    public var backfillChunkSize = 5000
    /// Where the loop reports that it iterates and what it is doing (`cdc run`'s health and watchdog).
    public var health: LoopHealth?
    /// Stream in-progress transactions (pgoutput protocol 2) when the server can (14+): `[source] streaming`.
    public var streaming = true

    public init(conninfo: String, slot: String, publication: String, endpos: LSN? = nil) {
        self.conninfo = conninfo
        self.slot = slot
        self.publication = publication
        self.endpos = endpos
    }
}

/// Which source transactions capture keeps, by replication origin (`[source] origins`), as
/// PostgreSQL 16's `origin` subscription option: `any` keeps every transaction (a replicated one gets
/// an `origin` record naming where it came from); `none` skips the transactions that logical
/// replication applied from another node (a replication origin set in their session), so that two
/// databases replicating to each other do not send changes back and forth.
public enum OriginFilter: String, Sendable {
    case any
    case none
}

/// Why ``CaptureStream/run(stop:)`` returned.
public enum CaptureOutcome: Sendable, Equatable {
    /// ``StopSignal/stop()`` was called; everything received whole is durable and confirmed.
    case stopped
    /// `endpos` was reached.
    case reachedEndpos
}

/// Streams a logical replication slot (pgoutput, protocol 1; protocol 2 with in-progress transactions
/// streamed on PostgreSQL 14+, see ``StreamedTransactions``) into the event log.
///
/// The loop follows pg_recvlogical: read CopyData without blocking, answer keepalives at once, send
/// standby status regularly. Transactions are appended to the writer as they arrive and flushed in
/// groups whenever the socket runs dry or the batch is large; the flush LSN confirmed to the server is
/// always the writer's durable resume position, never more.
///
/// Restart rule: a transaction is already in the log exactly when its commit LSN is below the log's
/// resume LSN (the end LSN of the last transaction written). Such transactions are skipped.
///
/// Run it on a thread of its own: every call blocks.
public final class CaptureStream {
    let options: CaptureOptions
    let writer: EventLogWriter
    let identity: SourceIdentity
    var logger: Logger

    // Relation definitions: what this session's Relation messages said, and the latest logged version.
    private var sessionRelations: [UInt32: RelationDefinition] = [:]
    private var resolved: [UInt32: UInt64] = [:]
    private var logged: [UInt32: (seq: UInt64, definition: RelationDefinition)] = [:]
    /// Names the user types of this session's Relation messages (an ordinary connection, opened lazily).
    private var typeNames: TypeNameResolver
    /// Per resolved relation, the protection of each column (absent: nothing protected).
    private var protection: [UInt32: [PrivacyPolicy.Method?]] = [:]
    private var privacyChecked = false

    // The transaction being received.
    private(set) var inTransaction = false
    private var skipping = false
    private var txnLSN = LSN.zero
    private var txnXid: UInt32 = 0
    private var txnTime: Int64 = 0
    private var txnRecords = 0
    /// The transaction has a replication origin and `[source] origins = "none"`: dropped, but its end
    /// still moves the resume position.
    private var txnFromOtherOrigin = false

    // Progress, for logs and endpos.
    private var endposReached = false
    private var lastConfirmed = LSN.zero
    /// Transactions written and skipped since start (for logs and tests).
    public private(set) var transactionsWritten = 0
    public private(set) var transactionsSkipped = 0

    // Metrics (swift-metrics; `cdc run` exports them at /metrics).
    let metrics = CaptureMetrics()
    /// The server's WAL end, from the latest XLogData or keepalive.
    private var serverWALEnd = LSN.zero
    /// Events of the open transaction and of the committed ones not yet durable, by relation and op.
    private var openCounts: [UInt64: Int] = [:]
    private var committedCounts: [UInt64: Int] = [:]
    /// Commit times (µs since 2000) of the transactions committed since the last durable flush.
    private var committedTimes: [Int64] = []
    private var relationNames: [UInt64: String] = [:]
    /// Backfill of tables that joined the publication later, and of `cdc snapshot` requests (Backfill.swift).
    private lazy var backfill = Backfill(options: options, writer: writer, logger: logger, metrics: metrics)

    /// Streamed transactions not yet committed (protocol 2), and the session's connection for their replay.
    let streamed: StreamedTransactions
    private(set) var activeConnection: PGConnection?
    private var protocolLogged = false

    public init(options: CaptureOptions, writer: EventLogWriter, identity: SourceIdentity, logger: Logger) {
        self.streamed = StreamedTransactions(logPath: writer.log.path)
        self.options = options
        self.writer = writer
        self.identity = identity
        self.logger = logger
        self.typeNames = TypeNameResolver(conninfo: options.conninfo)
    }

    /// Streams until stopped, until `endpos`, or until a fatal error. Connection losses after the first
    /// successful start are retried with exponential backoff; the first connection failing is fatal.
    public func run(stop: StopSignal) throws -> CaptureOutcome {
        if let endpos = options.endpos, writer.durable.resumeLSN > endpos {
            logger.info("log already past endpos", metadata: ["cdc.endpos": "\(endpos)", "cdc.resume_lsn": "\(writer.durable.resumeLSN)"])
            return .reachedEndpos
        }
        stopSignal = stop
        var everStarted = false
        var backoff = Backoff(initial: 0.5, maximum: options.maxBackoff)
        let health = options.health
        health?.set(.starting("connecting to the source"))
        defer { health?.set(.stopped); metrics.connected.record(0) }
        while true {
            do {
                let outcome = try session(stop: stop, started: { everStarted = true; backoff.reset() })
                return outcome
            } catch let error as PGError {
                // The first connection failing is an operator error (wrong url, server down), except for
                // states that pass by themselves: the slot still held by the walsender of a process that
                // just died (55006), or the server starting up (57P03).
                let transient = error.sqlState == .objectInUse || error.sqlState == .cannotConnectNow
                if (!everStarted && !transient) || error.isAuthenticationFailure || !error.isConnectionLoss {
                    throw CaptureError(source: error, options: options)
                }
                try recoverFromLoss(reason: error.description)
            } catch is StoppedWhilePaused {
                logger.warning("stopped while the log could not be written", metadata: [
                    "cdc.records_not_written": "\(writer.pendingRecords)", "cdc.resume_lsn": "\(writer.durable.resumeLSN)",
                    "cdc.note": "nothing is lost: the source keeps every change after the confirmed position and sends it again",
                ])
                return .stopped
            } catch let error as CaptureError where error.code == .connectionLost {
                guard everStarted else {
                    throw CaptureError(.sourceUnreachable, "cannot stream from the source: \(error.message)", underlying: error)
                }
                try recoverFromLoss(reason: error.message)
            }
            if stop.isStopped { return .stopped }
            let delay = backoff.next()
            retries.log(logger, .warning, key: "reconnect", "reconnecting", metadata: ["cdc.backoff_seconds": "\(delay)"])
            stop.sleep(seconds: delay, health: health)
            if stop.isStopped { return .stopped }
            metrics.reconnects.increment()
        }
    }

    /// Holds back repeats of the same retry warning while the source stays away.
    private let retries = RateLimitedLog(interval: 60)

    private func recoverFromLoss(reason: String) throws {
        retries.log(logger, .warning, key: "lost", "replication connection lost", metadata: ["cdc.reason": "\(reason)"])
        options.health?.set(.retrying(code: CaptureError.Code.connectionLost.rawValue, message: reason))
        metrics.connected.record(0)
        try retryingStorage(nil) { try writer.discardOpenTransaction() }
        openCounts = [:]
        inTransaction = false
        skipping = false
    }

    // MARK: Storage faults

    /// The stop signal of the running ``run(stop:)``, for the pause loop.
    private var stopSignal: StopSignal?

    /// Thrown out of a pause when cdc is asked to stop while the log still cannot be written.
    private struct StoppedWhilePaused: Error {}

    /// Runs `write` (a log write) until it succeeds. A storage fault (disk full, read-only, I/O
    /// errors, map cannot grow) pauses capture instead of stopping it: one error line naming the log,
    /// the operation and the errno, the loop's health `paused` (/readyz, STATUS=), retries with
    /// backoff, and standby status on `connection` meanwhile (confirming only what is durable, so the
    /// walsender neither times out nor discards anything). The failed write left the log and the
    /// writer as they were, so the retry writes exactly the same records.
    func retryingStorage(_ connection: PGConnection?, _ write: () throws -> Void) throws {
        var pausedSince: ContinuousClock.Instant?
        var phaseBefore: LoopHealth.Phase?
        var backoff = Backoff(initial: 0.5, maximum: options.maxBackoff)
        var keepalive = connection
        while true {
            do {
                try write()
                if let pausedSince {
                    let seconds = (ContinuousClock.now - pausedSince).components.seconds
                    logger.notice("log writable again: capture resumed", metadata: ["cdc.log": "\(writer.log.path)", "cdc.paused_seconds": "\(seconds)"])
                    metrics.paused.record(0)
                    retries.reset(key: "storage")
                    if let phaseBefore { options.health?.set(phaseBefore) }
                }
                return
            } catch let error as EventLogError where error.code == .storage {
                let fault = error.storageFault
                let code = "log_" + (fault?.kind.rawValue ?? "io_error")
                let remedy = fault?.remedy ?? "check the log's filesystem"
                metrics.writeFailures(code).increment()
                if pausedSince == nil {
                    pausedSince = .now
                    phaseBefore = options.health?.phase
                    metrics.paused.record(1)
                    // Through the rate limiter, so that the retries' warnings are held back after it.
                    retries.log(logger, .error, key: "storage", "\(error.message): capture paused, retrying — \(remedy)", metadata: [
                        "cdc.problem": "\(code)", "cdc.call": "\(error.call ?? "?")",
                        "cdc.confirmed_lsn": "\(writer.durable.resumeLSN)",
                    ])
                } else {
                    retries.log(logger, .warning, key: "storage", "capture still paused: \(error.message)", metadata: ["cdc.problem": "\(code)"])
                }
                options.health?.set(.paused(code: code, message: "\(error.message) — \(remedy); nothing is lost, capture resumes by itself"))
                guard let stop = stopSignal, !stop.isStopped else { throw StoppedWhilePaused() }
                var left = backoff.next()
                while left > 0, !stop.isStopped {
                    let slice = min(left, max(1, options.statusInterval / 2))
                    stop.sleep(seconds: slice, health: options.health)
                    left -= slice
                    if let c = keepalive {
                        do { try sendStatus(c, replyRequested: false) } catch { keepalive = nil }
                    }
                }
                if stop.isStopped { throw StoppedWhilePaused() }
            }
        }
    }

    static func explain(_ error: PGError, options: CaptureOptions) -> String {
        if error.isAuthenticationFailure {
            return "cannot connect to the source: \(error.message) — check [source] url, PGPASSFILE/PGPASSWORD and that the role has LOGIN and REPLICATION"
        }
        if error.sqlState == nil {
            return "cannot connect to the source: \(error.message) — check [source] url and that the server is running"
        }
        return "source error: \(error)"
    }

    // MARK: One connection

    private func session(stop: StopSignal, started: () -> Void) throws -> CaptureOutcome {
        let connection = try PGConnection(conninfo: options.conninfo, overrides: SessionSettings.replicationOverrides())
        try checkSource(connection)
        if !privacyChecked {
            // `cdc init`'s checks, before the policy is recorded or a change is read: a column the
            // source lacks, a hash of a non-text column, a redacted key column. (Otherwise the policy
            // would be recorded and other tables' changes written before the first change of the
            // table it cannot apply to stops capture.) The catalog queries need an ordinary connection.
            if let protector = options.protector {
                try SourceInitializer.checkProtection(protector, SourceInitializer.connect(options.conninfo))
            }
            let policy = options.protector?.policy ?? .none
            var recorded = false
            try retryingStorage(nil) { recorded = try writer.recordPrivacy(policy) }
            if recorded {
                logger.notice("privacy policy recorded", metadata: ["cdc.privacy.columns": "\(policy.columns.count)", "cdc.from_seq": "\(writer.durable.head + 1)"])
            }
            privacyChecked = true
        }
        try loadLoggedRelations()
        installActorTriggers()
        sessionRelations = [:]
        resolved = [:]
        protection = [:]
        typeNames = TypeNameResolver(conninfo: options.conninfo)
        defer { typeNames.close() }  // its connection lives no longer than the session
        let start = writer.durable.resumeLSN
        // The server streams every unfinished transaction again from its first change (its reorder
        // buffer is rebuilt from the slot's restart_lsn), so what the last session kept is dropped.
        try retryingStorage(nil) { try streamed.reset() }
        let streaming = options.streaming && connection.serverVersion >= 140000
        if !protocolLogged {
            logger.info(streaming ? "streaming in-progress transactions (pgoutput protocol 2)" : "whole transactions only (pgoutput protocol 1)", metadata: [
                "cdc.server_version": "\(connection.serverVersion)", "cdc.streaming_configured": "\(options.streaming)",
            ])
            protocolLogged = true
        }
        if streaming { try limitDecodingMemory(connection) }
        let command = "START_REPLICATION SLOT \(connection.quoteIdentifier(options.slot)) LOGICAL \(start) "
            + "(proto_version '\(streaming ? 2 : 1)', publication_names \(connection.quoteLiteral(connection.quoteIdentifier(options.publication))), messages 'true'"
            + (streaming ? ", streaming 'on')" : ")")
        try connection.startCopyBoth(command)
        activeConnection = connection
        defer { activeConnection = nil }
        started()
        backfill.sessionStarted()
        retries.reset(key: "lost")
        retries.reset(key: "reconnect")
        metrics.connected.record(1)
        options.health?.set(.running)
        lastConfirmed = LSN.zero
        logger.info("streaming", metadata: [
            "cdc.source": "\(connection.target)", "cdc.slot": "\(options.slot)", "cdc.start_lsn": "\(start)",
            "cdc.head": "\(writer.durable.head)",
        ])
        try sendStatus(connection, replyRequested: false)
        var lastStatus = ContinuousClock.now
        var lastProbe = ContinuousClock.now
        // Backfill works between transactions when the socket runs dry, and at least every second
        // under a stream that never lets it (looked at every 1024 messages).
        var lastTick = ContinuousClock.now
        var messagesSinceTick = 0
        let interval = Duration.milliseconds(Int64(options.statusInterval * 1000))

        let health = options.health
        while true {
            health?.beat()
            if stop.isStopped {
                try finishBatch(connection)
                // The last status update (just sent) must be read before the connection closes.
                if !connection.endCopyBoth(timeout: 5) {
                    logger.debug("the server did not end the stream within 5 s; closing", metadata: ["cdc.resume_lsn": "\(writer.durable.resumeLSN)"])
                }
                logger.info("stopped", metadata: ["cdc.resume_lsn": "\(writer.durable.resumeLSN)", "cdc.head": "\(writer.durable.head)"])
                return .stopped
            }
            var drained = false
            var ended: PGError?? = nil
            while !endposReached {
                let result = try connection.readCopyData { try handleCopyData($0, connection) }
                switch result {
                case .message:
                    try backfill.afterMessage(inTransaction: inTransaction)
                    messagesSinceTick &+= 1
                    if messagesSinceTick >= 1024, !inTransaction {
                        messagesSinceTick = 0
                        let now = ContinuousClock.now
                        if now - lastTick >= .seconds(1) {
                            lastTick = now
                            backfill.tick(inTransaction: false)
                        }
                    }
                    if writer.pendingBytes >= options.maxBatchBytes || writer.pendingRecords >= options.maxBatchRecords {
                        try flush(connection)
                    }
                    continue
                case .wouldBlock:
                    drained = true
                case .ended(let error):
                    ended = .some(error)
                }
                break
            }
            if let ended {
                try finishCompleteTransactions(connection)
                if let error = ended { throw error }
                throw CaptureError(.connectionLost, "the server ended the replication stream")
            }
            if endposReached {
                try finishBatch(connection)
                connection.endCopyBoth(timeout: 5)
                logger.info("reached endpos", metadata: ["cdc.endpos": "\(options.endpos!)", "cdc.head": "\(writer.durable.head)"])
                return .reachedEndpos
            }
            if drained {
                backfill.tick(inTransaction: inTransaction)
                lastTick = ContinuousClock.now
                messagesSinceTick = 0
            }
            if drained, writer.staged != writer.durable || writer.pendingBytes >= options.maxBatchBytes / 4 {
                try flush(connection)
                if endposReached { continue }
            }
            let now = ContinuousClock.now
            if now - lastStatus >= interval {
                // Ask for a keepalive too: its WAL position lets an idle log confirm progress.
                try sendStatus(connection, replyRequested: true)
                lastStatus = now
            }
            if drained {
                if options.endpos != nil, !inTransaction, now - lastProbe >= .milliseconds(100) {
                    try sendStatus(connection, replyRequested: true)
                    lastProbe = now
                }
                if connection.waitReadable(milliseconds: 100) {
                    do { try connection.consumeInput() } catch let error as PGError {
                        try finishCompleteTransactions(connection)
                        throw CaptureError(.connectionLost, error.message, underlying: error)
                    }
                }
            }
        }
    }

    /// Flushes complete transactions (dropping an unfinished one) and confirms them.
    private func finishBatch(_ connection: PGConnection) throws {
        try retryingStorage(connection) { try writer.discardOpenTransaction() }
        openCounts = [:]
        try flush(connection)
    }

    /// After the stream broke: keep what arrived whole.
    private func finishCompleteTransactions(_ connection: PGConnection) throws {
        try retryingStorage(nil) { try writer.discardOpenTransaction() }
        openCounts = [:]
        try durableFlush(nil)
    }

    /// Makes the staged records durable (one LMDB commit) and records what became durable.
    /// A storage fault pauses here (see ``retryingStorage(_:_:)``), keeping `connection` alive.
    private func durableFlush(_ connection: PGConnection?) throws {
        let records = writer.pendingRecords
        options.health?.doing("writing to the log")
        let started = ContinuousClock.now
        try retryingStorage(connection) { try writer.flush() }
        let elapsed = ContinuousClock.now - started
        options.health?.doing("")
        if records > 0 {
            metrics.commitRecords.record(records)
            metrics.commitSeconds.record(duration: elapsed)
        }
        if !committedTimes.isEmpty {
            let now = Self.postgresNow() + PgOutputMessage.postgresEpochOffset
            for time in committedTimes { metrics.latency.recordNanoseconds(max(0, now - time) * 1000) }
            metrics.transactions.increment(by: committedTimes.count)
            committedTimes.removeAll(keepingCapacity: true)
        }
        for chunk in backfill.takeWritten() {
            let counters = metrics.backfill(chunk.table)
            counters.chunks.increment()
            guard chunk.rows > 0 else { continue }
            counters.rows.increment(by: chunk.rows)
            metrics.events(chunk.relationSeq << 8 | UInt64(Operation.snapshot.rawValue), chunk.table).increment(by: chunk.rows)
        }
        if !committedCounts.isEmpty {
            for (key, count) in committedCounts { metrics.events(key, relationNames[key >> 8] ?? "").increment(by: count) }
            committedCounts.removeAll(keepingCapacity: true)
        }
        updateLag()
    }

    private func updateLag() {
        let durable = writer.durable.resumeLSN
        metrics.lag.record(serverWALEnd > durable ? Int64(serverWALEnd.value - durable.value) : 0)
    }

    func flush(_ connection: PGConnection) throws {
        try durableFlush(connection)
        if writer.durable.resumeLSN != lastConfirmed {
            try sendStatus(connection, replyRequested: false)
        }
        if let endpos = options.endpos, !inTransaction, writer.durable.resumeLSN > endpos {
            endposReached = true
        }
    }

    private func sendStatus(_ connection: PGConnection, replyRequested: Bool) throws {
        let flushed = writer.durable.resumeLSN
        var w = ByteWriter(capacity: 34)
        w.u8(0x72)  // 'r'
        w.u64(flushed.value)  // written
        w.u64(flushed.value)  // flushed: durable in the log, never more
        w.u64(flushed.value)  // applied
        w.u64(UInt64(bitPattern: Self.postgresNow()))
        w.u8(replyRequested ? 1 : 0)
        try connection.sendCopyData(w.bytes)
        lastConfirmed = flushed
    }

    static func postgresNow() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000 - PgOutputMessage.postgresEpochOffset
    }

    /// The server streams a transaction in progress only once the changes it has decoded exceed
    /// `logical_decoding_work_mem` (64 MB by default); what is below that is sent after the commit, so
    /// the tail of a huge transaction reached cdc only then (1.4 s after COMMIT for 64 MB, measured
    /// with bench-streaming). cdc's own walsender session asks for at most 4 MB; a smaller value the
    /// operator set (server, role or database) stays. It is a user-settable setting: no privilege needed.
    static let streamingDecodingMemoryKB = 4096

    private func limitDecodingMemory(_ connection: PGConnection) throws {
        let current = try connection.execute("SELECT setting FROM pg_settings WHERE name = 'logical_decoding_work_mem'")
        guard let kb = current.value(0, "setting").flatMap(Int.init), kb > Self.streamingDecodingMemoryKB else { return }
        _ = try connection.execute("SET logical_decoding_work_mem = '\(Self.streamingDecodingMemoryKB)kB'")
    }

    // MARK: Source checks

    private func checkSource(_ connection: PGConnection) throws {
        let system = try connection.execute("IDENTIFY_SYSTEM")
        guard system.rowCount == 1, let systemID = system.value(0, "systemid") else {
            throw CaptureError(.unexpectedReply, "IDENTIFY_SYSTEM returned nothing: is [source] url a PostgreSQL server?")
        }
        let database = system.value(0, "dbname") ?? ""
        let found = SourceIdentity(systemIdentifier: systemID, database: database, slot: identity.slot, publication: identity.publication)
        if let difference = identity.difference(from: found) {
            throw CaptureError(.sourceMismatch, "the log belongs to another source (\(difference)): point [source] url at the database the log was initialised from, or use another [log] path")
        }
        let slots = try connection.execute("""
            SELECT plugin, slot_type, confirmed_flush_lsn, wal_status FROM pg_replication_slots
            WHERE slot_name = \(connection.quoteLiteral(options.slot))
            """)
        guard slots.rowCount == 1 else {
            throw CaptureError(.slotMissing, "replication slot \"\(options.slot)\" does not exist on the source (dropped, or lost in a failover): the changes since the log's position \(writer.durable.resumeLSN) cannot be recovered; cdc never re-creates a slot silently — move the log aside and run `cdc init` to start a new log from a fresh snapshot")
        }
        if slots.value(0, "wal_status") == "lost" {
            throw CaptureError(.slotInvalidated, CaptureError.invalidatedSlotMessage(options.slot))
        }
        if slots.value(0, "plugin") != "pgoutput" || slots.value(0, "slot_type") != "logical" {
            throw CaptureError(.slotNotLogical, "replication slot \"\(options.slot)\" is not a logical pgoutput slot: choose another [source] slot or drop it and run `cdc init`")
        }
        // A missing publication is otherwise noticed only at the first change after the stream starts.
        if try connection.execute("SELECT 1 FROM pg_publication WHERE pubname = \(connection.quoteLiteral(options.publication))").rowCount == 0 {
            throw CaptureError(.publicationMissing, CaptureError.missingPublicationMessage(publication: options.publication, slot: options.slot))
        }
        if let text = slots.value(0, "confirmed_flush_lsn"), let confirmed = LSN(text), confirmed > writer.durable.resumeLSN {
            throw CaptureError(.logBehindSlot, "the log ends at \(writer.durable.resumeLSN) but slot \"\(options.slot)\" was already confirmed up to \(confirmed): the changes in between are not in this log (restored from an old copy?); restore the newest log, or move it aside and run `cdc init`")
        }
    }

    /// [audit] actor: the trigger on every published table, when some table lacks it (a restart with
    /// every trigger in place touches no table). A failure is logged (the role may not own a table that
    /// joined later, or a long transaction holds it) and capture goes on: the actor is metadata, the rows
    /// are the log.
    private func installActorTriggers() {
        guard options.auditActor else { return }
        do {
            let connection = try SourceInitializer.connect(options.conninfo)
            // CREATE TRIGGER takes a lock that queues behind open transactions on the table and holds up
            // every write queued behind it: give up after a short wait rather than stall the source (and
            // this stream), and try again at the next session or new table.
            try connection.execute("SET lock_timeout = '2s'")
            guard try !AuditActor.missingTables(connection, publication: options.publication).isEmpty else {
                retries.reset(key: "audit")
                return
            }
            let tables = try AuditActor.install(connection, publication: options.publication)
            if !tables.isEmpty {
                logger.notice("installed the actor trigger", metadata: ["cdc.tables": "\(tables.joined(separator: ","))"])
            }
            retries.reset(key: "audit")
        } catch {
            retries.log(logger, .warning, key: "audit", "\(error): transactions on tables without the trigger have no actor", metadata: [:])
        }
    }

    private func loadLoggedRelations() throws {
        logged = [:]
        for (oid, seq) in try writer.log.relationIndex() {
            guard let definition = try writer.log.relationDefinition(seq) else {
                throw CaptureError(.logCorrupt, "the log's relation index points at seq \(seq), which is not a relation record: run `cdc log verify`")
            }
            logged[oid] = (seq, definition)
            // Every logged table's row counters exist from the start, at 0.
            relationNames[seq] = definition.qualifiedName
            for op in [Operation.insert, .update, .delete] { _ = metrics.events(seq << 8 | UInt64(op.rawValue), definition.qualifiedName) }
        }
    }

    // MARK: Messages

    private func handleCopyData(_ buffer: UnsafeRawBufferPointer, _ connection: PGConnection) throws {
        guard let kind = buffer.first else { return }
        var r = WireReader(buffer)
        _ = try r.u8()
        switch kind {
        case 0x77:  // 'w' XLogData
            _ = try r.u64()  // start
            let walEnd = LSN(try r.u64())
            if walEnd > serverWALEnd { serverWALEnd = walEnd }
            _ = try r.u64()  // send time
            let payload = UnsafeRawBufferPointer(rebasing: buffer[r.offset...])
            if streamed.blockXid != nil, let tag = payload.first, tag != 0x45 {  // inside a stream block, not its Stop
                try streamed.add(payload)
                if streamed.needsSpill {
                    let bytes = streamed.bufferedBytes
                    try retryingStorage(connection) { try streamed.spill() }
                    metrics.streamSpilled.increment(by: bytes)
                }
            } else {
                try handle(try PgOutputMessage.decode(payload))
            }
        case 0x6B:  // 'k' keepalive
            let walEnd = LSN(try r.u64())
            if walEnd > serverWALEnd { serverWALEnd = walEnd }
            _ = try r.u64()
            let replyRequested = try r.u8() == 1
            // Streamed transactions still open (protocol 2) do not hold this back. The server's WAL end
            // here is past every record it has decoded, and every transaction that committed before it
            // has been sent whole (B...C, !inTransaction here) or committed by a Stream Commit (replayed
            // synchronously in handle). An open streamed transaction commits later, at an LSN above this
            // position, so it is never skipped by the resume rule after a restart; and since the server
            // keeps the slot's restart_lsn before the first change of every transaction it has not seen
            // committed and confirmed, it streams that transaction again, whole, after a reconnect.
            if !inTransaction {
                writer.advanceResume(to: walEnd)
                updateLag()
                if let endpos = options.endpos, Self.covers(walEnd, endpos) {
                    try flush(connection)
                    endposReached = true
                }
            }
            if replyRequested { try sendStatus(connection, replyRequested: false) }
        default:
            throw CaptureError.protocolViolation("unknown CopyData message \(kind)")
        }
    }

    /// True when the server has sent everything up to `endpos` once it reported `walEnd`: at or past
    /// it, or stopped at a WAL page boundary with `endpos` inside the next page's header (where no record
    /// can start; pg_current_wal_insert_lsn() points after that header). Assumes 8 KiB WAL pages.
    static func covers(_ walEnd: LSN, _ endpos: LSN) -> Bool {
        if walEnd >= endpos { return true }
        let longPageHeader: UInt64 = 40  // SizeOfXLogLongPHD, the larger of the two page headers
        return walEnd.value % 8192 == 0 && endpos.value - walEnd.value <= longPageHeader
    }

    func handle(_ message: PgOutputMessage) throws {
        switch message {
        case .begin(let finalLSN, let time, let xid):
            guard !inTransaction else { throw CaptureError.protocolViolation("BEGIN inside a transaction") }
            if let endpos = options.endpos, finalLSN > endpos {
                endposReached = true
                return
            }
            inTransaction = true
            skipping = finalLSN < writer.staged.resumeLSN
            txnLSN = finalLSN
            txnXid = xid
            txnTime = time
            txnRecords = 0
            txnFromOtherOrigin = false
        case .commit(_, let commitLSN, let endLSN, let time):
            guard inTransaction else { throw CaptureError.protocolViolation("COMMIT outside a transaction") }
            inTransaction = false
            guard commitLSN == txnLSN else {
                throw CaptureError.protocolViolation("COMMIT at \(commitLSN) for a transaction announced at \(txnLSN)")
            }
            backfill.committed(xid: txnXid, written: !skipping && !txnFromOtherOrigin)
            if skipping {
                transactionsSkipped += 1
                return
            }
            if txnFromOtherOrigin {
                transactionsSkipped += 1
                writer.advanceResume(to: endLSN)
                return
            }
            writer.endTransaction(commitLSN: commitLSN, commitTime: time, resume: endLSN)
            transactionsWritten += 1
            committedTimes.append(time)
            for (key, count) in openCounts { committedCounts[key, default: 0] += count }
            openCounts.removeAll(keepingCapacity: true)
        case .streamStart(let xid, let first):
            guard !inTransaction else { throw CaptureError.protocolViolation("Stream Start inside a transaction") }
            try streamed.startBlock(xid: xid, firstSegment: first)
            metrics.streamOpen.record(streamed.openCount)
        case .streamStop:
            try streamed.stopBlock()
        case .streamCommit(let xid, let flags, let commitLSN, let endLSN, let time):
            try commitStreamed(xid: xid, flags: flags, commitLSN: commitLSN, endLSN: endLSN, commitTime: time)
        case .streamAbort(let xid, let subxid):
            guard !inTransaction, streamed.blockXid == nil else { throw CaptureError.protocolViolation("Stream Abort inside a transaction or stream block") }
            let counted = streamed.hasChanges(xid)
            try retryingStorage(activeConnection) { try streamed.abort(xid: xid, subxid: subxid) }
            if counted, !streamed.isOpen(xid) { metrics.streamAborted.increment() }
            metrics.streamOpen.record(streamed.openCount)
        case .origin(let originLSN, let name):
            // Sent right after Begin, before any change, by a transaction that logical replication
            // applied (pg_replication_origin_session_setup in its session).
            guard try active() else { return }
            guard txnRecords == 0 else { throw CaptureError.protocolViolation("Origin message after the transaction's first change") }
            if options.origins == .none {
                txnFromOtherOrigin = true
                return
            }
            writer.append { w in
                RecordCodec.writeHeader(RecordHeader(op: .origin, lsn: txnLSN, xid: txnXid, commitTime: txnTime, relationSeq: 0), to: &w)
                w.string(name)
                w.u64(originLSN.value)
            }
            txnRecords += 1
            openCounts[UInt64(Operation.origin.rawValue), default: 0] += 1
        case .type:
            break  // names a domain by its base type: user types are named from the catalog (TypeNameResolver)
        case .relation(let oid, let namespace, let name, let identity, let columns):
            do {
                try typeNames.resolve(columns.map(\.typeOID))
                retries.reset(key: "types")
            } catch let error as PGError {
                // Retried like a lost replication connection when the source is away (the run loop decides).
                retries.log(logger, .warning, key: "types", "cannot look up the source's type names in pg_type",
                            metadata: ["cdc.table": "\(namespace).\(name)", "cdc.reason": "\(error)"])
                throw error
            }
            if logged[oid] == nil, sessionRelations[oid] == nil {
                // A table new to the log (it joined the publication): its next transactions name their actor.
                installActorTriggers()
            }
            let definition = RelationDefinition(
                oid: oid, namespace: namespace, name: name, replicaIdentity: identity,
                columns: columns.map { c in
                    .init(name: c.name, typeOID: c.typeOID, typeModifier: c.typeModifier, isKey: c.isKey,
                          typeName: typeNames.name(c.typeOID))
                })
            sessionRelations[oid] = definition
            resolved[oid] = nil
            protection[oid] = nil
        case .insert(let oid, let new):
            guard try active() else { return }
            let relation = try relationSeq(oid)
            let methods = protection[oid]
            try append(.insert, relation) { try transcode(new, into: &$0, methods) }
            backfill.changed(oid, xid: txnXid, new)
        case .update(let oid, let old, let oldTuple, let new):
            guard try active() else { return }
            let relation = try relationSeq(oid)
            let methods = protection[oid]
            try append(.update, relation) { w in
                w.u8(old.rawValue)
                if let oldTuple { try transcode(oldTuple, into: &w, methods) }
                try transcode(new, into: &w, methods)
            }
            backfill.changed(oid, xid: txnXid, new, oldTuple)
        case .delete(let oid, let old, let oldTuple):
            guard try active() else { return }
            let relation = try relationSeq(oid)
            let methods = protection[oid]
            try append(.delete, relation) { w in
                w.u8(old.rawValue)
                try transcode(oldTuple, into: &w, methods)
            }
            backfill.changed(oid, xid: txnXid, oldTuple)
        case .truncate(let options, let oids):
            guard try active() else { return }
            var flags: RecordFlags = []
            if options & 1 != 0 { flags.insert(.cascade) }
            if options & 2 != 0 { flags.insert(.restartIdentity) }
            for oid in oids {
                let relation = try relationSeq(oid)
                try append(.truncate, relation, flags: flags) { _ in }
            }
            backfill.truncated(oids, xid: txnXid)
        case .message(let transactional, let lsn, let prefix, let content):
            if transactional {
                guard try active() else { return }
                try append(.message, 0, flags: .transactional) { w in
                    w.string(prefix)
                    w.blob(content)
                }
                backfill.message(prefix: prefix, content: content, lsn: txnLSN, time: txnTime)
            } else {
                guard !inTransaction else { throw CaptureError.protocolViolation("non-transactional message inside a transaction") }
                if let endpos = options.endpos, lsn > endpos {
                    endposReached = true
                    return
                }
                guard lsn >= writer.staged.resumeLSN else { transactionsSkipped += 1; return }
                writer.append { w in
                    RecordCodec.writeHeader(RecordHeader(op: .message, flags: .endOfTransaction, lsn: lsn, xid: nil,
                                                         commitTime: nil, relationSeq: 0), to: &w)
                    w.string(prefix)
                    w.blob(content)
                }
                writer.endTransaction(commitLSN: lsn, commitTime: nil, resume: LSN(lsn.value + 1))
                transactionsWritten += 1
                committedCounts[UInt64(Operation.message.rawValue), default: 0] += 1
            }
        }
    }

    @inline(__always)
    private func transcode(_ tuple: PgOutputMessage.Tuple, into w: inout ByteWriter, _ methods: [PrivacyPolicy.Method?]?) throws {
        try PgOutputMessage.transcode(tuple, into: &w, protecting: methods, with: options.protector)
    }

    /// True when the current transaction's changes are to be written.
    @inline(__always)
    private func active() throws -> Bool {
        guard inTransaction else { throw CaptureError.protocolViolation("change outside a transaction") }
        return !skipping && !txnFromOtherOrigin
    }

    @inline(__always)
    private func append(_ op: Operation, _ relationSeq: UInt64, flags: RecordFlags = [],
                        body: (inout ByteWriter) throws -> Void) throws {
        try writer.append { w in
            RecordCodec.writeHeader(RecordHeader(op: op, flags: flags, lsn: txnLSN, xid: txnXid, commitTime: txnTime,
                                                 relationSeq: relationSeq), to: &w)
            try body(&w)
        }
        txnRecords += 1
        openCounts[relationSeq << 8 | UInt64(op.rawValue), default: 0] += 1
    }

    /// The sequence number of the relation record for `oid`, writing a new version when this
    /// session's definition differs from the latest logged one.
    private func relationSeq(_ oid: UInt32) throws -> UInt64 {
        if let seq = resolved[oid] { return seq }
        guard let definition = sessionRelations[oid] else {
            throw CaptureError.protocolViolation("change for relation \(oid) before its Relation message")
        }
        defer { if let seq = resolved[oid] { relationNames[seq] = definition.qualifiedName } }
        protection[oid] = try options.protector?.methods(for: definition)
        if let latest = logged[oid], latest.definition == definition {
            resolved[oid] = latest.seq
            return latest.seq
        }
        let seq = writer.append { w in
            RecordCodec.writeHeader(RecordHeader(op: .relation, lsn: txnLSN, xid: txnXid, commitTime: txnTime,
                                                 relationSeq: 0), to: &w)
            RecordCodec.writeRelation(definition, to: &w)
        }
        txnRecords += 1
        openCounts[seq << 8 | UInt64(Operation.relation.rawValue), default: 0] += 1
        writer.noteRelation(oid: oid, seq: seq)
        logged[oid] = (seq, definition)
        resolved[oid] = seq
        return seq
    }
}
