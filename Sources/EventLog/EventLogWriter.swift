import CLMDB
import Foundation

/// The single writer of an event log. Use it from one thread only (LMDB write transactions must stay
/// on the thread that began them).
///
/// Records are appended to an in-memory batch and written by ``flush()`` in one durable LMDB
/// transaction (group commit: many source transactions per LMDB commit). A record becomes visible to
/// readers only when the source transaction it belongs to is complete and flushed: ``endTransaction``
/// marks that point. A huge source transaction is written in chunks (bounded memory) that stay
/// invisible until its end; after a crash the writer deletes such an unfinished tail when it opens.
public final class EventLogWriter: @unchecked Sendable {
    public let log: EventLog

    /// What is durable and visible in the log.
    public private(set) var durable: LogPosition
    /// The position the log will have after the next flush (complete transactions appended so far).
    public private(set) var staged: LogPosition
    /// The sequence number the next appended record gets.
    public var nextSeq: UInt64 { lastSeq + 1 }
    /// Bytes of records waiting for the next flush.
    public var pendingBytes: Int { arena.bytes.count }
    /// Records waiting for the next flush.
    public var pendingRecords: Int { offsets.count }
    /// True when records of an unfinished transaction have been appended.
    public var hasOpenTransaction: Bool { lastSeq > staged.head }
    /// True when a flush would change what is durable.
    public var needsFlush: Bool { !offsets.isEmpty || staged != durable || stagedBackfill != nil }

    /// The backfill meta to write with the next flush (see ``stageBackfillState(_:)``).
    private var stagedBackfill: [UInt8]?

    /// Stages the backfill progress (meta key `backfill`) for the next flush: it becomes durable in the
    /// same LMDB transaction as the complete transactions appended so far (a backfill chunk and its
    /// progress are durable together or not at all).
    public func stageBackfillState(_ json: [UInt8]) {
        stagedBackfill = json
    }

    private var lastSeq: UInt64
    /// Highest sequence number written to LMDB (>= durable.head while a huge transaction is chunked).
    private var writtenSeq: UInt64
    private var arena = ByteWriter(capacity: 1 << 20)
    private var offsets: [Int] = []
    private var stagedRelations: [(oid: UInt32, seq: UInt64)] = []
    private let lockDescriptor: Int32
    /// The Merkle frontier over records 1...durable.head (stored in meta with the head).
    private var durableFrontier: MerkleFrontier
    /// ... and over every record written to LMDB (beyond the head while a huge transaction is chunked).
    private var writtenFrontier: MerkleFrontier

    /// Opens the log at `path` for writing, creating it when missing if `create` is true, and drops
    /// any unfinished tail. Only one writer may hold a log: a second one fails at once, naming the
    /// first one's pid.
    public init(path: String, create: Bool = true) throws {
        if !create && !EventLog.exists(at: path) {
            throw EventLogError(.noLog, "no event log at \(path): run `cdc init` first, or pass the right --log/--config")
        }
        lockDescriptor = try Self.lockExclusively(directory: path)
        log = try EventLog.shared(path: path, forWriting: true)
        durable = try log.position()
        durableFrontier = try log.frontier()
        writtenFrontier = durableFrontier
        staged = durable
        lastSeq = durable.head
        writtenSeq = durable.head
        try dropTail(after: durable.head)
        try buildMissingNodes()
    }

    /// A log written before the `nodes` sub-database existed gets its interior node hashes once, from
    /// its leaves (one pass, no record re-read), so that proofs over it take O(log n) reads too.
    private func buildMissingNodes() throws {
        guard let nodes = log.nodes, durable.head > 0 else { return }
        let empty = try log.environment.withTransaction(readOnly: true) { txn in try txn.lastKey(nodes) == nil }
        guard empty else { return }
        var frontier = MerkleFrontier()
        var pending: [(key: [UInt8], hash: Hash)] = []
        func write() throws {
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            try writeTransaction("writing the Merkle nodes of an older log") { txn in
                for node in batch { try txn.put(nodes, key: node.key, value: node.hash, append: true) }
            }
        }
        try log.scanLeaves(upTo: durable.head) { seq, leaf in
            frontier.append(leaf: leaf) { height, hash in
                if height >= MerkleNodes.minimumHeight { pending.append((MerkleNodes.key(endSeq: seq, height: height), hash)) }
            }
            if pending.count >= 50_000 { try write() }
        }
        if !pending.isEmpty { try write() }
    }

