import EventLog
import Foundation
import PGClient

/// The statements that write a folded batch into the warehouse, and nothing else: the projector folds,
/// a writer writes. One implementation per warehouse dialect; the mapping's `engine` picks it
/// (``WarehouseEngine/writer(connection:schema:projection:)``).
///
/// A writer is used from one thread at a time, in this order per batch: ``begin(after:)`` (first chunk
/// of a source transaction only), the table writes, then ``commit(seq:header:)`` (last chunk only), or
/// ``rollback()`` after any failure. Everything between `begin` and `commit` is one warehouse
/// transaction: readers see the warehouse before the batch or after it.
///
/// A dialect for an engine without `COPY FROM STDIN` or enforced keys (Redshift: files staged on S3,
/// `COPY ... FROM 's3://...'`, deduplication per key and `MERGE`) implements the same four steps; see
/// schemas/warehouse/README.md.
protocol WarehouseWriter: AnyObject {
    /// Opens the batch's warehouse transaction and locks the checkpoint row; throws
    /// ``WarehouseError/Code/checkpointMoved`` unless the checkpoint is at log record `after`.
    func begin(after: UInt64) throws
    /// A dimension's writes: removed versions, rewritten versions, new versions.
    func write(_ dimension: DimensionProjector, _ writes: DimensionProjector.Writes) throws
    /// A fact's writes: truncate, cleared milestones, deletes, cascades, rewritten rows, new rows and
    /// early-arriving milestones.
    func write(_ fact: FactProjector, _ writes: FactProjector.Writes) throws
    /// Moves the checkpoint to log record `seq` (with its commit LSN and time, and every table's next
    /// surrogate key) and commits.
    func commit(seq: UInt64, header: RecordHeader, nextKeys: [String: Int64]) throws
    /// Rolls the open transaction back, if any (errors ignored: the connection may be gone).
    func rollback()
    /// Called as the writes make progress (every statement and COPY buffer).
    var heartbeat: () -> Void { get set }
}

/// The SQL of PostgreSQL, which Citus runs unchanged: rows go in by `COPY ... FROM STDIN`; rewritten
/// rows are applied by one `UPDATE ... FROM (subquery)` per table, the subquery unnesting parameter
/// arrays (small batches) or reading a COPY-filled session staging table. Three rules make it run on
/// Citus too:
/// - the staging table is joined through a subquery (Citus cannot join a temporary table in
///   `UPDATE ... FROM` directly: "relation ... is not distributed"; a subquery over it becomes an
///   intermediate result sent to the workers);
/// - an UPDATE never sets an identity column (surrogate key or grain) or a distribution column: a
///   row whose identity or distribution column changed is deleted and inserted again (Citus: "modifying
///   the partition value of rows is not allowed");
/// - DDL is sent one statement at a time (``SQLScript``).
final class PostgresWriter: WarehouseWriter {
    let connection: PGConnection
    let schema: String
    let projection: String
    var heartbeat: () -> Void = {}
    /// Staging tables created on this session (kept across transactions: ON COMMIT DELETE ROWS).
    private var stagingCreated: Set<String> = []
    /// Staging tables filled in the open warehouse transaction (ON COMMIT DELETE ROWS empties them only
    /// at its end): emptied before the next chunk fills them again.
    private var stagedInTransaction: Set<String> = []

    init(connection: PGConnection, schema: String, projection: String) {
        self.connection = connection
        self.schema = schema
        self.projection = projection
    }

    func qualified(_ table: String) -> String { quoteIdentifier(schema) + "." + quoteIdentifier(table) }

    func begin(after: UInt64) throws {
        try connection.execute("BEGIN")
        let locked = try connection.query("SELECT last_seq FROM \(quoteIdentifier(schema)).cdc_checkpoint WHERE projection = $1 FOR UPDATE", [projection])
        guard locked.rowCount == 1, UInt64(locked.value(0, 0) ?? "") == after else {
            throw WarehouseError(.checkpointMoved, "the checkpoint of warehouse schema \(schema) moved under the projector (expected log record \(after), found \(locked.rowCount == 1 ? locked.value(0, 0) ?? "NULL" : "no row")): another projector writes it, or the schema was swapped")
        }
    }

