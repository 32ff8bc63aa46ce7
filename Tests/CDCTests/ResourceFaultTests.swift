import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Resource faults under a running `cdc run`: the log's filesystem full (a size-limited tmpfs holding
/// the log directory), the warehouse's disk full (a tablespace on a size-limited tmpfs). cdc must not
/// crash or lose anything: it pauses the part that cannot write, says so once (naming the path, the
/// operation and the errno) and in /readyz, `cdc status` and the metrics, and resumes by itself when
/// space returns, ending exact.
///
/// Needs root (mount); skipped otherwise.
@Suite(.serialized, .timeLimit(.minutes(15)), .enabled(if: geteuid() == 0, "mounting a tmpfs needs root"))
struct ResourceFaultTests {
    /// A tmpfs of `size` mounted on `path` (created), unmounted by ``unmount()``.
    struct Tmpfs {
        let path: String

        init(at path: String, size: String, owner: String? = nil) throws {
            self.path = path
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            try Self.mount(["-t", "tmpfs", "-o", "size=\(size),mode=0755", "tmpfs", path])
            if let owner { _ = try Shell.run("/bin/chown", [owner, path]) }
        }

        /// Sets the size limit (it may not go below what is used).
        func resize(_ size: String) throws { try Self.mount(["-o", "remount,size=\(size)", path]) }

        /// Bytes used on it.
        var used: Int {
            var info = statvfs()
            guard statvfs(path, &info) == 0 else { return 0 }
            return Int(info.f_blocks - info.f_bfree) * Int(info.f_frsize)
        }

        func unmount() { _ = try? Shell.run("/bin/umount", ["-l", path]) }

        static func mount(_ arguments: [String]) throws {
            let result = try Shell.run("/bin/mount", arguments)
            guard result.status == 0 else { throw TestFailure("mount \(arguments.joined(separator: " ")): \(result.stderr)") }
        }
    }

    /// A workspace with table `bulk` and [metrics] whose log directory is a tmpfs with `roomKilobytes`
    /// free after `cdc init`, and a test_decoding slot decoding from that point (`from`).
    struct LogOnTmpfs {
        let ws: CDCWorkspace
        let disk: Tmpfs
        let decoder: TestDecodingSlot
        let from: String
        let port: Int

        init(_ name: String, roomKilobytes: Int) throws {
            ws = try CDCWorkspace(name, schema: false)
            do {
                try createBulkTable(ws)
                port = try LoopbackPort.free()
                try ws.appendConfig("[metrics]\nlisten = \"127.0.0.1:\(port)\"\n")
                disk = try Tmpfs(at: ws.logPath, size: "64m")
            } catch {
                ws.tearDown()
                throw error
            }
            do {
                try ws.initialize()
                decoder = try TestDecodingSlot.create(server: ws.server, database: ws.database)
                from = try ws.server.currentLSN()
                try disk.resize("\(disk.used / 1024 + roomKilobytes)k")
            } catch {
                disk.unmount()
                ws.tearDown()
                throw error
            }
        }

        func tearDown() {
            decoder.drop()
            disk.unmount()
            ws.tearDown()
        }
    }

