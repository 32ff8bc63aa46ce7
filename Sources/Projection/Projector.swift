import EventLog
import Foundation
import Logging
import PGClient

/// Folds the event log into a warehouse schema, exactly once, in micro-batches.
///
/// Each batch is a run of whole source transactions read from the log after the checkpoint. It is
/// folded in log order in memory (SCD2 versions, fact rows, lookups as of each change's commit), then
/// written in one warehouse transaction: per table a DELETE, an UPDATE from a COPY-filled staging
/// table and a COPY of the new rows, and the checkpoint (the last applied log record) last. A crash
/// anywhere leaves the warehouse at the previous checkpoint, and the batch is folded again from there.
///
/// Surrogate keys are assigned in log order (1, 2, 3, ... per table), so a replay of the same log
/// builds the same warehouse, key for key, whatever its batch boundaries.
///
/// Blocking: libpq and LMDB calls. Use it from a thread you own, one thread at a time.
public final class Projector {
    /// Where a replay stops: after the last transaction committed at or before it.
    public enum Bound: Sendable {
        case lsn(LSN)
        /// µs since 1970, UTC.
        case time(Int64)
    }

    /// What one ``step(maxRecords:until:)`` did.
    public struct Step: Sendable {
        /// Log records consumed (applied or skipped as unmapped).
        public var records: Int
        /// Row changes folded into warehouse tables.
        public var changes: Int
        /// True when the next record is past the bound.
        public var reachedBound: Bool
    }

    public let mapping: ProjectionMapping
    public let target: WarehouseTarget
    let log: EventLog
    let logger: Logger
    let logSource: String
    let connection: PGConnection
    var dimensions: [DimensionProjector] = []
    var facts: [FactProjector] = []
    /// What each source table feeds, by `schema.table`.
    var handlers: [String: [Handler]] = [:]
    var relations: [UInt64: RelationDefinition] = [:]
    var contexts: (lsn: UInt64, context: ChangeContext)?
    var stagingCreated: Set<String> = []
    /// The last log record applied to the warehouse.
    public private(set) var position: UInt64 = 0

    enum Handler {
        case dimension(DimensionProjector)
        case fact(FactProjector)
        case milestone(FactProjector, Int)
    }

    /// Connects to the warehouse, checks its checkpoint against the mapping and the log, and loads the
    /// dimensions' current versions. The schema must exist (`cdc init` or ``WarehouseSchema/prepare``).
    public init(mapping: ProjectionMapping, target: WarehouseTarget, log: EventLog, logger: Logger) throws {
        self.mapping = mapping
        self.target = target
        self.log = log
        self.logger = logger
        guard let identity = try log.sourceIdentity() else {
            throw WarehouseError("the log at \(log.path) is not initialised: run `cdc init`")
        }
        logSource = WarehouseSchema.logSource(identity)
        connection = try target.connect()
        try load()
    }

