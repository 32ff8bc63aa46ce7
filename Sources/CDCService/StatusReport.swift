import Capture
import EventLog
import Foundation
import Lifecycle
import PGClient
import Projection

/// What `cdc status` reports: the log, the slot, the warehouse checkpoint, the history index and the
/// privacy policy, with the problems found. Gathered read-only (the log is opened read-only and the
/// writer lock is never taken), so it works whether or not `cdc run` is running.
public struct StatusReport: Sendable {
    public struct Log: Sendable {
        public var path: String
        public var headSeq: UInt64
        public var headLSN: LSN
        public var headCommitTime: Int64?
        public var resumeLSN: LSN
        public var sizeBytes: UInt64?
    }

    public struct Projection: Sendable {
        public var schema: String
        public var lastSeq: UInt64
        public var lastLSN: String?
        public var lastCommitTime: Int64?
        public var lagRecords: UInt64
        public var lagSeconds: Double
    }

    public var log: Log?
    public var slot: SlotStatus?
    public var projection: Projection?
    public var historyIndexPosition: UInt64?
    public var privacy: PrivacyEpoch?
    /// Backfills of tables read after `cdc init` (meta `backfill`), oldest first.
    public var backfills: [BackfillState.Job] = []
    public var problems: [HealthProblem] = []
    /// Something could not be checked (source or warehouse unreachable): exit 2.
    public var cannotTell = false

    public var healthy: Bool { problems.isEmpty && !cannotTell }
    /// 0 healthy, 1 problems, 2 cannot tell.
    public var exitCode: Int32 { cannotTell ? 2 : problems.isEmpty ? 0 : 1 }