    func commit(seq: UInt64, header: RecordHeader, nextKeys: [String: Int64]) throws {
        try connection.query("UPDATE \(quoteIdentifier(schema)).cdc_checkpoint SET last_seq = $2, last_lsn = $3, last_commit_time = $4, next_keys = $5::jsonb WHERE projection = $1",
                             [projection, String(seq), header.lsn.description, header.commitTime.map { rfc3339(microseconds: $0) },
                              WarehouseSchema.nextKeysJSON(nextKeys)])
        try connection.execute("COMMIT")
        stagedInTransaction = []
    }

    func rollback() {
        _ = try? connection.execute("ROLLBACK")
        stagedInTransaction = []
    }

    func write(_ d: DimensionProjector, _ writes: DimensionProjector.Writes) throws {
        let table = qualified(d.spec.table)
        if !writes.removed.isEmpty {
            try connection.query("DELETE FROM \(table) WHERE \(quoteIdentifier(d.spec.surrogateKey)) = ANY($1::bigint[])", [arrayLiteral(writes.removed.map { String($0) })])
            heartbeat()
        }
        try update(d.layout, writes.updates.map { ([$0[d.keyColumn]], RowValues($0)) })
        try copy(writes.inserts.map(RowValues.init), into: table, columns: d.layout.columnList, binary: d.layout.binary)
    }

    func write(_ f: FactProjector, _ batch: FactProjector.Writes) throws {
        let table = qualified(f.spec.table)
        let layout = f.layout
        if batch.truncated {
            try connection.execute("DELETE FROM \(table)")
            if f.cascadeDeferred {
                try connection.query("DELETE FROM \(qualified(WarehouseSchema.deferredCascades)) WHERE fact_table = $1", [f.spec.table])
            }
        }
        for (columns, ctx) in batch.cleared {
            let sets = columns.map { "\(quoteIdentifier(layout.columns[$0])) = NULL" } + ["updated_at = $1::timestamptz", "source_lsn = $2::pg_lsn"]
            let any = columns.map { "\(quoteIdentifier(layout.columns[$0])) IS NOT NULL" }.joined(separator: " OR ")
            try connection.query("UPDATE \(table) SET \(sets.joined(separator: ", ")) WHERE \(any)", [ctx.timestamp, ctx.lsnText])
            heartbeat()
        }
        var updates: [(identity: [String?], row: RowValues)] = [], inserts: [RowValues] = []
        var deleted = batch.deleted, deletedShardKeys = batch.deletedShardKeys
        for fact in batch.rows.values where fact.dirty {
            guard fact.existed else { inserts.append(fact.row); continue }
            if layout.identity.map({ fact.row[$0] }) != fact.identity || layout.distribution.map({ fact.row[$0] }) != fact.storedDistribution {
                // Identity or distribution column changed: an UPDATE may not set it (Citus refuses it), so
                // the row is deleted and inserted again.
                deleted.append(fact.identity)
                deletedShardKeys.append(f.storedShardKey(fact))
                inserts.append(fact.row)
            } else {
                updates.append((fact.identity, fact.row))
            }
        }
        if !deleted.isEmpty {
            var parameters = identityArrays(layout, deleted)
            var sql = "DELETE FROM \(table) WHERE \(identityMatch(layout))"
            // On Citus: to the deleted rows' shards only (as an UPDATE; see update(_:_:)).
            if deletedShardKeys.count == deleted.count, !deletedShardKeys.contains(nil) {
                sql += layout.shardFilter(deletedShardKeys, alias: "", parameters: &parameters)
            }
            try connection.query(sql, parameters)
            heartbeat()
        }
        if !batch.cascade.isEmpty, let lookup = f.spec.parentLookup {
            if f.cascadeDeferred {
                // A replay: listed, deleted at its end (WarehouseSchema.restoreIndexes).
                try connection.query("INSERT INTO \(qualified(WarehouseSchema.deferredCascades)) SELECT $1, unnest($2::bigint[])", [f.spec.table, arrayLiteral(batch.cascade)])
            } else {
                try connection.query("DELETE FROM \(table) WHERE \(quoteIdentifier(lookup.column)) = ANY($1::bigint[])", [arrayLiteral(batch.cascade)])
            }
            heartbeat()
        }
        try update(layout, updates)
        try copy(inserts, into: table, columns: layout.columnList, binary: layout.binary)
        try writeEarly(f, batch.early)
    }

