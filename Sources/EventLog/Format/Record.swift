/// One value of a row.
public enum Datum: Equatable, Sendable {
    /// SQL NULL.
    case null
    /// A TOASTed value the update did not change: PostgreSQL did not send it; it is NOT null.
    case unchangedToast
    /// PostgreSQL's text output of the value (UTF-8 bytes).
    case text([UInt8])

    /// The text as a String, nil for null and unchanged TOAST.
    public var string: String? {
        if case .text(let bytes) = self { return String(decoding: bytes, as: UTF8.self) }
        return nil
    }
}

/// Which old values an update or delete carries (pgoutput's `K`/`O` submessages).
public enum OldValues: UInt8, Sendable {
    /// No old values (an update under REPLICA IDENTITY DEFAULT that kept its key).
    case none = 0
    /// The old replica-identity key columns only; other columns are null.
    case key = 0x4B  // 'K'
    /// The whole old row (REPLICA IDENTITY FULL).
    case row = 0x4F  // 'O'
}

/// Flags byte of a record.
public struct RecordFlags: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The last record of its source transaction (or of the snapshot).
    public static let endOfTransaction = RecordFlags(rawValue: 1)
    /// For truncate: CASCADE was given.
    public static let cascade = RecordFlags(rawValue: 2)
    /// For truncate: RESTART IDENTITY was given.
    public static let restartIdentity = RecordFlags(rawValue: 4)
    /// For message: the message was emitted transactionally.
    public static let transactional = RecordFlags(rawValue: 8)
}

/// The fields every record carries.
public struct RecordHeader: Equatable, Sendable {
    public var op: Operation
    public var flags: RecordFlags
    /// The commit LSN of the source transaction (for snapshot rows and their relations: the slot's
    /// consistent point; for a non-transactional message: the message's own LSN).
    public var lsn: LSN
    /// The source transaction id, nil for snapshot rows and non-transactional messages.
    public var xid: UInt32?
    /// Commit time in microseconds since the Unix epoch (UTC), nil when unknown.
    public var commitTime: Int64?
    /// The sequence number of the relation record describing this row's table; 0 when not applicable.
    public var relationSeq: UInt64

    public init(op: Operation, flags: RecordFlags = [], lsn: LSN, xid: UInt32?, commitTime: Int64?, relationSeq: UInt64) {
        self.op = op
        self.flags = flags
        self.lsn = lsn
        self.xid = xid
        self.commitTime = commitTime
        self.relationSeq = relationSeq
    }
}

/// A decoded record.
public struct Record: Equatable, Sendable {
    public enum Body: Equatable, Sendable {
        /// snapshot, insert, update, delete.
        case row(old: OldValues, before: [Datum]?, after: [Datum]?)
        case truncate
        case message(prefix: String, content: [UInt8])
        case relation(RelationDefinition)
        /// The replication origin that applied the transaction, and the transaction's commit LSN on
        /// that origin (0/0 when unknown: the applier did not set one, or the transaction was streamed,
        /// pgoutput then sending no origin LSN).
        case origin(name: String, lsn: LSN)
    }

    public var header: RecordHeader
    public var body: Body

    public init(header: RecordHeader, body: Body) {
        self.header = header
        self.body = body
    }
}

/// The on-disk encoding of records, version 1 (see schemas/event-log.md).
///
///     u8  op | u8 flags | u64 lsn | u32 xid (0 = none) | i64 commit_time µs since 1970 (i64.min = none)
///     varint relation_seq | body
public enum RecordCodec {
    public static let noTime = Int64.min

    /// Writes the header fields.
    @inline(__always)
    public static func writeHeader(_ h: RecordHeader, to w: inout ByteWriter) {
        w.u8(h.op.rawValue)
        w.u8(h.flags.rawValue)
        w.u64(h.lsn.value)
        w.u32(h.xid ?? 0)
        w.u64(UInt64(bitPattern: h.commitTime ?? noTime))
        w.varint(h.relationSeq)
    }

    /// Tuple: varint count, then per column `n` | `u` | `t` varint-length bytes (``TupleWriter``).
    public static func writeTuple(_ values: [Datum], to w: inout ByteWriter) {
        TupleWriter.write(values, into: &w)
    }

    public static func encode(_ record: Record) -> [UInt8] {
        var w = ByteWriter()
        writeHeader(record.header, to: &w)
        switch record.body {
        case .row(let old, let before, let after):
            switch record.header.op {
            case .update:
                w.u8(old.rawValue)
                if old != .none, let before { writeTuple(before, to: &w) }
                writeTuple(after ?? [], to: &w)
            case .delete:
                w.u8(old.rawValue)
                writeTuple(before ?? [], to: &w)
            default:
                writeTuple(after ?? [], to: &w)
            }
        case .truncate:
            break
        case .message(let prefix, let content):
            w.string(prefix)
            content.withUnsafeBytes { w.blob($0) }
        case .relation(let r):
            writeRelation(r, to: &w)
        case .origin(let name, let lsn):
            w.string(name)
            w.u64(lsn.value)
        }
        return w.bytes
    }