    /// The log's filesystem fills while `cdc run` streams: capture pauses (one error line naming the
    /// log, the operation and ENOSPC; /readyz 503 `log_no_space`; `cdc status` `log_no_space`;
    /// `cdc_capture_paused` 1), keeps running, and once the filesystem has room again resumes by itself;
    /// the log then holds exactly what test_decoding decodes from the same WAL, and verifies.
    @Test func aFullLogDiskPausesCaptureWhichResumesExactlyWhenSpaceReturns() throws {
        // Room for about 1 MiB more than init wrote: the 4 MiB below cannot fit.
        let fixture = try LogOnTmpfs("fault_logfull", roomKilobytes: 1024)
        defer { fixture.tearDown() }
        let (ws, disk, decoder, from, port) = (fixture.ws, fixture.disk, fixture.decoder, fixture.from, fixture.port)

        let run = try ws.startRun()
        defer { run.killIfRunning() }
        for batch in 0..<4 { try insertBulk(ws, batch * 1000 + 1, batch * 1000 + 1000, bytes: 1000) }
        let readyz = "http://127.0.0.1:\(port)/readyz"
        let paused = HTTP.poll(readyz, timeout: 60) { $0.status == 503 && $0.body.contains("log_no_space") }
        #expect(paused.status == 503 && paused.body.contains("log_no_space"), "/readyz while the disk is full: \(paused.status) \(paused.body)")
        #expect(run.isRunning, "cdc run keeps running on a full disk; stderr:\n\(run.stderr.suffix(3000))")
        let metrics = HTTP.get("http://127.0.0.1:\(port)/metrics").body
        #expect(metrics.contains("cdc_capture_paused 1"), "cdc_capture_paused while paused:\n\(metrics.split(separator: "\n").filter { $0.contains("paused") }.joined(separator: "\n"))")
        let status = try ws.cdc(["status", "--config", ws.configPath])
        #expect(status.status == 1 && status.stdout.contains("problem: log_no_space:"), "cdc status on a full log disk:\n\(status.stdout)\(status.stderr)")

        try disk.resize("512m")
        try poll(what: "the 4 transactions in the log after space returned; stderr:\n\(run.stderr.suffix(3000))", timeout: 120) {
            try ws.rowEvents(table: "bulk").count == 4000
        }
        let ready = HTTP.poll(readyz, timeout: 60) { $0.status == 200 }
        #expect(ready.status == 200, "/readyz after space returned: \(ready.body)")
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "SIGTERM after the recovery: exit 0; stderr:\n\(run.stderr.suffix(3000))")

