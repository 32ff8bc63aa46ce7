import Foundation
import PGClient

// What the server itself says about a transaction, for tests to compare cdc's output with: the commit
// record in the WAL (pg_walinspect), the commit time (pg_xact_commit_timestamp, which needs the
// sandbox's track_commit_timestamp = on), and PostgreSQL's own logical decoding plugin test_decoding.
// None of it goes through cdc's code.

/// A transaction's commit as the server recorded it.
public struct ServerCommit: Sendable, Equatable, CustomStringConvertible {
    /// Where its WAL commit record starts: the commit LSN logical decoding reports (pgoutput's
    /// commit_lsn, the LSN cdc records).
    public let lsn: String
    /// Where that record ends (test_decoding's COMMIT line, pgoutput's end_lsn).
    public let end: String

    public var description: String { "commit record \(lsn)..\(end)" }
}

private let walinspectLock = NSLock()
nonisolated(unsafe) private var walinspectReady: Set<String> = []

extension PostgresServer {
    /// Creates pg_walinspect in the `postgres` database once per server (it reads the whole cluster's WAL).
    func ensureWalinspect() throws {
        walinspectLock.lock()
        defer { walinspectLock.unlock() }
        guard !walinspectReady.contains(directory) else { return }
        try execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        walinspectReady.insert(directory)
    }

    /// The WAL commit record of transaction `xid` (32-bit, as logical decoding reports it) between
    /// `from` and `to`, read from the WAL with pg_walinspect. The record must be flushed: `to` is capped
    /// at the flush position. Throws unless there is exactly one.
    public func commitRecord(xid: UInt32, from: String, to: String) throws -> ServerCommit {
        try ensureWalinspect()
        let rows = try execute("""
            SELECT start_lsn::text, end_lsn::text
            FROM pg_get_wal_records_info('\(from)', LEAST('\(to)'::pg_lsn, pg_current_wal_flush_lsn()))
            WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' AND xid = '\(xid)'::xid
            """)
        guard rows.count == 1, let start = rows[0][0], let end = rows[0][1] else {
            throw TestFailure("expected one WAL commit record of xid \(xid) in \(from)..\(to), found \(rows)")
        }
        return ServerCommit(lsn: start, end: end)
    }

    /// `pg_xact_commit_timestamp(xid)` rendered as the export renders commit times.
    public func commitTime(xid: UInt32) throws -> String {
        let time = try execute("SELECT \(WarehouseWorkspace.rfc3339("pg_xact_commit_timestamp('\(xid)'::xid)"))")[0][0]
        guard let time else { throw TestFailure("the server has no commit timestamp for xid \(xid) (track_commit_timestamp off?)") }
        return time
    }
}
