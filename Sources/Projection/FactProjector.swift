import EventLog
import Foundation
import PGClient

/// Folds the changes of a source table (and of the tables that complete it later) into a fact table.
///
/// Facts are not kept in memory between batches: before each batch, the rows the batch will update,
/// delete or look up are fetched from the warehouse (``prefetch(_:connection:schema:)``), so memory
/// follows the batch, not the table.
final class FactProjector {
    /// One fact row in the batch.
    final class Row {
        var row: RowValues
        /// The business keys the row's dimension (or fact) keys were resolved from, per lookup.
        var lookupKeys: [Grain]
        /// In the warehouse already: flush UPDATEs it (by `identity`), else INSERTs it.
        var existed: Bool
        /// The identity of the warehouse row (surrogate key or grain, as stored).
        var identity: [String?]
        /// The grain of the warehouse row, for a row read from it.
        var originalGrain: Grain?
        /// The values of the layout's `distribution` columns as stored, for a row read from the warehouse.
        var storedDistribution: [String?] = []
        /// Changed by the batch (or new): only such rows are written. A row read for a lookup or for a
        /// snapshot record equal to it is left as the warehouse has it.
        var dirty = true

        init(row: RowValues, lookupKeys: [Grain], existed: Bool, identity: [String?]) {
            self.row = row
            self.lookupKeys = lookupKeys
            self.existed = existed
            self.identity = identity
        }
    }

    /// A lookup: the warehouse column and where its key comes from.
    enum LookupTarget {
        case dimension(DimensionProjector)
        case fact(FactProjector)
    }

    /// A source table completing the fact (`updated_by`).
    struct Milestone {
        let spec: ProjectionMapping.FactUpdate
        let columns: [Int]
        /// Source columns: the match (in grain order), then the columns.
        var source: SourceColumns
    }

    let spec: ProjectionMapping.Fact
    let layout: TableLayout
    let keyColumn: Int?
    let grainColumns: [Int]
    let valueColumns: [Int]
    let dateColumns: [Int]
    let timeColumns: [Int]
    let lookupColumns: [Int]
    var lookupTargets: [LookupTarget] = []
    /// Another fact looks its rows up (a `lookups` entry targets this fact): only then does a fold note
    /// the grains this fact's plain INSERTs add (see ``Projector/fold(_:endsTransaction:reader:overlays:)``).
    var lookedUp = false
    var milestones: [Milestone]
    /// Facts deleted with this one (`deleted_with`), and the column pointing here.
    var children: [(fact: FactProjector, column: Int)] = []
    /// For a fact deleted with its parent: the column holding the parent's key, and the batch's rows
    /// by that key (so a parent's delete finds its rows without scanning the batch).
    var parentColumn: Int?
    var rowsByParent: [Grain: [Grain]] = [:]
    /// A replay deferred this fact's cascades (``WarehouseSchema/deferredCascades``): a parent's delete
    /// lists the parent key instead of deleting the rows pointing at it, and a row read from the
    /// warehouse whose parent key is listed is gone.
    var cascadeDeferred = false
    /// Own source columns: grain, values, date sources, time sources, lookup business keys.
    var source: SourceColumns
    let valueRange: Range<Int>, dateRange: Range<Int>, timeRange: Range<Int>
    let lookupRanges: [Range<Int>]
    let cLSN, cCreated, cUpdated: Int
    var nextKey: Int64 = 1
    /// Assembles the rows the fold writes (its buffers reused row after row).
    var builder = RowValues.Builder()
    /// On Citus: the shard key value (``TableLayout/shardKey``) of rows this projector wrote or read
    /// lately, by grain, so that ``prefetch(_:connection:schema:overlay:)`` reads them from their
    /// shard rather than from every shard. A hint, never trusted: a row not found where its hint
    /// points is read from every shard. Forgotten when it outgrows ``shardHintLimit``.
    var shardHints: [Grain: String] = [:]
    static let shardHintLimit = 100_000