    /// Appends a record built by `build` (a header written with ``RecordCodec/writeHeader(_:to:)``
    /// and its body) and returns its sequence number.
    @discardableResult
    @inline(__always)
    public func append(_ build: (inout ByteWriter) throws -> Void) rethrows -> UInt64 {
        let start = arena.bytes.count
        do {
            try build(&arena)
        } catch {
            arena.bytes.removeSubrange(start...)
            throw error
        }
        offsets.append(start)
        lastSeq += 1
        return lastSeq
    }

    /// Appends a decoded record.
    @discardableResult
    public func append(_ record: Record) -> UInt64 {
        let bytes = RecordCodec.encode(record)
        return append { $0.bytes.append(contentsOf: bytes) }
    }

    /// Records that `oid`'s latest definition is the relation record `seq` (effective with the transaction).
    public func noteRelation(oid: UInt32, seq: UInt64) {
        stagedRelations.append((oid, seq))
    }

    /// Marks the end of a source transaction: every record appended so far becomes visible at the
    /// next flush, and the stream resumes at `resume` (the transaction's end LSN).
    public func endTransaction(commitLSN: LSN, commitTime: Int64?, resume: LSN) {
        if lastSeq > staged.head, let last = offsets.last, lastSeq > writtenSeq {
            arena.bytes[last + 1] |= RecordFlags.endOfTransaction.rawValue
        }
        staged.head = lastSeq
        staged.lastCommitLSN = commitLSN
        staged.lastCommitTime = commitTime
        staged.resumeLSN = max(staged.resumeLSN, resume)
    }

    /// Moves the resume position forward without records (the server reported WAL up to `lsn` and
    /// nothing of ours is in flight). Ignored while a transaction is open.
    public func advanceResume(to lsn: LSN) {
        guard !hasOpenTransaction, lsn > staged.resumeLSN else { return }
        staged.resumeLSN = lsn
    }

