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

/// A log record as the projector folds it: row images decoded straight from the log's bytes into
/// ``Incoming`` values (one String per value, no intermediate byte arrays). A class: a fold passes each
/// record through several lists and handlers, and a copy of a struct this wide retained and released
/// each of its references (5% of a replay's CPU).
final class ChangeRecord {
    let header: RecordHeader
    /// The old image (key columns only under REPLICA IDENTITY DEFAULT), for update and delete.
    let before: [Incoming]?
    /// The new image, for snapshot, insert and update.
    let after: [Incoming]?
    /// The definition carried by a relation record.
    let relation: RelationDefinition?

    init(header: RecordHeader, before: [Incoming]? = nil, after: [Incoming]? = nil, relation: RelationDefinition? = nil) {
        self.header = header
        self.before = before
        self.after = after
        self.relation = relation
    }

    /// Decodes a record of the log's format (see ``RecordCodec``).
    static func decode(_ buffer: UnsafeRawBufferPointer) throws -> ChangeRecord {
        var r = ByteReader(buffer)
        let header = try RecordCodec.decodeHeader(&r)
        switch header.op {
        case .snapshot, .insert:
            return ChangeRecord(header: header, after: try tuple(&r))
        case .update:
            guard let old = OldValues(rawValue: try r.u8()) else { throw FormatError.malformed("old-values kind") }
            let before = old != .none ? try tuple(&r) : nil
            return ChangeRecord(header: header, before: before, after: try tuple(&r))
        case .delete:
            guard OldValues(rawValue: try r.u8()) != nil else { throw FormatError.malformed("old-values kind") }
            return ChangeRecord(header: header, before: try tuple(&r))
        case .relation:
            return ChangeRecord(header: header, relation: try RecordCodec.decodeRelation(&r))
        case .truncate, .message, .origin:
            return ChangeRecord(header: header)
        }
    }

    static func tuple(_ r: inout ByteReader) throws -> [Incoming] {
        var collector = IncomingCollector()
        try TupleReader.read(&r, into: &collector)
        return collector.values
    }
}

/// Collects a tuple's columns as ``Incoming`` values (one String per text value).
struct IncomingCollector: TupleVisitor {
    var values: [Incoming] = []
    mutating func begin(columns: Int) { values.reserveCapacity(columns) }
    mutating func null(column: Int) { values.append(.value(nil)) }
    mutating func unchangedToast(column: Int) { values.append(.unchanged) }
    mutating func text(column: Int, _ bytes: UnsafeRawBufferPointer) { values.append(.value(String(decoding: bytes, as: UTF8.self))) }
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
    func incoming(_ tuple: [Incoming], _ i: Int) -> Incoming {
        guard let p = positions[i], p < tuple.count else { return .value(nil) }
        return tuple[p]
    }

    /// Wanted columns `range` of `tuple` as plain values (unchanged TOAST as NULL: keys are never TOASTed).
    func values(_ tuple: [Incoming], _ range: Range<Int>) -> [String?] {
        range.map { i in value(tuple, i) }
    }

    /// Wanted columns `range` of `tuple` as a grain (unchanged TOAST as NULL), with no array for one column.
    func grain(_ tuple: [Incoming], _ range: Range<Int>) -> Grain {
        range.count == 1 ? Grain(one: value(tuple, range.lowerBound)) : Grain(values(tuple, range))
    }

    @inline(__always)
    private func value(_ tuple: [Incoming], _ i: Int) -> String? {
        if case .value(let v) = incoming(tuple, i) { return v }
        return nil
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
