/// Appends the log's primitive encodings to a byte array.
public struct ByteWriter {
    public var bytes: [UInt8]

    public init(capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    @inline(__always) public mutating func u8(_ v: UInt8) { bytes.append(v) }

    @inline(__always) public mutating func u32(_ v: UInt32) {
        bytes.append(UInt8(truncatingIfNeeded: v >> 24)); bytes.append(UInt8(truncatingIfNeeded: v >> 16))
        bytes.append(UInt8(truncatingIfNeeded: v >> 8)); bytes.append(UInt8(truncatingIfNeeded: v))
    }

    @inline(__always) public mutating func u64(_ v: UInt64) {
        u32(UInt32(truncatingIfNeeded: v >> 32)); u32(UInt32(truncatingIfNeeded: v))
    }

    /// Unsigned LEB128.
    @inline(__always) public mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    /// A varint length followed by the bytes.
    @inline(__always) public mutating func blob(_ data: UnsafeRawBufferPointer) {
        varint(UInt64(data.count))
        bytes.append(contentsOf: data)
    }

    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { blob(UnsafeRawBufferPointer($0)) }
    }
}

/// Reads the log's primitive encodings from a buffer; every read is bounds-checked.
public struct ByteReader {
    public let buffer: UnsafeRawBufferPointer
    public var offset: Int

    public init(_ buffer: UnsafeRawBufferPointer, offset: Int = 0) {
        self.buffer = buffer
        self.offset = offset
    }

    public var remaining: Int { buffer.count - offset }

    @inline(__always) public mutating func u8() throws -> UInt8 {
        guard offset < buffer.count else { throw FormatError.truncated }
        defer { offset += 1 }
        return buffer[offset]
    }

    @inline(__always) public mutating func u16() throws -> UInt16 {
        guard offset + 2 <= buffer.count else { throw FormatError.truncated }
        defer { offset += 2 }
        return UInt16(buffer[offset]) << 8 | UInt16(buffer[offset + 1])
    }

    @inline(__always) public mutating func u32() throws -> UInt32 {
        guard offset + 4 <= buffer.count else { throw FormatError.truncated }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(buffer[offset + i]) }
        offset += 4
        return v
    }

    @inline(__always) public mutating func u64() throws -> UInt64 {
        let high = try u32()
        return UInt64(high) << 32 | UInt64(try u32())
    }

    @inline(__always) public mutating func varint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try u8()
            guard shift < 64 else { throw FormatError.malformed("varint too long") }
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
        }
    }

    @inline(__always) public mutating func bytes(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, offset + count <= buffer.count else { throw FormatError.truncated }
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + count)])
    }

    @inline(__always) public mutating func blob() throws -> UnsafeRawBufferPointer {
        let count = try varint()
        guard count <= UInt64(remaining) else { throw FormatError.truncated }
        return try bytes(Int(count))
    }

    public mutating func string() throws -> String {
        String(decoding: try blob(), as: UTF8.self)
    }
}

/// A record that cannot be decoded.
public enum FormatError: Error, CustomStringConvertible, Equatable, Sendable {
    case truncated
    case malformed(String)

    public var description: String {
        switch self {
        case .truncated: "record is truncated"
        case .malformed(let what): "record is malformed: \(what)"
        }
    }
}

/// A record of a log that cannot be decoded (a damaged file): which record, where, and why.
public struct RecordDecodingError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The record's sequence number.
    public var seq: UInt64
    /// What is wrong with its bytes.
    public var reason: FormatError
    /// The data file it was read from, when known.
    public var file: String?

    public init(seq: UInt64, reason: FormatError, file: String? = nil) {
        self.seq = seq
        self.reason = reason
        self.file = file
    }

    public var description: String {
        (file.map { "log \($0) is damaged: " } ?? "")
            + "record \(seq) cannot be decoded (\(reason)): run `cdc log verify`, and restore the log from a good copy"
    }
}

/// Big-endian 8-byte key for sequence numbers (and other u64 keys).
@inline(__always) public func keyBytes(_ v: UInt64) -> [UInt8] {
    [UInt8(truncatingIfNeeded: v >> 56), UInt8(truncatingIfNeeded: v >> 48), UInt8(truncatingIfNeeded: v >> 40),
     UInt8(truncatingIfNeeded: v >> 32), UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16),
     UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
}

/// Big-endian 4-byte key.
@inline(__always) public func keyBytes(_ v: UInt32) -> [UInt8] {
    [UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8),
     UInt8(truncatingIfNeeded: v)]
}

@inline(__always) public func readU64(_ buffer: UnsafeRawBufferPointer) -> UInt64? {
    guard buffer.count == 8 else { return nil }
    var v: UInt64 = 0
    for b in buffer { v = v << 8 | UInt64(b) }
    return v
}