    // Batch state.
    var rows: [Grain: Row] = [:]
    var deletedIdentities: [[String?]] = []
    /// The stored shard key value of each of `deletedIdentities` (Citus; nil without a shard key).
    var deletedShardKeys: [String?] = []
    var deletedGrains: [Grain] = []
    /// Parent surrogate keys whose rows of this (child) fact go.
    var cascadeKeys: [String] = []
    var truncated = false
    /// Milestones cleared on every row by a truncate of their source: (column positions, context).
    var clearedMilestones: [([Int], ChangeContext)] = []

    /// Early-arriving milestones (Kimball's early-arriving facts): a milestone change whose fact row
    /// does not exist (yet), by grain, then milestone index. Applied when a fact row with that grain
    /// arrives. Kept in memory between batches like the dimensions' current versions (loaded from
    /// `cdc_early_arrivals`, which every batch updates in its own transaction).
    var early: [Grain: [Int: EarlyArrival]] = [:]
    /// The entries in the warehouse table, and those the batch changed (or the milestones it cleared).
    var earlyStored: Set<EarlyArrival.Key> = []
    var earlyTouched: Set<EarlyArrival.Key> = []
    var earlyCleared: Set<Int> = []

    /// `addressByGrain`: UPDATE and DELETE find rows by grain, not by surrogate key (a replay deferred
    /// the table's primary key: ``WarehouseSchema/grainAddressedFacts(_:schema:mapping:)``).
    init(spec: ProjectionMapping.Fact, catalog: [String: WarehouseColumn], addressByGrain: Bool = false) throws {
        self.spec = spec
        let dates = spec.dates.keys.sorted(), times = spec.times.keys.sorted()
        var columns = (spec.surrogateKey.map { [$0] } ?? []) + spec.grain + spec.columns + dates + times + spec.lookups.map(\.column)
        let milestoneStart = columns.count
        columns += spec.updatedBy.flatMap(\.columns)
        columns += ProjectionMapping.factColumns
        let layout = try TableLayout(table: spec.table, columns: columns, identity: addressByGrain ? spec.grain : spec.surrogateKey.map { [$0] } ?? spec.grain, catalog: catalog)
        self.layout = layout
        keyColumn = spec.surrogateKey.map { layout[$0] }
        grainColumns = spec.grain.map { layout[$0] }
        valueColumns = spec.columns.map { layout[$0] }
        dateColumns = dates.map { layout[$0] }
        timeColumns = times.map { layout[$0] }
        lookupColumns = spec.lookups.map { layout[$0.column] }
        var wanted = spec.grain.map(spec.sourceColumn)
        valueRange = wanted.count..<(wanted.count + spec.columns.count)
        wanted += spec.columns.map(spec.sourceColumn)
        dateRange = wanted.count..<(wanted.count + dates.count)
        wanted += dates.map { spec.dates[$0]! }
        timeRange = wanted.count..<(wanted.count + times.count)
        wanted += times.map { spec.times[$0]! }
        var ranges: [Range<Int>] = []
        for lookup in spec.lookups {
            ranges.append(wanted.count..<(wanted.count + lookup.sourceColumns.count))
            wanted += lookup.sourceColumns
        }
        lookupRanges = ranges
        source = SourceColumns(wanted)
        var position = milestoneStart
        milestones = spec.updatedBy.map { update in
            let cols = Array(position..<(position + update.columns.count))
            position += update.columns.count
            let match = spec.grain.map { update.match[$0] ?? $0 }
            return Milestone(spec: update, columns: cols, source: SourceColumns(match + update.columns.map { update.rename[$0] ?? $0 }))
        }
        cLSN = layout["source_lsn"]; cCreated = layout["created_at"]; cUpdated = layout["updated_at"]
    }

    var grainRange: Range<Int> { 0..<grainColumns.count }

    // MARK: Loading