    /// Writes pending records and the staged position in one durable LMDB transaction, growing the
    /// map when it is full. After it returns, `durable == staged` for the flushed part.
    public func flush(settingState state: LogState? = nil) throws {
        guard needsFlush || state != nil else { return }
        let first = writtenSeq + 1
        let target = staged
        // The last record of an unfinished transaction stays in memory so that endTransaction can
        // still set its end-of-transaction flag.
        let writeCount = hasOpenTransaction && !offsets.isEmpty ? offsets.count - 1 : offsets.count
        let writeEnd = writeCount < offsets.count ? offsets[writeCount] : arena.bytes.count
        let relations = stagedRelations.filter { $0.seq <= target.head }
        // Leaf hashes, and the frontier at the new head, are computed once, outside the retry loop.
        var frontier = writtenFrontier
        var headFrontier = target.head == durable.head ? durableFrontier : nil
        var leafHashes: [MerkleHash] = []
        leafHashes.reserveCapacity(writeCount)
        var nodeHashes: [(key: [UInt8], hash: MerkleHash)] = []
        arena.bytes.withUnsafeBytes { all in
            for i in 0..<writeCount {
                let end = i + 1 < writeCount ? offsets[i + 1] : writeEnd
                let leaf = MerkleFrontier.leaf(UnsafeRawBufferPointer(rebasing: all[offsets[i]..<end]))
                leafHashes.append(leaf)
                let seq = first + UInt64(i)
                frontier.append(leaf: leaf) { height, hash in
                    if height >= MerkleNodes.minimumHeight { nodeHashes.append((MerkleNodes.key(endSeq: seq, height: height), hash)) }
                }
                if seq == target.head { headFrontier = frontier }
            }
        }
        guard let headFrontier else {
            throw EventLogError(.internal, "internal error: the head \(target.head) is not among the records being written")
        }
        while true {
            do {
                try log.environment.withTransaction(readOnly: false) { txn in
                    try arena.bytes.withUnsafeBytes { all in
                        for i in 0..<writeCount {
                            let start = offsets[i]
                            let end = i + 1 < writeCount ? offsets[i + 1] : writeEnd
                            let seq = first + UInt64(i)
                            try txn.put(log.events, seq: seq, value: UnsafeRawBufferPointer(rebasing: all[start..<end]), append: true)
                            try leafHashes[i].withUnsafeBytes { try txn.put(log.leaves, seq: seq, value: $0, append: true) }
                        }
                    }
                    if let nodes = log.nodes {
                        for node in nodeHashes {
                            try node.hash.withUnsafeBytes { try txn.put(nodes, key: node.key, value: $0, append: true) }
                        }
                    }
                    for (oid, seq) in relations {
                        try txn.put(log.relations, key: keyBytes(oid), value: keyBytes(seq))
                    }
                    if target.head != durable.head {
                        try txn.put(log.meta, key: EventLog.MetaKey.frontier, value: headFrontier.encoded)
                        try txn.put(log.roots, key: keyBytes(target.head), value: headFrontier.root, append: true)
                    }
                    if target != durable { try log.writePosition(target, txn) }
                    if let state {
                        try txn.put(log.meta, key: EventLog.MetaKey.state, value: Array(state.rawValue.utf8))
                    }
                    if let stagedBackfill { try txn.put(log.meta, key: EventLog.MetaKey.backfill, value: stagedBackfill) }
                }
                break
            } catch let error as LMDBError where error.isMapFull {
                do {
                    try log.environment.setMapSize(log.environment.mapSize * 2)
                } catch let grow as LMDBError {
                    throw EventLogError.write(grow, what: "log", path: log.path, operation: "growing the map to \(byteSize(UInt64(log.environment.mapSize) * 2))")
                }
            } catch let error as LMDBError {
                // Nothing above changed this writer's state: the same flush can be retried.
                throw EventLogError.write(error, what: "log", path: log.path, operation: "committing \(byteSize(UInt64(writeEnd)))")
            }
        }
        writtenSeq = first + UInt64(writeCount) - 1
        durable = target
        durableFrontier = headFrontier
        writtenFrontier = frontier
        if writeCount == offsets.count {
            arena.bytes.removeAll(keepingCapacity: arena.bytes.capacity <= 64 << 20)
            offsets.removeAll(keepingCapacity: true)
        } else {
            arena.bytes.removeSubrange(0..<writeEnd)
            offsets = [0]
        }
        stagedRelations.removeAll { $0.seq <= target.head }
        stagedBackfill = nil
    }

    /// Drops the unfinished transaction (connection lost in the middle of it): its records are removed
    /// from memory and from the log. Complete transactions still pending are flushed.
    public func discardOpenTransaction() throws {
        guard hasOpenTransaction else { return }
        let keep = staged.head > writtenSeq ? Int(staged.head - writtenSeq) : 0
        if keep < offsets.count {
            arena.bytes.removeSubrange(offsets[keep]...)
            offsets.removeSubrange(keep...)
        }
        stagedRelations.removeAll { $0.seq > staged.head }
        lastSeq = writtenSeq + UInt64(keep)
        try flush()
        try dropTail(after: durable.head)
        lastSeq = durable.head
    }

    /// Records the source identity and state (used by `cdc init`), durably.
    public func setSource(_ identity: SourceIdentity, state: LogState) throws {
        let json = try JSONEncoder().encode(identity)
        try writeTransaction("recording the source identity") { txn in
            try txn.put(log.meta, key: EventLog.MetaKey.source, value: Array(json))
            try txn.put(log.meta, key: EventLog.MetaKey.state, value: Array(state.rawValue.utf8))
        }
    }

