import EventLog

/// A pgoutput protocol message (protocol version 1, and the stream messages of protocol 2), decoded
/// from one XLogData payload.
///
/// Protocol 2 (PostgreSQL 14+, `streaming 'on'`) adds Stream Start/Stop/Commit/Abort, and inside a
/// stream block (between Stream Start and Stream Stop) the messages I, U, D, T, R, Y and M carry an
/// Int32 xid right after the type byte: the xid of the (sub)transaction that made the change
/// (protocol-logicalrep-message-formats.html; pgoutput.c sets it only `in_streaming`). Origin (O) has
/// no xid field even there. ``decode(_:inStream:)`` skips it; ``streamedXid(_:)`` reads it.
///
/// Tuple data is not copied: ``PgOutputMessage/Tuple`` points into the buffer libpq handed over, valid
/// only while the message is being handled, and is transcoded straight into the log's format.
public enum PgOutputMessage {
    /// A view of a TupleData section of the message.
    public struct Tuple {
        public let bytes: UnsafeRawBufferPointer
    }

    case begin(finalLSN: LSN, commitTime: Int64, xid: UInt32)
    case commit(flags: UInt8, commitLSN: LSN, endLSN: LSN, commitTime: Int64)
    case origin(commitLSN: LSN, name: String)
    case relation(oid: UInt32, namespace: String, name: String, replicaIdentity: UInt8,
                  columns: [(name: String, typeOID: UInt32, typeModifier: Int32, isKey: Bool)])
    case type(oid: UInt32, namespace: String, name: String)
    case insert(oid: UInt32, new: Tuple)
    case update(oid: UInt32, old: OldValues, oldTuple: Tuple?, new: Tuple)
    case delete(oid: UInt32, old: OldValues, oldTuple: Tuple)
    case truncate(options: UInt8, oids: [UInt32])
    case message(transactional: Bool, lsn: LSN, prefix: String, content: UnsafeRawBufferPointer)
    /// Protocol 2: the changes that follow, until ``streamStop``, belong to top-level transaction `xid`.
    case streamStart(xid: UInt32, firstSegment: Bool)
    case streamStop
    /// Protocol 2: streamed transaction `xid` committed (times in µs since 1970, like ``commit``).
    case streamCommit(xid: UInt32, flags: UInt8, commitLSN: LSN, endLSN: LSN, commitTime: Int64)
    /// Protocol 2: streamed transaction `xid` aborted (`subxid == xid`), or only its subtransaction `subxid`.
    case streamAbort(xid: UInt32, subxid: UInt32)

    /// Microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
    public static let postgresEpochOffset: Int64 = 946_684_800_000_000

    /// True for the message types that carry a (sub)transaction xid inside a stream block.
    @inline(__always)
    public static func hasStreamXid(_ tag: UInt8) -> Bool {
        switch tag {
        case 0x49, 0x55, 0x44, 0x54, 0x52, 0x59, 0x4D: return true  // I U D T R Y M
        default: return false
        }
    }

    /// Inside a stream block: the xid a change message carries, or nil for a message type without one.
    public static func streamedXid(_ buffer: UnsafeRawBufferPointer) throws -> UInt32? {
        var r = WireReader(buffer)
        guard hasStreamXid(try r.u8()) else { return nil }
        return try r.u32()
    }