    /// The next surrogate key: past the table's keys, and not below `persisted`, the next key as of
    /// the checkpoint (past the keys of rows deleted since they were written, which the table no
    /// longer shows: also those of deferred cascades' parents, see ``WarehouseSchema/deferredCascades``).
    func loadNextKey(_ connection: PGConnection, schema: String, persisted: Int64?) throws {
        guard let key = spec.surrogateKey else { return }
        let max = try connection.execute("SELECT coalesce(max(\(quoteIdentifier(key))), 0) FROM \(quoteIdentifier(schema)).\(quoteIdentifier(spec.table))")
        nextKey = Swift.max((Int64(max.value(0, 0) ?? "0") ?? 0) + 1, persisted ?? 0)
    }

    /// Reads the warehouse rows of `grains` (with the business keys behind their lookups) into the batch.
    /// `overlay`: the batch still in flight, which the warehouse does not show yet.
    func prefetch(_ grains: Set<Grain>, connection: PGConnection, schema: String, overlay: Overlay? = nil) throws {
        var wanted = grains.filter { rows[$0] == nil && !$0.hasNull }
        if let overlay {
            for grain in wanted {
                if let fact = overlay.rows[grain] {
                    // Once the batch in flight commits, the row is stored as it left it.
                    let copy = Row(row: fact.row, lookupKeys: fact.lookupKeys, existed: true, identity: layout.identity.map { fact.row[$0] })
                    copy.originalGrain = grain
                    copy.storedDistribution = layout.distribution.map { fact.row[$0] }
                    copy.dirty = false
                    rows[grain] = copy
                    noteParent(copy, grain)
                    wanted.remove(grain)
                } else if overlay.deleted.contains(grain) {
                    wanted.remove(grain)
                }
            }
        }
        guard !wanted.isEmpty else { return }
        if layout.shardKey != nil, !shardHints.isEmpty {
            // On Citus: the rows whose shard is known are read from those shards only; the others
            // (and any not found where the hint said) from every shard.
            var hinted: [Grain] = [], keys: [String?] = []
            for grain in wanted {
                if let value = shardHints[grain] { hinted.append(grain); keys.append(value) }
            }
            if !hinted.isEmpty {
                wanted.subtract(try read(hinted, connection: connection, schema: schema, shards: keys))
            }
            guard !wanted.isEmpty else { return }
        }
        _ = try read(Array(wanted), connection: connection, schema: schema, shards: nil, cascaded: overlay?.cascaded ?? [])
    }

    /// Reads the warehouse rows of `list` into the batch, from the shards holding shard key values
    /// `shards` if given; returns the grains found. A row whose parent is gone (its key in `cascaded`,
    /// the cascades of the batch in flight, or in the deferred cascades) is gone too: it is not taken
    /// into the batch but deleted with it (by then the batch in flight has deleted it, or the
    /// deferred cascades would: gone now, it does not hold its grain against a new row).
    private func read(_ list: [Grain], connection: PGConnection, schema: String, shards: [String?]?, cascaded: Set<String> = []) throws -> Set<Grain> {
        let s = quoteIdentifier(schema)
        var select = layout.columns.map { "f." + quoteIdentifier($0) }
        for (i, lookup) in spec.lookups.enumerated() {
            let column = "f." + quoteIdentifier(lookup.column)
            switch lookupTargets[i] {
            case .dimension(let d):
                for key in d.spec.businessKey {
                    select.append("(SELECT t.\(quoteIdentifier(key))::text FROM \(s).\(quoteIdentifier(d.spec.table)) t WHERE t.\(quoteIdentifier(d.spec.surrogateKey)) = \(column))")
                }
            case .fact(let f):
                for key in f.spec.grain {
                    select.append("(SELECT t.\(quoteIdentifier(key))::text FROM \(s).\(quoteIdentifier(f.spec.table)) t WHERE t.\(quoteIdentifier(f.spec.surrogateKey!)) = \(column))")
                }
            }
        }
        var parameters: [String?] = []
        var unnest: [String] = []
        for (i, column) in grainColumns.enumerated() {
            parameters.append(arrayLiteral(list.map { $0[i] }))
            unnest.append("$\(i + 1)::\(layout.types[column])[]")
        }
        var deadColumn: Int?
        if cascadeDeferred, let parentColumn {
            deadColumn = select.count
            parameters.append(spec.table)
            select.append("f.\(quoteIdentifier(layout.columns[parentColumn])) IN (SELECT parent_key FROM \(s).\(WarehouseSchema.deferredCascades) WHERE fact_table = $\(parameters.count))")
        }
        let grainList = grainColumns.map { "f." + quoteIdentifier(layout.columns[$0]) }.joined(separator: ", ")
        var sql = "SELECT \(select.joined(separator: ", ")) FROM \(s).\(quoteIdentifier(spec.table)) f WHERE (\(grainList)) IN (SELECT * FROM unnest(\(unnest.joined(separator: ", "))))"
        if let shards { sql += layout.shardFilter(shards, alias: "f.", parameters: &parameters) }
        let result = try connection.query(sql, parameters)
        var found: Set<Grain> = []
        let width = layout.columns.count
        for r in 0..<result.rowCount {
            let row = (0..<width).map { result.value(r, $0) }
            var position = width
            var lookupKeys: [Grain] = []
            for range in lookupRanges {
                lookupKeys.append(Grain((0..<range.count).map { i in result.value(r, position + i) }))
                position += range.count
            }
            let grain = Grain(row, grainColumns)
            found.insert(grain)
            if let parentColumn, deadColumn.map({ result.value(r, $0) == "t" }) == true || row[parentColumn].map(cascaded.contains) == true {
                noteDeleted(layout.identity.map { row[$0] }, shardKey: layout.shardKey.map { row[$0] } ?? nil, grain: grain)
                continue
            }
            let fact = Row(row: RowValues(row), lookupKeys: lookupKeys, existed: true, identity: layout.identity.map { row[$0] })
            fact.originalGrain = grain
            fact.storedDistribution = layout.distribution.map { row[$0] }
            fact.dirty = false
            rows[grain] = fact
            noteParent(fact, grain)
        }
        return found
    }

