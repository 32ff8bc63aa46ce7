import Synchronization

/// The relation definitions of one log, by the sequence number of the relation record that holds
/// each: every relation record is decoded once and the definition shared by all the log's readers in
/// this process (export, history index and row history, the projector, statistics, verify), from any
/// thread. Relation records never change once written, so an entry never goes stale.
///
/// Each ``EventLog`` owns one (``EventLog/relationCatalog``); ``EventLog/relationDefinition(_:)``
/// loads through it.
public final class RelationCatalog: Sendable {
    private let definitions = Mutex<[UInt64: RelationDefinition]>([:])

    public init() {}

    /// The definition of relation record `seq`, when it has been loaded or remembered.
    public func cached(_ seq: UInt64) -> RelationDefinition? {
        definitions.withLock { $0[seq] }
    }

    /// Keeps the definition of relation record `seq` (one a reader has just decoded anyway).
    public func remember(_ definition: RelationDefinition, at seq: UInt64) {
        definitions.withLock { $0[seq] = definition }
    }

    /// The definition of relation record `seq`: cached, else `load`ed, and kept when `load` says so.
    /// `load` runs under the catalog's lock, so a definition is loaded once however many threads ask
    /// for it at the same time; nil (not kept) when `load` finds none.
    public func definition(_ seq: UInt64, load: (UInt64) throws -> (definition: RelationDefinition, keep: Bool)?) throws -> RelationDefinition? {
        try definitions.withLock { (definitions: inout [UInt64: RelationDefinition]) throws -> RelationDefinition? in
            if let known = definitions[seq] { return known }
            guard let (definition, keep) = try load(seq) else { return nil }
            if keep { definitions[seq] = definition }
            return definition
        }
    }

    /// How many definitions are held.
    public var count: Int { definitions.withLock { $0.count } }
}

extension EventLog {
    /// The definition held by relation record `seq`, through the log's ``RelationCatalog``; nil when
    /// record `seq` is missing or is not a relation record. Only a visible record (at or below the
    /// head) is kept: a record past the head belongs to an unfinished transaction whose seqs a
    /// reconnecting capture may write again.
    public func relationDefinition(_ seq: UInt64) throws -> RelationDefinition? {
        try relationCatalog.definition(seq) { seq in
            guard let record = try record(seq), case .relation(let definition) = record.body else { return nil }
            return (definition, seq <= (try position().head))
        }
    }
}
