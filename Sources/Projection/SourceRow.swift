import EventLog

/// The source transaction a change belongs to, with the texts the warehouse writes for it.
struct ChangeContext {
    /// Commit LSN of the source transaction.
    let lsn: UInt64
    let lsnText: String
    /// Commit time as timestamptz text.
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
    func incoming(_ tuple: [Datum], _ i: Int) -> Incoming {
        guard let p = positions[i], p < tuple.count else { return .value(nil) }
        switch tuple[p] {
        case .null: return .value(nil)
        case .unchangedToast: return .unchanged
        case .text(let bytes): return .value(String(decoding: bytes, as: UTF8.self))
        }
    }

    /// Wanted columns `range` of `tuple` as plain values (unchanged TOAST as NULL: keys are never TOASTed).
    func values(_ tuple: [Datum], _ range: Range<Int>) -> [String?] {
        range.map { i in
            if case .value(let v) = incoming(tuple, i) { return v }
            return nil
        }
    }
}