    /// (Re)reads the checkpoint and every dimension's current versions.
    func load() throws {
        let schema = target.schema
        guard let checkpoint = try WarehouseSchema.checkpoint(connection, schema: schema, projection: mapping.name) else {
            throw WarehouseError("warehouse schema \(schema) has no cdc checkpoint: run `cdc init` to create the warehouse")
        }
        try WarehouseSchema.check(checkpoint, schema: schema, mapping: mapping, logSource: logSource)
        let catalog = try WarehouseSchema.catalog(connection, schema: schema)
        try mapping.check(warehouseColumns: catalog.mapValues { Set($0.keys) }, schema: schema)
        dimensions = try mapping.dimensions.map { try DimensionProjector(spec: $0, catalog: catalog[$0.table]!) }
        facts = try mapping.facts.map { try FactProjector(spec: $0, catalog: catalog[$0.table]!) }
        let dimensionByName = Dictionary(uniqueKeysWithValues: dimensions.map { ($0.spec.table, $0) })
        let factByName = Dictionary(uniqueKeysWithValues: facts.map { ($0.spec.table, $0) })
        for d in dimensions {
            d.lookupTargets = try d.spec.lookups.map { lookup in
                guard case .dimension(let name) = lookup.target, let target = dimensionByName[name] else {
                    throw MappingError("mapping \(mapping.path): dimensions.\(d.spec.table).lookups.\(lookup.column) must name a dimension")
                }
                return target
            }
        }
        for f in facts {
            f.lookupTargets = try f.spec.lookups.map { lookup in
                switch lookup.target {
                case .dimension(let name): return .dimension(dimensionByName[name]!)
                case .fact(let name):
                    guard let target = factByName[name], target.spec.surrogateKey != nil else {
                        throw MappingError("mapping \(mapping.path): facts.\(f.spec.table).lookups.\(lookup.column) names fact \(name), which has no surrogate_key")
                    }
                    return .fact(target)
                }
            }
            if let parent = f.spec.deletedWith, let p = factByName[parent] {
                guard let lookup = f.spec.lookups.first(where: { $0.target == .fact(parent) }) else {
                    throw MappingError("mapping \(mapping.path): facts.\(f.spec.table).deleted_with = \(parent) needs a lookup of that fact")
                }
                p.children.append((f, f.layout[lookup.column]))
            }
        }
        handlers = [:]
        for d in dimensions { handlers[d.spec.source, default: []].append(.dimension(d)) }
        for f in facts {
            handlers[f.spec.source, default: []].append(.fact(f))
            for (i, m) in f.milestones.enumerated() { handlers[m.spec.source, default: []].append(.milestone(f, i)) }
        }
        for d in dimensions { try d.load(connection, schema: schema) }
        for f in facts { try f.loadNextKey(connection, schema: schema) }
        position = checkpoint.lastSeq
        contexts = nil
    }

    // MARK: Batches

    /// Applies the next batch: whole transactions after the checkpoint, about `maxRecords` records
    /// (a bigger transaction is split at 4 × `maxRecords`), none past `until`. Returns 0 records when
    /// the log has nothing new (or the bound is reached).
    public func step(maxRecords: Int = 20_000, until: Bound? = nil) throws -> Step {
        var batch: [(UInt64, Record)] = []
        var reachedBound = false
        try log.visitRecords(from: position + 1, to: nil, batch: min(maxRecords, 5_000)) { seq, bytes in
            let record = try bytes.withUnsafeBytes { try RecordCodec.decode($0) }
            if let until, record.header.op != .message, Self.beyond(record.header, until) {
                reachedBound = true
                return false
            }
            batch.append((seq, record))
            let endOfTransaction = record.header.flags.contains(.endOfTransaction)
            return !(batch.count >= maxRecords && endOfTransaction) && batch.count < 4 * maxRecords
        }
        guard let last = batch.last else { return Step(records: 0, changes: 0, reachedBound: reachedBound) }
        let changes = try apply(batch)
        position = last.0
        return Step(records: batch.count, changes: changes, reachedBound: reachedBound)
    }

    static func beyond(_ header: RecordHeader, _ bound: Bound) -> Bool {
        switch bound {
        case .lsn(let lsn): return header.lsn > lsn
        case .time(let micros): return (header.commitTime ?? Int64.min) > micros
        }
    }