        let stderr = run.stderr
        let errors = stderr.split(separator: "\n").filter { $0.contains(" error ") && $0.contains("[Capture]") }
        #expect(errors.count == 1, "one error line for the pause, got:\n\(errors.map(String.init).joined(separator: "\n"))")
        if let line = errors.first {
            #expect(line.contains("log \(ws.logPath): no space left on device") && line.contains("committing"),
                    "the line names the log, the cause and the operation: \(line)")
        }
        #expect(stderr.contains("capture resumed"), "the resumption is logged")
        #expect(!stderr.contains("double free") && !stderr.contains("Program crashed"), "no crash:\n\(stderr.suffix(3000))")

        let decoded = try decoder.transactions()
        try #require(decoded.count == 4, "test_decoding decoded the 4 transactions")
        try LogInspectTests.expectSame(try ws.exportLines().map(parseEvent), decoded, try ws.server.commitRecords(of: decoded, from: from))
        let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
        #expect(verify.status == 0, "cdc log verify after the recovery: \(verify.stdout)\(verify.stderr)")
    }

    /// The source rows a telemetry load needs (a facility, surgeon, robot and procedure P1).
    static let procedure = [Fixture.facility("F1"), Fixture.surgeon("S1", "Dr One"), Fixture.robot("R1", facility: "F1"),
                            Fixture.procedure("P1", robot: "R1", surgeon: "S1", facility: "F1")].joined(separator: ";\n")

    /// One source transaction of `count` telemetry rows of P1 with ids from `first`, each carrying
    /// `bytes` bytes of text (tool_type), mapped to fact_procedure_telemetry.
    static func telemetry(_ ws: WarehouseWorkspace, from first: Int, count: Int, bytes: Int) throws {
        try ws.sql("""
            INSERT INTO procedure_telemetry (telemetry_id, procedure_id, sample_timestamp, tool_type, tool_active)
            SELECT g, 'P1', '2026-03-14 10:00:00+00'::timestamptz + g * interval '1 second', left(repeat(md5(g::text), \(bytes / 32 + 1)), \(bytes)), true
            FROM generate_series(\(first), \(first + count - 1)) g
            """)
    }

    /// The warehouse's disk fills (its tables live in a tablespace on a small tmpfs): projection pauses
    /// (`warehouse_disk_full` in /readyz) while capture goes on writing the log; once the disk has room
    /// the projector resumes by itself, and the warehouse equals a clean replay.
    @Test func aFullWarehouseDiskPausesProjectionWhileCaptureGoesOn() throws {
        let ws = try WarehouseWorkspace("fault_dwfull")
        defer { ws.tearDown() }
        let port = try LoopbackPort.free()
        try ws.writeConfig(sections: "[metrics]\nlisten = \"127.0.0.1:\(port)\"")
        let disk = try Tmpfs(at: "/tmp/cdc-fault-ts-\(UInt32.random(in: 0...UInt32.max))", size: "64m", owner: "postgres")
        defer { disk.unmount(); try? FileManager.default.removeItem(atPath: disk.path) }
        let tablespace = "fault_ts_\(UInt32.random(in: 0...UInt32.max))"
        try ws.sql("CREATE TABLESPACE \(tablespace) LOCATION '\(disk.path)'")
        defer {
            _ = try? ws.server.execute("DROP DATABASE IF EXISTS \(ws.warehouseDatabase) WITH (FORCE)")
            _ = try? ws.sql("DROP TABLESPACE IF EXISTS \(tablespace)")
        }
        try ws.sql("ALTER DATABASE \(ws.warehouseDatabase) SET default_tablespace = \(tablespace)")
        try ws.sql(Self.procedure)
        try ws.initialize()
        try ws.run()
        try disk.resize("\(disk.used / 1024 + 512)k")

        let run = try ws.startRun()
        defer { run.killIfRunning() }
        for batch in 0..<3 { try Self.telemetry(ws, from: batch * 5000 + 1, count: 5000, bytes: 200) }
        let readyz = "http://127.0.0.1:\(port)/readyz"
        let paused = HTTP.poll(readyz, timeout: 90) { $0.status == 503 && $0.body.contains("warehouse_disk_full") }
        #expect(paused.status == 503 && paused.body.contains("warehouse_disk_full"), "/readyz while the warehouse disk is full: \(paused)")
        // Capture is not held up: every row reaches the log meanwhile.
        try poll(what: "the 15000 telemetry inserts in the log while the warehouse is full", timeout: 60) {
            try ws.source.rowEvents(table: "procedure_telemetry").count == 15000
        }
        #expect(run.isRunning, "cdc run keeps running; stderr:\n\(run.stderr.suffix(3000))")

        try disk.resize("512m")
        try poll(what: "the 15000 telemetry rows in the warehouse after space returned; stderr:\n\(run.stderr.suffix(3000))", timeout: 120) {
            try ws.dwValue("SELECT count(*) FROM dw.fact_procedure_telemetry") == "15000"
        }
        let ready = HTTP.poll(readyz, timeout: 60) { $0.status == 200 }
        #expect(ready.status == 200, "/readyz after space returned: \(ready)")
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "SIGTERM after the recovery: exit 0; stderr:\n\(run.stderr.suffix(3000))")
        #expect(run.stderr.contains("53100"), "the log names the SQLSTATE of the full disk:\n\(run.stderr.suffix(3000))")
        try ws.replay(schema: "dw_replay")
        let differences = WarehouseWorkspace.differences(try ws.dump(schema: "dw"), try ws.dump(schema: "dw_replay"), names: ("live", "replay"))
        #expect(differences.isEmpty, "live = replay after the warehouse disk filled:\n\(differences.prefix(20).joined(separator: "\n"))")
    }

    /// The log's disk fills while the projector still has records to apply: capture pauses, the
    /// projector drains what the log already holds (the warehouse catches up with the log's head while
    /// capture is paused); with space back both resume and the warehouse equals a clean replay.
    @Test func aFullLogDiskDoesNotStopTheProjectorDrainingTheLog() throws {
        let ws = try WarehouseWorkspace("fault_logdrain")
        defer { ws.tearDown() }
        let port = try LoopbackPort.free()
        try ws.writeConfig(sections: "[metrics]\nlisten = \"127.0.0.1:\(port)\"")
        let disk = try Tmpfs(at: ws.source.logPath, size: "64m")
        defer { disk.unmount() }
        try ws.sql(Self.procedure)
        try ws.initialize()
        try ws.run()
        try disk.resize("\(disk.used / 1024 + 2048)k")

        let run = try ws.startRun()
        defer { run.killIfRunning() }
        for batch in 0..<6 { try Self.telemetry(ws, from: batch * 2000 + 1, count: 2000, bytes: 400) }
        let readyz = "http://127.0.0.1:\(port)/readyz"
        let paused = HTTP.poll(readyz, timeout: 90) { $0.status == 503 && $0.body.contains("log_no_space") }
        #expect(paused.status == 503 && paused.body.contains("log_no_space"), "/readyz while the log disk is full: \(paused)")
        let logged = try ws.source.rowEvents(table: "procedure_telemetry").count
        #expect(logged > 0 && logged < 12000, "part of the load is in the log when capture pauses: \(logged)")
        try poll(what: "the warehouse holding every telemetry row of the log (\(logged)) while capture is paused", timeout: 60) {
            try ws.dwValue("SELECT count(*) FROM dw.fact_procedure_telemetry") == String(logged)
        }
        #expect(HTTP.get(readyz).body.contains("log_no_space"), "capture is still paused while the projector drained the log")

        try disk.resize("512m")
        try poll(what: "all 12000 telemetry rows in the warehouse after space returned; stderr:\n\(run.stderr.suffix(3000))", timeout: 120) {
            try ws.dwValue("SELECT count(*) FROM dw.fact_procedure_telemetry") == "12000"
        }
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "SIGTERM after the recovery: exit 0; stderr:\n\(run.stderr.suffix(3000))")
        try ws.replay(schema: "dw_replay")
        let differences = WarehouseWorkspace.differences(try ws.dump(schema: "dw"), try ws.dump(schema: "dw_replay"), names: ("live", "replay"))
        #expect(differences.isEmpty, "live = replay after the log disk filled:\n\(differences.prefix(20).joined(separator: "\n"))")
    }

    /// The disk fills in the middle of a transaction bigger than a batch (written in chunks that stay
    /// invisible until its end): capture pauses; SIGTERM then stops it with exit 0, nothing of the
    /// transaction visible and nothing confirmed past the log; the next `cdc run`, with space back,
    /// captures the whole transaction once.
    @Test func stoppingWhilePausedInsideAHugeTransactionLosesNothing() throws {
        let fixture = try LogOnTmpfs("fault_hugefull", roomKilobytes: 20 * 1024)
        defer { fixture.tearDown() }
        let (ws, disk, decoder, from, port) = (fixture.ws, fixture.disk, fixture.decoder, fixture.from, fixture.port)
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        try insertBulk(ws, 1, 40_000, bytes: 1000)  // ~40 MB: chunks of 16 MiB, the second one does not fit
        let paused = HTTP.poll("http://127.0.0.1:\(port)/readyz", timeout: 90) { $0.body.contains("log_no_space") }
        #expect(paused.body.contains("log_no_space"), "/readyz while the disk is full: \(paused)")
        #expect(try ws.lastVisibleSeq() == 0 || ws.rowEvents(table: "bulk").isEmpty, "no part of the transaction is visible")
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "SIGTERM while paused: exit 0; stderr:\n\(run.stderr.suffix(3000))")
        #expect(run.stderr.contains("stopped while the log could not be written"), "the stop says what was not written:\n\(run.stderr.suffix(2000))")
        let confirmed = try ws.sql("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0]

        try disk.resize("512m")
        try ws.catchUp()
        let decoded = try decoder.transactions()
        try #require(decoded.count == 1 && decoded[0].changes.count == 40_000, "test_decoding decoded the transaction")
        let records = try ws.server.commitRecords(of: decoded, from: from)
        let commit = records[decoded[0].xid]?.lsn
        #expect(lsnValue(confirmed ?? "") ?? .max < lsnValue(commit ?? "") ?? 0,
                "when stopped while paused, the slot was confirmed only before the transaction: \(confirmed ?? "nil"), its commit \(commit ?? "?")")
        try LogInspectTests.expectSame(try ws.exportLines().map(parseEvent), decoded, records)
        let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
        #expect(verify.status == 0, "cdc log verify: \(verify.stdout)\(verify.stderr)")
    }
}