    /// Decodes one pgoutput message. Commit times are converted to microseconds since 1970.
    /// With `inStream` (between Stream Start and Stream Stop), the xid field of change messages is skipped.
    public static func decode(_ buffer: UnsafeRawBufferPointer, inStream: Bool = false) throws -> PgOutputMessage {
        var r = WireReader(buffer)
        let tag = try r.u8()
        if inStream, hasStreamXid(tag) { _ = try r.u32() }
        switch tag {
        case 0x42:  // B
            let lsn = LSN(try r.u64())
            let time = Int64(bitPattern: try r.u64()) + postgresEpochOffset
            return .begin(finalLSN: lsn, commitTime: time, xid: try r.u32())
        case 0x43:  // C
            let flags = try r.u8()
            let commit = LSN(try r.u64())
            let end = LSN(try r.u64())
            let time = Int64(bitPattern: try r.u64()) + postgresEpochOffset
            return .commit(flags: flags, commitLSN: commit, endLSN: end, commitTime: time)
        case 0x4F:  // O
            let lsn = LSN(try r.u64())
            return .origin(commitLSN: lsn, name: try r.cString())
        case 0x52:  // R
            let oid = try r.u32()
            var namespace = try r.cString()
            if namespace.isEmpty { namespace = "pg_catalog" }
            let name = try r.cString()
            let identity = try r.u8()
            let count = Int(try r.u16())
            var columns: [(name: String, typeOID: UInt32, typeModifier: Int32, isKey: Bool)] = []
            columns.reserveCapacity(count)
            for _ in 0..<count {
                let flags = try r.u8()
                let columnName = try r.cString()
                let type = try r.u32()
                let modifier = Int32(bitPattern: try r.u32())
                columns.append((columnName, type, modifier, flags & 1 == 1))
            }
            return .relation(oid: oid, namespace: namespace, name: name, replicaIdentity: identity, columns: columns)
        case 0x59:  // Y
            let oid = try r.u32()
            var namespace = try r.cString()
            if namespace.isEmpty { namespace = "pg_catalog" }
            return .type(oid: oid, namespace: namespace, name: try r.cString())
        case 0x49:  // I
            let oid = try r.u32()
            guard try r.u8() == 0x4E else { throw CaptureError.protocolViolation("insert without new tuple") }
            return .insert(oid: oid, new: try r.tuple())
        case 0x55:  // U
            let oid = try r.u32()
            var kind = try r.u8()
            var old = OldValues.none
            var oldTuple: Tuple?
            if kind == 0x4B || kind == 0x4F {
                old = kind == 0x4B ? .key : .row
                oldTuple = try r.tuple()
                kind = try r.u8()
            }
            guard kind == 0x4E else { throw CaptureError.protocolViolation("update without new tuple") }
            return .update(oid: oid, old: old, oldTuple: oldTuple, new: try r.tuple())
        case 0x44:  // D
            let oid = try r.u32()
            let kind = try r.u8()
            guard kind == 0x4B || kind == 0x4F else { throw CaptureError.protocolViolation("delete without old tuple") }
            return .delete(oid: oid, old: kind == 0x4B ? .key : .row, oldTuple: try r.tuple())
        case 0x54:  // T
            let count = Int(try r.u32())
            let options = try r.u8()
            var oids: [UInt32] = []
            for _ in 0..<count { oids.append(try r.u32()) }
            return .truncate(options: options, oids: oids)
        case 0x4D:  // M
            let flags = try r.u8()
            let lsn = LSN(try r.u64())
            let prefix = try r.cString()
            let length = Int(try r.u32())
            return .message(transactional: flags & 1 == 1, lsn: lsn, prefix: prefix, content: try r.bytes(length))
        case 0x53:  // S
            let xid = try r.u32()
            return .streamStart(xid: xid, firstSegment: try r.u8() == 1)
        case 0x45:  // E
            return .streamStop
        case 0x63:  // c
            let xid = try r.u32()
            let flags = try r.u8()
            let commit = LSN(try r.u64())
            let end = LSN(try r.u64())
            let time = Int64(bitPattern: try r.u64()) + postgresEpochOffset
            return .streamCommit(xid: xid, flags: flags, commitLSN: commit, endLSN: end, commitTime: time)
        case 0x41:  // A (protocol 2: no abort LSN or time; those come with protocol 4's parallel apply)
            let xid = try r.u32()
            return .streamAbort(xid: xid, subxid: try r.u32())
        default:
            throw CaptureError.protocolViolation("unknown pgoutput message type \(tag)")
        }
    }

    /// Transcodes pgoutput TupleData into the log's tuple encoding, returning the column count. The
    /// columns `methods` names are protected by `protector` on the way.
    @discardableResult
    public static func transcode(_ tuple: Tuple, into w: inout ByteWriter, protecting methods: [PrivacyPolicy.Method?]? = nil,
                                 with protector: ColumnProtector? = nil) throws -> Int {
        var r = WireReader(tuple.bytes)
        let count = Int(try r.u16())
        TupleWriter.count(count, into: &w)
        for index in 0..<count {
            let kind = try r.u8()
            switch kind {
            case 0x6E:  // n
                TupleWriter.null(into: &w)
            case 0x75:  // u
                TupleWriter.unchangedToast(into: &w)
            case 0x74:  // t
                let length = Int(try r.u32())
                let value = try r.bytes(length)
                if let methods, index < methods.count, let method = methods[index], let protector {
                    protector.write(method, value: value, into: &w)
                } else {
                    TupleWriter.text(value, into: &w)
                }
            default:
                throw CaptureError.protocolViolation("unexpected tuple column kind \(kind)")
            }
        }
        return count
    }
}

/// Network-order reads from a pgoutput message.
struct WireReader {
    let buffer: UnsafeRawBufferPointer
    var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    @inline(__always) mutating func u8() throws -> UInt8 {
        guard offset < buffer.count else { throw CaptureError.protocolViolation("message truncated") }
        defer { offset += 1 }
        return buffer[offset]
    }

    @inline(__always) mutating func u16() throws -> UInt16 {
        guard offset + 2 <= buffer.count else { throw CaptureError.protocolViolation("message truncated") }
        defer { offset += 2 }
        return UInt16(buffer[offset]) << 8 | UInt16(buffer[offset + 1])
    }

    @inline(__always) mutating func u32() throws -> UInt32 {
        guard offset + 4 <= buffer.count else { throw CaptureError.protocolViolation("message truncated") }
        defer { offset += 4 }
        return UInt32(buffer[offset]) << 24 | UInt32(buffer[offset + 1]) << 16 | UInt32(buffer[offset + 2]) << 8
            | UInt32(buffer[offset + 3])
    }

    @inline(__always) mutating func u64() throws -> UInt64 {
        let high = try u32()
        return UInt64(high) << 32 | UInt64(try u32())
    }

    mutating func cString() throws -> String {
        guard let end = buffer[offset...].firstIndex(of: 0) else {
            throw CaptureError.protocolViolation("unterminated string")
        }
        defer { offset = end + 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[offset..<end]), as: UTF8.self)
    }

    @inline(__always) mutating func bytes(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, offset + count <= buffer.count else { throw CaptureError.protocolViolation("message truncated") }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + count)])
    }

    /// Skips a TupleData section and returns a view of it.
    mutating func tuple() throws -> PgOutputMessage.Tuple {
        let start = offset
        let count = Int(try u16())
        for _ in 0..<count {
            let kind = try u8()
            if kind == 0x74 || kind == 0x62 {
                let length = Int(try u32())
                _ = try bytes(length)
            }
        }
        return PgOutputMessage.Tuple(bytes: UnsafeRawBufferPointer(rebasing: buffer[start..<offset]))
    }
}
