import EventLog
import Logging

/// The in-progress transactions the server streams (pgoutput protocol 2, `streaming 'on'`), until they
/// commit or abort.
///
/// Each change message of a stream block is kept as it came, minus its xid field — so it is byte for
/// byte the protocol-1 message — together with the xid of the (sub)transaction that made it. Entries
/// are buffered in memory up to ``memoryLimit`` bytes (all open transactions together) and then spilled
/// to the ``InflightStore`` (`<log>/inflight/`, not the log). At Stream Commit the capture replays them
/// through its ordinary message handling, between a synthesized Begin and Commit (see
/// ``CaptureStream/commitStreamed``), so that a committed streamed transaction becomes exactly the
/// records the same transaction would have become unstreamed. Nothing here survives a session: the
/// server streams unfinished transactions again, whole, after a reconnect.
///
/// Why raw messages rather than log records: record headers need the commit LSN and time, and relation
/// records need sequence numbers that exist only once the transaction's place in commit order is known;
/// replaying keeps one code path (transcoding, column protection, relation versioning, huge
/// transactions' invisible chunks, and every per-row hook) for streamed and unstreamed transactions.
final class StreamedTransactions {
    /// Bytes of entries held in memory before they are spilled to the store.
    let memoryLimit: Int
    private let logPath: String
    private var store: InflightStore?

    /// The top-level xid of the open stream block, if any.
    private(set) var blockXid: UInt32?

    private struct Open {
        /// Entries of this transaction are in the store (counters below those in memory).
        var spilled = false
        /// Per subtransaction xid, the counter of its first entry (where a subxact abort starts looking).
        var firstCounter: [UInt32: UInt64] = [:]
        var changes = 0
    }
    private var open: [UInt32: Open] = [:]
    private var counter: UInt64 = 0

    // The memory buffer: entry i is arena[starts[i]..<ends[i]] = subxid (4 bytes BE) ‖ message.
    private var arena: [UInt8] = []
    private var buffered: [(xid: UInt32, counter: UInt64, start: Int, end: Int)] = []

    init(logPath: String, memoryLimit: Int = 8 << 20) {
        self.logPath = logPath
        self.memoryLimit = memoryLimit
    }

    /// Transactions streamed with at least one message and not yet committed or aborted (the metrics'
    /// count). The server also streams, to every slot, catalog-only transactions of other databases on
    /// it whose invalidations pass the memory limit (a big DDL transaction elsewhere): their stream
    /// blocks are empty, and they are not counted.
    var openCount: Int { open.values.filter { $0.changes > 0 }.count }

    /// True when `xid` is open and sent at least one message.
    func hasChanges(_ xid: UInt32) -> Bool { (open[xid]?.changes ?? 0) > 0 }

    /// Forgets everything (the start of a replication session): the server sends every unfinished
    /// transaction again from its first change. The store is created at the first session.
    func reset() throws {
        blockXid = nil
        open = [:]
        arena = []
        buffered = []
        if let store {
            try store.clear()
        } else {
            store = try InflightStore(logPath: logPath)
        }
    }

    func startBlock(xid: UInt32, firstSegment: Bool) throws {
        guard blockXid == nil else { throw CaptureError.protocolViolation("Stream Start inside a stream block") }
        if open[xid] == nil {
            // The server's reorder buffer is new at each session, so the first block of every
            // transaction it streams has the first-segment flag: a later segment of a transaction this
            // session never saw would mean changes missing, not something to paper over.
            guard firstSegment else {
                throw CaptureError.protocolViolation("Stream Start of a later segment of transaction \(xid), whose first segment this session did not receive")
            }
            open[xid] = Open()
        }
        blockXid = xid
    }

    func stopBlock() throws {
        guard blockXid != nil else { throw CaptureError.protocolViolation("Stream Stop outside a stream block") }
        blockXid = nil
    }

