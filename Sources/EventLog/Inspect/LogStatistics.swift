#if canImport(Glibc)
import Glibc
#endif

/// What `cdc log stats` reports: where the log stands, what it holds, and what it costs on disk.
///
/// Computed in one pass over records 1...head (the head read first, so the numbers agree with each
/// other even while `cdc run` appends), in short read transactions.
public struct LogStatistics: Encodable, Sendable {
    /// A source transaction: its records, commit LSN, time and xid.
    public struct Transaction: Encodable, Sendable, Equatable {
        public var firstSeq: UInt64
        public var lastSeq: UInt64
        public var lsn: String
        public var time: String?
        public var xid: UInt32?

        enum CodingKeys: String, CodingKey {
            case firstSeq = "first_seq", lastSeq = "last_seq", lsn, time, xid
        }
    }

    /// The snapshot `cdc init` copied: its consistent point, time, rows and tables.
    public struct Snapshot: Encodable, Sendable, Equatable {
        public var lsn: String
        public var time: String?
        public var rows: UInt64
        public var tables: UInt64
    }

    /// Space: the LMDB file and the encoded records.
    public struct Size: Encodable, Sendable, Equatable {
        /// `data.mdb`'s size (as `ls -l` shows it): records, Merkle leaves and roots, indexes, free pages.
        public var dataFileBytes: UInt64
        /// Blocks allocated to `data.mdb` on disk.
        public var dataFileAllocatedBytes: UInt64
        /// The encoded records alone (values of `events`).
        public var recordBytes: UInt64
        /// `data.mdb` bytes per event; nil for an empty log.
        public var bytesPerEvent: Double?
        /// Encoded record bytes per event; nil for an empty log.
        public var recordBytesPerEvent: Double?

        enum CodingKeys: String, CodingKey {
            case dataFileBytes = "data_mdb_bytes", dataFileAllocatedBytes = "data_mdb_allocated_bytes"
            case recordBytes = "record_bytes", bytesPerEvent = "bytes_per_event", recordBytesPerEvent = "record_bytes_per_event"
        }
    }

    public var log: String
    public var source: SourceIdentity?
    public var state: String?
    /// The last visible seq (meta `head`).
    public var head: UInt64
    /// Where the stream resumes (meta `resume_lsn`).
    public var resumeLSN: String
    /// Visible events (records 1...head).
    public var events: UInt64 = 0
    /// Source transactions (the snapshot and non-transactional messages are not counted).
    public var transactions: UInt64 = 0
    public var snapshot: Snapshot?
    public var firstCommit: Transaction?
    public var lastCommit: Transaction?
    /// Events per table (`schema.table`) and operation name.
    public var byTable: [String: [String: UInt64]] = [:]
    /// Logical decoding messages (they belong to no table), transactional or not.
    public var messages: UInt64 = 0
    public var nonTransactionalMessages: UInt64 = 0
    /// Transactions that another node's logical replication applied (one `origin` record each).
    public var replicatedTransactions: UInt64 = 0
    public var size: Size
    /// Read transactions open on the log when the statistics were taken (other `cdc log` readers).
    public var openReaders: [LMDBReader]

    /// The column protection the log was written under, oldest first (meta `privacy`).
    public var privacy: [PrivacyEpoch] = []

    enum CodingKeys: String, CodingKey {
        case log, source, state, head, events, transactions, snapshot, messages, size, privacy
        case resumeLSN = "resume_lsn", firstCommit = "first_commit", lastCommit = "last_commit"
        case byTable = "by_table", nonTransactionalMessages = "non_transactional_messages", openReaders = "open_readers"
        case replicatedTransactions = "replicated_transactions"
    }

