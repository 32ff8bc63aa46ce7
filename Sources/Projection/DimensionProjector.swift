import Crypto
import EventLog
import PGClient

/// Folds the changes of one source table into an SCD Type 2 dimension.
///
/// The current version of every business key is kept in memory (loaded from the warehouse when the
/// projector opens), so that change detection, type-1 overwrites and fact lookups never query the
/// warehouse. Versions written by the current batch are collected in `touched` and flushed
/// set-based by ``Projector``.
final class DimensionProjector {
    /// One version (one row of the dimension).
    final class Version {
        var key: Int64
        var row: [String?]
        /// Commit LSN of the change that opened (or completed) it: a later change of the same
        /// transaction modifies it instead of opening another version.
        var openedLSN: UInt64
        /// The row is in the warehouse already (flush: UPDATE), else new (flush: INSERT).
        var existed: Bool
        /// Opened by an INSERT of the current transaction and not yet used by a fact: a delete in the
        /// same transaction removes it without trace.
        var cancellable = false

        init(key: Int64, row: [String?], openedLSN: UInt64, existed: Bool) {
            self.key = key
            self.row = row
            self.openedLSN = openedLSN
            self.existed = existed
        }
    }

    let spec: ProjectionMapping.Dimension
    let layout: TableLayout
    let keyColumn: Int
    let businessKeyColumns: [Int]
    /// Type-2 then type-1 columns, fed from the source.
    let attributeColumns: [Int]
    let type2Count: Int
    let lookupColumns: [Int]
    var lookupTargets: [DimensionProjector] = []
    let lookupSourceRanges: [Range<Int>]
    /// The source columns read, in order: business key, attributes, lookup business keys.
    var source: SourceColumns
    /// What an inferred member holds in each attribute column.
    let inferredValues: [String?]
    let cEffective, cExpiration, cIsCurrent, cValidFrom, cValidTo, cChangeType, cHash, cLSN, cInferred: Int

    /// Current versions by business key.
    var current: [Grain: Version] = [:]
    var nextKey: Int64 = 1
    /// Versions the batch wrote, by surrogate key.
    var touched: [Int64: Version] = [:]
    /// Rows already in the warehouse that the batch removes (a version cancelled within its transaction).
    var removed: [Int64] = []
    /// The last version (the DELETE row) of every business key deleted at the source and not current
    /// since: what a fact naming such a key points at (no inferred member resurrects it).
    var lastDeleted: [Grain: Int64] = [:]

    init(spec: ProjectionMapping.Dimension, catalog: [String: WarehouseColumn]) throws {
        self.spec = spec
        let attributes = spec.type2 + spec.type1
        let columns = [spec.surrogateKey] + spec.businessKey + attributes + spec.lookups.map(\.column) + ProjectionMapping.dimensionColumns
        let layout = try TableLayout(table: spec.table, columns: columns, identity: [spec.surrogateKey], catalog: catalog)
        self.layout = layout
        keyColumn = layout[spec.surrogateKey]
        businessKeyColumns = spec.businessKey.map { layout[$0] }
        attributeColumns = attributes.map { layout[$0] }
        type2Count = spec.type2.count
        lookupColumns = spec.lookups.map { layout[$0.column] }
        var wanted = spec.businessKey.map(spec.sourceColumn) + attributes.map(spec.sourceColumn)
        var ranges: [Range<Int>] = []
        for lookup in spec.lookups {
            ranges.append(wanted.count..<(wanted.count + lookup.sourceColumns.count))
            wanted += lookup.sourceColumns
        }
        source = SourceColumns(wanted)
        lookupSourceRanges = ranges
        var inferred: [String?] = []
        for column in attributes.map({ layout[$0] }) {
            guard layout.notNull[column] else { inferred.append(nil); continue }
            let type = layout.types[column]
            if type == "text" || type.hasPrefix("character") {
                inferred.append("Unknown")
            } else if ["smallint", "integer", "bigint", "real", "double precision"].contains(type) || type.hasPrefix("numeric") {
                inferred.append("0")
            } else if type == "boolean" {
                inferred.append("f")
            } else {
                throw MappingError("\(spec.table).\(layout.columns[column]) is NOT NULL of type \(type): an inferred member (a fact arriving before its dimension row) cannot fill it; make it nullable or text")
            }
        }
        inferredValues = inferred
        cEffective = layout["effective_date"]; cExpiration = layout["expiration_date"]; cIsCurrent = layout["is_current"]
        cValidFrom = layout["valid_from"]; cValidTo = layout["valid_to"]; cChangeType = layout["change_type"]
        cHash = layout["record_hash"]; cLSN = layout["source_lsn"]; cInferred = layout["is_inferred"]
    }

    // MARK: Loading