    /// The grains (from the before and after images) a change touches: of the fact's own source, or of a
    /// milestone's (whose match columns come first too).
    func grains(of record: ChangeRecord, plan: SourcePlan) -> [Grain] {
        [record.before, record.after].compactMap { $0.map { plan.grain($0, grainRange) } }
    }

    // MARK: Folding the fact's own source

    func apply(_ record: ChangeRecord, plan: SourcePlan, _ ctx: ChangeContext, clock: WarehouseClock) {
        let before = record.before, after = record.after
        switch record.header.op {
        case .truncate:
            truncate()
        case .snapshot, .insert, .update:
            guard let after else { return }
            let grain = plan.grain(after, grainRange)
            let old = before.map { plan.grain($0, grainRange) } ?? grain
            if record.header.op == .snapshot, let existing = rows[grain] {
                refresh(existing, after, plan: plan, ctx, clock: clock)
            } else if let existing = rows[old] ?? (old != grain ? rows[grain] : nil) {
                if old != grain { rows[old] = nil; rows[grain] = existing }
                update(existing, after, plan: plan, ctx, clock: clock)
                if old != grain { adoptEarly(existing, grain, ctx) }
            } else {
                insert(grain, after, plan: plan, ctx, clock: clock)
            }
        case .delete:
            guard let before else { return }
            delete(plan.grain(before, grainRange))
        default:
            break
        }
    }

    func insert(_ grain: Grain, _ after: RowValues, plan: SourcePlan, _ ctx: ChangeContext, clock: WarehouseClock) {
        guard !grain.hasNull else { return }
        builder.reset(layout.columns.count)
        if let keyColumn {
            builder.set(keyColumn, integer: nextKey)
            nextKey += 1
        }
        // The grain's texts as the source sent them (an integer grain holds no String).
        for (i, column) in grainColumns.enumerated() { plan.copy(after, i, to: column, of: &builder) }
        var lookupKeys: [Grain] = []
        lookupKeys.reserveCapacity(lookupRanges.count)
        for (i, range) in lookupRanges.enumerated() {
            let key = plan.grain(after, range)
            lookupKeys.append(key)
            builder.set(lookupColumns[i], resolve(i, key, ctx))
        }
        setValues(&builder, after, plan: plan, clock: clock)
        builder.set(cCreated, ctx.timestamp)
        builder.set(cLSN, ctx.lsnText)
        let fact = Row(row: builder.build(), lookupKeys: lookupKeys, existed: false, identity: [])
        rows[grain] = fact
        noteParent(fact, grain)
        adoptEarly(fact, grain, ctx)
    }