    public static func writeRelation(_ r: RelationDefinition, to w: inout ByteWriter) {
        w.u32(r.oid)
        w.string(r.namespace)
        w.string(r.name)
        w.u8(r.replicaIdentity)
        w.varint(UInt64(r.columns.count))
        for c in r.columns {
            w.u8(c.isKey ? 1 : 0)
            w.string(c.name)
            w.u32(c.typeOID)
            w.u32(UInt32(bitPattern: c.typeModifier))
            w.string(c.typeName)
        }
    }

    public static func decodeHeader(_ r: inout ByteReader) throws -> RecordHeader {
        let opByte = try r.u8()
        guard let op = Operation(rawValue: opByte) else { throw FormatError.malformed("unknown op \(opByte)") }
        let flags = RecordFlags(rawValue: try r.u8())
        let lsn = LSN(try r.u64())
        let xid = try r.u32()
        let time = Int64(bitPattern: try r.u64())
        let relationSeq = try r.varint()
        return RecordHeader(op: op, flags: flags, lsn: lsn, xid: xid == 0 ? nil : xid,
                            commitTime: time == noTime ? nil : time, relationSeq: relationSeq)
    }

    /// One tuple as ``Datum`` values (``TupleReader``).
    public static func decodeTuple(_ r: inout ByteReader) throws -> [Datum] {
        try TupleReader.datums(&r)
    }

    public static func decode(_ buffer: UnsafeRawBufferPointer) throws -> Record {
        var r = ByteReader(buffer)
        let header = try decodeHeader(&r)
        let body: Record.Body
        switch header.op {
        case .snapshot, .insert:
            body = .row(old: .none, before: nil, after: try decodeTuple(&r))
        case .update:
            guard let old = OldValues(rawValue: try r.u8()) else { throw FormatError.malformed("old-values kind") }
            let before = old == .none ? nil : try decodeTuple(&r)
            body = .row(old: old, before: before, after: try decodeTuple(&r))
        case .delete:
            guard let old = OldValues(rawValue: try r.u8()) else { throw FormatError.malformed("old-values kind") }
            body = .row(old: old, before: try decodeTuple(&r), after: nil)
        case .truncate:
            body = .truncate
        case .message:
            let prefix = try r.string()
            body = .message(prefix: prefix, content: Array(try r.blob()))
        case .relation:
            body = .relation(try decodeRelation(&r))
        case .origin:
            let name = try r.string()
            body = .origin(name: name, lsn: LSN(try r.u64()))
        }
        guard r.remaining == 0 else { throw FormatError.malformed("\(r.remaining) trailing bytes") }
        return Record(header: header, body: body)
    }

    /// ``decode(_:)`` of record `seq` (read from `file`): a short or garbled buffer throws a
    /// ``RecordDecodingError`` naming the record.
    public static func decode(_ buffer: UnsafeRawBufferPointer, seq: UInt64, file: String? = nil) throws(RecordDecodingError) -> Record {
        try naming(seq, file) { try decode(buffer) }
    }

    /// ``decodeHeader(_:)`` of record `seq`, throwing a ``RecordDecodingError`` naming it.
    public static func decodeHeader(_ r: inout ByteReader, seq: UInt64, file: String? = nil) throws(RecordDecodingError) -> RecordHeader {
        do { return try decodeHeader(&r) } catch { throw RecordDecodingError(seq: seq, reason: reason(error), file: file) }
    }

    private static func naming<T>(_ seq: UInt64, _ file: String?, _ body: () throws -> T) throws(RecordDecodingError) -> T {
        do { return try body() } catch { throw RecordDecodingError(seq: seq, reason: reason(error), file: file) }
    }

    private static func reason(_ error: any Error) -> FormatError {
        error as? FormatError ?? .malformed("\(error)")
    }

    public static func decodeRelation(_ r: inout ByteReader) throws -> RelationDefinition {
        let oid = try r.u32()
        let namespace = try r.string()
        let name = try r.string()
        let identity = try r.u8()
        let count = try r.varint()
        guard count <= UInt64(r.remaining) else { throw FormatError.malformed("column count \(count)") }
        var columns: [RelationDefinition.Column] = []
        for _ in 0..<count {
            let isKey = try r.u8() & 1 == 1
            let columnName = try r.string()
            let type = try r.u32()
            let modifier = Int32(bitPattern: try r.u32())
            let typeName = try r.string()
            columns.append(.init(name: columnName, typeOID: type, typeModifier: modifier, isKey: isKey, typeName: typeName))
        }
        return RelationDefinition(oid: oid, namespace: namespace, name: name, replicaIdentity: identity, columns: columns)
    }
}
