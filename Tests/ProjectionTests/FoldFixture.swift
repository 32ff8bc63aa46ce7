import EventLog
@testable import Projection
import Testing

/// A small mapping folded in memory, without a warehouse: two SCD2 dimensions (facilities, and robots
/// looking their facility up) and a fact looking both up. Each batch's writes are applied to in-memory
/// tables keyed like the warehouse's (surrogate key), as Projector.write applies them with SQL.
final class FoldFixture {
    static let mapping = """
        name = "unit"
        schema_version = 1
        ddl = []

        [dimensions.dim_facilities]
        source = "public.facilities"
        surrogate_key = "facility_key"
        business_key = ["facility_id"]
        type2 = ["name", "city"]
        type1 = ["beds"]

        [dimensions.dim_robots]
        source = "public.robots"
        surrogate_key = "robot_key"
        business_key = ["robot_id"]
        type2 = ["model"]
        lookups = { facility_key = { dimension = "dim_facilities", source_columns = ["facility_id"] } }

        [facts.fact_uses]
        source = "public.uses"
        surrogate_key = "use_key"
        grain = ["use_id"]
        columns = ["note"]
        lookups = { robot_key = { dimension = "dim_robots", source_columns = ["robot_id"] }, facility_key = { dimension = "dim_facilities", source_columns = ["facility_id"] } }
        """

    /// Warehouse column types (as format_type prints them) and NOT NULL, by column name.
    static let types: [String: WarehouseColumn] = [
        "facility_key": .init(type: "bigint", notNull: true), "robot_key": .init(type: "bigint", notNull: true),
        "use_key": .init(type: "bigint", notNull: true),
        "facility_id": .init(type: "text", notNull: false), "robot_id": .init(type: "text", notNull: false),
        "use_id": .init(type: "text", notNull: true),
        "name": .init(type: "text", notNull: true), "city": .init(type: "text", notNull: false),
        "beds": .init(type: "integer", notNull: true), "model": .init(type: "text", notNull: true),
        "note": .init(type: "text", notNull: false),
        "effective_date": .init(type: "date", notNull: true), "expiration_date": .init(type: "date", notNull: false),
        "is_current": .init(type: "boolean", notNull: true), "valid_from": .init(type: "timestamp with time zone", notNull: true),
        "valid_to": .init(type: "timestamp with time zone", notNull: false), "change_type": .init(type: "text", notNull: true),
        "record_hash": .init(type: "text", notNull: false), "source_lsn": .init(type: "pg_lsn", notNull: false),
        "is_inferred": .init(type: "boolean", notNull: true),
        "created_at": .init(type: "timestamp with time zone", notNull: false),
        "updated_at": .init(type: "timestamp with time zone", notNull: false),
    ]

    /// The source tables, as relation records of the log (seq 1, 2, 3).
    static let relations: [String: (seq: UInt64, definition: RelationDefinition)] = [
        "facilities": (1, relation(16_401, "facilities", ["facility_id", "name", "city", "beds"])),
        "robots": (2, relation(16_402, "robots", ["robot_id", "model", "facility_id"])),
        "uses": (3, relation(16_403, "uses", ["use_id", "robot_id", "facility_id", "note"])),
    ]

    static func relation(_ oid: UInt32, _ name: String, _ columns: [String]) -> RelationDefinition {
        RelationDefinition(oid: oid, namespace: "public", name: name, replicaIdentity: UInt8(ascii: "d"),
                           columns: columns.enumerated().map { i, c in
                               .init(name: c, typeOID: 25, typeModifier: -1, isKey: i == 0, typeName: "text")
                           })
    }

    /// Source transaction `n`: commit LSN 0/n000, committed at 2026-11-2n 10:00 UTC (n in 1...9).
    static func transaction(_ n: Int) -> ChangeContext {
        ChangeContext(lsn: UInt64(n) << 12, lsnText: "0/\(n)000", timestamp: "2026-11-2\(n)T10:00:00.000000Z", date: "2026-11-2\(n)")
    }

    let facilities: DimensionTable
    let robots: DimensionTable
    let uses: FactTable
    let clock = WarehouseClock(timeZone: "UTC")!

    init() throws {
        let mapping = try ProjectionMapping.parse(Self.mapping, path: "/unit/mapping.toml")
        func catalog(_ columns: Set<String>) -> [String: WarehouseColumn] {
            Dictionary(uniqueKeysWithValues: columns.map { ($0, Self.types[$0]!) })
        }
        let warehouse = mapping.warehouseColumns
        let dimensions = try mapping.dimensions.map { try DimensionProjector(spec: $0, catalog: catalog(warehouse[$0.table]!)) }
        let facility = dimensions.first { $0.spec.table == "dim_facilities" }!
        let robot = dimensions.first { $0.spec.table == "dim_robots" }!
        robot.lookupTargets = [facility]
        let fact = try FactProjector(spec: mapping.facts[0], catalog: catalog(warehouse["fact_uses"]!))
        #expect(fact.spec.lookups.map(\.column) == ["facility_key", "robot_key"])
        fact.lookupTargets = [.dimension(facility), .dimension(robot)]
        facilities = DimensionTable(facility)
        robots = DimensionTable(robot)
        uses = FactTable(fact)
    }

    // MARK: Changes

    static func incoming(_ values: [String?]) -> [Incoming] { values.map { .value($0) } }