    func noteParent(_ fact: Row, _ grain: Grain) {
        guard let parentColumn else { return }
        let parent = Grain(fact.row, column: parentColumn)
        if !parent.hasNull { rowsByParent[parent, default: []].append(grain) }
    }

    /// A snapshot record of a row the fact has (a backfill, a re-read): a change like an update when
    /// it brings other values (or other lookup business keys), else nothing, not even `updated_at`.
    func refresh(_ fact: Row, _ after: RowValues, plan: SourcePlan, _ ctx: ChangeContext, clock: WarehouseClock) {
        let row = fact.row, lookupKeys = fact.lookupKeys, dirty = fact.dirty
        update(fact, after, plan: plan, ctx, clock: clock)
        guard fact.lookupKeys == lookupKeys,
              fact.row.indices.allSatisfy({ $0 == cUpdated || $0 == cLSN || fact.row[$0] == row[$0] }) else { return }
        fact.row = row
        fact.dirty = dirty
    }

    func update(_ fact: Row, _ after: RowValues, plan: SourcePlan, _ ctx: ChangeContext, clock: WarehouseClock) {
        fact.dirty = true
        builder.load(fact.row)
        for (i, column) in grainColumns.enumerated() { plan.copy(after, i, to: column, of: &builder) }
        for (i, range) in lookupRanges.enumerated() {
            let key = plan.grain(after, range)
            if key != fact.lookupKeys[i] {
                // Re-pointed only when the business key changed: to the version current now.
                fact.lookupKeys[i] = key
                builder.set(lookupColumns[i], resolve(i, key, ctx))
            }
        }
        setValues(&builder, after, plan: plan, clock: clock)
        builder.set(cUpdated, ctx.timestamp)
        builder.set(cLSN, ctx.lsnText)
        fact.row = builder.build()
        noteParent(fact, Grain(fact.row, grainColumns))
    }

    /// Copies the value columns and computes the date and time keys (an unchanged TOAST value keeps the row's).
    func setValues(_ row: inout RowValues.Builder, _ after: RowValues, plan: SourcePlan, clock: WarehouseClock) {
        for (i, column) in valueColumns.enumerated() { plan.copy(after, valueRange.lowerBound + i, to: column, of: &row) }
        // A timestamp with no calendar key (±infinity, a year past 9999, BC) is the unknown key -1, as a
        // NULL dimension key is: a NULL would break a NOT NULL key and stop the projection.
        for (i, column) in dateColumns.enumerated() {
            plan.withValue(after, dateRange.lowerBound + i) { bytes in
                guard let bytes else { return row.set(column, nil as String?) }
                row.set(column, integer: Int64(clock.keys(of: bytes)?.date ?? -1))
            }
        }
        for (i, column) in timeColumns.enumerated() {
            plan.withValue(after, timeRange.lowerBound + i) { bytes in
                guard let bytes else { return row.set(column, nil as String?) }
                row.set(column, integer: Int64(clock.keys(of: bytes)?.time ?? -1))
            }
        }
    }

    func resolve(_ lookup: Int, _ key: Grain, _ ctx: ChangeContext) -> String {
        switch lookupTargets[lookup] {
        case .dimension(let d): return d.resolve(key, ctx)
        case .fact(let f): return f.key(of: key) ?? "-1"
        }
    }

    /// The surrogate key of the fact row with `grain`, nil when there is none.
    func key(of grain: Grain) -> String? {
        guard let keyColumn, let row = rows[grain] else { return nil }
        return row.row[keyColumn]
    }

    /// The shard key value (``TableLayout/shardKey``) of a row read from the warehouse, as stored.
    func storedShardKey(_ fact: Row) -> String? {
        guard let key = layout.shardKey else { return nil }
        if let i = layout.identity.firstIndex(of: key) { return fact.identity[i] }
        return fact.storedDistribution.first ?? nil
    }

