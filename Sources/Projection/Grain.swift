/// The values that address a row: a fact's grain, a dimension's business key, the source key of a
/// lookup, each value as PostgreSQL prints it (nil: NULL).
///
/// Most are one integer (an id). Such a grain is kept as the integer: no array and no String, so the
/// batch's dictionaries and sets hash and compare eight bytes, and noting a row's grain allocates
/// nothing. Each list of values has exactly one representation, so two grains are equal exactly when
/// their values are (as `[String?]` were).
enum Grain: Hashable, Sendable, ExpressibleByArrayLiteral {
    /// One value, the canonical text of an Int64 (digits, a leading '-' only, no leading zero).
    case int(Int64)
    /// One other value, not NULL.
    case text(String)
    /// Any other number of values, or one NULL.
    case values([String?])

    /// The grain of `values`.
    init(_ values: [String?]) {
        self = values.count == 1 ? Grain(one: values[0]) : .values(values)
    }

    init(arrayLiteral elements: String?...) { self.init(elements) }

    /// The grain of the one value `value`.
    init(one value: String?) {
        guard let value else { self = .values([nil]); return }
        self = Self.canonicalInteger(value).map(Grain.int) ?? .text(value)
    }

    /// The grain of `row`'s values at `columns`.
    init(_ row: [String?], _ columns: [Int]) {
        self = columns.count == 1 ? Grain(one: row[columns[0]]) : .values(columns.map { row[$0] })
    }

    /// The grain of `row`'s values at `columns`.
    init(_ row: RowValues, _ columns: [Int]) {
        guard columns.count == 1 else { self = .values(columns.map { row[$0] }); return }
        self.init(row, column: columns[0])
    }

    /// The grain of `row`'s value at `column`.
    init(_ row: RowValues, column: Int) {
        self = row.withValue(column) { Grain(utf8: $0) }
    }

    /// The grain of the one value `bytes` (nil: NULL), with no String for an integer.
    init(utf8 bytes: UnsafeBufferPointer<UInt8>?) {
        guard let bytes else { self = .values([nil]); return }
        self = Grain.canonicalInteger(bytes).map(Grain.int) ?? .text(String(decoding: bytes, as: UTF8.self))
    }

    var count: Int {
        if case .values(let values) = self { return values.count }
        return 1
    }

    /// Value `i` as text.
    subscript(i: Int) -> String? {
        switch self {
        case .int(let n): precondition(i == 0); return String(n)
        case .text(let s): precondition(i == 0); return s
        case .values(let values): return values[i]
        }
    }

    /// The values as text.
    var values: [String?] {
        switch self {
        case .int(let n): return [String(n)]
        case .text(let s): return [s]
        case .values(let values): return values
        }
    }

    /// One of the values is NULL (no row has such a grain).
    var hasNull: Bool {
        if case .values(let values) = self { return values.contains(where: { $0 == nil }) }
        return false
    }

    /// `text` as an Int64 when `String(n) == text` holds for it, else nil.
    static func canonicalInteger(_ text: String) -> Int64? {
        text.utf8.withContiguousStorageIfAvailable(canonicalInteger) ?? Array(text.utf8).withUnsafeBufferPointer(canonicalInteger)
    }

    static func canonicalInteger(_ bytes: UnsafeBufferPointer<UInt8>) -> Int64? {
        var i = 0
        let negative = bytes.first == UInt8(ascii: "-")
        if negative { i = 1 }
        let digits = bytes.count - i
        // 1 to 18 digits fit an Int64 whatever they are; no leading zero but "0" itself; no "-0".
        guard digits >= 1, digits <= 18 else { return nil }
        if bytes[i] == UInt8(ascii: "0") && (digits > 1 || negative) { return nil }
        var n: Int64 = 0
        while i < bytes.count {
            let d = bytes[i] &- UInt8(ascii: "0")
            guard d < 10 else { return nil }
            n = n * 10 + Int64(d)
            i += 1
        }
        return negative ? -n : n
    }
}
