import EventLog
import Foundation
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
        /// Warehouse rows written (inserted, updated or deleted), by table.
        public var rows: [String: Int] = [:]
    }

    public let mapping: ProjectionMapping
    public let target: WarehouseTarget
    let log: EventLog
    let logSource: String
    let connection: PGConnection
    var dimensions: [DimensionProjector] = []
    var facts: [FactProjector] = []
    /// What each source table feeds, by `schema.table`.
    var handlers: [String: [Handler]] = [:]
    var relations: [UInt64: RelationDefinition] = [:]
    var handlersByRelation: [UInt64: [Handler]] = [:]
    var contexts: (lsn: UInt64, context: ChangeContext)?
    var stagingCreated: Set<String> = []
    /// The last log record applied to the warehouse.
    public private(set) var position: UInt64 = 0
    /// The warehouse tables the mapping writes.
    public var tables: [String] { mapping.dimensions.map(\.table) + mapping.facts.map(\.table) }

    enum Handler {
        case dimension(DimensionProjector)
        case fact(FactProjector)
        case milestone(FactProjector, Int)
    }

    /// Connects to the warehouse, checks its checkpoint against the mapping and the log, and loads the
    /// dimensions' current versions. The schema must exist (`cdc init` or ``WarehouseSchema/prepare``).
    public init(mapping: ProjectionMapping, target: WarehouseTarget, log: EventLog) throws {
        self.mapping = mapping
        self.target = target
        self.log = log
        guard let identity = try log.sourceIdentity() else {
            throw WarehouseError(.logNotInitialised, "the log at \(log.path) is not initialised: run `cdc init`")
        }
        logSource = WarehouseSchema.logSource(identity)
        connection = try target.connect()
        try load()
    }

    /// (Re)reads the checkpoint and every dimension's current versions.
    func load() throws {
        let schema = target.schema
        guard let checkpoint = try WarehouseSchema.checkpoint(connection, schema: schema, projection: mapping.name) else {
            throw WarehouseError(.checkpointMissing, "warehouse schema \(schema) has no cdc checkpoint: run `cdc init` to create the warehouse")
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
                f.parentColumn = f.layout[lookup.column]
            }
        }
        handlers = [:]
        handlersByRelation = [:]
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

    /// A folded batch, ready to be written: every table's writes and the checkpoint after it.
    struct Pending {
        var dimensions: [(DimensionProjector, DimensionProjector.Writes)] = []
        var facts: [(FactProjector, FactProjector.Writes)] = []
        var lastSeq: UInt64 = 0
        var lastHeader: RecordHeader?
        var records = 0
        var changes = 0
        /// The position the warehouse must be at for these writes to apply.
        var after: UInt64 = 0
        /// Warehouse rows the batch writes, by table.
        var rowCounts: [String: Int] {
            var counts: [String: Int] = [:]
            for (d, w) in dimensions { counts[d.spec.table, default: 0] += w.updates.count + w.inserts.count + w.removed.count }
            for (f, w) in facts { counts[f.spec.table, default: 0] += w.deleted.count + w.rows.count }
            return counts
        }
        /// Truncates or milestone clears: the next batch cannot be folded before this one commits.
        var blocksPipeline: Bool { facts.contains { $0.1.truncated || !$0.1.cleared.isEmpty } }
    }

    /// Applies the next batch: whole transactions after the checkpoint, about `maxRecords` records
    /// (a bigger transaction is split at 4 × `maxRecords`), none past `until`. Returns 0 records when
    /// the log has nothing new (or the bound is reached).
    public func step(maxRecords: Int = 20_000, until: Bound? = nil) throws -> Step {
        let (batch, reachedBound) = try read(maxRecords: maxRecords, until: until)
        guard !batch.isEmpty else { return Step(records: 0, changes: 0, reachedBound: reachedBound) }
        do {
            let pending = try fold(batch, reader: connection, overlays: [:])
            try write(pending)
            return Step(records: pending.records, changes: pending.changes, reachedBound: reachedBound, rows: pending.rowCounts)
        } catch {
            recover()
            throw error
        }
    }

    /// Applies the log up to its head (or `until`), folding each batch while the warehouse writes the
    /// previous one (a second connection reads the warehouse for the fold). For bulk replays.
    /// `progress` is called with the position after each batch commits.
    public func run(maxRecords: Int = 50_000, until: Bound? = nil, progress: (UInt64) -> Void = { _ in }) throws -> (records: Int, changes: Int) {
        let reader = try target.connect()
        let writer = BatchWriter()
        var records = 0, changes = 0
        var inFlight: Pending?
        defer { writer.finish() }
        do {
            while true {
                let (batch, _) = try read(maxRecords: maxRecords, until: until)
                if batch.isEmpty { break }
                if inFlight?.blocksPipeline == true {
                    try writer.wait()
                    inFlight = nil
                }
                var overlays: [ObjectIdentifier: FactProjector.Overlay] = [:]
                if let inFlight {
                    for (f, writes) in inFlight.facts {
                        overlays[ObjectIdentifier(f)] = FactProjector.Overlay(writes)
                    }
                }
                // The batch before the one in flight is committed once the writer is idle.
                let pending = try fold(batch, reader: reader, overlays: overlays)
                try writer.wait()
                if let inFlight { progress(inFlight.lastSeq) }
                records += pending.records
                changes += pending.changes
                inFlight = pending
                writer.submit { try self.write(pending) }
            }
            try writer.wait()
            if let inFlight { progress(inFlight.lastSeq) }
        } catch {
            try? writer.wait()
            recover()
            throw error
        }
        return (records, changes)
    }

    /// Reads the next batch from the log, decoding each record inside short read transactions.
    func read(maxRecords: Int, until: Bound?) throws -> ([(UInt64, ChangeRecord)], Bool) {
        var batch: [(UInt64, ChangeRecord)] = []
        var reachedBound = false
        try log.scan(from: position + 1, to: nil, batch: min(maxRecords, 5_000)) { seq, bytes in
            let record = try ChangeRecord.decode(bytes)
            if let until, record.header.op != .message, Self.beyond(record.header, until) {
                reachedBound = true
                return false
            }
            batch.append((seq, record))
            let endOfTransaction = record.header.flags.contains(.endOfTransaction)
            return !(batch.count >= maxRecords && endOfTransaction) && batch.count < 4 * maxRecords
        }
        return (batch, reachedBound)
    }

    static func beyond(_ header: RecordHeader, _ bound: Bound) -> Bool {
        switch bound {
        case .lsn(let lsn): return header.lsn > lsn
        case .time(let micros): return (header.commitTime ?? Int64.min) > micros
        }
    }

    /// After a failure the in-memory state may be ahead of the warehouse: reload it from there.
    func recover() {
        _ = try? connection.execute("ROLLBACK")
        try? load()
    }

    /// Folds `batch` in log order. Fact rows it needs are read through `reader`, or taken from the
    /// `overlays` of the batch in flight. Advances `position`.
    func fold(_ batch: [(UInt64, ChangeRecord)], reader: PGConnection, overlays: [ObjectIdentifier: FactProjector.Overlay]) throws -> Pending {
        var pending = Pending()
        pending.after = position
        // Rows the batch updates, deletes or looks up, fetched once.
        var needed: [ObjectIdentifier: Set<[String?]>] = [:]
        var definitions: [(ChangeRecord, RelationDefinition, [Handler])?] = []
        definitions.reserveCapacity(batch.count)
        for (seq, record) in batch {
            if let definition = record.relation { relations[seq] = definition }
            guard record.header.relationSeq != 0, record.header.op != .relation, record.header.op != .message,
                  let definition = try relation(record.header.relationSeq) else { definitions.append(nil); continue }
            let feeds = feeding(record.header.relationSeq, definition)
            guard !feeds.isEmpty else { definitions.append(nil); continue }
            definitions.append((record, definition, feeds))
            for handler in feeds {
                switch handler {
                case .fact(let f):
                    let plan = f.source.plan(record.header.relationSeq, definition)
                    if record.header.op == .update || record.header.op == .delete {
                        needed[ObjectIdentifier(f), default: []].formUnion(f.grains(of: record, plan: plan))
                    }
                    guard let after = record.after else { break }
                    for (i, target) in f.lookupTargets.enumerated() {
                        if case .fact(let parent) = target {
                            needed[ObjectIdentifier(parent), default: []].insert(plan.values(after, f.lookupRanges[i]))
                        }
                    }
                case .milestone(let f, let i):
                    let plan = f.milestones[i].source.plan(record.header.relationSeq, definition)
                    needed[ObjectIdentifier(f), default: []].formUnion(f.grains(of: record, plan: plan))
                case .dimension:
                    break
                }
            }
        }
        for f in facts {
            if let grains = needed[ObjectIdentifier(f)] {
                try f.prefetch(grains, connection: reader, schema: target.schema, overlay: overlays[ObjectIdentifier(f)])
            }
        }
        for item in definitions {
            guard let (record, definition, feeds) = item else { continue }
            let ctx = context(record.header)
            pending.changes += 1
            for handler in feeds {
                switch handler {
                case .dimension(let d): d.apply(record, plan: d.source.plan(record.header.relationSeq, definition), ctx)
                case .fact(let f): f.apply(record, plan: f.source.plan(record.header.relationSeq, definition), ctx, clock: target.clock)
                case .milestone(let f, let i): f.applyMilestone(i, record, plan: f.milestones[i].source.plan(record.header.relationSeq, definition), ctx)
                }
            }
        }
        pending.dimensions = dimensions.map { ($0, $0.drain()) }
        pending.facts = facts.map { ($0, $0.drain()) }
        pending.lastSeq = batch.last!.0
        pending.lastHeader = batch.last!.1.header
        pending.records = batch.count
        position = pending.lastSeq
        return pending
    }

    /// Writes a folded batch and its checkpoint in one warehouse transaction, after checking that the
    /// warehouse is where the batch starts.
    func write(_ pending: Pending) throws {
        try connection.execute("BEGIN")
        do {
            let schema = quoteIdentifier(target.schema)
            let locked = try connection.query("SELECT last_seq FROM \(schema).cdc_checkpoint WHERE projection = $1 FOR UPDATE", [mapping.name])
            guard locked.rowCount == 1, UInt64(locked.value(0, 0) ?? "") == pending.after else {
                throw WarehouseError(.checkpointMoved, "the checkpoint of warehouse schema \(target.schema) moved under the projector (expected log record \(pending.after), found \(locked.rowCount == 1 ? locked.value(0, 0) ?? "NULL" : "no row")): another projector writes it, or the schema was swapped")
            }
            for (d, writes) in pending.dimensions { try write(d, writes) }
            for (f, writes) in pending.facts { try write(f, writes) }
            let header = pending.lastHeader!
            try connection.query("UPDATE \(schema).cdc_checkpoint SET last_seq = $2, last_lsn = $3, last_commit_time = $4 WHERE projection = $1",
                                 [mapping.name, String(pending.lastSeq), header.lsn.description,
                                  header.commitTime.map { rfc3339(microseconds: $0) }])
            try connection.execute("COMMIT")
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
    }

    /// What the rows of relation version `seq` feed (cached: one lookup by name per relation version).
    func feeding(_ seq: UInt64, _ definition: RelationDefinition) -> [Handler] {
        if let feeds = handlersByRelation[seq] { return feeds }
        let feeds = handlers[definition.qualifiedName] ?? []
        handlersByRelation[seq] = feeds
        return feeds
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
                                timestamp: rfc3339(microseconds: micros), date: target.clock.date(micros: micros))
        contexts = (header.lsn.value, ctx)
        return ctx
    }

    // MARK: Writing

    func qualified(_ table: String) -> String { quoteIdentifier(target.schema) + "." + quoteIdentifier(table) }

    func write(_ d: DimensionProjector, _ writes: DimensionProjector.Writes) throws {
        let table = qualified(d.spec.table)
        if !writes.removed.isEmpty {
            try connection.query("DELETE FROM \(table) WHERE \(quoteIdentifier(d.spec.surrogateKey)) = ANY($1::bigint[])", [arrayLiteral(writes.removed.map { String($0) })])
        }
        try update(d.layout, writes.updates.map { ([$0[d.keyColumn]], $0) })
        try copy(writes.inserts, into: table, layout: d.layout)
    }

    func write(_ f: FactProjector, _ batch: FactProjector.Writes) throws {
        let table = qualified(f.spec.table)
        if batch.truncated { try connection.execute("DELETE FROM \(table)") }
        for (columns, ctx) in batch.cleared {
            let sets = columns.map { "\(quoteIdentifier(f.layout.columns[$0])) = NULL" } + ["updated_at = $1::timestamptz", "source_lsn = $2::pg_lsn"]
            let any = columns.map { "\(quoteIdentifier(f.layout.columns[$0])) IS NOT NULL" }.joined(separator: " OR ")
            try connection.query("UPDATE \(table) SET \(sets.joined(separator: ", ")) WHERE \(any)", [ctx.timestamp, ctx.lsnText])
        }
        if !batch.deleted.isEmpty {
            try connection.query("DELETE FROM \(table) WHERE \(identityMatch(f.layout, prefix: ""))", identityArrays(f.layout, batch.deleted))
        }
        if !batch.cascade.isEmpty, let parent = f.spec.deletedWith,
           let lookup = f.spec.lookups.first(where: { $0.target == .fact(parent) }) {
            try connection.query("DELETE FROM \(table) WHERE \(quoteIdentifier(lookup.column)) = ANY($1::bigint[])", [arrayLiteral(batch.cascade)])
        }
        var updates: [(identity: [String?], row: [String?])] = [], inserts: [[String?]] = []
        for fact in batch.rows.values {
            if fact.existed { updates.append((fact.identity, fact.row)) } else { inserts.append(fact.row) }
        }
        try update(f.layout, updates)
        try copy(inserts, into: table, layout: f.layout)
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

/// One thread that runs a projector's warehouse writes, one batch at a time, while the caller folds
/// the next batch.
final class BatchWriter: @unchecked Sendable {
    private let condition = NSCondition()
    private var job: (() throws -> Void)?
    private var busy = false
    private var failure: Error?
    private var done = false

    /// Starts the thread; it holds the writer until ``finish()`` ends it.
    init() {
        let thread = Thread { self.loop() }
        thread.name = "cdc-projector-writer"
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func loop() {
        condition.lock()
        while true {
            while job == nil, !done { condition.wait() }
            guard let work = job else { break }
            condition.unlock()
            let error: Error?
            do { try work(); error = nil } catch let e { error = e }
            condition.lock()
            job = nil
            busy = false
            if let error { failure = error }
            condition.broadcast()
        }
        condition.unlock()
    }

    /// Hands a batch to the writer; the previous one must be finished (``wait()``).
    func submit(_ work: @escaping () throws -> Void) {
        condition.lock()
        job = work
        busy = true
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until the writer is idle; rethrows the failure of the last batch, if any.
    func wait() throws {
        condition.lock()
        while busy { condition.wait() }
        let error = failure
        failure = nil
        condition.unlock()
        if let error { throw error }
    }

    func finish() {
        condition.lock()
        done = true
        condition.broadcast()
        condition.unlock()
    }
}
