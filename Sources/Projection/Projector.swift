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
/// A source transaction bigger than a batch (4 × `maxRecords`) is folded and written in chunks, all in
/// one warehouse transaction that stays open from its first chunk (which locks and checks the
/// checkpoint) to its last (which moves the checkpoint and commits): readers see the warehouse before
/// the source transaction or after it, never in between, and memory follows the chunk. Every chunk
/// after the first is folded against the writer's connection, whose open transaction shows the
/// earlier chunks. The checkpoint is therefore always the end of a source transaction.
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
    /// Writes the batches on `connection`, in the mapping's engine dialect.
    let writer: any WarehouseWriter
    var dimensions: [DimensionProjector] = []
    var facts: [FactProjector] = []
    /// What each source table feeds, by `schema.table`.
    var handlers: [String: [Handler]] = [:]
    var contexts: (lsn: UInt64, context: ChangeContext)?
    /// The commit LSN of `cdc init`'s snapshot (record 1's; 0 when record 1 has an xid), read once.
    var initialSnapshotLSN: UInt64?
    /// A warehouse transaction is open on `connection`, holding the chunks written so far of a source
    /// transaction that ``write(_:)`` has not finished (writer's side).
    var transactionOpen = false
    /// The last folded batch ended inside a source transaction (folder's side).
    var foldedInside = false
    /// The last log record applied to the warehouse.
    public private(set) var position: UInt64 = 0
    /// Called as a batch makes progress (every few thousand records folded, every warehouse statement
    /// and COPY buffer written), from the thread doing it: `cdc run` beats its projection loop's health
    /// with it, so that a long batch is not taken for a stall while a hung one still is.
    public var heartbeat: () -> Void = {} {
        didSet { writer.heartbeat = heartbeat }
    }
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
        writer = mapping.engine.writer(connection: connection, schema: target.schema, projection: mapping.name)
        try load()
    }

    /// (Re)reads the checkpoint and every dimension's current versions.
    func load() throws {
        let schema = target.schema
        let (checkpoint, catalog) = try WarehouseSchema.fit(connection, schema: schema, mapping: mapping, logSource: logSource)
        dimensions = try mapping.dimensions.map { try DimensionProjector(spec: $0, catalog: catalog[$0.table]!) }
        // A replay in progress deferred some facts' primary keys: their rows are found by grain.
        let byGrain = try WarehouseSchema.grainAddressedFacts(connection, schema: schema, mapping: mapping)
        facts = try mapping.facts.map { try FactProjector(spec: $0, catalog: catalog[$0.table]!, addressByGrain: byGrain.contains($0.table)) }
        // And some facts' cascades: listed, applied at the replay's end.
        let deferredCascades = try WarehouseSchema.deferredCascadeFacts(connection, schema: schema, mapping: mapping)
        for f in facts { f.cascadeDeferred = deferredCascades.contains(f.spec.table) }
        // Distribution columns (Citus): never SET by an UPDATE; see WarehouseWriter.
        let distribution = try Citus.distributionColumns(connection, schema: schema)
        for d in dimensions {
            guard let column = distribution[d.spec.table] else { continue }
            guard column == d.spec.surrogateKey || d.spec.businessKey.contains(column) else {
                throw WarehouseError(.engineMismatch, "warehouse table \(schema).\(d.spec.table) is distributed by \(column), which a dimension version's type-1 update may change: make it a reference table (create_reference_table) or distribute it by \(d.spec.surrogateKey)")
            }
            d.layout.shardKey = d.layout[column]
        }
        for f in facts {
            guard let column = distribution[f.spec.table] else { continue }
            guard let position = f.layout.index[column] else {
                throw WarehouseError(.engineMismatch, "warehouse table \(schema).\(f.spec.table) is distributed by \(column), a column cdc does not write: distribute it by one of \(f.layout.columns.joined(separator: ", "))")
            }
            f.layout.shardKey = position
        }
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
                    target.lookedUp = true
                    return .fact(target)
                }
            }
            if let parent = f.spec.deletedWith, let p = factByName[parent] {
                guard let lookup = f.spec.parentLookup else {
                    throw MappingError("mapping \(mapping.path): facts.\(f.spec.table).deleted_with = \(parent) needs a lookup of that fact")
                }
                p.children.append((f, f.layout[lookup.column]))
                f.parentColumn = f.layout[lookup.column]
            }
        }
        handlers = [:]
        for d in dimensions { handlers[d.spec.source, default: []].append(.dimension(d)) }
        for f in facts {
            handlers[f.spec.source, default: []].append(.fact(f))
            for (i, m) in f.milestones.enumerated() { handlers[m.spec.source, default: []].append(.milestone(f, i)) }
        }
        let nextKeys = try WarehouseSchema.nextKeys(connection, schema: schema, projection: mapping.name)
        for d in dimensions { try d.load(connection, schema: schema, persistedNextKey: nextKeys[d.spec.table]) }
        for f in facts { try f.loadNextKey(connection, schema: schema, persisted: nextKeys[f.spec.table]) }
        try FactProjector.loadEarly(facts, connection, schema: schema)  // early-arriving milestones (issue 10)
        position = checkpoint.lastSeq
        contexts = nil
        foldedInside = false
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
        /// The batch starts inside a source transaction: it continues the open warehouse transaction
        /// of the chunks before it.
        var continuesTransaction = false
        /// The batch ends at the end of a source transaction: its write moves the checkpoint and
        /// commits. Otherwise the warehouse transaction stays open for the next chunk.
        var endsTransaction = true
        /// Warehouse rows the batch writes, by table.
        var rowCounts: [String: Int] {
            var counts: [String: Int] = [:]
            for (d, w) in dimensions { counts[d.spec.table, default: 0] += w.updates.count + w.inserts.count + w.removed.count }
            for (f, w) in facts { counts[f.spec.table, default: 0] += w.deleted.count + w.rows.values.lazy.filter(\.dirty).count }
            return counts
        }
        /// Every table's next surrogate key after the batch, moved with the checkpoint.
        var nextKeys: [String: Int64] = [:]
        /// Truncates or milestone clears: the next batch cannot be folded before this one commits.
        var blocksPipeline: Bool { facts.contains { $0.1.truncated || !$0.1.cleared.isEmpty } }
    }

    /// Applies the next batch: whole transactions after the checkpoint, about `maxRecords` records,
    /// none past `until`, in one warehouse transaction. A source transaction of more than
    /// 4 × `maxRecords` records is applied in chunks of that size within one warehouse transaction,
    /// and `progress` is called after each chunk but the last (with the totals so far) while it stays
    /// open: it commits only with the chunk that ends the source transaction. Returns 0 records when
    /// the log has nothing new (or the bound is reached).
    public func step(maxRecords: Int = 20_000, until: Bound? = nil, progress: (Step) -> Void = { _ in }) throws -> Step {
        var step = Step(records: 0, changes: 0, reachedBound: false)
        do {
            repeat {
                let (batch, reachedBound, ends) = try read(maxRecords: maxRecords, until: until)
                step.reachedBound = reachedBound
                guard !batch.isEmpty else {
                    if transactionOpen { throw Self.endsInside(position) }
                    break
                }
                // The writer's connection: inside an open transaction it shows the earlier chunks.
                let pending = try fold(batch, endsTransaction: ends, reader: connection, overlays: [:])
                try write(pending)
                step.records += pending.records
                step.changes += pending.changes
                step.rows.merge(pending.rowCounts, uniquingKeysWith: +)
                if transactionOpen { progress(step) }
            } while transactionOpen
        } catch {
            recover()
            throw error
        }
        return step
    }

    /// The log ended inside a source transaction (it cannot: its head is always a transaction end).
    static func endsInside(_ position: UInt64) -> WarehouseError {
        WarehouseError(.other, "the log ends inside a source transaction after record \(position): nothing of it was applied; check the log with `cdc log verify`")
    }

    /// Applies the log up to its head (or `until`), folding each batch while the warehouse writes the
    /// previous one (a second connection reads the warehouse for the fold). For bulk replays.
    /// `progress` is called with the position after each batch commits. A source transaction bigger
    /// than a batch is applied in chunks in one warehouse transaction, as by ``step(maxRecords:until:progress:)``.
    public func run(maxRecords: Int = 50_000, until: Bound? = nil, progress: (UInt64) -> Void = { _ in }) throws -> (records: Int, changes: Int) {
        let reader = try target.connect()
        let writer = BatchWriter()
        let reaper = DispatchQueue(label: "cdc-projector-reaper")
        var records = 0, changes = 0
        var inFlight: Pending?
        defer { writer.finish() }
        var statistics = Statistics()
        let filterColumns = self.filterColumns
        /// Waits for the batch in flight; reports its position if it committed.
        func settle() throws {
            try writer.wait()
            if let done = inFlight {
                statistics.wrote(done.rowCounts, committed: done.endsTransaction)
                if done.endsTransaction { progress(done.lastSeq) }
            }
            inFlight = nil
        }
        // The first batches are smaller (1/8, 1/4, 1/2 of `maxRecords`): the warehouse starts writing
        // after a short fold instead of waiting for a whole one (about 0.4 s at 50,000 records).
        var size = max(1, maxRecords / 8)
        do {
            while true {
                // A var, emptied once the batch is retired (see Retired).
                var batch: [(UInt64, ChangeRecord)]
                let ends: Bool
                (batch, _, ends) = try read(maxRecords: size, until: until)
                size = min(maxRecords, size * 2)
                if batch.isEmpty {
                    try settle()
                    if transactionOpen { throw Self.endsInside(position) }
                    break
                }
                // The second connection shows what is committed and the overlay what the batch in
                // flight writes. That is not enough after a truncate or a milestone clear, nor when the
                // batch in flight continues an open warehouse transaction (the chunks before it are
                // visible only on the writer's connection): then the writer finishes first.
                if let p = inFlight, p.blocksPipeline || p.continuesTransaction { try settle() }
                var overlays: [ObjectIdentifier: FactProjector.Overlay] = [:]
                if let inFlight {
                    for (f, writes) in inFlight.facts {
                        overlays[ObjectIdentifier(f)] = FactProjector.Overlay(writes)
                    }
                }
                // The writer is idle when nothing is in flight: its connection (and open transaction) is free.
                let view = inFlight == nil && transactionOpen ? connection : reader
                let pending = try fold(batch, endsTransaction: ends, reader: view, overlays: overlays)
                // The batch before the one in flight is committed once the writer is idle.
                try settle()
                records += pending.records
                changes += pending.changes
                inFlight = pending
                // The batch's records and the committed batch's rows (the overlay holds them last) are
                // freed on a thread of their own, not here between two folds (a tenth of a replay's CPU
                // went to freeing them on the fold's thread; on the writer's, it delays the writes).
                let retired = Retired((batch, overlays))
                overlays = [:]
                batch = []
                writer.submit { try self.write(pending) }
                reaper.async { retired.free() }
                // While the writer writes: fresh planner statistics for the tables that grew (see Statistics).
                // Not while a source transaction is applied in chunks: ANALYZE sees committed rows only,
                // and statistics of the tables without the open transaction's rows would tell the
                // planner they are nearly empty while the transaction's statements work on them.
                for table in pending.continuesTransaction || !pending.endsTransaction ? [] : statistics.stale() {
                    let columns = filterColumns[table, default: []].map(quoteIdentifier).joined(separator: ", ")
                    try reader.execute("ANALYZE \(qualified(table)) (\(columns))")
                }
            }
        } catch {
            try? writer.wait()
            recover()
            throw error
        }
        return (records, changes)
    }

    /// The columns the projector's statements select, join and delete by, per warehouse table: the
    /// statistics its plans need (the other columns' would cost a replay more to gather than it gains).
    var filterColumns: [String: [String]] {
        var columns: [String: Set<String>] = [:]
        for d in dimensions {
            columns[d.spec.table, default: []].formUnion([d.spec.surrogateKey] + d.spec.lookups.map(\.column))
        }
        for f in facts {
            let names = (f.layout.identity + f.grainColumns).map { f.layout.columns[$0] } + f.spec.lookups.map(\.column)
            columns[f.spec.table, default: []].formUnion(names + (f.spec.surrogateKey.map { [$0] } ?? []))
        }
        return columns.mapValues { $0.sorted() }
    }

    /// Rows written per table in a bulk replay, to keep the planner's statistics current. A replay
    /// fills empty tables in seconds, before autovacuum's first look (a minute apart by default): the
    /// planner, estimating them empty, seq-scans the growing tables for every update and cascading
    /// delete (measured at 1 M events: 29 scans reading 7.7 M telemetry rows). A table is analyzed
    /// each time its rows written and committed double (from 50,000): a handful of sampled ANALYZEs
    /// per table, of the ``filterColumns`` only.
    struct Statistics {
        private var written: [String: Int] = [:]
        private var analyzedAt: [String: Int] = [:]
        /// Rows of the chunks of a source transaction not yet committed.
        private var open: [String: Int] = [:]

        /// Counts a batch's rows once it commits (the chunks of a source transaction with its last).
        mutating func wrote(_ counts: [String: Int], committed: Bool) {
            open.merge(counts, uniquingKeysWith: +)
            guard committed else { return }
            written.merge(open, uniquingKeysWith: +)
            open = [:]
        }

        /// The tables due for ANALYZE, marked as analyzed.
        mutating func stale() -> [String] {
            var due: [String] = []
            for (table, n) in written {
                let last = analyzedAt[table] ?? 0
                if n - last >= max(50_000, last) {
                    due.append(table)
                    analyzedAt[table] = n
                }
            }
            return due.sorted()
        }
    }

    /// Reads the next batch from the log, decoding each record inside short read transactions: whole
    /// transactions up to about `maxRecords` records, or the next 4 × `maxRecords` records of a bigger
    /// one. Returns the batch, whether the bound stopped it, and whether it ends a source transaction
    /// (false only for a chunk cut inside one; the log's head and a bound are transaction ends).
    func read(maxRecords: Int, until: Bound?) throws -> (batch: [(UInt64, ChangeRecord)], reachedBound: Bool, endsTransaction: Bool) {
        var batch: [(UInt64, ChangeRecord)] = []
        var reachedBound = false, cutInside = false
        var imageBuilder = RowValues.Builder()
        try log.scan(from: position + 1, to: nil, batch: min(maxRecords, 5_000)) { seq, bytes in
            let record = try ChangeRecord.decode(bytes, builder: &imageBuilder)
            if let until, record.header.op != .message, Self.beyond(record.header, until) {
                reachedBound = true
                return false
            }
            batch.append((seq, record))
            let endOfTransaction = record.header.flags.contains(.endOfTransaction)
            if batch.count >= maxRecords && endOfTransaction { return false }
            if batch.count >= 4 * maxRecords {
                cutInside = !endOfTransaction
                return false
            }
            return true
        }
        return (batch, reachedBound, !cutInside)
    }

    static func beyond(_ header: RecordHeader, _ bound: Bound) -> Bool {
        switch bound {
        case .lsn(let lsn): return header.lsn > lsn
        case .time(let micros): return (header.commitTime ?? Int64.min) > micros
        }
    }

    /// After a failure the in-memory state may be ahead of the warehouse: reload it from there.
    func recover() {
        writer.rollback()
        transactionOpen = false
        try? load()
    }

    /// Folds `batch` in log order. Fact rows it needs are read through `reader`, or taken from the
    /// `overlays` of the batch in flight. Advances `position`. A batch that continues a source
    /// transaction needs a `reader` that shows the transaction's earlier chunks.
    func fold(_ batch: [(UInt64, ChangeRecord)], endsTransaction: Bool, reader: PGConnection,
              overlays: [ObjectIdentifier: FactProjector.Overlay]) throws -> Pending {
        var pending = Pending()
        pending.after = position
        pending.continuesTransaction = foldedInside
        pending.endsTransaction = endsTransaction
        // Rows the batch updates, deletes or looks up, fetched once.
        var needed: [ObjectIdentifier: Set<Grain>] = [:]
        // Grains a plain INSERT of the fact's own source has added earlier in the batch: a later
        // lookup of such a row finds it in the batch, so it is not read from the warehouse (where it
        // is not; on Citus a read by grain asks every shard).
        var inserted: [ObjectIdentifier: Set<Grain>] = [:]
        // Per relation version in the batch: its handlers with their source plans, looked up once
        // (not per record: a RelationDefinition copy, a catalog lookup and a plan lookup per handler).
        var kinds: [[(Handler, SourcePlan)]] = []
        var kindOf: [UInt64: Int] = [:]
        // Per record: its kind, -1 for none (not a change, or feeding nothing).
        var items: [Int32] = []
        items.reserveCapacity(batch.count)
        for (seq, record) in batch {
            if let definition = record.relation { log.relationCatalog.remember(definition, at: seq) }
            let relationSeq = record.header.relationSeq
            guard relationSeq != 0, record.header.op.isChange else { items.append(-1); continue }
            let kind: Int
            if let known = kindOf[relationSeq] {
                kind = known
            } else {
                let plans: [(Handler, SourcePlan)] = try relation(relationSeq).map { definition in
                    (handlers[definition.qualifiedName] ?? []).map { handler -> (Handler, SourcePlan) in
                        switch handler {
                        case .dimension(let d): return (handler, d.source.plan(relationSeq, definition))
                        case .fact(let f): return (handler, f.source.plan(relationSeq, definition))
                        case .milestone(let f, let i): return (handler, f.milestones[i].source.plan(relationSeq, definition))
                        }
                    }
                } ?? []
                if plans.isEmpty { kind = -1 } else { kinds.append(plans); kind = kinds.count - 1 }
                kindOf[relationSeq] = kind
            }
            items.append(Int32(kind))
            guard kind >= 0 else { continue }
            for (handler, plan) in kinds[kind] {
                switch handler {
                case .fact(let f):
                    if try record.header.op == .update || record.header.op == .delete || upserts(record.header) {
                        needed[ObjectIdentifier(f), default: []].formUnion(f.grains(of: record, plan: plan))
                    } else if record.header.op == .insert, f.lookedUp {
                        inserted[ObjectIdentifier(f), default: []].formUnion(f.grains(of: record, plan: plan))
                    }
                    guard let after = record.after else { break }
                    for (i, target) in f.lookupTargets.enumerated() {
                        if case .fact(let parent) = target {
                            let grain = plan.grain(after, f.lookupRanges[i])
                            if inserted[ObjectIdentifier(parent)]?.contains(grain) != true {
                                needed[ObjectIdentifier(parent), default: []].insert(grain)
                            }
                        }
                    }
                case .milestone(let f, _):
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
        for (i, (_, record)) in batch.enumerated() {
            if i % 4096 == 4095 { heartbeat() }
            let kind = Int(items[i])
            guard kind >= 0 else { continue }
            let ctx = context(record.header)
            pending.changes += 1
            for (handler, plan) in kinds[kind] {
                switch handler {
                case .dimension(let d): d.apply(record, plan: plan, ctx)
                case .fact(let f): f.apply(record, plan: plan, ctx, clock: target.clock)
                case .milestone(let f, let i): f.applyMilestone(i, record, plan: plan, ctx)
                }
            }
        }
        pending.dimensions = dimensions.map { ($0, $0.drain()) }
        pending.facts = facts.map { ($0, $0.drain()) }
        for d in dimensions { pending.nextKeys[d.spec.table] = d.nextKey }
        for f in facts where f.spec.surrogateKey != nil { pending.nextKeys[f.spec.table] = f.nextKey }
        pending.lastSeq = batch.last!.0
        pending.lastHeader = batch.last!.1.header
        pending.records = batch.count
        position = pending.lastSeq
        foldedInside = !endsTransaction
        return pending
    }

    /// Writes a folded batch and its checkpoint in one warehouse transaction, after checking that the
    /// warehouse is where the batch starts. A chunk that ends inside a source transaction leaves the
    /// transaction open (checkpoint untouched) for the next chunk, which writes into it without a new
    /// check; the chunk that ends the source transaction moves the checkpoint and commits. On any
    /// failure everything since the checkpoint is rolled back.
    func write(_ pending: Pending) throws {
        do {
            if !transactionOpen {
                transactionOpen = true
                try writer.begin(after: pending.after)
            }
            for (d, writes) in pending.dimensions {
                try writer.write(d, writes)
                heartbeat()
            }
            for (f, writes) in pending.facts {
                try writer.write(f, writes)
                heartbeat()
            }
            guard pending.endsTransaction else { return }
            try writer.commit(seq: pending.lastSeq, header: pending.lastHeader!, nextKeys: pending.nextKeys)
            transactionOpen = false
        } catch {
            writer.rollback()
            transactionOpen = false
            throw error
        }
    }

    /// A snapshot record that may meet a row the warehouse has: one of a backfill or a re-read
    /// (`cdc snapshot`), folded as an upsert, so its fact row is read first like an update's. Not one
    /// of `cdc init`'s snapshot: the log's first rows, at the commit LSN of record 1, each key once.
    func upserts(_ header: RecordHeader) throws -> Bool {
        guard header.op == .snapshot else { return false }
        if initialSnapshotLSN == nil, let first = try log.record(1) {
            initialSnapshotLSN = first.header.xid == nil ? first.header.lsn.value : 0
        }
        return header.lsn.value != initialSnapshotLSN
    }

    func relation(_ seq: UInt64) throws -> RelationDefinition? {
        try log.relationDefinition(seq)
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
}

/// What a bulk replay is done with (a folded batch's records, the overlay of a committed batch),
/// handed to another thread to be freed there: nothing uses it any more. A box that thread empties:
/// when the fold's thread drops its reference last (the other thread may run first), it frees only
/// the box (a struct freed its whole contents there: 4% of a replay's samples, measured by perf).
final class Retired: @unchecked Sendable {
    private var value: Any?

    init(_ value: Any) { self.value = value }

    func free() { value = nil }
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