    /// `(identity columns) IN (SELECT * FROM unnest($1::t1[], ...))`.
    func identityMatch(_ layout: TableLayout) -> String {
        let columns = layout.identity.map { quoteIdentifier(layout.columns[$0]) }.joined(separator: ", ")
        let arrays = layout.identity.enumerated().map { "$\($0.offset + 1)::\(layout.types[$0.element])[]" }.joined(separator: ", ")
        return "(\(columns)) IN (SELECT * FROM unnest(\(arrays)))"
    }

    func identityArrays(_ layout: TableLayout, _ identities: [[String?]]) -> [String?] {
        layout.identity.indices.map { i in arrayLiteral(identities.map { $0[i] }) }
    }

    /// Rows an UPDATE takes as parameter arrays (`unnest`); more go through a staging table.
    static let arrayUpdateLimit = 500

    /// Rewrites existing rows with one UPDATE from a subquery, setting every column but the identity
    /// and distribution columns (which the caller has checked are unchanged). Up to
    /// ``arrayUpdateLimit`` rows (a live micro-batch) the subquery unnests parameter arrays, one per
    /// column: one statement, and on Citus no intermediate result to ship to every node first
    /// (measured: freshness at 200 tx/s ~23% lower on Citus, ~8% on PostgreSQL). More rows (a replay, a
    /// huge transaction), and tables with array-typed columns, are COPYed into a session staging table
    /// that the subquery reads. On Citus the UPDATE also names the distribution column values of its
    /// rows (`t.key = ANY(...)`): Citus then sends it to those rows' shards only, not to every shard,
    /// and a worker holding none of them stays out of the commit (measured at 200 tx/s: the
    /// fact_procedures UPDATE 2.5 → 0.9 ms a batch, the two-phase COMMIT 1.8 → 1.3 ms).
    func update(_ layout: TableLayout, _ rows: [(identity: [String?], row: RowValues)]) throws {
        guard !rows.isEmpty else { return }
        let fixed = Set(layout.identity + layout.distribution)
        let setColumns = layout.columns.indices.filter { !fixed.contains($0) }
        guard !setColumns.isEmpty else { return }
        let ids = layout.identity.indices.map { "cdc_id_\($0)" }
        let sets = setColumns.map { "\(quoteIdentifier(layout.columns[$0])) = s.\(quoteIdentifier(layout.columns[$0]))" }.joined(separator: ", ")
        let match = layout.identity.enumerated().map { "t.\(quoteIdentifier(layout.columns[$0.element])) = s.cdc_id_\($0.offset)" }.joined(separator: " AND ")
        let source: String
        var parameters: [String?] = []
        // An array-typed column cannot travel as an element of a parameter array (unnest would
        // flatten it): such tables always go through the staging table.
        if rows.count <= Self.arrayUpdateLimit, !layout.types.contains(where: { $0.hasSuffix("[]") }) {
            var arrays: [String] = [], names: [String] = []
            for (i, column) in layout.identity.enumerated() {
                parameters.append(arrayLiteral(rows.map { $0.identity[i] }))
                arrays.append("$\(parameters.count)::\(layout.types[column])[]")
                names.append(ids[i])
            }
            for column in setColumns {
                parameters.append(arrayLiteral(rows.map { $0.row[column] }))
                arrays.append("$\(parameters.count)::\(layout.types[column])[]")
                names.append(quoteIdentifier(layout.columns[column]))
            }
            source = "SELECT * FROM unnest(\(arrays.joined(separator: ", "))) AS u(\(names.joined(separator: ", ")))"
        } else {
            let stage = quoteIdentifier("cdc_stage_" + layout.table)
            if !stagingCreated.contains(layout.table) {
                // Declared from the layout's types, not `AS SELECT ... FROM` the table: a temporary table
                // made from a distributed one would be planned as a distributed query.
                let definitions = zip(ids, layout.identity.map { layout.types[$0] }).map { "\($0) \($1)" }
                    + zip(layout.columns, layout.types).map { "\(quoteIdentifier($0)) \($1)" }
                try connection.execute("CREATE TEMP TABLE IF NOT EXISTS \(stage) (\(definitions.joined(separator: ", "))) ON COMMIT DELETE ROWS")
                stagingCreated.insert(layout.table)
            }
            // A chunk after the first of a source transaction: the earlier chunk's rows are still staged.
            if !stagedInTransaction.insert(layout.table).inserted { try connection.execute("TRUNCATE pg_temp.\(stage)") }
            try copy(rows.map { $0.row.prepending($0.identity) }, into: "pg_temp." + stage, columns: (ids + [layout.columnList]).joined(separator: ", "),
                     binary: layout.binary.map { encoders in layout.identity.map { encoders[$0] } + encoders })
            source = "SELECT \((ids + layout.columns.map(quoteIdentifier)).joined(separator: ", ")) FROM pg_temp.\(stage)"
        }
        let prune = layout.shardKey.map { key in layout.shardFilter(rows.map { $0.row[key] }, alias: "t.", parameters: &parameters) } ?? ""
        try connection.query("UPDATE \(qualified(layout.table)) AS t SET \(sets) FROM (\(source)) AS s WHERE \(match)\(prune)", parameters)
        heartbeat()
    }