    func record(_ table: String, _ op: Operation, before: [Incoming]?, after: [Incoming]?, _ ctx: ChangeContext) -> (ChangeRecord, SourcePlan?, SourcePlan?) {
        let (seq, definition) = Self.relations[table]!
        let header = RecordHeader(op: op, lsn: LSN(ctx.lsn), xid: UInt32(ctx.lsn >> 12), commitTime: nil, relationSeq: seq)
        let record = ChangeRecord(header: header, before: before, after: after)
        switch table {
        case "facilities": return (record, facilities.projector.source.plan(seq, definition), nil)
        case "robots": return (record, robots.projector.source.plan(seq, definition), nil)
        default: return (record, nil, uses.projector.source.plan(seq, definition))
        }
    }

    func apply(_ table: String, _ op: Operation, before: [Incoming]? = nil, after: [Incoming]? = nil, _ ctx: ChangeContext) {
        let (record, dimensionPlan, factPlan) = record(table, op, before: before, after: after, ctx)
        switch table {
        case "facilities": facilities.projector.apply(record, plan: dimensionPlan!, ctx)
        case "robots": robots.projector.apply(record, plan: dimensionPlan!, ctx)
        default: uses.projector.apply(record, plan: factPlan!, ctx, clock: clock)
        }
    }

    func insert(_ table: String, _ values: [String?], _ ctx: ChangeContext) {
        apply(table, .insert, after: Self.incoming(values), ctx)
    }

    /// An update under REPLICA IDENTITY DEFAULT: old key values only when the key changed.
    func update(_ table: String, _ values: [Incoming], oldKey: String? = nil, _ ctx: ChangeContext) {
        let width = Self.relations[table]!.definition.columns.count
        let before = oldKey.map { [Incoming.value($0)] + [Incoming](repeating: .value(nil), count: width - 1) }
        apply(table, .update, before: before, after: values, ctx)
    }

    func update(_ table: String, _ values: [String?], oldKey: String? = nil, _ ctx: ChangeContext) {
        update(table, Self.incoming(values), oldKey: oldKey, ctx)
    }

    func delete(_ table: String, key: String, _ ctx: ChangeContext) {
        let width = Self.relations[table]!.definition.columns.count
        apply(table, .delete, before: [.value(key)] + [Incoming](repeating: .value(nil), count: width - 1), ctx)
    }

    func truncate(_ table: String, _ ctx: ChangeContext) { apply(table, .truncate, ctx) }

    /// Ends a batch: every table takes the batch's writes.
    func commit() {
        facilities.commit()
        robots.commit()
        uses.commit()
    }
}

/// One warehouse row, by column name.
struct WarehouseRow: CustomStringConvertible {
    let layout: TableLayout
    let values: [String?]
    subscript(_ column: String) -> String? { values[layout[column]] }
    var description: String { zip(layout.columns, values).map { "\($0)=\($1 ?? "NULL")" }.joined(separator: " ") }
}

/// A dimension table as the batches' writes leave it.
final class DimensionTable {
    let projector: DimensionProjector
    private(set) var rows: [Int64: [String?]] = [:]
    /// Rows written by UPDATE (they had to exist) and by INSERT (they must not), over all batches.
    private(set) var updated: [Int64] = [], inserted: [Int64] = []

    init(_ projector: DimensionProjector) { self.projector = projector }

    func commit() {
        let writes = projector.drain()
        for key in writes.removed {
            #expect(rows[key] != nil, "removes a row that is not there")
            rows[key] = nil
        }
        for row in writes.updates {
            let key = Int64(row[projector.keyColumn]!)!
            #expect(rows[key] != nil, "UPDATE of missing row \(key)")
            rows[key] = row
            updated.append(key)
        }
        for row in writes.inserts {
            let key = Int64(row[projector.keyColumn]!)!
            #expect(rows[key] == nil, "INSERT of existing row \(key)")
            rows[key] = row
            inserted.append(key)
        }
    }

    /// Every row of one business key, by surrogate key.
    func versions(_ businessKey: String) -> [WarehouseRow] {
        rows.keys.sorted().compactMap { key in
            let row = WarehouseRow(layout: projector.layout, values: rows[key]!)
            return row[projector.spec.businessKey[0]] == businessKey ? row : nil
        }
    }

    /// The current row of one business key (is_current), failing when there is not exactly one.
    func current(_ businessKey: String) -> WarehouseRow? {
        let current = versions(businessKey).filter { $0["is_current"] == "t" }
        #expect(current.count <= 1, "\(current.count) current versions of \(businessKey)")
        return current.first
    }
}

/// A fact table as the batches' writes leave it.
final class FactTable {
    let projector: FactProjector
    private(set) var rows: [[String?]: [String?]] = [:]

    init(_ projector: FactProjector) { self.projector = projector }

    func commit() {
        let writes = projector.drain()
        if writes.truncated { rows = [:] }
        for identity in writes.deleted { rows[identity] = nil }
        for (_, fact) in writes.rows {
            let identity = projector.layout.identity.map { fact.row[$0] }
            rows[identity] = fact.row.values
        }
    }

    func row(_ grain: String) -> WarehouseRow? {
        let matching = rows.values.map { WarehouseRow(layout: projector.layout, values: $0) }.filter { $0["use_id"] == grain }
        #expect(matching.count <= 1, "\(matching.count) rows of \(grain)")
        return matching.first
    }
}