    /// Why the log at `path` cannot be opened for reading; nil when it can.
    static func openFailure(_ path: String) -> String? {
        do {
            _ = try EventLog.openForReading(path: path)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// Gathers the report for `config`; failures become problems, nothing throws.
    public static func gather(_ config: Config) -> StatusReport {
        var report = StatusReport()
        var eventLog: EventLog?
        if EventLog.exists(at: config.log.path), let log = try? EventLog.openForReading(path: config.log.path),
           (try? log.state()) == .ready, let position = try? log.position() {
            eventLog = log
            let size = log.dataFileSize()?.bytes
            report.log = Log(path: config.log.path, headSeq: position.head, headLSN: position.lastCommitLSN,
                             headCommitTime: position.lastCommitTime, resumeLSN: position.resumeLSN, sizeBytes: size)
            report.privacy = (try? log.privacyHistory())?.last
            if let bytes = try? log.backfillState(), let state = try? JSONDecoder().decode(BackfillState.self, from: Data(bytes)) {
                report.backfills = state.jobs
            }
            if let index = try? HistoryIndex.openReadOnly(log: log) {
                report.historyIndexPosition = try? index.indexedThrough()
            }
            // What `cdc run` would pause on, seen from outside: a full or read-only filesystem.
            if let fs = StorageFault.filesystem(of: config.log.path) {
                if fs.readOnly {
                    report.problems.append(HealthProblem(code: "log_read_only", message: "the filesystem of the log \(config.log.path) is mounted read-only: `cdc run` cannot write the log (it refuses to start, or pauses when already running); remount it read-write"))
                } else if fs.freeBytes < 1 << 20 {
                    report.problems.append(HealthProblem(code: "log_no_space", message: "the filesystem of the log \(config.log.path) has \(byteSize(fs.freeBytes)) free: `cdc run` cannot write and pauses (nothing is lost); free space on it"))
                }
            }
        } else if EventLog.exists(at: config.log.path), let failure = Self.openFailure(config.log.path) {
            // There is a log, but this user cannot open it (permissions, a damaged file): say why.
            report.problems.append(HealthProblem(code: "log_unreadable", message: failure))
        } else {
            report.problems.append(HealthProblem(code: "log_not_initialised", message: "the log at \(config.log.path) does not exist or is not initialised: run `cdc init --config ...`"))
        }

        do {
            let source = try PGConnection(conninfo: config.source.url,
                                          overrides: SessionSettings.sqlOverrides(applicationName: "cdc-status", connectTimeout: 10))
            if let slot = try SlotStatus.query(source, slot: config.source.slot) {
                report.slot = slot
                if !slot.active {
                    report.problems.append(HealthProblem(code: "slot_inactive", message: "nothing streams from replication slot \"\(slot.name)\": `cdc run` is not running (or is reconnecting); the source keeps WAL for the slot until it does"))
                }
                report.problems += slot.problems(limit: config.source.maxRetainedWAL)
            } else {
                report.problems.append(HealthProblem(code: "slot_missing", message: "replication slot \"\(config.source.slot)\" does not exist on the source (dropped, or lost in a failover): cdc never re-creates it silently — move the log aside and run `cdc init`"))
            }
        } catch {
            report.cannotTell = true
            report.problems.append(HealthProblem(code: "source_unreachable", message: "cannot read the slot: \(error) — check [source] url and that the server is running"))
        }

        if let warehouse = config.warehouse {
            do {
                let mapping = try ProjectionMapping.load(path: warehouse.mapping)
                let connection = try warehouse.target().connect(application: "cdc-status")
                if let checkpoint = try WarehouseSchema.checkpoint(connection, schema: warehouse.schema, projection: mapping.name) {
                    let head = report.log?.headSeq ?? 0
                    let behind = head > checkpoint.lastSeq ? head - checkpoint.lastSeq : 0
                    let lag = behind == 0 || eventLog == nil ? 0 : MonitorService.lagSeconds(log: eventLog!, after: checkpoint.lastSeq, head: head)
                    let time = checkpoint.lastSeq == 0 ? nil : (try? eventLog?.record(checkpoint.lastSeq))??.header.commitTime
                    report.projection = Projection(schema: warehouse.schema, lastSeq: checkpoint.lastSeq, lastLSN: checkpoint.lastLSN,
                                                   lastCommitTime: time, lagRecords: behind, lagSeconds: lag)
                    let limit = config.metrics?.maxProjectionLag ?? 60
                    if lag > limit {
                        report.problems.append(HealthProblem(code: "projection_lagging", message: "the warehouse is \(String(format: "%.1f", lag)) s behind the log (\(behind) records), above max_projection_lag (\(limit) s): is `cdc run` projecting?"))
                    }
                } else {
                    report.problems.append(HealthProblem(code: "warehouse_not_initialised", message: "warehouse schema \(warehouse.schema) has no cdc checkpoint: run `cdc init`"))
                }
            } catch {
                report.cannotTell = true
                report.problems.append(HealthProblem(code: "warehouse_unreachable", message: "cannot read the warehouse checkpoint: \(error)"))
            }
        }
        return report
    }

    /// The report as `cdc status --json` prints it (keys in snake_case; LSNs as PostgreSQL prints them;
    /// times RFC 3339 UTC; sizes in bytes).
    public func jsonObject() -> [String: Any] {
        var object: [String: Any] = ["healthy": healthy, "problems": problems.map { ["code": $0.code, "message": $0.message] }]
        if let log {
            object["log"] = ["path": log.path, "head_seq": log.headSeq, "head_lsn": log.headLSN.description,
                             "head_commit_time": log.headCommitTime.map { rfc3339(microseconds: $0) } ?? NSNull(),
                             "resume_lsn": log.resumeLSN.description, "size_bytes": log.sizeBytes ?? NSNull()] as [String: Any]
        } else {
            object["log"] = NSNull()
        }
        if let slot {
            object["slot"] = ["name": slot.name, "active": slot.active, "active_pid": slot.activePID ?? NSNull(),
                              "restart_lsn": slot.restartLSN?.description ?? NSNull(),
                              "confirmed_flush_lsn": slot.confirmedFlushLSN?.description ?? NSNull(),
                              "retained_wal_bytes": slot.retainedWALBytes ?? NSNull(), "wal_status": slot.walStatus ?? NSNull(),
                              "safe_wal_size": slot.safeWALSize ?? NSNull()] as [String: Any]
        } else {
            object["slot"] = NSNull()
        }
        if let projection {
            object["projection"] = ["schema": projection.schema, "last_seq": projection.lastSeq, "last_lsn": projection.lastLSN ?? NSNull(),
                                    "last_commit_time": projection.lastCommitTime.map { rfc3339(microseconds: $0) } ?? NSNull(),
                                    "lag_records": projection.lagRecords, "lag_seconds": (projection.lagSeconds * 1000).rounded() / 1000] as [String: Any]
        } else {
            object["projection"] = NSNull()
        }
        let head = log?.headSeq ?? 0
        object["history_index"] = ["position": historyIndexPosition ?? NSNull(),
                                   "lag_records": historyIndexPosition.map { head > $0 ? head - $0 : 0 } ?? head] as [String: Any]
        if let privacy {
            object["privacy"] = ["since_seq": privacy.sinceSeq, "key_id": privacy.policy.keyID ?? NSNull(),
                                 "columns": privacy.policy.columns.mapValues(\.rawValue)] as [String: Any]
        } else {
            object["privacy"] = ["since_seq": NSNull(), "key_id": NSNull(), "columns": [String: String]()] as [String: Any]
        }
        let running = backfills.firstIndex { !$0.done }
        object["backfills"] = backfills.enumerated().map { index, job in
            ["table": job.table, "request": job.request, "where": job.whereSQL ?? NSNull(), "rows": job.rows, "chunks": job.chunks,
             "state": Self.backfillState(job, running: index == running), "error": job.error ?? NSNull()] as [String: Any]
        }
        return object
    }

    static func backfillState(_ job: BackfillState.Job, running: Bool) -> String {
        job.error != nil ? "refused" : job.done ? "done" : running ? "running" : "queued"
    }

    /// The report as text, a line per part, then `problem: CODE: message` lines.
    public func lines() -> [String] {
        var lines: [String] = []
        if let log {
            lines.append("log         \(log.path): head \(log.headSeq) at \(log.headLSN)"
                         + (log.headCommitTime.map { " (\(rfc3339(microseconds: $0)))" } ?? "")
                         + ", resume \(log.resumeLSN)" + (log.sizeBytes.map { ", \(byteSize($0))" } ?? ""))
        }
        if let slot {
            lines.append("slot        \(slot.name): " + (slot.active ? "active" + (slot.activePID.map { " (pid \($0))" } ?? "") : "inactive")
                         + ", restart_lsn \(slot.restartLSN?.description ?? "-"), confirmed \(slot.confirmedFlushLSN?.description ?? "-")"
                         + ", retains \(slot.retainedWALBytes.map(byteSize) ?? "-"), wal_status \(slot.walStatus ?? "-")"
                         + (slot.safeWALSize.map { ", safe_wal_size \($0)" } ?? ""))
        }
        if let projection {
            lines.append("projection  \(projection.schema): record \(projection.lastSeq)"
                         + (projection.lastLSN.map { " at \($0)" } ?? "")
                         + ", \(projection.lagRecords) records behind (\(String(format: "%.1f", projection.lagSeconds)) s)")
        }
        if log != nil {
            let head = log?.headSeq ?? 0
            lines.append("history     " + (historyIndexPosition.map { "index at \($0), \(head > $0 ? head - $0 : 0) records behind" } ?? "no index yet"))
        }
        if let privacy, !privacy.policy.columns.isEmpty {
            let hashed = privacy.policy.columns.filter { $0.value == .hash }.keys.sorted()
            let redacted = privacy.policy.columns.filter { $0.value == .redact }.keys.sorted()
            lines.append("privacy     since record \(privacy.sinceSeq): hashed \(hashed.isEmpty ? "none" : hashed.joined(separator: ", "))"
                         + (privacy.policy.keyID.map { " (key id \($0))" } ?? "") + "; redacted \(redacted.isEmpty ? "none" : redacted.joined(separator: ", "))")
        } else if log != nil {
            lines.append("privacy     no column protected")
        }
        // Backfills: every one not done, and the last five done.
        let running = backfills.firstIndex { !$0.done }
        let finished = backfills.indices.filter { backfills[$0].done }.suffix(5)
        for index in backfills.indices where !backfills[index].done || finished.contains(index) {
            let job = backfills[index]
            lines.append("backfill    \(job.table)" + (job.whereSQL.map { " where \($0)" } ?? "") + ": \(Self.backfillState(job, running: index == running))"
                         + (job.error.map { " (\($0))" } ?? ", \(job.rows) rows in \(job.chunks) chunks") + " (request \(job.request))")
        }
        lines.append("healthy     \(healthy ? "yes" : "no")")
        for problem in problems { lines.append("problem: \(problem.code): \(problem.message)") }
        return lines
    }
}