    /// Sends `rows` by `COPY ... FROM STDIN`: in binary where the table's column types allow it
    /// (`binary`, see ``PGBinaryCopy``: PostgreSQL then does not parse the values' text, a quarter of
    /// its COPY time), in text otherwise. A row with a value whose text the binary encoder does not
    /// know ends the binary COPY before it, and it and the rows after it go by a text COPY in the same
    /// transaction, where PostgreSQL parses the value (or rejects it with its own error).
    func copy(_ rows: [RowValues], into table: String, columns: String, binary: [PGBinaryCopy.Encoder]?) throws {
        guard !rows.isEmpty else { return }
        let chunkSize = 256 * 1024
        var next = 0
        if let binary {
            var ended = false
            try connection.copyIn("COPY \(table) (\(columns)) FROM STDIN (FORMAT binary)") {
                guard !ended else { return nil }
                heartbeat()
                let chunk = PGBinaryCopy.chunk(rows, next: &next, encoders: binary, size: chunkSize)
                ended = chunk.last
                return chunk.data
            }
            guard next < rows.count else { return }
        }
        try connection.copyIn("COPY \(table) (\(columns)) FROM STDIN") {
            guard next < rows.count else { return nil }
            heartbeat()
            var chunk: [UInt8] = []
            chunk.reserveCapacity(chunkSize)
            while next < rows.count, chunk.count < chunkSize {
                TableLayout.appendCopyLine(rows[next], to: &chunk)
                next += 1
            }
            return chunk
        }
    }

    /// The batch's changes to `cdc_early_arrivals` (milestones waiting for their fact row).
    func writeEarly(_ f: FactProjector, _ writes: EarlyArrival.Writes) throws {
        let table = quoteIdentifier(schema) + ".cdc_early_arrivals"
        let milestones = f.milestones
        if !writes.cleared.isEmpty {
            try connection.query("DELETE FROM \(table) WHERE fact_table = $1 AND milestone = ANY($2::text[])", [f.spec.table, arrayLiteral(writes.cleared)])
        }
        if !writes.deleted.isEmpty {
            let list = "[" + writes.deleted.map { key in
                "{\"milestone\":\(EarlyArrival.json(milestones[key.milestone].spec.source)),\"grain\":\(EarlyArrival.json(key.grain.values))}"
            }.joined(separator: ",") + "]"
            try connection.query("""
                DELETE FROM \(table) e USING jsonb_to_recordset($2::jsonb) AS d(milestone text, grain jsonb)
                WHERE e.fact_table = $1 AND e.milestone = d.milestone AND e.grain = d.grain
                """, [f.spec.table, list])
        }
        if !writes.inserted.isEmpty {
            let list = "[" + writes.inserted.map { key, entry in
                let columns = milestones[key.milestone].spec.columns
                let values = zip(columns, entry.values).compactMap { column, value in
                    value.map { EarlyArrival.json(column) + ":" + EarlyArrival.json($0) }
                }
                return "{\"milestone\":\(EarlyArrival.json(milestones[key.milestone].spec.source)),\"grain\":\(EarlyArrival.json(key.grain.values)),"
                    + "\"v\":{\(values.joined(separator: ","))},\"lsn\":\(EarlyArrival.json(entry.lsn)),\"time\":\(EarlyArrival.json(entry.time))}"
            }.joined(separator: ",") + "]"
            try connection.query("""
                INSERT INTO \(table) (fact_table, milestone, grain, milestone_values, source_lsn, commit_time)
                SELECT $1, d.milestone, d.grain, d.v, d.lsn::pg_lsn, d.time::timestamptz
                FROM jsonb_to_recordset($2::jsonb) AS d(milestone text, grain jsonb, v jsonb, lsn text, time text)
                """, [f.spec.table, list])
        }
    }
}