    /// Keeps one message of the open block (`message` as received, with its xid field if it has one).
    /// Memory only: cannot fail on storage. Call ``spill()`` when ``needsSpill``.
    func add(_ message: UnsafeRawBufferPointer) throws {
        guard let xid = blockXid else { throw CaptureError.protocolViolation("stream message outside a stream block") }
        guard let tag = message.first else { return }
        let subxid: UInt32
        let body: UnsafeRawBufferPointer
        if PgOutputMessage.hasStreamXid(tag) {
            subxid = try PgOutputMessage.streamedXid(message) ?? xid
            body = UnsafeRawBufferPointer(rebasing: message[5...])
        } else if tag == 0x4F {  // O: origin, sent after the first Stream Start, no xid field
            subxid = xid
            body = UnsafeRawBufferPointer(rebasing: message[1...])
        } else {
            throw CaptureError.protocolViolation("unexpected pgoutput message type \(tag) inside a stream block")
        }
        counter += 1
        let start = arena.count
        arena.append(contentsOf: keyBytes(subxid))
        arena.append(tag)
        arena.append(contentsOf: body)
        buffered.append((xid, counter, start, arena.count))
        if open[xid]!.firstCounter[subxid] == nil { open[xid]!.firstCounter[subxid] = counter }
        open[xid]!.changes += 1
    }

    var needsSpill: Bool { arena.count >= memoryLimit }
    /// Bytes of entries held in memory.
    var bufferedBytes: Int { arena.count }

    /// Moves the memory buffer into the store (one transaction, no sync). On failure nothing changed.
    func spill() throws {
        guard !buffered.isEmpty, let store else { return }
        let entries = buffered
        try arena.withUnsafeBytes { all in
            try store.put(count: entries.count, key: { InflightStore.key(xid: entries[$0].xid, counter: entries[$0].counter) },
                          value: { UnsafeRawBufferPointer(rebasing: all[entries[$0].start..<entries[$0].end]) })
        }
        for entry in entries { open[entry.xid]?.spilled = true }
        store.releaseMappedPages()
        arena.removeAll(keepingCapacity: true)
        buffered.removeAll(keepingCapacity: true)
    }

    /// Stream Abort: drops the whole transaction (`subxid == xid`) or the changes of subtransaction
    /// `subxid` only. Relation and type messages are kept: pgoutput sends a relation's schema once per
    /// streamed transaction, stamped with the xid of the subtransaction whose change needed it first,
    /// and the changes of other subtransactions that follow rely on it. Repeated after a storage
    /// failure, it does the same.
    func abort(xid: UInt32, subxid: UInt32) throws {
        guard let txn = open[xid] else { return }  // nothing of it was streamed
        if subxid == xid {
            removeBuffered { $0 == xid }
            if txn.spilled { try store?.delete(xid: xid) }
            open[xid] = nil
            return
        }
        guard let first = txn.firstCounter[subxid] else { return }
        let droppable: (UnsafeRawBufferPointer) -> Bool = { value in
            value.count > 4 && (UInt32(value[0]) << 24 | UInt32(value[1]) << 16 | UInt32(value[2]) << 8 | UInt32(value[3])) == subxid
                && value[4] != 0x52 && value[4] != 0x59
        }
        arena.withUnsafeBytes { all in
            let drop = Set(buffered.indices.filter { i in
                buffered[i].xid == xid && droppable(UnsafeRawBufferPointer(rebasing: all[buffered[i].start..<buffered[i].end]))
            }.map { buffered[$0].counter })
            if !drop.isEmpty { removeBuffered(counters: drop) }
        }
        if txn.spilled { try store?.delete(xid: xid, from: first, matching: droppable) }
    }

    /// The entries of `xid` after `cursor` (nil: from the first), stored ones first, in arrival order:
    /// at most about `maxBytes` of them from the store, or all those in memory. Each message is the
    /// protocol-1 form (no xid field). Empty when there are no more.
    func chunk(xid: UInt32, after cursor: UInt64?, maxBytes: Int = 4 << 20) throws -> Chunk {
        var chunk = Chunk()
        guard let txn = open[xid] else { return chunk }
        if txn.spilled, let store {
            try store.scan(xid: xid, after: cursor) { counter, value in
                chunk.add(counter, UnsafeRawBufferPointer(rebasing: value[4...]))
                return chunk.bytes.count < maxBytes
            }
            store.releaseMappedPages()  // the chunk is a copy: keep cdc's resident memory bounded
            if !chunk.isEmpty { return chunk }
        }
        arena.withUnsafeBytes { all in
            for entry in buffered where entry.xid == xid && cursor.map({ entry.counter > $0 }) ?? true {
                chunk.add(entry.counter, UnsafeRawBufferPointer(rebasing: all[(entry.start + 4)..<entry.end]))
            }
        }
        return chunk
    }

