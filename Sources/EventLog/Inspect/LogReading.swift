import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// Reading for inspection commands: every read transaction is short and ends before the caller's code
/// runs, so printing to a slow terminal or pipe never pins the log's pages while `cdc run` writes.
extension EventLog {
    /// Visits the visible records of `from...to` (`to` nil: the head, re-read at every batch) in order.
    /// Records are copied out of read transactions of at most `batch` kept (and `4 × batch` visited)
    /// records; `body` runs with no transaction open and returns false to stop. `keep` (run inside the
    /// transaction: it must be quick and do no I/O) can skip a record from its header alone.
    public func visitRecords(from: UInt64, to: UInt64?, batch: Int = 1000,
                             keep: (UInt64, RecordHeader) -> Bool = { _, _ in true },
                             _ body: (UInt64, [UInt8]) throws -> Bool) throws {
        var next = max(from, 1)
        while true {
            if let to, next > to { return }
            var items: [(UInt64, [UInt8])] = []
            var visited = 0
            var more = false
            try scan(from: next, to: to) { seq, bytes in
                next = seq + 1
                visited += 1
                var reader = ByteReader(bytes)
                let header = try RecordCodec.decodeHeader(&reader, seq: seq, file: dataFile)
                if keep(seq, header) { items.append((seq, Array(bytes))) }
                if items.count >= batch || visited >= 4 * batch {
                    more = true
                    return false
                }
                return true
            }
            for (seq, bytes) in items {
                if try !body(seq, bytes) { return }
            }
            if !more { return }
        }
    }

    /// The last `count` records of `from...to` (inclusive, `to` ≤ the head) that `keep` accepts, in
    /// order. Reads backwards in windows (growing from 1,000 records), each in short transactions.
    /// `keepHeader` (quick, no I/O) can reject a record from its header before it is copied.
    public func lastRecords(count: Int, from: UInt64, to: UInt64,
                            keepHeader: (UInt64, RecordHeader) -> Bool = { _, _ in true },
                            keep: (UInt64, [UInt8]) throws -> Bool) throws -> [(UInt64, [UInt8])] {
        guard count > 0, to >= from else { return [] }
        var found: [(UInt64, [UInt8])] = []
        var high = to
        var window: UInt64 = 1000
        while found.count < count {
            let low = high - from + 1 > window ? high - window + 1 : from
            var matches: [(UInt64, [UInt8])] = []
            try visitRecords(from: low, to: high, keep: keepHeader) { seq, bytes in
                if try keep(seq, bytes) { matches.append((seq, bytes)) }
                return true
            }
            found.insert(contentsOf: matches.suffix(count - found.count), at: 0)
            if low == from { break }
            high = low - 1
            window = min(window * 2, 64_000)
        }
        return found
    }

    /// The visible record `seq`, nil past the head.
    public func visibleRecord(_ seq: UInt64) throws -> Record? {
        try environment.withTransaction(readOnly: true) { txn in
            guard seq >= 1, seq <= (try readPosition(txn).head) else { return nil }
            return try txn.get(events, key: keyBytes(seq)).map { try RecordCodec.decode($0, seq: seq, file: dataFile) }
        }
    }

    /// The seqs `first...last` of the visible records whose commit LSN is `lsn` (a transaction, or the
    /// snapshot at its consistent point), nil when there is none. Binary search: commit LSNs never
    /// decrease along the log (`cdc log verify` checks it), so this reads O(log n) records.
    public func recordRange(commitLSN lsn: LSN, head: UInt64) throws -> ClosedRange<UInt64>? {
        func lsnAt(_ seq: UInt64) throws -> LSN {
            try environment.withTransaction(readOnly: true) { txn in
                guard let bytes = try txn.get(events, key: keyBytes(seq)) else {
                    throw EventLogError(.corrupt, "record \(seq) is missing below the head \(head): run `cdc log verify`")
                }
                var r = ByteReader(bytes)
                return try RecordCodec.decodeHeader(&r, seq: seq, file: dataFile).lsn
            }
        }
        // First seq whose LSN >= lsn.
        var low: UInt64 = 1, high = head + 1
        while low < high {
            let mid = low + (high - low) / 2
            if try lsnAt(mid) < lsn { low = mid + 1 } else { high = mid }
        }
        guard low <= head, try lsnAt(low) == lsn else { return nil }
        // Last seq whose LSN <= lsn.
        var top = head + 1
        var bottom = low
        while bottom < top {
            let mid = bottom + (top - bottom) / 2
            if try lsnAt(mid) <= lsn { bottom = mid + 1 } else { top = mid }
        }
        return low...(bottom - 1)
    }

    /// The names (`schema.table`) of the tables in the log, from their latest relation versions.
    public func currentTableNames() throws -> [String] {
        var names: Set<String> = []
        for (_, seq) in try relationIndex() {
            if let definition = try relationDefinition(seq) { names.insert(definition.qualifiedName) }
        }
        return names.sorted()
    }

    /// Read transactions open on the log right now (any process): LMDB's reader table.
    public func activeReaders() throws -> [LMDBReader] { try environment.readers() }

    /// The size in bytes of `data.mdb` (as `ls -l` shows it) and the bytes allocated to it on disk.
    public func dataFileSize() -> (bytes: UInt64, allocated: UInt64)? {
        var st = stat()
        guard stat(path + "/data.mdb", &st) == 0 else { return nil }
        return (UInt64(st.st_size), UInt64(st.st_blocks) * 512)
    }
}

/// One entry of LMDB's reader table: a process with a read transaction (txnid nil: slot idle).
public struct LMDBReader: Equatable, Sendable, Encodable {
    public var pid: Int32
    public var txnid: UInt64?
}

extension LMDBEnvironment {
    /// LMDB's reader table (`mdb_reader_list`): the processes holding a reader slot, with the
    /// transaction each one has open (nil when the slot is idle).
    public func readers() throws -> [LMDBReader] {
        final class Lines { var text = "" }
        let lines = Lines()
        let context = Unmanaged.passRetained(lines)
        defer { context.release() }
        let code = mdb_reader_list(env, { message, context in
            guard let message, let context else { return 0 }
            Unmanaged<Lines>.fromOpaque(context).takeUnretainedValue().text += String(cString: message)
            return 0
        }, context.toOpaque())
        guard code >= 0 else { throw LMDBError(call: "mdb_reader_list", code: code) }
        var readers: [LMDBReader] = []
        for line in lines.text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3, let pid = Int32(fields[0]) else { continue }
            readers.append(LMDBReader(pid: pid, txnid: UInt64(fields[2])))
        }
        return readers
    }
}
