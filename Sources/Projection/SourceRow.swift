import EventLog

/// The source transaction a change belongs to, with the texts the warehouse writes for it.
struct ChangeContext {
    /// Commit LSN of the source transaction.
    let lsn: UInt64
    let lsnText: String
    /// Commit time as timestamptz input text (RFC 3339, UTC).
    let timestamp: String
    /// Commit date in the warehouse's zone (`YYYY-MM-DD`).
    let date: String
}

/// A value of a source row as the projector sees it.
enum Incoming: Equatable {
    /// An unchanged TOASTed value: keep what the warehouse has.
    case unchanged
    case value(String?)
}

/// A log record as the projector folds it: row images decoded from the log's bytes into
/// ``RowValues`` (one buffer per image: no String per value, and freed without being read). A class:
/// a fold passes each record through several lists and handlers, and a copy of a struct this wide
/// retained and released each of its references (5% of a replay's CPU).
final class ChangeRecord {
    let header: RecordHeader
    /// The old image (key columns only under REPLICA IDENTITY DEFAULT), for update and delete.
    let before: RowValues?
    /// The new image, for snapshot, insert and update.
    let after: RowValues?
    /// The definition carried by a relation record.
    let relation: RelationDefinition?

    init(header: RecordHeader, before: RowValues? = nil, after: RowValues? = nil, relation: RelationDefinition? = nil) {
        self.header = header
        self.before = before
        self.after = after
        self.relation = relation
    }

    /// A record of the images `before` and `after`.
    convenience init(header: RecordHeader, before: [Incoming]?, after: [Incoming]?) {
        self.init(header: header, before: before.map(Self.image), after: after.map(Self.image))
    }

    static func image(_ values: [Incoming]) -> RowValues {
        var builder = RowValues.Builder()
        builder.reset(values.count)
        for (i, value) in values.enumerated() {
            switch value {
            case .unchanged: builder.setUnchanged(i)
            case .value(let v): builder.set(i, v)
            }
        }
        return builder.build()
    }

    /// Decodes a record of the log's format (see ``RecordCodec``); `builder` is scratch, reused.
    static func decode(_ buffer: UnsafeRawBufferPointer, builder: inout RowValues.Builder) throws -> ChangeRecord {
        var r = ByteReader(buffer)
        let header = try RecordCodec.decodeHeader(&r)
        switch header.op {
        case .snapshot, .insert:
            return ChangeRecord(header: header, after: try tuple(&r, &builder))
        case .update:
            guard let old = OldValues(rawValue: try r.u8()) else { throw FormatError.malformed("old-values kind") }
            let before = old != .none ? try tuple(&r, &builder) : nil
            return ChangeRecord(header: header, before: before, after: try tuple(&r, &builder))
        case .delete:
            guard OldValues(rawValue: try r.u8()) != nil else { throw FormatError.malformed("old-values kind") }
            return ChangeRecord(header: header, before: try tuple(&r, &builder))
        case .relation:
            return ChangeRecord(header: header, relation: try RecordCodec.decodeRelation(&r))
        case .truncate, .message, .origin:
            return ChangeRecord(header: header)
        }
    }

    static func tuple(_ r: inout ByteReader, _ builder: inout RowValues.Builder) throws -> RowValues {
        var collector = ImageCollector()
        swap(&collector.builder, &builder)
        defer { swap(&collector.builder, &builder) }
        try TupleReader.read(&r, into: &collector)
        return collector.builder.build()
    }
}

/// Collects a tuple's columns into a ``RowValues`` image.
struct ImageCollector: TupleVisitor {
    var builder = RowValues.Builder()
    mutating func begin(columns: Int) { builder.reset(columns) }
    mutating func null(column: Int) {}
    mutating func unchangedToast(column: Int) { builder.setUnchanged(column) }
    mutating func text(column: Int, _ bytes: UnsafeRawBufferPointer) { builder.set(column, bytes.assumingMemoryBound(to: UInt8.self)) }
}

/// Where the columns a projector reads sit in one version of a source table.
struct SourcePlan {
    /// Position of each wanted column in the relation, nil when this relation version lacks it.
    let positions: [Int?]

    init(_ wanted: [String], in relation: RelationDefinition) {
        var index: [String: Int] = [:]
        for (i, c) in relation.columns.enumerated() { index[c.name] = i }
        positions = wanted.map { index[$0] }
    }

    /// Wanted column `i` of `tuple`.
    @inline(__always)
    func incoming(_ tuple: RowValues, _ i: Int) -> Incoming {
        guard let p = positions[i], p < tuple.count else { return .value(nil) }
        return tuple.incoming(p)
    }

    /// Sets `column` of `row` to wanted column `i` of `tuple`, from its bytes; an unchanged TOASTed
    /// value leaves the row's.
    @inline(__always)
    func copy(_ tuple: RowValues, _ i: Int, to column: Int, of row: inout RowValues.Builder) {
        withValue(tuple, i) { row.set(column, $0) }
    }

    /// Calls `body` with wanted column `i`'s bytes (nil for NULL), unless it is unchanged TOAST.
    @inline(__always)
    func withValue(_ tuple: RowValues, _ i: Int, _ body: (UnsafeBufferPointer<UInt8>?) -> Void) {
        guard let p = positions[i], p < tuple.count else { return body(nil) }
        tuple.withReader { reader in
            if !reader.isUnchanged(p) { body(reader.bytes(p)) }
        }
    }

    /// Wanted columns `range` of `tuple` as plain values (unchanged TOAST as NULL: keys are never TOASTed).
    func values(_ tuple: RowValues, _ range: Range<Int>) -> [String?] {
        range.map { i in
            if case .value(let v) = incoming(tuple, i) { return v }
            return nil
        }
    }

    /// Wanted columns `range` of `tuple` as a grain (unchanged TOAST as NULL), with no array for one
    /// column and no String for an integer.
    func grain(_ tuple: RowValues, _ range: Range<Int>) -> Grain {
        guard range.count == 1 else { return Grain(values(tuple, range)) }
        guard let p = positions[range.lowerBound], p < tuple.count else { return Grain(utf8: nil) }
        return tuple.withReader { Grain(utf8: $0.bytes(p)) }
    }
}

/// The source columns one projector reads, and where they sit in each relation version seen so far.
struct SourceColumns {
    /// The column names, in the order the projector addresses them.
    let names: [String]
    private var plans: [UInt64: SourcePlan] = [:]

    init(_ names: [String]) { self.names = names }

    /// The plan for rows written with relation version `relationSeq`.
    mutating func plan(_ relationSeq: UInt64, _ relation: RelationDefinition) -> SourcePlan {
        if let plan = plans[relationSeq] { return plan }
        let plan = SourcePlan(names, in: relation)
        plans[relationSeq] = plan
        return plan
    }
}