    /// True when `xid` was streamed in this session and has neither committed nor aborted.
    func isOpen(_ xid: UInt32) -> Bool { open[xid] != nil }

    /// Forgets a committed (or skipped) transaction. Repeated after a storage failure, it does the same.
    func finish(xid: UInt32) throws {
        guard let txn = open[xid] else { return }
        removeBuffered { $0 == xid }
        if txn.spilled, let store {
            // When no other open transaction has spilled, emptying the database is one cheap call.
            if open.contains(where: { $0.key != xid && $0.value.spilled }) {
                try store.delete(xid: xid)
            } else {
                try store.clear()
            }
        }
        open[xid] = nil
    }

    struct Chunk {
        var bytes: [UInt8] = []
        var ranges: [Range<Int>] = []
        var last: UInt64?
        var isEmpty: Bool { ranges.isEmpty }

        mutating func add(_ counter: UInt64, _ message: UnsafeRawBufferPointer) {
            let start = bytes.count
            bytes.append(contentsOf: message)
            ranges.append(start..<bytes.count)
            last = counter
        }
    }

    private func removeBuffered(_ matching: (UInt32) -> Bool) {
        guard buffered.contains(where: { matching($0.xid) }) else { return }
        compact { !matching($0.xid) }
    }

    private func removeBuffered(counters: Set<UInt64>) {
        compact { !counters.contains($0.counter) }
    }

    private func compact(keeping keep: ((xid: UInt32, counter: UInt64, start: Int, end: Int)) -> Bool) {
        var newArena: [UInt8] = []
        newArena.reserveCapacity(arena.count)
        var newBuffered: [(xid: UInt32, counter: UInt64, start: Int, end: Int)] = []
        for entry in buffered where keep(entry) {
            let start = newArena.count
            newArena.append(contentsOf: arena[entry.start..<entry.end])
            newBuffered.append((entry.xid, entry.counter, start, newArena.count))
        }
        arena = newArena
        buffered = newBuffered
    }
}

extension CaptureStream {
    /// Stream Commit of `xid`: replays its stored changes as the transaction unstreamed — Begin at the
    /// commit LSN, the messages in arrival order, Commit — through ``handle(_:)``, flushing in bounded
    /// chunks as the main loop does for big batches (the writer keeps them invisible until the
    /// transaction's end). The exactly-once rule is Begin's (a commit LSN below the resume LSN is
    /// already in the log: skipped), and endpos too.
    func commitStreamed(xid: UInt32, flags: UInt8, commitLSN: LSN, endLSN: LSN, commitTime: Int64) throws {
        guard streamed.blockXid == nil, !inTransaction else {
            throw CaptureError.protocolViolation("Stream Commit inside a transaction or stream block")
        }
        guard streamed.isOpen(xid) else {
            throw CaptureError.protocolViolation("Stream Commit of transaction \(xid), which this session did not receive")
        }
        try handle(.begin(finalLSN: commitLSN, commitTime: commitTime, xid: xid))
        if inTransaction, commitLSN >= writer.staged.resumeLSN {
            var cursor: UInt64?
            while true {
                var chunk = StreamedTransactions.Chunk()
                try retryingStorage(activeConnection) { chunk = try streamed.chunk(xid: xid, after: cursor) }
                if chunk.isEmpty { break }
                cursor = chunk.last
                options.health?.beat()  // a million-row replay takes seconds inside one message: the watchdog sees progress
                try chunk.bytes.withUnsafeBytes { all in
                    for range in chunk.ranges {
                        try handle(try PgOutputMessage.decode(UnsafeRawBufferPointer(rebasing: all[range])))
                        if writer.pendingBytes >= options.maxBatchBytes || writer.pendingRecords >= options.maxBatchRecords,
                           let connection = activeConnection {
                            try flush(connection)
                        }
                    }
                }
            }
        }
        // endpos reached at Begin leaves no transaction open (nothing was written): nothing to commit.
        if inTransaction {
            try handle(.commit(flags: flags, commitLSN: commitLSN, endLSN: endLSN, commitTime: commitTime))
        }
        let counted = streamed.hasChanges(xid)
        try retryingStorage(activeConnection) { try streamed.finish(xid: xid) }
        if counted { metrics.streamCommitted.increment() }
        metrics.streamOpen.record(streamed.openCount)
    }
}