    /// Folds `batch` and writes it with the checkpoint in one warehouse transaction.
    func apply(_ batch: [(UInt64, Record)]) throws -> Int {
        try connection.execute("BEGIN")
        do {
            let schema = quoteIdentifier(target.schema)
            let locked = try connection.query("SELECT last_seq FROM \(schema).cdc_checkpoint WHERE projection = $1 FOR UPDATE", [mapping.name])
            guard locked.rowCount == 1, UInt64(locked.value(0, 0) ?? "") == position else {
                throw WarehouseError("the checkpoint of warehouse schema \(target.schema) moved under the projector (expected log record \(position), found \(locked.rowCount == 1 ? locked.value(0, 0) ?? "NULL" : "no row")): another projector writes it, or the schema was swapped", transient: true)
            }
            // Rows the batch updates, deletes or looks up, fetched once.
            var needed: [ObjectIdentifier: Set<[String?]>] = [:]
            var definitions: [(Record, RelationDefinition)?] = []
            definitions.reserveCapacity(batch.count)
            for (seq, record) in batch {
                if case .relation(let definition) = record.body { relations[seq] = definition }
                guard record.header.relationSeq != 0, record.header.op != .relation, record.header.op != .message,
                      let definition = try relation(record.header.relationSeq) else { definitions.append(nil); continue }
                definitions.append((record, definition))
                for handler in handlers[definition.qualifiedName] ?? [] {
                    switch handler {
                    case .fact(let f):
                        let plan = f.plan(record.header.relationSeq, definition)
                        if record.header.op == .update || record.header.op == .delete {
                            needed[ObjectIdentifier(f), default: []].formUnion(f.grains(of: record, plan: plan))
                        }
                        guard case .row(_, _, let after?) = record.body else { break }
                        for (i, target) in f.lookupTargets.enumerated() {
                            if case .fact(let parent) = target {
                                needed[ObjectIdentifier(parent), default: []].insert(plan.values(after, f.lookupRanges[i]))
                            }
                        }
                    case .milestone(let f, let i):
                        let plan = f.milestonePlan(i, record.header.relationSeq, definition)
                        needed[ObjectIdentifier(f), default: []].formUnion(f.milestoneGrains(record, plan: plan))
                    case .dimension:
                        break
                    }
                }
            }
            for f in facts {
                if let grains = needed[ObjectIdentifier(f)] { try f.prefetch(grains, connection: connection, schema: target.schema) }
            }
            var changes = 0
            for item in definitions {
                guard let (record, definition) = item, let feeds = handlers[definition.qualifiedName] else { continue }
                let ctx = context(record.header)
                changes += 1
                for handler in feeds {
                    switch handler {
                    case .dimension(let d): d.apply(record, plan: d.plan(record.header.relationSeq, definition), ctx)
                    case .fact(let f): f.apply(record, plan: f.plan(record.header.relationSeq, definition), ctx, clock: target.clock)
                    case .milestone(let f, let i): f.applyMilestone(i, record, plan: f.milestonePlan(i, record.header.relationSeq, definition), ctx)
                    }
                }
            }
            for d in dimensions { try write(d) }
            for f in facts { try write(f) }
            let (lastSeq, lastRecord) = batch.last!
            try connection.query("UPDATE \(schema).cdc_checkpoint SET last_seq = $2, last_lsn = $3, last_commit_time = $4 WHERE projection = $1",
                                 [mapping.name, String(lastSeq), lastRecord.header.lsn.description,
                                  lastRecord.header.commitTime.map(WarehouseClock.timestamptz(micros:))])
            try connection.execute("COMMIT")
            return changes
        } catch {
            _ = try? connection.execute("ROLLBACK")
            // The in-memory state may hold part of the batch: start again from the warehouse.
            try? load()
            throw error
        }
    }

    func relation(_ seq: UInt64) throws -> RelationDefinition? {
        if let definition = relations[seq] { return definition }
        guard let record = try log.record(seq), case .relation(let definition) = record.body else { return nil }
        relations[seq] = definition
        return definition
    }

    func context(_ header: RecordHeader) -> ChangeContext {
        if let contexts, contexts.lsn == header.lsn.value { return contexts.context }
        let micros = header.commitTime ?? 0
        let ctx = ChangeContext(lsn: header.lsn.value, lsnText: header.lsn.description,
                                timestamp: WarehouseClock.timestamptz(micros: micros), date: target.clock.date(micros: micros))
        contexts = (header.lsn.value, ctx)
        return ctx
    }

    // MARK: Writing

    func qualified(_ table: String) -> String { quoteIdentifier(target.schema) + "." + quoteIdentifier(table) }

    func write(_ d: DimensionProjector) throws {
        let (updates, inserts, removed) = d.drain()
        let table = qualified(d.spec.table)
        if !removed.isEmpty {
            try connection.query("DELETE FROM \(table) WHERE \(quoteIdentifier(d.spec.surrogateKey)) = ANY($1::bigint[])", [arrayLiteral(removed.map { String($0) })])
        }
        try update(d.layout, updates.map { ([$0[d.keyColumn]], $0) })
        try copy(inserts, into: table, layout: d.layout)
    }

