/// The log's tuple encoding, owned here alone (see schemas/event-log.md, "Record (value in events)"):
///
///     varint column count, then per column one kind byte:
///       `n` null | `u` unchanged TOAST | `t` varint length + the value's text bytes
///
/// Every producer (pgoutput transcoding, the snapshot's COPY rows, privacy protection, ``RecordCodec``)
/// writes tuples through ``TupleWriter``; every consumer (``RecordCodec``, history keys, the projector's
/// source rows) reads them through ``TupleReader`` with a ``TupleVisitor``.
public enum DatumKind {
    /// `n`: SQL NULL.
    public static let null: UInt8 = 0x6E
    /// `u`: an unchanged TOASTed value (not sent by PostgreSQL; not null).
    public static let unchangedToast: UInt8 = 0x75
    /// `t`: text bytes follow, varint length first.
    public static let text: UInt8 = 0x74
}

/// Writes tuples of the log's encoding: ``count(_:into:)`` once, then one datum per column.
public enum TupleWriter {
    /// The column count that starts a tuple.
    @inlinable @inline(__always)
    public static func count(_ columns: Int, into w: inout ByteWriter) { w.varint(UInt64(columns)) }

    @inlinable @inline(__always)
    public static func null(into w: inout ByteWriter) { w.u8(DatumKind.null) }

    @inlinable @inline(__always)
    public static func unchangedToast(into w: inout ByteWriter) { w.u8(DatumKind.unchangedToast) }

    @inlinable @inline(__always)
    public static func text(_ bytes: UnsafeRawBufferPointer, into w: inout ByteWriter) {
        w.u8(DatumKind.text)
        w.blob(bytes)
    }

    /// One datum.
    @inlinable @inline(__always)
    public static func datum(_ value: Datum, into w: inout ByteWriter) {
        switch value {
        case .null: null(into: &w)
        case .unchangedToast: unchangedToast(into: &w)
        case .text(let bytes): bytes.withUnsafeBytes { text($0, into: &w) }
        }
    }

    /// A whole tuple.
    @inlinable
    public static func write(_ values: [Datum], into w: inout ByteWriter) {
        count(values.count, into: &w)
        for value in values { datum(value, into: &w) }
    }
}

/// Receives the columns of one tuple from ``TupleReader``, in column order.
public protocol TupleVisitor {
    /// Called once, before the columns, with the tuple's column count.
    mutating func begin(columns: Int) throws
    mutating func null(column: Int) throws
    mutating func unchangedToast(column: Int) throws
    /// `bytes` points into the record's buffer: valid only during the call.
    mutating func text(column: Int, _ bytes: UnsafeRawBufferPointer) throws
}

extension TupleVisitor {
    @inlinable public mutating func begin(columns: Int) throws {}
}

/// Reads tuples of the log's encoding, bounds-checked; malformed input throws ``FormatError``.
public enum TupleReader {
    /// Reads one tuple at `r`, passing each column to `visitor`; returns the column count.
    @inlinable @discardableResult
    public static func read<V: TupleVisitor>(_ r: inout ByteReader, into visitor: inout V) throws -> Int {
        let count = try r.varint()
        guard count <= UInt64(r.remaining) else { throw FormatError.malformed("column count \(count)") }
        let columns = Int(count)
        try visitor.begin(columns: columns)
        for column in 0..<columns {
            switch try r.u8() {
            case DatumKind.null: try visitor.null(column: column)
            case DatumKind.unchangedToast: try visitor.unchangedToast(column: column)
            case DatumKind.text: try visitor.text(column: column, try r.blob())
            case let kind: throw FormatError.malformed("unknown datum kind \(kind)")
            }
        }
        return columns
    }

    /// One tuple as ``Datum`` values.
    public static func datums(_ r: inout ByteReader) throws -> [Datum] {
        var collector = DatumCollector()
        try read(&r, into: &collector)
        return collector.values
    }
}

/// Collects a tuple's columns as ``Datum`` values.
public struct DatumCollector: TupleVisitor {
    public var values: [Datum] = []
    public init() {}
    public mutating func begin(columns: Int) { values.reserveCapacity(columns) }
    public mutating func null(column: Int) { values.append(.null) }
    public mutating func unchangedToast(column: Int) { values.append(.unchangedToast) }
    public mutating func text(column: Int, _ bytes: UnsafeRawBufferPointer) { values.append(.text(Array(bytes))) }
}
