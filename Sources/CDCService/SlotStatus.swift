import Capture
import EventLog
import Lifecycle
import PGClient

/// The replication slot as `pg_replication_slots` shows it, with the WAL it holds back: what
/// `cdc status`, `/readyz` and the `cdc_slot_*` metrics report.
public struct SlotStatus: Sendable, Equatable {
    public var name: String
    public var active: Bool
    public var activePID: Int?
    public var restartLSN: LSN?
    public var confirmedFlushLSN: LSN?
    /// The server's current WAL position minus `restart_lsn`: the WAL the server keeps for this slot.
    public var retainedWALBytes: UInt64?
    /// reserved, extended, unreserved or lost (PostgreSQL 13+).
    public var walStatus: String?
    /// Bytes that can still be written to WAL before the slot is in danger (null: no limit).
    public var safeWALSize: Int64?

    /// The slot `name` on the server `connection` is connected to (an ordinary SQL connection), or nil
    /// when it does not exist.
    public static func query(_ connection: PGConnection, slot name: String) throws -> SlotStatus? {
        let result = try connection.query("""
            SELECT active, active_pid, restart_lsn, confirmed_flush_lsn, wal_status, safe_wal_size,
                   (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END) - restart_lsn
            FROM pg_replication_slots WHERE slot_name = $1
            """, [name])
        guard result.rowCount == 1 else { return nil }
        return SlotStatus(
            name: name, active: result.value(0, 0) == "t", activePID: result.value(0, 1).flatMap { Int($0) },
            restartLSN: result.value(0, 2).flatMap { LSN($0) }, confirmedFlushLSN: result.value(0, 3).flatMap { LSN($0) },
            retainedWALBytes: result.value(0, 6).flatMap { Double($0) }.map { UInt64(max(0, $0)) },
            walStatus: result.value(0, 4), safeWALSize: result.value(0, 5).flatMap { Int64($0) })
    }

    /// What is wrong with the slot: its WAL is unreserved or lost, or it retains more than `limit`.
    public func problems(limit: UInt64) -> [HealthProblem] {
        var problems: [HealthProblem] = []
        switch walStatus {
        case "unreserved":
            problems.append(HealthProblem(code: "slot_wal_unreserved", message: "replication slot \"\(name)\" has wal_status = unreserved: it holds more WAL than max_slot_wal_keep_size allows and the server will invalidate it at the next checkpoint unless cdc catches up; make sure `cdc run` is streaming (slot active: \(active)), or raise max_slot_wal_keep_size on the source. If it becomes lost: drop it with SELECT pg_drop_replication_slot('\(name)'), move the log aside and run `cdc init`"))
        case "lost":
            problems.append(HealthProblem(code: "slot_wal_lost", message: CaptureError.invalidatedSlotMessage(name)))
        default:
            break
        }
        if let retained = retainedWALBytes, retained > limit {
            problems.append(HealthProblem(code: "retained_wal_high", message: "replication slot \"\(name)\" retains \(byteSize(retained)) of WAL, above [source] max_retained_wal (\(byteSize(limit))): the source's disk fills while cdc does not confirm; check that `cdc run` is streaming (slot active: \(active)) and keeping up"))
        }
        return problems
    }
}