    func delete(_ grain: Grain) {
        guard let fact = rows.removeValue(forKey: grain) else { return }
        if fact.existed { noteDeleted(fact.identity, shardKey: storedShardKey(fact), grain: fact.originalGrain ?? grain) }
        if let keyColumn, let key = fact.row[keyColumn] {
            for child in children { child.fact.parentDeleted(key, column: child.column) }
        }
    }

    /// A warehouse row the batch deletes: its identity, stored shard key and grain as stored.
    func noteDeleted(_ identity: [String?], shardKey: String?, grain: Grain) {
        deletedIdentities.append(identity)
        deletedShardKeys.append(shardKey)
        deletedGrains.append(grain)
    }

    /// A parent fact row went: so do this fact's rows pointing at it.
    func parentDeleted(_ key: String, column: Int) {
        cascadeKeys.append(key)
        for grain in rowsByParent.removeValue(forKey: Grain(one: key)) ?? [] where rows[grain]?.row.value(column, equals: key) == true { delete(grain) }
    }

    func truncate() {
        truncated = true
        rows = [:]
        rowsByParent = [:]
        deletedIdentities = []
        deletedShardKeys = []
        deletedGrains = []
        cascadeKeys = []
        clearedMilestones = []
        for child in children { child.fact.truncate() }
    }

    // MARK: Milestones (updated_by)

    func applyMilestone(_ index: Int, _ record: ChangeRecord, plan: SourcePlan, _ ctx: ChangeContext) {
        let milestone = milestones[index]
        let clear = milestone.spec.onDelete == "clear"
        let before = record.before, after = record.after
        let first = grainColumns.count
        switch record.header.op {
        case .truncate:
            guard clear else { return }
            clearedMilestones.append((milestone.columns, ctx))
            for (_, fact) in rows { set(fact, milestone.columns, nil, ctx) }
            clearEarly(index)
        case .snapshot, .insert, .update:
            guard let after else { return }
            let grain = plan.grain(after, grainRange)
            if let before, case let old = plan.grain(before, grainRange), old != grain, clear {
                if let fact = rows[old] { set(fact, milestone.columns, nil, ctx) } else { dropEarly(index, old) }
            }
            guard let fact = rows[grain] else {
                keepEarly(index, grain, after, plan: plan, ctx, snapshot: record.header.op == .snapshot)
                return
            }
            // A snapshot record equal to what the row holds (a backfill, a re-read) changes nothing.
            if record.header.op == .snapshot, milestone.columns.enumerated().allSatisfy({ i, column in
                guard case .value(let v) = plan.incoming(after, first + i) else { return true }
                return fact.row.value(column, equals: v)
            }) { return }
            builder.load(fact.row)
            for (i, column) in milestone.columns.enumerated() {
                if case .value(let v) = plan.incoming(after, first + i) { builder.set(column, v) }
            }
            builder.set(cUpdated, ctx.timestamp)
            builder.set(cLSN, ctx.lsnText)
            fact.row = builder.build()
            fact.dirty = true
        case .delete:
            guard clear, let before else { return }
            let grain = plan.grain(before, grainRange)
            if let fact = rows[grain] { set(fact, milestone.columns, nil, ctx) } else { dropEarly(index, grain) }
        default:
            break
        }
    }

    func set(_ fact: Row, _ columns: [Int], _ value: String?, _ ctx: ChangeContext) {
        fact.dirty = true
        builder.load(fact.row)
        for column in columns { builder.set(column, value) }
        builder.set(cUpdated, ctx.timestamp)
        builder.set(cLSN, ctx.lsnText)
        fact.row = builder.build()
    }

    // MARK: Early-arriving milestones

