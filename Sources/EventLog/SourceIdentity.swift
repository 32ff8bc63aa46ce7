import Foundation

/// The PostgreSQL source a log belongs to. Recorded by `cdc init`; a log refuses any other source.
public struct SourceIdentity: Codable, Equatable, Sendable {
    /// `IDENTIFY_SYSTEM`'s system identifier (unique per cluster).
    public var systemIdentifier: String
    /// The source database name.
    public var database: String
    /// The logical replication slot.
    public var slot: String
    /// The publication.
    public var publication: String

    public init(systemIdentifier: String, database: String, slot: String, publication: String) {
        self.systemIdentifier = systemIdentifier
        self.database = database
        self.slot = slot
        self.publication = publication
    }

    enum CodingKeys: String, CodingKey {
        case systemIdentifier = "system_identifier", database, slot, publication
    }

    /// The first field that differs from `other`, as `name: ours vs theirs`, or nil when equal.
    public func difference(from other: SourceIdentity) -> String? {
        if systemIdentifier != other.systemIdentifier {
            return "system identifier \(systemIdentifier) vs \(other.systemIdentifier)"
        }
        if database != other.database { return "database \(database) vs \(other.database)" }
        if slot != other.slot { return "slot \(slot) vs \(other.slot)" }
        if publication != other.publication { return "publication \(publication) vs \(other.publication)" }
        return nil
    }
}

/// Where the log stands: what is visible and where the stream resumes.
public struct LogPosition: Equatable, Sendable {
    /// The sequence number of the last visible (complete-transaction) record; 0 when empty.
    public var head: UInt64
    /// Every source transaction whose commit LSN is below this is in the log: the stream resumes
    /// here, and this is the flush position confirmed to PostgreSQL.
    public var resumeLSN: LSN
    /// The commit LSN of the last transaction in the log (the consistent point after the snapshot).
    public var lastCommitLSN: LSN
    /// Commit time of that transaction (µs since 1970), nil when unknown.
    public var lastCommitTime: Int64?

    public init(head: UInt64, resumeLSN: LSN, lastCommitLSN: LSN, lastCommitTime: Int64?) {
        self.head = head
        self.resumeLSN = resumeLSN
        self.lastCommitLSN = lastCommitLSN
        self.lastCommitTime = lastCommitTime
    }

    public static let empty = LogPosition(head: 0, resumeLSN: .zero, lastCommitLSN: .zero, lastCommitTime: nil)
}

/// The life-cycle state of a log.
public enum LogState: String, Sendable {
    /// `cdc init` recorded the source and may have created the slot, but the snapshot is not complete.
    case initializing
    /// The snapshot is complete; `cdc run` may stream.
    case ready
}