    /// Loads the current versions and the next surrogate key from the warehouse (not below
    /// `persisted`, the next key as of the checkpoint: see ``WarehouseSchema/nextKeys(_:schema:projection:)``).
    func load(_ connection: PGConnection, schema: String, persistedNextKey: Int64?) throws {
        let table = quoteIdentifier(schema) + "." + quoteIdentifier(spec.table)
        let key = quoteIdentifier(spec.surrogateKey)
        let result = try connection.execute("SELECT \(layout.columnList) FROM \(table) WHERE is_current AND \(key) >= 0")
        current = [:]
        for r in 0..<result.rowCount {
            let row = (0..<layout.columns.count).map { result.value(r, $0) }
            let version = Version(key: Int64(row[keyColumn]!)!, row: row, openedLSN: row[cLSN].flatMap { LSN($0)?.value } ?? 0, existed: true)
            current[Grain(row, businessKeyColumns)] = version
        }
        // A key without a current version has been deleted: its highest surrogate key is its DELETE row
        // (keys are assigned in log order).
        let businessKey = spec.businessKey.map(quoteIdentifier).joined(separator: ", ")
        let deleted = try connection.execute("""
            SELECT max(\(key)), \(businessKey) FROM \(table) WHERE \(key) >= 0 GROUP BY \(businessKey) HAVING NOT bool_or(is_current)
            """)
        lastDeleted = [:]
        for r in 0..<deleted.rowCount {
            guard let last = Int64(deleted.value(r, 0) ?? "") else { continue }
            lastDeleted[Grain((1...spec.businessKey.count).map { deleted.value(r, $0) })] = last
        }
        let max = try connection.execute("SELECT greatest(coalesce(max(\(key)), 0), 0) FROM \(table)")
        nextKey = Swift.max((Int64(max.value(0, 0) ?? "0") ?? 0) + 1, persistedNextKey ?? 0)
        touched = [:]
        removed = []
    }

    // MARK: Folding

    func apply(_ record: ChangeRecord, plan: SourcePlan, _ ctx: ChangeContext) {
        let before = record.before, after = record.after
        let keyRange = 0..<businessKeyColumns.count
        switch record.header.op {
        case .truncate:
            truncate(ctx)
        case .snapshot, .insert:
            if let after { upsert(after, oldKey: nil, plan: plan, changeType: "INSERT", ctx) }
        case .update:
            if let after { upsert(after, oldKey: before.map { plan.grain($0, keyRange) }, plan: plan, changeType: "UPDATE", ctx) }
        case .delete:
            if let before { delete(plan.grain(before, keyRange), ctx) }
        default:
            break
        }
    }

    func upsert(_ after: RowValues, oldKey: Grain?, plan: SourcePlan, changeType: String, _ ctx: ChangeContext) {
        let key = plan.grain(after, 0..<businessKeyColumns.count)
        guard !key.hasNull else { return }  // no business key: nothing to version
        if let oldKey, oldKey != key, !oldKey.hasNull, current[oldKey] != nil {
            delete(oldKey, ctx)
        }
        let existing = current[key]
        var row = existing?.row ?? [String?](repeating: nil, count: layout.columns.count)
        for (i, column) in businessKeyColumns.enumerated() { row[column] = key[i] }
        let first = businessKeyColumns.count
        for (i, column) in attributeColumns.enumerated() {
            if case .value(let v) = plan.incoming(after, first + i) { row[column] = v }
        }
        let lookupKeys = lookupSourceRanges.map { plan.grain(after, $0) }
        let hash = recordHash(row, lookupKeys)

        guard let existing else {
            open(row, lookupKeys: lookupKeys, hash: hash, changeType: changeType, ctx, cancellable: changeType == "INSERT")
            return
        }
        if existing.row[cInferred] == "t" {
            // The real row of an inferred member: complete it in place (facts already point at it).
            resolveLookups(&row, lookupKeys, ctx)
            row[cHash] = hash
            row[cLSN] = ctx.lsnText
            row[cInferred] = "f"
            existing.row = row
            existing.openedLSN = ctx.lsn
            touched[existing.key] = existing
        } else if existing.row[cHash] != hash {
            if existing.openedLSN == ctx.lsn {
                // Same source transaction: still one version.
                resolveLookups(&row, lookupKeys, ctx)
                row[cHash] = hash
                existing.row = row
                touched[existing.key] = existing
            } else {
                close(existing, ctx)
                open(row, lookupKeys: lookupKeys, hash: hash, changeType: "UPDATE", ctx, cancellable: false)
            }
        } else if attributeColumns[type2Count...].contains(where: { existing.row[$0] != row[$0] }) {
            existing.row = row  // type 1: in place, on the current version
            touched[existing.key] = existing
        }
    }

    /// Opens a new current version holding `row`'s values.
    func open(_ source: [String?], lookupKeys: [Grain], hash: String, changeType: String, _ ctx: ChangeContext, cancellable: Bool) {
        var row = source
        let key = nextKey
        nextKey += 1
        row[keyColumn] = String(key)
        resolveLookups(&row, lookupKeys, ctx)
        row[cValidFrom] = ctx.timestamp
        row[cEffective] = ctx.date
        row[cValidTo] = nil
        row[cExpiration] = nil
        row[cIsCurrent] = "t"
        row[cChangeType] = changeType
        row[cHash] = hash
        row[cLSN] = ctx.lsnText
        row[cInferred] = "f"
        let version = Version(key: key, row: row, openedLSN: ctx.lsn, existed: false)
        version.cancellable = cancellable
        current[Grain(row, businessKeyColumns)] = version
        touched[key] = version
    }

