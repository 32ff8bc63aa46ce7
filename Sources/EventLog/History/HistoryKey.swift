import Crypto

/// Keys of the history index: 8 bytes naming one row of one table, SHA-256(`schema.table` 0x00 key
/// values) cut to 8 bytes. Key values: per replica-identity column, 0x01 varint length and the text
/// bytes, or 0x02 for NULL. Truncates of a table are kept under the table's key with no values and a
/// 0xFE marker.
///
/// Eight bytes keep the index small (16 bytes an entry with the seq); two rows whose keys collide
/// only cost a record read: every record found through the index is checked against the row asked for.
public enum HistoryKey {
    /// The key values under which a table's truncates are kept.
    static let truncateMarker: [UInt8] = [0xFE]

    /// The key under which the truncates of `table` are kept.
    public static func truncates(table: String) -> [UInt8] {
        assemble(table: Array(table.utf8), part: truncateMarker)
    }

    static func appendValue(_ value: UnsafeRawBufferPointer?, to part: inout [UInt8]) {
        guard let value else { part.append(0x02); return }
        var w = ByteWriter(capacity: 10 + value.count)
        w.u8(0x01)
        w.blob(value)
        part += w.bytes
    }

    /// The key of a row of `table` (`schema.table`) from its encoded key values (``part(values:)``).
    static func assemble(table: [UInt8], part: [UInt8]) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: table)
        hasher.update(data: [0x00])
        hasher.update(data: part)
        return Array(hasher.finalize().prefix(8))
    }

    /// The rows a record touches: the new key (snapshot, insert, update) and the old one (delete, or an
    /// update that changed its key); a truncate touches its table. Reads the record bytes in place.
    /// Nothing for relation records, messages and tables without key columns; a key with an
    /// unchanged-TOAST value (not sent) is skipped.
    static func keys(record: UnsafeRawBufferPointer, table: [UInt8], keyColumns: [Int]) throws -> [[UInt8]] {
        try parts(record: record, keyColumns: keyColumns).map { assemble(table: table, part: $0) }
    }

    /// The encoded key values of `values` (as a row's key in ``parts(record:keyColumns:)``).
    static func part(values: [[UInt8]?]) -> [UInt8] {
        var part: [UInt8] = []
        for value in values {
            if let value { value.withUnsafeBytes { appendValue($0, to: &part) } } else { appendValue(nil, to: &part) }
        }
        return part
    }

    /// The encoded key values (before hashing) of the rows a record touches; ``truncateMarker`` for a truncate.
    static func parts(record: UnsafeRawBufferPointer, keyColumns: [Int]) throws -> [[UInt8]] {
        var r = ByteReader(record)
        let header = try RecordCodec.decodeHeader(&r)
        func keyPart(_ r: inout ByteReader) throws -> [UInt8]? {
            var key = KeyColumns(keyColumns)
            try TupleReader.read(&r, into: &key)
            guard !key.unchanged, !keyColumns.isEmpty else { return nil }
            var part: [UInt8] = []
            for value in key.values {
                guard let value else { return nil }
                appendValue(value, to: &part)
            }
            return part
        }
        var parts: [[UInt8]] = []
        switch header.op {
        case .snapshot, .insert:
            if let p = try keyPart(&r) { parts.append(p) }
        case .update:
            let old = try r.u8()
            var oldPart: [UInt8]?
            if old != 0 { oldPart = try keyPart(&r) }
            let newPart = try keyPart(&r)
            if let newPart { parts.append(newPart) }
            if let oldPart, oldPart != newPart { parts.append(oldPart) }
        case .delete:
            _ = try r.u8()
            if let p = try keyPart(&r) { parts.append(p) }
        case .truncate:
            parts.append(truncateMarker)
        default:
            return []
        }
        return parts
    }
}

/// Picks a tuple's key columns (views into the record's buffer) for ``HistoryKey/parts(record:keyColumns:)``.
private struct KeyColumns: TupleVisitor {
    let keyColumns: [Int]
    /// Per key column: unset (nil), null (.some(nil)) or the text bytes.
    var values: [UnsafeRawBufferPointer??]
    /// A key column is an unchanged TOAST value.
    var unchanged = false

    init(_ keyColumns: [Int]) {
        self.keyColumns = keyColumns
        values = [UnsafeRawBufferPointer??](repeating: nil, count: keyColumns.count)
    }

    mutating func null(column: Int) {
        if let position = keyColumns.firstIndex(of: column) { values[position] = .some(nil) }
    }

    mutating func unchangedToast(column: Int) {
        if keyColumns.contains(column) { unchanged = true }
    }

    mutating func text(column: Int, _ bytes: UnsafeRawBufferPointer) {
        if let position = keyColumns.firstIndex(of: column) { values[position] = .some(bytes) }
    }
}
