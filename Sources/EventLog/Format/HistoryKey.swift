import Crypto

/// Keys of the `history` index: `schema.table` 0x00, the row's replica-identity key values, then the
/// 8-byte seq of a record that touched that row. A prefix scan on (table, key) gives the row's history
/// in log order.
///
/// Key values: per key column 0x01 varint length and the text bytes, or 0x02 for NULL. When that part
/// would make the LMDB key too long (> 400 bytes), it is replaced by 0xFF and its SHA-256.
public enum HistoryKey {
    /// The (table, key) prefix for text key values (nil = NULL).
    public static func prefix(table: String, key: [[UInt8]?]) -> [UInt8] {
        var part: [UInt8] = []
        for value in key {
            if let value { value.withUnsafeBytes { appendValue($0, to: &part) } } else { appendValue(nil, to: &part) }
        }
        return assemble(table: Array(table.utf8), part: part)
    }

    /// One key value: 0x01 varint length and the bytes, or 0x02 for NULL.
    static func appendValue(_ value: UnsafeRawBufferPointer?, to part: inout [UInt8]) {
        guard let value else { part.append(0x02); return }
        var w = ByteWriter(capacity: 10 + value.count)
        w.u8(0x01)
        w.blob(value)
        part += w.bytes
    }

    static func assemble(table: [UInt8], part: [UInt8]) -> [UInt8] {
        var key = table
        key.append(0x00)
        if table.count + part.count > 400 {
            key.append(0xFF)
            key += Array(SHA256.hash(data: part))
        } else {
            key += part
        }
        return key
    }

    /// The prefixes of the rows a row record touches: the new key (snapshot, insert, update) and the old
    /// one (delete, or an update that changed its key). Reads the record bytes in place.
    /// Returns [] for records without a row, and skips a key with an unchanged-TOAST key value.
    static func prefixes(record: UnsafeRawBufferPointer, table: [UInt8], keyColumns: [Int]) throws -> [[UInt8]] {
        var r = ByteReader(record)
        let header = try RecordCodec.decodeHeader(&r)
        func keyPart(_ r: inout ByteReader) throws -> [UInt8]? {
            let count = Int(try r.varint())
            var values: [Int: UnsafeRawBufferPointer?] = [:]
            var unchanged = false
            for column in 0..<count {
                let kind = try r.u8()
                switch kind {
                case 0x74:
                    let bytes = try r.blob()
                    if keyColumns.contains(column) { values[column] = .some(bytes) }
                case 0x6E:
                    if keyColumns.contains(column) { values[column] = .some(nil) }
                case 0x75:
                    if keyColumns.contains(column) { unchanged = true }
                default:
                    throw FormatError.malformed("datum kind \(kind)")
                }
            }
            guard !unchanged, !keyColumns.isEmpty else { return nil }
            var part: [UInt8] = []
            for column in keyColumns {
                guard let value = values[column] else { return nil }
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
        default:
            return []
        }
        return parts.map { assemble(table: table, part: $0) }
    }
}