    func close(_ version: Version, _ ctx: ChangeContext) {
        version.row[cValidTo] = ctx.timestamp
        version.row[cExpiration] = ctx.date
        version.row[cIsCurrent] = "f"
        touched[version.key] = version
    }

    func resolveLookups(_ row: inout [String?], _ lookupKeys: [Grain], _ ctx: ChangeContext) {
        for (i, column) in lookupColumns.enumerated() {
            row[column] = lookupTargets[i].resolve(lookupKeys[i], ctx)
        }
    }

    /// Closes the current version of `key`; a DELETE row records the deletion.
    func delete(_ key: Grain, _ ctx: ChangeContext) {
        guard let version = current.removeValue(forKey: key) else { return }
        if version.openedLSN == ctx.lsn, version.cancellable {
            // Inserted and deleted by one transaction, and no fact used it: it never existed.
            touched[version.key] = nil
            if version.existed { removed.append(version.key) }
            return
        }
        if version.openedLSN == ctx.lsn, version.row[cChangeType] == "UPDATE" {
            // Updated then deleted by one transaction: the update's version becomes the deletion.
            version.row[cChangeType] = "DELETE"
            close(version, ctx)
            lastDeleted[key] = version.key
            return
        }
        close(version, ctx)
        var row = version.row
        let deletionKey = nextKey
        nextKey += 1
        row[keyColumn] = String(deletionKey)
        row[cValidFrom] = ctx.timestamp
        row[cEffective] = ctx.date
        row[cChangeType] = "DELETE"
        row[cLSN] = ctx.lsnText
        touched[deletionKey] = Version(key: deletionKey, row: row, openedLSN: ctx.lsn, existed: false)
        lastDeleted[key] = deletionKey
    }

    /// Truncate: every current version closed, each with its DELETE row, in surrogate-key order.
    func truncate(_ ctx: ChangeContext) {
        for (key, _) in current.sorted(by: { $0.value.key < $1.value.key }) { delete(key, ctx) }
    }

    /// The surrogate key of the version of `key` current now; -1 for a NULL key; for a key deleted at
    /// the source (and not inserted again), its last version, the DELETE row (Kimball: a fact of a
    /// retired member points at the member's last row; no current row comes back for it); an inferred
    /// member when the key was never seen.
    func resolve(_ key: Grain, _ ctx: ChangeContext) -> String {
        guard key.count > 0, !key.hasNull else { return "-1" }
        if let version = current[key] {
            version.cancellable = false
            return String(version.key)
        }
        if let last = lastDeleted[key] { return String(last) }
        var row = [String?](repeating: nil, count: layout.columns.count)
        let surrogate = nextKey
        nextKey += 1
        row[keyColumn] = String(surrogate)
        for (i, column) in businessKeyColumns.enumerated() { row[column] = key[i] }
        for (i, column) in attributeColumns.enumerated() { row[column] = inferredValues[i] }
        for column in lookupColumns { row[column] = "-1" }
        row[cValidFrom] = ctx.timestamp
        row[cEffective] = ctx.date
        row[cIsCurrent] = "t"
        row[cChangeType] = "INSERT"
        row[cLSN] = ctx.lsnText
        row[cInferred] = "t"
        let version = Version(key: surrogate, row: row, openedLSN: ctx.lsn, existed: false)
        current[key] = version
        touched[surrogate] = version
        return String(surrogate)
    }

    /// SHA-256 (hex) over the type-2 values and the lookups' business keys, each length-prefixed.
    func recordHash(_ row: [String?], _ lookupKeys: [Grain]) -> String {
        // The framed values in one buffer, hashed once (one update per value, and a String per hex
        // byte, were 3% of a replay's CPU).
        var input: [UInt8] = []
        input.reserveCapacity(256)
        func add(_ value: String?) {
            guard let value else { input.append(contentsOf: [0xFF, 0xFF, 0xFF, 0xFF]); return }
            let n = UInt32(value.utf8.count)
            input.append(contentsOf: [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)])
            input.append(contentsOf: value.utf8)
        }
        for column in attributeColumns[..<type2Count] { add(row[column]) }
        for key in lookupKeys { for i in 0..<key.count { add(key[i]) } }
        var hex: [UInt8] = []
        hex.reserveCapacity(64)
        for byte in SHA256.hash(data: input) {
            hex.append(Self.hexDigits[Int(byte >> 4)])
            hex.append(Self.hexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: hex, as: UTF8.self)
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    /// What a batch writes to the dimension: rows already in the warehouse, new rows, rows to remove.
    struct Writes {
        var updates: [[String?]]
        var inserts: [[String?]]
        var removed: [Int64]
    }

    /// The batch's versions; resets the batch (its versions count as written from now on).
    func drain() -> Writes {
        var writes = Writes(updates: [], inserts: [], removed: removed)
        for version in touched.values {
            if version.existed { writes.updates.append(version.row) } else { writes.inserts.append(version.row) }
            version.existed = true
        }
        touched = [:]
        removed = []
        return writes
    }
}

extension String {
    func leftPad(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
