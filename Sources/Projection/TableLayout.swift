import PGClient

/// The columns the projector writes to one warehouse table, in a fixed order, with their SQL types as
/// the warehouse catalog reports them. A row holds PostgreSQL text values (nil for NULL) in this
/// order: a dimension's as `[String?]`, a fact's and every row COPY sends as ``RowValues``.
final class TableLayout {
    let table: String
    let columns: [String]
    let index: [String: Int]
    /// SQL type of each column (`format_type`), e.g. `integer`, `numeric(10,2)`.
    let types: [String]
    /// NOT NULL in the warehouse, per column.
    let notNull: [Bool]
    /// Columns that identify a row for UPDATE and DELETE: the surrogate key, or the grain.
    let identity: [Int]
    /// The warehouse's distribution column (Citus), identity or not. Statements that name rows by
    /// identity also say which values of it they touch (``shardFilter(_:alias:parameters:)``), so that
    /// Citus sends them to those rows' shards only instead of to every shard.
    var shardKey: Int? {
        didSet { distribution = shardKey.map { identity.contains($0) ? [] : [$0] } ?? [] }
    }
    /// The distribution column when it is not an identity column (derived from ``shardKey``, kept
    /// for the per-row checks): an UPDATE never sets it (nor the identity); a row where it changed is
    /// deleted and inserted again.
    private(set) var distribution: [Int] = []
    /// How each column goes into a binary COPY, or nil if a column's type is one ``PGBinaryCopy`` does
    /// not encode (the table's rows then go as text).
    let binary: [PGBinaryCopy.Encoder]?

    init(table: String, columns: [String], identity: [String], catalog: [String: WarehouseColumn]) throws {
        self.table = table
        self.columns = columns
        var index: [String: Int] = [:]
        for (i, c) in columns.enumerated() { index[c] = i }
        self.index = index
        var types: [String] = [], notNull: [Bool] = []
        for c in columns {
            guard let info = catalog[c] else { throw MappingError("warehouse table \(table) has no column \(c)") }
            types.append(info.type)
            notNull.append(info.notNull)
        }
        self.types = types
        self.notNull = notNull
        self.identity = identity.map { index[$0]! }
        let encoders = types.compactMap(PGBinaryCopy.encoder(forType:))
        self.binary = encoders.count == types.count ? encoders : nil
    }

    /// ` AND alias.shardKey = ANY($n::type[])`, with the distinct `values` appended to `parameters` as
    /// `$n`: what a statement adds to touch only the shards holding those shard key values.
    func shardFilter(_ values: [String?], alias: String, parameters: inout [String?]) -> String {
        guard let key = shardKey else { return "" }
        parameters.append(arrayLiteral(Array(Set(values))))
        return " AND \(alias)\(quoteIdentifier(columns[key])) = ANY($\(parameters.count)::\(types[key])[])"
    }

    /// Column position by name (the mapping was checked against the layout).
    subscript(_ name: String) -> Int { index[name]! }

    /// The comma-separated, quoted column list.
    var columnList: String { columns.map(quoteIdentifier).joined(separator: ", ") }

    /// Appends `row` as one line of COPY text format.
    static func appendCopyLine(_ row: RowValues, to out: inout [UInt8]) {
        row.withReader { reader in
            for i in 0..<reader.count {
                if i > 0 { out.append(0x09) }
                guard let bytes = reader.bytes(i) else { out.append(0x5C); out.append(0x4E); continue }  // \N
                if !bytes.contains(where: { $0 == 0x5C || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
                    out.append(contentsOf: bytes)
                    continue
                }
                for byte in bytes {
                    switch byte {
                    case 0x5C: out.append(0x5C); out.append(0x5C)
                    case 0x09: out.append(0x5C); out.append(0x74)
                    case 0x0A: out.append(0x5C); out.append(0x6E)
                    case 0x0D: out.append(0x5C); out.append(0x72)
                    default: out.append(byte)
                    }
                }
            }
        }
        out.append(0x0A)
    }
}

/// One column of a warehouse table, from the catalog.
struct WarehouseColumn: Sendable {
    var type: String
    var notNull: Bool
}

/// A PostgreSQL array literal of text elements (`{"a","b",NULL}`), for `= ANY($1::type[])`.
func arrayLiteral(_ values: [String?]) -> String {
    var out = "{"
    for (i, value) in values.enumerated() {
        if i > 0 { out += "," }
        guard let value else { out += "NULL"; continue }
        out += "\""
        for c in value.unicodeScalars {
            if c == "\"" || c == "\\" { out += "\\" }
            out.unicodeScalars.append(c)
        }
        out += "\""
    }
    return out + "}"
}