    /// The report for people, in lines (each cut to `width` when given).
    public func textLines(width: Int?) -> [String] {
        func clip(_ s: String) -> String { width.map { DisplayText.clip(s, to: $0) } ?? s }
        func commit(_ t: Transaction?) -> String {
            guard let t else { return "none (only the snapshot)" }
            return "\(t.lsn) at \(t.time.map { $0 } ?? "unknown time"), xid \(t.xid.map { String($0) } ?? "-"), seq \(t.firstSeq)" + (t.lastSeq > t.firstSeq ? "...\(t.lastSeq)" : "")
        }
        var lines: [String] = []
        var overview: [(String, String)] = [("log", log)]
        if let source {
            overview.append(("source", "database \(source.database), system identifier \(source.systemIdentifier), slot \(source.slot), publication \(source.publication)"))
        }
        overview.append(("state", state ?? "not initialised"))
        overview.append(("head", "seq \(groupedDigits(head)), resume LSN \(resumeLSN)"))
        var eventsText = "\(groupedDigits(events)): \(counted(transactions, "transaction"))"
        if snapshot != nil { eventsText += " and the snapshot" }
        if messages > 0 { eventsText += "; \(counted(messages, "message")) (\(groupedDigits(nonTransactionalMessages)) non-transactional)" }
        if replicatedTransactions > 0 { eventsText += "; \(counted(replicatedTransactions, "replicated transaction")) (with an origin)" }
        overview.append(("events", eventsText))
        if let snapshot {
            overview.append(("snapshot", "\(counted(snapshot.rows, "row")) of \(counted(snapshot.tables, "table")) at \(snapshot.lsn), \(snapshot.time ?? "unknown time")"))
        }
        overview.append(("first commit", commit(firstCommit)))
        overview.append(("last commit", commit(lastCommit)))
        var sizeText = "data.mdb \(byteSize(size.dataFileBytes)), \(groupedDigits(size.dataFileAllocatedBytes)) bytes allocated"
        if let perEvent = size.bytesPerEvent, let perRecord = size.recordBytesPerEvent {
            sizeText += "; \(shortDecimal(perEvent)) bytes per event on disk, \(shortDecimal(perRecord)) per encoded record"
        }
        overview.append(("size", sizeText))
        let active = openReaders.filter { $0.txnid != nil }
        overview.append(("readers", active.isEmpty ? "no read transaction open" : active.map { "pid \($0.pid) (txn \($0.txnid!))" }.joined(separator: ", ")))
        let labelWidth = overview.map { $0.0.count }.max() ?? 0
        for (label, text) in overview { lines.append(clip(DisplayText.pad(label, labelWidth) + "  " + text)) }

        // Events per table and operation: one column per operation present in the log.
        lines.append("")
        let present = Operation.allCases.filter { op in byTable.values.contains { ($0[op.name] ?? 0) > 0 } || (op == .message && messages > 0)
            || (op == .origin && replicatedTransactions > 0) }
        var table = TextTable(header: ["table"] + present.map(\.name) + ["total"], rightAligned: Set(1...(present.count + 1)))
        var totals = [UInt64](repeating: 0, count: present.count)
        for name in byTable.keys.sorted() {
            let counts = present.map { byTable[name]?[$0.name] ?? 0 }
            for (i, c) in counts.enumerated() { totals[i] += c }
            table.rows.append([name] + counts.map(groupedDigits) + [groupedDigits(counts.reduce(0, +))])
        }
        if messages > 0 {
            let counts = present.map { $0 == .message ? messages : 0 }
            for (i, c) in counts.enumerated() { totals[i] += c }
            table.rows.append(["(messages)"] + counts.map(groupedDigits) + [groupedDigits(messages)])
        }
        if replicatedTransactions > 0 {
            let counts = present.map { $0 == .origin ? replicatedTransactions : 0 }
            for (i, c) in counts.enumerated() { totals[i] += c }
            table.rows.append(["(origins)"] + counts.map(groupedDigits) + [groupedDigits(replicatedTransactions)])
        }
        table.rows.append(["total"] + totals.map(groupedDigits) + [groupedDigits(totals.reduce(0, +))])
        lines += table.lines(width: width)

        lines.append("")
        lines += privacyLines().map(clip)
        return lines
    }

    /// The privacy section: which columns were protected, how, from which seq on, under which key.
    func privacyLines() -> [String] {
        guard privacy.contains(where: { !$0.policy.isEmpty }) else {
            return ["privacy: no column protected (values are as the source holds them)"]
        }
        var lines: [String] = []
        if let first = privacy.first, first.sinceSeq > 1 {
            lines += ["privacy from seq 1...\(first.sinceSeq - 1):", "  no column protected"]
        }
        for (index, epoch) in privacy.enumerated() {
            let until = index + 1 < privacy.count ? "...\(privacy[index + 1].sinceSeq - 1)" : " on"
            var heading = "privacy from seq \(epoch.sinceSeq)\(until)"
            if let key = epoch.policy.keyID { heading += ", HMAC key id \(key)" }
            lines.append(heading + ":")
            if epoch.policy.isEmpty { lines.append("  no column protected") }
            for column in epoch.policy.columns.keys.sorted() {
                let how = epoch.policy.columns[column] == .hash ? "hash (HMAC-SHA-256, 64 hex digits)" : "redact (written as NULL)"
                lines.append("  \(column)  \(how)")
            }
        }
        return lines
    }
}