    /// Keeps milestone `index`'s values for `grain`, whose fact row does not exist: on top of what an
    /// earlier change kept (an unchanged TOASTed value keeps the kept one). A `snapshot` record equal
    /// to the kept values changes nothing.
    func keepEarly(_ index: Int, _ grain: Grain, _ after: RowValues, plan: SourcePlan, _ ctx: ChangeContext, snapshot: Bool = false) {
        guard !grain.hasNull else { return }
        let first = grainColumns.count
        let kept = early[grain]?[index]
        var entry = kept ?? EarlyArrival(values: Array(repeating: nil, count: milestones[index].columns.count), lsn: "", time: "")
        for i in entry.values.indices {
            if case .value(let v) = plan.incoming(after, first + i) { entry.values[i] = .some(v) }
        }
        if snapshot, let kept, kept.values == entry.values { return }
        entry.lsn = ctx.lsnText
        entry.time = ctx.timestamp
        early[grain, default: [:]][index] = entry
        earlyTouched.insert(.init(grain: grain, milestone: index))
    }

    /// The milestone row kept for `grain` went (deleted, or moved to another grain) before its fact came.
    func dropEarly(_ index: Int, _ grain: Grain) {
        guard early[grain]?.removeValue(forKey: index) != nil else { return }
        if early[grain]?.isEmpty == true { early[grain] = nil }
        earlyTouched.insert(.init(grain: grain, milestone: index))
    }

    /// A truncate of milestone `index`'s source (`on_delete = "clear"`): nothing of it waits any more.
    func clearEarly(_ index: Int) {
        for grain in Array(early.keys) { dropEarly(index, grain) }
        earlyCleared.insert(index)
        earlyStored = earlyStored.filter { $0.milestone != index }
    }

    /// A fact row now has `grain`: the milestones that came before it are applied, as of its change.
    func adoptEarly(_ fact: Row, _ grain: Grain, _ ctx: ChangeContext) {
        guard !early.isEmpty, let waiting = early.removeValue(forKey: grain) else { return }
        builder.load(fact.row)
        for (index, entry) in waiting.sorted(by: { $0.key < $1.key }) {
            for (i, column) in milestones[index].columns.enumerated() {
                if case .some(let value) = entry.values[i] { builder.set(column, value) }
            }
            earlyTouched.insert(.init(grain: grain, milestone: index))
        }
        fact.dirty = true
        builder.set(cUpdated, ctx.timestamp)
        builder.set(cLSN, ctx.lsnText)
        fact.row = builder.build()
    }

    /// The batch's changes to `cdc_early_arrivals`; marks them stored.
    func drainEarly() -> EarlyArrival.Writes {
        var writes = EarlyArrival.Writes(cleared: earlyCleared.sorted().map { milestones[$0].spec.source })
        for key in earlyTouched {
            if earlyStored.contains(key) { writes.deleted.append(key) }
            if let entry = early[key.grain]?[key.milestone] {
                writes.inserted.append((key, entry))
                earlyStored.insert(key)
            } else {
                earlyStored.remove(key)
            }
        }
        earlyTouched = []
        earlyCleared = []
        return writes
    }

    /// Reads every fact's early arrivals (creating the table in a schema of an older cdc).
    static func loadEarly(_ facts: [FactProjector], _ connection: PGConnection, schema: String) throws {
        if facts.contains(where: { !$0.milestones.isEmpty }) { try WarehouseSchema.ensureEarlyArrivals(connection, schema: schema) }
        for f in facts { try f.loadEarly(connection, schema: schema) }
    }

    /// Reads this fact's early arrivals from the warehouse.
    func loadEarly(_ connection: PGConnection, schema: String) throws {
        early = [:]
        earlyStored = []
        earlyTouched = []
        earlyCleared = []
        guard !milestones.isEmpty else { return }
        let result = try connection.query("SELECT milestone, grain::text, milestone_values::text FROM \(quoteIdentifier(schema)).cdc_early_arrivals WHERE fact_table = $1",
                                          [spec.table])
        for r in 0..<result.rowCount {
            guard let index = milestones.firstIndex(where: { $0.spec.source == result.value(r, 0) }),
                  let grain = EarlyArrival.decodeArray(result.value(r, 1)).map(Grain.init),
                  let values = EarlyArrival.decodeObject(result.value(r, 2)) else { continue }
            let entry = EarlyArrival(values: milestones[index].spec.columns.map { values[$0] }, lsn: "", time: "")
            early[grain, default: [:]][index] = entry
            earlyStored.insert(.init(grain: grain, milestone: index))
        }
    }

