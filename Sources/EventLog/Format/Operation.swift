/// The kind of an event-log record. The raw value is the record's first byte on disk.
public enum Operation: UInt8, Sendable, CaseIterable {
    /// A row copied by `cdc init` from the snapshot at the slot's consistent point.
    case snapshot = 1
    case insert = 2
    case update = 3
    case delete = 4
    /// One truncated table (a TRUNCATE of several tables gives one record per table).
    case truncate = 5
    /// A logical decoding message (`pg_logical_emit_message`).
    case message = 6
    /// A relation definition (a version of a table's schema) that later row records refer to.
    case relation = 7
    /// The origin of a replicated transaction (pgoutput's Origin message): the first record of a
    /// transaction that another node's logical replication applied here.
    case origin = 8

    /// A change to a table's rows (snapshot, insert, update, delete, truncate): the records that carry
    /// a relation seq and feed history and projection.
    public var isChange: Bool {
        switch self {
        case .snapshot, .insert, .update, .delete, .truncate: true
        case .message, .relation, .origin: false
        }
    }

    /// The name used in exports (`op`).
    public var name: String {
        switch self {
        case .snapshot: "snapshot"
        case .insert: "insert"
        case .update: "update"
        case .delete: "delete"
        case .truncate: "truncate"
        case .message: "message"
        case .relation: "relation"
        case .origin: "origin"
        }
    }

    public init?(name: String) {
        guard let op = Operation.allCases.first(where: { $0.name == name }) else { return nil }
        self = op
    }
}
