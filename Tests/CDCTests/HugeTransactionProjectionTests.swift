import EventLog
import Foundation
import PGClient
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A source transaction far bigger than a projection batch (dimension changes, then hundreds of
/// thousands of fact rows, then updates of those rows) becomes visible in the warehouse at once: readers
/// see the warehouse before it or after it, never in between, whether `cdc run` or `cdc replay` applies
/// it, across a kill -9 in the middle; the checkpoint only ever stands at a transaction's end; and both
/// build the same warehouse. Observed from the warehouse's side: a statement-level trigger on the
/// telemetry fact counts its writes in a sequence (not transactional, so a reader sees chunks being
/// written before they commit) and records their transaction ids; a row trigger on `cdc_checkpoint`
/// records every checkpoint that committed.
@Suite(.timeLimit(.minutes(20))) struct HugeTransactionProjectionTests {
    /// The huge source transaction: facility FAC-001 renamed (a new dim_facilities version), robot
    /// ROB-001 upgraded (a new dim_robots version), `procedures` procedures (`PROC-H…`) inserted, then
    /// `telemetry` telemetry rows of them (ids from 10,000,001), then every procedure updated twice
    /// (`in_progress`, then `completed`): `2 + 3 × procedures + telemetry` row changes, the updates
    /// reaching rows written by earlier chunks.
    struct Huge {
        var procedures: Int
        var telemetry: Int
        var rows: Int { 2 + 3 * procedures + telemetry }
        static let firstTelemetryID = 10_000_001

        var sql: String {
            """
            UPDATE facilities SET facility_name = facility_name || ' (huge)' WHERE facility_id = 'FAC-001';
            UPDATE surgical_robots SET software_version = software_version || '-huge' WHERE robot_id = 'ROB-001';
            INSERT INTO surgical_procedures (procedure_id, robot_id, surgeon_id, facility_id, procedure_type, procedure_category,
                                             patient_id, patient_age, patient_gender, start_time, duration_minutes, status)
            SELECT 'PROC-H' || lpad(g::text, 7, '0'), 'ROB-001', 'SRG-0001', 'FAC-001', 'Cholecystectomy', 'General',
                   'PAT-H' || g, 20 + g % 60, CASE WHEN g % 2 = 0 THEN 'F' ELSE 'M' END,
                   timestamptz '2026-03-01 08:00:00+00' + g * interval '1 minute', 30 + g % 200, 'scheduled'
            FROM generate_series(1, \(procedures)) g;
            INSERT INTO procedure_telemetry (telemetry_id, procedure_id, sample_timestamp, arm_position_x, arm_position_y,
                                             force_feedback, tool_type, tool_active, lighting_level, video_fps)
            SELECT \(Self.firstTelemetryID - 1) + g, 'PROC-H' || lpad((1 + g % \(procedures))::text, 7, '0'),
                   timestamptz '2026-03-01 08:00:00+00' + g * interval '1 second', g % 1000 / 10.0, g % 777 / 7.0,
                   g % 50 / 3.0, 'grasper', g % 3 = 0, g % 100, 60
            FROM generate_series(1, \(telemetry)) g;
            UPDATE surgical_procedures SET status = 'in_progress' WHERE procedure_id LIKE 'PROC-H%';
            UPDATE surgical_procedures SET status = 'completed', end_time = start_time + interval '2 hours' WHERE procedure_id LIKE 'PROC-H%';
            """
        }
    }

    /// What a reader sees of the huge transaction in warehouse schema `schema`, in one snapshot.
    struct Seen: Equatable, CustomStringConvertible {
        var renamed: Bool
        var robotUpgraded: Bool
        var procedures: Int
        var completed: Int
        var telemetry: Int
        /// Telemetry rows of the transaction pointing at no procedure row (-1): a lookup that missed
        /// the procedures written by an earlier chunk.
        var unresolved: Int

        var description: String {
            "FAC-001 renamed \(renamed), ROB-001 upgraded \(robotUpgraded), \(procedures) procedures (\(completed) completed), \(telemetry) telemetry rows (\(unresolved) unresolved)"
        }
        static let none = Seen(renamed: false, robotUpgraded: false, procedures: 0, completed: 0, telemetry: 0, unresolved: 0)
        static func all(_ huge: Huge) -> Seen {
            Seen(renamed: true, robotUpgraded: true, procedures: huge.procedures, completed: huge.procedures, telemetry: huge.telemetry, unresolved: 0)
        }

        /// Reads it on `connection` in one REPEATABLE READ snapshot.
        static func read(_ connection: PGConnection, schema: String) throws -> Seen {
            try connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            defer { _ = try? connection.execute("COMMIT") }
            let row = try connection.execute("""
                SELECT (SELECT count(*) FROM \(schema).dim_facilities WHERE facility_id = 'FAC-001' AND is_current AND facility_name LIKE '% (huge)'),
                       (SELECT count(*) FROM \(schema).dim_robots WHERE robot_id = 'ROB-001' AND is_current AND software_version LIKE '%-huge'),
                       (SELECT count(*) FROM \(schema).fact_procedures WHERE procedure_id LIKE 'PROC-H%'),
                       (SELECT count(*) FROM \(schema).fact_procedures WHERE procedure_id LIKE 'PROC-H%' AND status = 'completed'),
                       (SELECT count(*) FROM \(schema).fact_procedure_telemetry WHERE telemetry_id >= \(Huge.firstTelemetryID)),
                       (SELECT count(*) FROM \(schema).fact_procedure_telemetry WHERE telemetry_id >= \(Huge.firstTelemetryID) AND procedure_key < 0)
                """).rows[0].map { Int($0 ?? "") ?? -1 }
            return Seen(renamed: row[0] == 1, robotUpgraded: row[1] == 1, procedures: row[2], completed: row[3], telemetry: row[4], unresolved: row[5])
        }
    }

    /// Installs, in warehouse schema `schema`, the oracles: every statement writing the telemetry fact
    /// bumps sequence `audit.telemetry_writes` (seen by all at once, committed or not) and is recorded
    /// with its transaction id in `audit.writes`; every checkpoint update is recorded in
    /// `audit.checkpoints` (only those that commit).
    static func installOracles(_ ws: WarehouseWorkspace, schema: String) throws {
        try ws.dw("""
            CREATE SCHEMA IF NOT EXISTS audit;
            CREATE SEQUENCE IF NOT EXISTS audit.telemetry_writes;
            CREATE TABLE IF NOT EXISTS audit.writes (sch text NOT NULL, n bigint NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id());
            CREATE TABLE IF NOT EXISTS audit.checkpoints (sch text NOT NULL, last_seq bigint NOT NULL, last_lsn pg_lsn,
                                                          xid xid8 NOT NULL DEFAULT pg_current_xact_id());
            CREATE OR REPLACE FUNCTION audit.note() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO audit.writes (sch, n) VALUES (TG_TABLE_SCHEMA, nextval('audit.telemetry_writes')); RETURN NULL; END $$;
            CREATE OR REPLACE FUNCTION audit.checkpoint() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO audit.checkpoints (sch, last_seq, last_lsn) VALUES (TG_TABLE_SCHEMA, NEW.last_seq, NEW.last_lsn); RETURN NULL; END $$;
            CREATE TRIGGER audit_writes AFTER INSERT OR UPDATE OR DELETE ON \(schema).fact_procedure_telemetry
                FOR EACH STATEMENT EXECUTE FUNCTION audit.note();
            CREATE TRIGGER audit_checkpoints AFTER UPDATE ON \(schema).cdc_checkpoint FOR EACH ROW EXECUTE FUNCTION audit.checkpoint();
            """)
    }

    /// Statements that wrote the telemetry fact so far, committed or not.
    static func telemetryWrites(_ connection: PGConnection) throws -> Int {
        Int(try connection.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM audit.telemetry_writes").rows[0][0] ?? "") ?? -1
    }

    /// Samples what a reader sees of schema `schema` until it sees the whole transaction (or `process`
    /// ended), expecting all or nothing each time, at most every `interval` seconds. Returns how many
    /// samples saw nothing although telemetry writes of the transaction (past `writesBefore`) had
    /// already been made when the snapshot was taken, and the process's peak RSS seen meanwhile.
    static func watch(_ ws: WarehouseWorkspace, schema: String, huge: Huge, writesBefore: Int, while process: RunningCDC, interval: Double = 0,
                      sourceLocation: SourceLocation = #_sourceLocation) throws -> (samples: Int, nothingWhileWriting: Int, peak: Peak) {
        let reader = try ws.server.connect(database: ws.warehouseDatabase)
        var samples = 0, nothingWhileWriting = 0, partial: [String] = [], peak = Peak()
        try poll(what: "a reader of \(schema) sees the whole transaction (\(samples) samples; partial: \(partial.prefix(3))); \(process.stderr.suffix(2000))",
                 timeout: 600, sourceLocation: sourceLocation) {
            // The writes count is read before the snapshot is taken: a snapshot that shows nothing was
            // taken while those writes were made and not committed.
            if samples > 0 { usleep(UInt32(interval * 1_000_000)) }
            peak.sample(process)
            let writes = try telemetryWrites(reader)
            let seen = try Seen.read(reader, schema: schema)
            samples += 1
            if seen == .none {
                if writes > writesBefore { nothingWhileWriting += 1 }
                return !process.isRunning
            }
            if seen != .all(huge) { partial.append("\(seen) after \(writes - writesBefore) telemetry writes") }
            return true
        }
        #expect(partial.isEmpty, "a reader saw part of the transaction: \(partial.prefix(5))", sourceLocation: sourceLocation)
        return (samples, nothingWhileWriting, peak)
    }

    /// Runs the huge transaction on the source; returns its commit LSN.
    static func commitHuge(_ ws: WarehouseWorkspace, _ huge: Huge) throws -> String {
        let change = try ws.change(huge.sql)
        #expect(Int(try ws.sql("SELECT count(*) FROM procedure_telemetry WHERE telemetry_id >= \(Huge.firstTelemetryID)")[0][0] ?? "") == huge.telemetry)
        return change.commit.lsn
    }

    /// A process's peak memory as sampled from /proc/PID/status while it runs, in MiB: `rss` the
    /// kernel's high-water mark (VmHWM, which counts the pages of the memory-mapped log it read), `anon`
    /// the largest anonymous resident memory seen (RssAnon: the heap, without the mapped log).
    struct Peak: CustomStringConvertible {
        var rss = 0, anon = 0

        mutating func sample(_ process: RunningCDC) {
            guard let text = try? String(contentsOfFile: "/proc/\(process.pid)/status", encoding: .utf8) else { return }
            func kb(_ key: String) -> Int {
                text.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
            }
            rss = max(rss, kb("VmHWM:") / 1024)
            anon = max(anon, kb("RssAnon:") / 1024)
        }

        var description: String { "peak RSS \(rss) MiB (anonymous \(anon) MiB)" }
    }

    /// Waits up to `timeout` seconds for `process` to exit, sampling its memory into `peak`; returns its
    /// exit status.
    static func finish(_ process: RunningCDC, _ peak: inout Peak, timeout: Double = 900) throws -> Int32 {
        try poll(what: "cdc exits: \(process.stderr.suffix(2000))", timeout: timeout) {
            peak.sample(process)
            return !process.isRunning
        }
        return process.wait().status
    }

    /// The log's head.
    static func head(_ ws: WarehouseWorkspace) throws -> UInt64 {
        try EventLog.openForReading(path: ws.source.logPath).position().head
    }

    /// Every checkpoint `audit.checkpoints` recorded for `schema` is a transaction end: the log record
    /// after it (if any) has another commit LSN. Returns the checkpoints.
    static func expectCheckpointsAtTransactionEnds(_ ws: WarehouseWorkspace, schema: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt64] {
        let seqs = try ws.dw("SELECT DISTINCT last_seq FROM audit.checkpoints WHERE sch = '\(schema)' ORDER BY 1").compactMap { $0[0].flatMap { UInt64($0) } }
        let head = try Self.head(ws)
        for seq in seqs where seq < head {
            let export = try ws.cdc(["log", "export", "--log", ws.source.logPath, "--format", "jsonl", "--from", String(seq), "--to", String(seq + 1)])
            let pair = export.stdout.split(separator: "\n").map { line in
                ((try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any])?["lsn"] as? String
            }
            #expect(pair.count == 2 && pair[0] != nil && pair[0] != pair[1],
                    "checkpoint at log record \(seq) is inside a transaction (records \(seq) and \(seq + 1) have commit LSNs \(pair))",
                    sourceLocation: sourceLocation)
        }
        return seqs
    }

    /// Warehouse schemas `a` and `b` are identical: definitions and small tables compared as
    /// ``WarehouseWorkspace/dump(schema:)`` reads them, the two fact tables row for row on the server.
    static func expectIdentical(_ ws: WarehouseWorkspace, _ a: String, _ b: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let big = ["fact_procedures", "fact_procedure_telemetry"]
        var dumpA = try ws.dump(schema: a), dumpB = try ws.dump(schema: b)
        for table in big { dumpA[table] = nil; dumpB[table] = nil }
        let differences = WarehouseWorkspace.differences(dumpA, dumpB, names: (a, b))
        #expect(differences.isEmpty, "\(a) and \(b) differ:\n\(differences.joined(separator: "\n"))", sourceLocation: sourceLocation)
        for table in big {
            let counts = try ws.dw("""
                SELECT (SELECT count(*) FROM \(a).\(table)), (SELECT count(*) FROM \(b).\(table)),
                       (SELECT count(*) FROM (SELECT t::text FROM \(a).\(table) t EXCEPT ALL SELECT t::text FROM \(b).\(table) t) x),
                       (SELECT count(*) FROM (SELECT t::text FROM \(b).\(table) t EXCEPT ALL SELECT t::text FROM \(a).\(table) t) x)
                """)[0].map { Int($0 ?? "") ?? -1 }
            #expect(counts[0] == counts[1] && counts[2] == 0 && counts[3] == 0,
                    "\(table): \(counts[0]) rows in \(a), \(counts[1]) in \(b); \(counts[2]) only in \(a), \(counts[3]) only in \(b)",
                    sourceLocation: sourceLocation)
        }
    }

    /// The live warehouse holds the source's rows: one fact per procedure and telemetry row.
    static func expectSourceCounts(_ ws: WarehouseWorkspace, schema: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for (fact, table) in [("fact_procedures", "surgical_procedures"), ("fact_procedure_telemetry", "procedure_telemetry")] {
            let warehouse = try ws.dwValue("SELECT count(*) FROM \(schema).\(fact)"), source = try ws.sql("SELECT count(*) FROM \(table)")[0][0]
            #expect(warehouse == source, "\(schema).\(fact) has \(warehouse ?? "?") rows, \(table) \(source ?? "?")", sourceLocation: sourceLocation)
        }
    }

    // MARK: Tests

    @Test func readersSeeAHugeTransactionAllOrNothingWhileRunAndReplayApplyIt() throws {
        let huge = Huge(procedures: 40_000, telemetry: 180_000)
        let ws = try ProjectionOperationsTests.seeded("ht_readers")
        defer { ws.tearDown() }
        try ws.run()
        let before = try ws.server.currentLSN()
        try Self.installOracles(ws, schema: "dw")
        let monitor = try ws.server.connect(database: ws.warehouseDatabase)

        // `cdc run` (capture and projection, `step`): the transaction arrives while it streams.
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"), "\(run.stderr)")
        let writesBefore = try Self.telemetryWrites(monitor)
        let commit = try Self.commitHuge(ws, huge)
        let committed = Date()
        var live = try Self.watch(ws, schema: "dw", huge: huge, writesBefore: writesBefore, while: run)
        let liveSeconds = Date().timeIntervalSince(committed)
        run.send(SIGTERM)
        #expect(try Self.finish(run, &live.peak) == 0, "\(run.stderr)")
        #expect(try Seen.read(monitor, schema: "dw") == .all(huge))
        #expect(live.nothingWhileWriting >= 1, "a reader looked while the transaction was being written (\(live.samples) samples)")
        // One warehouse transaction, written in several chunks (statements of the telemetry fact).
        let chunks = try ws.dw("SELECT count(DISTINCT xid), count(*) FROM audit.writes WHERE sch = 'dw' AND n > \(writesBefore)")[0].map { Int($0 ?? "") ?? -1 }
        #expect(chunks[0] == 1 && chunks[1] >= 2, "the transaction's telemetry was written by \(chunks[1]) statements in \(chunks[0]) warehouse transactions")
        let checkpoints = try Self.expectCheckpointsAtTransactionEnds(ws, schema: "dw")
        #expect(try ws.checkpoint().first?["last_lsn"] == commit && checkpoints.last == (try Self.head(ws)), "checkpoints \(checkpoints)")

        // `cdc replay` (`run`, pipelined): up to just before the transaction, then the transaction alone.
        try ws.replay(schema: "rebuilt", ["--until-lsn", before])
        try Self.installOracles(ws, schema: "rebuilt")
        let replayWritesBefore = try Self.telemetryWrites(monitor)
        #expect(try Seen.read(monitor, schema: "rebuilt") == .none)
        let replayStarted = Date()
        let replay = try ws.source.start(["replay", "--config", ws.configPath, "--schema", "rebuilt"])
        defer { replay.killIfRunning() }
        var replayed = try Self.watch(ws, schema: "rebuilt", huge: huge, writesBefore: replayWritesBefore, while: replay)
        #expect(try Self.finish(replay, &replayed.peak) == 0, "\(replay.stderr)")
        print("figures: \(huge.rows)-row transaction: cdc run captured and applied it in \(Int(liveSeconds)) s, \(live.peak) (\(live.samples) reader samples, \(live.nothingWhileWriting) while writing); "
              + "cdc replay applied it in \(Int(Date().timeIntervalSince(replayStarted))) s, \(replayed.peak) (\(replayed.samples) samples, \(replayed.nothingWhileWriting) while writing)")
        #expect(replayed.nothingWhileWriting >= 1, "a reader looked while the replay wrote the transaction (\(replayed.samples) samples)")
        let replayChunks = try ws.dw("SELECT count(DISTINCT xid), count(*) FROM audit.writes WHERE sch = 'rebuilt' AND n > \(replayWritesBefore)")[0].map { Int($0 ?? "") ?? -1 }
        #expect(replayChunks[0] == 1 && replayChunks[1] >= 2, "replay wrote the transaction's telemetry with \(replayChunks[1]) statements in \(replayChunks[0]) warehouse transactions")
        _ = try Self.expectCheckpointsAtTransactionEnds(ws, schema: "rebuilt")
        try Self.expectIdentical(ws, "dw", "rebuilt")
    }

    @Test func aMillionRowTransactionSurvivesKill9MidwayAndEqualsAReplay() throws {
        let huge = Huge(procedures: 100_000, telemetry: 700_000)
        #expect(huge.rows >= 1_000_000)
        let ws = try ProjectionOperationsTests.seeded("ht_million")
        defer { ws.tearDown() }
        try ws.run()
        try Self.installOracles(ws, schema: "dw")
        let monitor = try ws.server.connect(database: ws.warehouseDatabase)
        let started = Date()

        // Killed once a few chunks of the transaction are written, long before its end.
        let first = try ws.startRun()
        defer { first.killIfRunning() }
        #expect(first.waitForLog("streaming"), "\(first.stderr)")
        let writesBefore = try Self.telemetryWrites(monitor)
        let commit = try Self.commitHuge(ws, huge)
        let committed = Date()
        var firstPeak = Peak()
        try poll(what: "cdc run writes chunks of the transaction (\((try? Self.telemetryWrites(monitor)).map { $0 - writesBefore } ?? -1) telemetry writes): \(first.stderr.suffix(2000))",
                 timeout: 600) {
            firstPeak.sample(first)
            return try Self.telemetryWrites(monitor) >= writesBefore + 3 || !first.isRunning
        }
        first.send(SIGKILL)
        #expect(first.wait().status == 128 + SIGKILL, "\(first.stderr)")
        let killedAfter = try Self.telemetryWrites(monitor) - writesBefore
        #expect(try Seen.read(monitor, schema: "dw") == .none, "killed after \(killedAfter) telemetry writes: nothing of the transaction is visible")
        #expect(try ws.checkpoint().first?["last_lsn"] != commit)

        // Restarted: applies it from its start, all at once. As under systemd with WatchdogSec=20s (not
        // --endpos, after which the notifications stop): a loop without a beat for 10 s is stalled.
        // (Without the in-batch heartbeat a chunk goes 7-15 s without one; 5 s was too tight for a
        // machine shared with the other suites.)
        let restarted = Date()
        let notify = try NotifySocket()
        defer { notify.close() }
        var environment = ServiceTests.systemd(notify)
        environment["WATCHDOG_USEC"] = "20000000"
        let second = try ws.startRun([], environment: environment)
        defer { second.killIfRunning() }
        let restartWrites = try Self.telemetryWrites(monitor)
        var live = try Self.watch(ws, schema: "dw", huge: huge, writesBefore: restartWrites, while: second, interval: 1)
        second.send(SIGTERM)
        #expect(try Self.finish(second, &live.peak) == 0, "\(second.stderr)")
        let applied = Date()
        #expect(try Seen.read(monitor, schema: "dw") == .all(huge))
        let stalls = notify.lines.filter { $0.key == "STATUS" && $0.value.contains("stalled") }
        #expect(stalls.isEmpty, "the projection loop kept beating through the long warehouse transaction: \(stalls.prefix(3))")
        #expect(notify.lines.contains { $0.text == "WATCHDOG=1" }, "\(notify.transcript.suffix(2000))")
        try Self.expectSourceCounts(ws, schema: "dw")
        let checkpoints = try Self.expectCheckpointsAtTransactionEnds(ws, schema: "dw")
        #expect(try ws.checkpoint().first?["last_lsn"] == commit && checkpoints.last == (try Self.head(ws)), "checkpoints \(checkpoints)")
        let chunks = try ws.dw("SELECT count(DISTINCT xid), count(*) FROM audit.writes WHERE sch = 'dw' AND n > \(restartWrites)")[0].map { Int($0 ?? "") ?? -1 }
        #expect(chunks[0] == 1 && chunks[1] >= 5, "the restarted run wrote the transaction's telemetry with \(chunks[1]) statements in \(chunks[0]) warehouse transactions")

        // A clean replay builds the same warehouse.
        let replayStarted = Date()
        let replay = try ws.source.start(["replay", "--config", ws.configPath, "--schema", "rebuilt"])
        defer { replay.killIfRunning() }
        var replayed = Peak()
        #expect(try Self.finish(replay, &replayed) == 0, "\(replay.stderr)")
        let replayDone = Date()
        try Self.expectIdentical(ws, "dw", "rebuilt")
        func seconds(_ from: Date, _ to: Date = Date()) -> Int { Int(to.timeIntervalSince(from)) }
        print("figures: \(huge.rows)-row transaction: source commit \(seconds(started, committed)) s; cdc run (capture, then projection) killed after \(seconds(committed, restarted)) s "
              + "and \(killedAfter) telemetry writes, \(firstPeak); restarted cdc run applied it in \(seconds(restarted, applied)) s, \(live.peak) "
              + "(\(live.samples) reader samples, \(live.nothingWhileWriting) while writing); cdc replay \(seconds(replayStarted, replayDone)) s, \(replayed); test \(seconds(started)) s")
    }
}