    // MARK: Writing

    /// What a batch writes to a fact table, in the order it must run.
    struct Writes {
        var truncated: Bool
        var cleared: [([Int], ChangeContext)]
        var deleted: [[String?]]
        /// The stored shard key value of each of `deleted` (Citus).
        var deletedShardKeys: [String?] = []
        /// Grains of the warehouse rows that `deleted` removes or whose grain changed (for the next
        /// batch's view of this one).
        var deletedGrains: Set<Grain>
        var cascade: [String]
        /// Every row the batch read, changed or added, by grain. Only the `dirty` ones are written: with
        /// `existed` updated, the others inserted. The rest (read for a lookup, or met by a snapshot
        /// record equal to them) the warehouse holds as they are; they stay here for the next batch's
        /// view of this one (not filtered out: that would rehash every grain of the batch).
        var rows: [Grain: Row]
        /// Changes to `cdc_early_arrivals`.
        var early = EarlyArrival.Writes()
    }

    /// The batch's writes; resets the batch.
    func drain() -> Writes {
        var gone = Set(deletedGrains)
        for (grain, fact) in rows {
            if let original = fact.originalGrain, original != grain { gone.insert(original) }
        }
        if let key = layout.shardKey {
            if shardHints.count > Self.shardHintLimit { shardHints = [:] }
            for grain in gone { shardHints[grain] = nil }
            for (grain, fact) in rows { shardHints[grain] = fact.row[key] }
        }
        let writes = Writes(truncated: truncated, cleared: clearedMilestones, deleted: deletedIdentities, deletedShardKeys: deletedShardKeys, deletedGrains: gone,
                            cascade: cascadeKeys, rows: rows, early: drainEarly())
        rows = [:]
        rowsByParent = [:]
        deletedIdentities = []
        deletedShardKeys = []
        deletedGrains = []
        cascadeKeys = []
        truncated = false
        clearedMilestones = []
        return writes
    }

    /// The rows a batch in flight (written, not yet committed) leaves, as the next batch must see
    /// them instead of the warehouse's: its rows by grain, and the grains it deletes. Read only.
    struct Overlay {
        let rows: [Grain: Row]
        let deleted: Set<Grain>
        /// Parent keys whose rows of this fact the batch deletes (``Writes/cascade``).
        let cascaded: Set<String>

        init(_ writes: Writes) {
            rows = writes.rows
            deleted = writes.deletedGrains
            cascaded = Set(writes.cascade)
        }
    }
}

/// A milestone kept for a fact row that has not arrived: the values of the milestone's columns (nil:
/// not sent, an unchanged TOASTed value), and the commit of the change that set them last.
struct EarlyArrival {
    var values: [String??]
    var lsn: String
    var time: String

    struct Key: Hashable {
        var grain: Grain
        var milestone: Int
    }

    /// A batch's changes to `cdc_early_arrivals`, in the order they run: the milestones cleared (by
    /// source table), the entries removed or rewritten, the entries written.
    struct Writes {
        var cleared: [String] = []
        var deleted: [Key] = []
        var inserted: [(Key, EarlyArrival)] = []
    }

    /// A JSON string (or null).
    static func json(_ value: String?) -> String {
        guard let value else { return "null" }
        var out = "\""
        for c in value.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where c.value < 0x20: out += "\\u" + String(c.value, radix: 16).leftPad(4)
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }

    static func json(_ values: [String?]) -> String { "[" + values.map(json).joined(separator: ",") + "]" }

    /// A JSON array of strings and nulls, as jsonb prints it.
    static func decodeArray(_ text: String?) -> [String?]? {
        guard let text, let array = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [Any] else { return nil }
        return array.map { $0 as? String }
    }

    /// A JSON object of strings and nulls: present keys map to `.some(value)`.
    static func decodeObject(_ text: String?) -> [String: String?]? {
        guard let text, let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
        return object.mapValues { $0 as? String }
    }
}