    /// Records `policy` as the one in force from the next record on, durably, unless it is already
    /// the latest one. Call it before appending (nothing may be pending).
    /// - Returns: true when the policy differs from the one the log was written under until now.
    @discardableResult
    public func recordPrivacy(_ policy: PrivacyPolicy) throws -> Bool {
        precondition(pendingRecords == 0, "recordPrivacy with records pending")
        var history = try log.privacyHistory()
        let current = history.last?.policy ?? .none
        guard current != policy else { return false }
        history.append(PrivacyEpoch(sinceSeq: durable.head + 1, policy: policy))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let json = try encoder.encode(history)
        try writeTransaction("recording the privacy policy") { txn in
            try txn.put(log.meta, key: EventLog.MetaKey.privacy, value: Array(json))
        }
        return true
    }

    deinit { close(lockDescriptor) }

    /// Takes an exclusive, non-blocking flock on `directory/writer.lock` (released when the process dies).
    static func lockExclusively(directory: String) throws -> Int32 {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw EventLogError(.createFailed, "cannot create log directory \(directory): \(error.localizedDescription)", underlying: error)
        }
        let path = directory + "/writer.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let failure = errno
            let fix = failure == EROFS || failure == EACCES || failure == EPERM
                ? " — the writer must write the log: make \(directory) writable by this user (or remount it read-write), or set [log] path to a writable directory"
                : ""
            throw EventLogError(.openFailed, "cannot open \(path) for writing: \(String(cString: strerror(failure))) (errno \(failure))\(fix)",
                                call: "open(\(path))", returnCode: failure)
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let failure = errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let n = read(fd, &buffer, 31)
            close(fd)
            let holder = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            throw EventLogError(failure == EWOULDBLOCK ? .writerLocked : .openFailed, "another cdc process (pid \(holder)) is writing the log at \(directory): stop it first",
                                call: "flock(\(path))", returnCode: failure)
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        return fd
    }

    /// Deletes records after `head` (an unfinished transaction's chunks).
    private func dropTail(after head: UInt64) throws {
        let last: UInt64 = try log.environment.withTransaction(readOnly: true) { txn in
            try txn.lastKey(log.events).flatMap { $0.withUnsafeBytes(readU64) } ?? 0
        }
        guard last > head else { writtenSeq = head; writtenFrontier = durableFrontier; return }
        var seq = head + 1
        while seq <= last {
            let end = min(last, seq + 50_000)
            try writeTransaction("deleting an unfinished transaction's records \(seq)...\(end)") { txn in
                for s in seq...end {
                    try txn.delete(log.events, key: keyBytes(s))
                    try txn.delete(log.leaves, key: keyBytes(s))
                }
            }
            seq = end + 1
        }
        if let nodes = log.nodes {
            try writeTransaction("deleting an unfinished transaction's Merkle nodes") { txn in
                var keys: [[UInt8]] = []
                try txn.scan(nodes, from: MerkleNodes.key(endSeq: head + 1, height: 0)) { key, _ in keys.append(Array(key)); return true }
                for key in keys { _ = try txn.delete(nodes, key: key) }
            }
        }
        writtenSeq = head
        writtenFrontier = durableFrontier
    }

    /// One write transaction; a failure of the storage becomes an ``EventLogError`` of code `storage`
    /// naming the log, the operation and the errno.
    private func writeTransaction(_ operation: @autoclosure () -> String, _ body: (LMDBTransaction) throws -> Void) throws {
        do {
            try log.environment.withTransaction(readOnly: false, body)
        } catch let error as LMDBError {
            throw EventLogError.write(error, what: "log", path: log.path, operation: operation())
        }
    }
}

extension EventLog {
    /// Opens a log for reading only; it may be written by a running `cdc run` meanwhile.
    public static func openForReading(path: String) throws -> EventLog {
        try EventLog.shared(path: path, forWriting: false)
    }
}