extension LogStatistics.Size {
    public init(dataFileBytes: UInt64, dataFileAllocatedBytes: UInt64, recordBytes: UInt64, events: UInt64) {
        self.dataFileBytes = dataFileBytes
        self.dataFileAllocatedBytes = dataFileAllocatedBytes
        self.recordBytes = recordBytes
        bytesPerEvent = events == 0 ? nil : (Double(dataFileBytes) / Double(events) * 10).rounded() / 10
        recordBytesPerEvent = events == 0 ? nil : (Double(recordBytes) / Double(events) * 10).rounded() / 10
    }
}

extension EventLog {
    /// Statistics over records 1...head (see ``LogStatistics``).
    public func statistics() throws -> LogStatistics {
        let position = try position()
        let file = dataFileSize() ?? (0, 0)
        var stats = LogStatistics(log: path, source: try sourceIdentity(), state: try state()?.rawValue,
                                  head: position.head, resumeLSN: position.resumeLSN.description,
                                  size: .init(dataFileBytes: file.bytes, dataFileAllocatedBytes: file.allocated, recordBytes: 0, events: 0),
                                  openReaders: [])
        stats.privacy = try privacyHistory()
        var tableOf: [UInt64: String] = [:]  // relation seq → schema.table
        var counts: [String: [Operation: UInt64]] = [:]
        var recordBytes: UInt64 = 0
        var inSnapshot = true
        var current: LogStatistics.Transaction?
        func time(_ h: RecordHeader) -> String? { h.commitTime.map { rfc3339(microseconds: $0) } }

        try scan(from: 1, to: position.head) { seq, bytes in
            var reader = ByteReader(bytes)
            let h = try RecordCodec.decodeHeader(&reader, seq: seq, file: dataFile)
            stats.events += 1
            recordBytes += UInt64(bytes.count)
            let table: String?
            switch h.op {
            case .relation:
                guard case .relation(let definition) = try RecordCodec.decode(bytes, seq: seq, file: dataFile).body else { return true }
                tableOf[seq] = definition.qualifiedName
                table = definition.qualifiedName
            case .origin:
                table = nil
                stats.replicatedTransactions += 1
            case .message:
                table = nil
                stats.messages += 1
                if !h.flags.contains(.transactional) { stats.nonTransactionalMessages += 1 }
            default:
                if let name = tableOf[h.relationSeq] {
                    table = name
                } else if let definition = try relationDefinition(h.relationSeq) {
                    tableOf[h.relationSeq] = definition.qualifiedName
                    table = definition.qualifiedName
                } else {
                    table = "(missing relation \(h.relationSeq))"
                }
            }
            if let table { counts[table, default: [:]][h.op, default: 0] += 1 }

            if inSnapshot, h.xid == nil, h.op == .snapshot || h.op == .relation {
                if stats.snapshot == nil { stats.snapshot = .init(lsn: h.lsn.description, time: time(h), rows: 0, tables: 0) }
                if h.op == .snapshot { stats.snapshot!.rows += 1 } else { stats.snapshot!.tables += 1 }
            } else {
                inSnapshot = false
            }
            if h.xid != nil {
                if current == nil { current = .init(firstSeq: seq, lastSeq: seq, lsn: h.lsn.description, time: time(h), xid: h.xid) }
                current!.lastSeq = seq
                if h.flags.contains(.endOfTransaction) {
                    stats.transactions += 1
                    if stats.firstCommit == nil { stats.firstCommit = current }
                    stats.lastCommit = current
                    current = nil
                }
            }
            return true
        }
        stats.byTable = counts.mapValues { ops in Dictionary(uniqueKeysWithValues: ops.map { ($0.key.name, $0.value) }) }
        stats.size = .init(dataFileBytes: file.bytes, dataFileAllocatedBytes: file.allocated, recordBytes: recordBytes, events: stats.events)
        stats.openReaders = try activeReaders().filter { $0.txnid != nil }
        return stats
    }
}

/// `44764` as `44,764`.
func groupedDigits(_ n: UInt64) -> String {
    let digits = Array(String(n))
    var out = ""
    for (i, d) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(d)
    }
    return out
}

/// `1 row`, `2 rows`, `1,000 rows`.
func counted(_ n: UInt64, _ noun: String) -> String {
    "\(groupedDigits(n)) \(noun)\(n == 1 ? "" : "s")"
}

/// `1.5` as `1.5`, `412.0` as `412`.
func shortDecimal(_ v: Double) -> String {
    v == v.rounded() ? String(Int64(v)) : String(v)
}

/// `12893184` as `12.3 MiB (12,893,184 bytes)`.
public func byteSize(_ n: UInt64) -> String {
    let units = ["KiB", "MiB", "GiB", "TiB"]
    var value = Double(n)
    var unit = -1
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    guard unit >= 0 else { return "\(n) bytes" }
    return "\((value * 10).rounded() / 10) \(units[unit]) (\(groupedDigits(n)) bytes)"
}