    func write(_ f: FactProjector) throws {
        let batch = f.drain()
        let table = qualified(f.spec.table)
        if batch.truncated { try connection.execute("DELETE FROM \(table)") }
        for (columns, ctx) in batch.cleared {
            let sets = columns.map { "\(quoteIdentifier(f.layout.columns[$0])) = NULL" } + ["updated_at = $1::timestamptz", "source_lsn = $2::pg_lsn"]
            let any = columns.map { "\(quoteIdentifier(f.layout.columns[$0])) IS NOT NULL" }.joined(separator: " OR ")
            try connection.query("UPDATE \(table) SET \(sets.joined(separator: ", ")) WHERE \(any)", [ctx.timestamp, ctx.lsnText])
        }
        if !batch.deleted.isEmpty {
            try connection.query("DELETE FROM \(table) WHERE \(identityMatch(f.layout, prefix: "")) ", identityArrays(f.layout, batch.deleted))
        }
        if !batch.cascade.isEmpty, let parent = f.spec.deletedWith,
           let lookup = f.spec.lookups.first(where: { $0.target == .fact(parent) }) {
            try connection.query("DELETE FROM \(table) WHERE \(quoteIdentifier(lookup.column)) = ANY($1::bigint[])", [arrayLiteral(batch.cascade)])
        }
        try update(f.layout, batch.updates.map { ($0.identity, $0.row) })
        try copy(batch.inserts, into: table, layout: f.layout)
    }

    /// `(identity columns) IN (SELECT * FROM unnest($1::t1[], ...))`.
    func identityMatch(_ layout: TableLayout, prefix: String) -> String {
        let columns = layout.identity.map { prefix + quoteIdentifier(layout.columns[$0]) }.joined(separator: ", ")
        let arrays = layout.identity.enumerated().map { "$\($0.offset + 1)::\(layout.types[$0.element])[]" }.joined(separator: ", ")
        return "(\(columns)) IN (SELECT * FROM unnest(\(arrays)))"
    }

    func identityArrays(_ layout: TableLayout, _ identities: [[String?]]) -> [String?] {
        layout.identity.indices.map { i in arrayLiteral(identities.map { $0[i] }) }
    }

    /// Rewrites existing rows: COPY into a session staging table, then one UPDATE ... FROM it.
    func update(_ layout: TableLayout, _ rows: [(identity: [String?], row: [String?])]) throws {
        guard !rows.isEmpty else { return }
        let table = qualified(layout.table)
        let stage = quoteIdentifier("cdc_stage_" + layout.table)
        if !stagingCreated.contains(layout.table) {
            let ids = layout.identity.enumerated().map { "\(quoteIdentifier(layout.columns[$0.element])) AS cdc_id_\($0.offset)" }
            try connection.execute("CREATE TEMP TABLE IF NOT EXISTS \(stage) ON COMMIT DELETE ROWS AS SELECT \((ids + layout.columns.map(quoteIdentifier)).joined(separator: ", ")) FROM \(table) WITH NO DATA")
            stagingCreated.insert(layout.table)
        }
        try copy(rows.map { $0.identity + $0.row }, into: "pg_temp." + stage, columns: layout.identity.indices.map { "cdc_id_\($0)" }.joined(separator: ", ") + ", " + layout.columnList)
        let sets = layout.columns.map { "\(quoteIdentifier($0)) = s.\(quoteIdentifier($0))" }.joined(separator: ", ")
        let match = layout.identity.enumerated().map { "t.\(quoteIdentifier(layout.columns[$0.element])) = s.cdc_id_\($0.offset)" }.joined(separator: " AND ")
        try connection.execute("UPDATE \(table) AS t SET \(sets) FROM pg_temp.\(stage) AS s WHERE \(match)")
    }

    func copy(_ rows: [[String?]], into table: String, layout: TableLayout) throws {
        try copy(rows, into: table, columns: layout.columnList)
    }

    func copy(_ rows: [[String?]], into table: String, columns: String) throws {
        guard !rows.isEmpty else { return }
        var next = 0
        try connection.copyIn("COPY \(table) (\(columns)) FROM STDIN") {
            guard next < rows.count else { return nil }
            var chunk: [UInt8] = []
            chunk.reserveCapacity(256 * 1024)
            while next < rows.count, chunk.count < 256 * 1024 {
                TableLayout.appendCopyLine(rows[next], to: &chunk)
                next += 1
            }
            return chunk
        }
    }
}
