import Foundation
import PGClient
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// `cdc run` as a production service (notes: service contract): systemd readiness, status and watchdog
/// over a test-owned NOTIFY_SOCKET; /metrics (checked by promtool and scraped by a real Prometheus),
/// /healthz and /readyz through a stalled projector and a warehouse outage; `cdc status`; the retained
/// WAL limit; WAL retention while idle; bad [metrics] input; and the systemd unit.
@Suite(.timeLimit(.minutes(15))) struct ServiceTests {
    // MARK: Helpers

    static let watchdogUSec = 2_000_000
    static let mebibyte = 1024 * 1024

    /// The environment systemd gives a Type=notify service with WatchdogSec=2s.
    static func systemd(_ notify: NotifySocket, watchdog: Bool = true) -> [String: String] {
        var environment = ["NOTIFY_SOCKET": notify.path]
        if watchdog { environment["WATCHDOG_USEC"] = String(watchdogUSec) }
        return environment
    }

    static func metricsSection(_ port: Int) -> String { "[metrics]\nlisten = \"127.0.0.1:\(port)\"" }

    /// A warehouse workspace whose source has facility F1, captured and set up by `cdc init`, with a
    /// `[metrics]` section listening on `port`.
    static func warehouse(_ name: String, metricsPort port: Int) throws -> WarehouseWorkspace {
        let ws = try WarehouseWorkspace(name)
        do {
            try ws.writeConfig(sections: metricsSection(port))
            try ws.sql(Fixture.facility("F1", "Mercy"))
            try ws.initialize()
        } catch {
            ws.tearDown()
            throw error
        }
        return ws
    }

    /// GET /metrics, parsed.
    static func scrape(_ port: Int) -> (response: HTTPResponse, metrics: MetricsText) {
        let response = HTTP.get("http://127.0.0.1:\(port)/metrics")
        return (response, MetricsText(response.status == 200 ? response.body : ""))
    }

    /// Scrapes every 0.3 s until `done` accepts the metrics or `timeout` seconds pass; returns the last scrape.
    static func scrape(_ port: Int, timeout: Double, until done: (MetricsText) -> Bool) -> MetricsText {
        let deadline = Date().addingTimeInterval(timeout)
        var metrics = scrape(port).metrics
        while !done(metrics) && Date() < deadline {
            usleep(300_000)
            metrics = scrape(port).metrics
        }
        return metrics
    }

    /// The `code`s of a /readyz `reasons` or /healthz and `cdc status` `problems` array.
    static func codes(_ object: [String: Any]?, _ key: String) -> [String] {
        (object?[key] as? [[String: Any]] ?? []).compactMap { $0["code"] as? String }
    }

    /// `cdc status --config F [--json]` and its JSON object (with --json).
    static func status(_ configPath: String, json: Bool = true) throws -> (result: Shell.Result, object: [String: Any]?) {
        let result = try Shell.run(CDCWorkspace.executable, ["status", "--config", configPath] + (json ? ["--json"] : []))
        let object = json ? (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] : nil
        return (result, object)
    }

    /// The value at a dotted path (`slot.active`) of a JSON object: nil when missing, NSNull for null.
    static func field(_ object: [String: Any]?, _ path: String) -> Any? {
        var current: Any? = object
        for key in path.split(separator: ".") { current = (current as? [String: Any])?[String(key)] }
        return current
    }

    /// Whether the dotted path exists (its value may be null).
    static func has(_ object: [String: Any]?, _ path: String) -> Bool {
        var parts = path.split(separator: ".").map(String.init)
        let last = parts.removeLast()
        let parent = parts.isEmpty ? object : field(object, parts.joined(separator: ".")) as? [String: Any]
        return parent?.keys.contains(last) == true
    }

    static func number(_ value: Any?) -> Double? { (value as? NSNumber)?.doubleValue }

    static func isLSN(_ value: Any?) -> Bool {
        guard let text = value as? String else { return false }
        return text.range(of: "^[0-9A-F]+/[0-9A-F]+$", options: .regularExpression) != nil
    }

    /// The head seq that `cdc log digest` covers.
    static func digestSeq(_ ws: CDCWorkspace) throws -> Int {
        let result = try ws.cdc(["log", "digest", "--log", ws.logPath])
        guard result.status == 0,
              let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
              let seq = object["seq"] as? Int else {
            throw TestFailure("cdc log digest failed (\(result.status)): \(result.stderr)\(result.stdout)")
        }
        return seq
    }

    /// A row of pg_replication_slots for the workspace's slot (active, active_pid, restart_lsn,
    /// confirmed_flush_lsn, wal_status).
    static func slotRow(_ ws: CDCWorkspace) throws -> [String: String?] {
        let result = try ws.server.connect().execute("""
            SELECT active::text, active_pid::text, restart_lsn::text, confirmed_flush_lsn::text, wal_status
            FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'
            """)
        guard result.rowCount == 1 else { throw TestFailure("slot \(ws.slot) not found") }
        return Dictionary(uniqueKeysWithValues: (0..<result.columnCount).map { (result.columnName($0), result.value(0, $0)) })
    }

    /// Expects a `cdc run` that stopped on a bad input to have exited 1 with exactly one `cdc: error:`
    /// line (the last one) naming every word.
    static func expectRefused(_ run: RunningCDC, naming words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        let status = run.wait(timeout: 60, sourceLocation: sourceLocation).status
        #expect(status == 1, "exit status 1, got \(status)", sourceLocation: sourceLocation)
        expectOneLineError(Shell.Result(status: status, stdout: "", stderr: run.stderr), naming: words, sourceLocation: sourceLocation)
    }

    // MARK: systemd notify

    @Test func underSystemdItSaysReadyThenStreamingFeedsTheWatchdogAndSaysStoppingOnSIGTERM() throws {
        let port = try LoopbackPort.free()
        let ws = try Self.warehouse("svc_notify", metricsPort: port)
        defer { ws.tearDown() }
        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify))
        defer { run.killIfRunning() }

        let ready = try #require(notify.waitFor("READY=1", timeout: 90, giveUp: { !run.isRunning }),
                                 "READY=1 arrives once streaming and projecting:\n\(notify.transcript)\n\(run.stderr)")
        let lines = notify.lines
        #expect(notify.datagrams[lines[ready].datagram].lines == ["READY=1"], "READY=1 is a datagram of its own:\n\(notify.transcript)")
        #expect(!lines[..<ready].contains { $0.key == "WATCHDOG" }, "no WATCHDOG=1 before READY=1:\n\(notify.transcript)")
        #expect(!lines.contains { $0.key == "STOPPING" }, "not stopping:\n\(notify.transcript)")
        let streaming = notify.waitForLine(from: ready + 1, timeout: 20) { $0.key == "STATUS" && $0.value.hasPrefix("streaming") }
        #expect(streaming != nil, "a STATUS= starting `streaming` after READY=1:\n\(notify.transcript)")
        let firstPing = notify.waitFor("WATCHDOG=1", from: ready + 1, timeout: 20)
        let secondPing = firstPing.flatMap { notify.waitFor("WATCHDOG=1", from: $0 + 1, timeout: 20) }
        #expect(firstPing != nil && secondPing != nil, "WATCHDOG=1 again and again after READY=1:\n\(notify.transcript)")
        #expect(run.isRunning, "\(run.stderr)")

        let beforeStop = notify.lines.count
        run.send(SIGTERM)
        let status = run.wait(timeout: 60).status
        #expect(status == 0, "SIGTERM exits 0: \(run.stderr)")
        try poll(what: "STOPPING=1 reaches the socket's receiving thread:\n\(notify.transcript)", timeout: 10) {
            notify.lines.contains { $0.text == "STOPPING=1" }
        }
        let all = notify.lines
        let stopping = all.firstIndex { $0.text == "STOPPING=1" }
        #expect(stopping.map { $0 >= beforeStop } == true, "STOPPING=1 after SIGTERM:\n\(notify.transcript)")
        if let stopping {
            #expect(all[(stopping + 1)...].allSatisfy { $0.key == "STATUS" }, "nothing but STATUS= after STOPPING=1:\n\(notify.transcript)")
        }
        #expect(all.filter { $0.text == "READY=1" }.count == 1, "READY=1 once:\n\(notify.transcript)")
    }

    @Test func aWatchdogPidOfAnotherProcessTurnsTheWatchdogOff() throws {
        let ws = try CDCWorkspace("svc_wdpid")
        defer { ws.tearDown() }
        try ws.initialize()
        let notify = try NotifySocket()
        defer { notify.close() }
        var environment = Self.systemd(notify)
        environment["WATCHDOG_PID"] = "1"
        let run = try ws.startRun(environment: environment)
        defer { run.killIfRunning() }
        let ready = try #require(notify.waitFor("READY=1", timeout: 60, giveUp: { !run.isRunning }), "\(notify.transcript)\n\(run.stderr)")
        let readyAt = notify.lines[ready].received
        // Two watchdog intervals (WATCHDOG_USEC/2 = 1 s) and more.
        #expect(notify.waitForLine(from: ready + 1, timeout: 20) { $0.key == "STATUS" && $0.value.hasPrefix("streaming") } != nil,
                "\(notify.transcript)")
        while Date() < readyAt.addingTimeInterval(4) { usleep(100_000) }
        #expect(!notify.lines.contains { $0.key == "WATCHDOG" }, "WATCHDOG_PID names another process: no WATCHDOG=1:\n\(notify.transcript)")
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")
    }

    // MARK: A stalled loop

    @Test func aProjectorBlockedInTheWarehouseIsReportedStalledAndRecovers() throws {
        let port = try LoopbackPort.free()
        let ws = try Self.warehouse("svc_stall", metricsPort: port)
        defer { ws.tearDown() }
        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify))
        defer { run.killIfRunning() }
        let healthz = "http://127.0.0.1:\(port)/healthz"
        let ready = try #require(notify.waitFor("READY=1", timeout: 90, giveUp: { !run.isRunning }), "\(notify.transcript)\n\(run.stderr)")
        try #require(notify.waitFor("WATCHDOG=1", from: ready + 1, timeout: 20) != nil, "the watchdog is fed:\n\(notify.transcript)")
        let live = HTTP.poll(healthz, timeout: 30) { $0.status == 200 }
        try #require(live.status == 200, "healthz before the stall: \(live)")
        #expect(live.json?["status"] as? String == "ok", "\(live)")
        try poll(what: "the snapshot is projected: \(run.stderr)") { try ws.count("dim_facilities", where: "facility_id = 'F1'") == 1 }

        // Another session holds the checkpoint table; a source change makes the projector wait on it.
        let blocker = try ws.server.connect(database: ws.warehouseDatabase)
        try blocker.execute("BEGIN; SET LOCAL lock_timeout = '30s'; LOCK TABLE \(ws.schema).cdc_checkpoint IN ACCESS EXCLUSIVE MODE")
        var locked = true
        defer { if locked { _ = try? blocker.execute("ROLLBACK") } }
        let lockedMark = notify.lines.count
        try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")

        let stalled = HTTP.poll(healthz, timeout: 40) { $0.status == 503 }
        let stalledAt = Date()
        try #require(stalled.status == 503, "healthz says 503 once the projection loop is stuck past the threshold: \(stalled)\n\(run.stderr)")
        #expect(stalled.json?["status"] as? String == "stalled", "\(stalled)")
        let problems = stalled.json?["problems"] as? [[String: Any]] ?? []
        #expect(problems.contains { $0["code"] as? String == "loop_stalled" && ($0["message"] as? String ?? "").contains("projection") },
                "a loop_stalled problem naming the projection loop: \(stalled)")
        #expect(notify.waitForLine(from: lockedMark, timeout: 20) { $0.key == "STATUS" && $0.value.contains("stalled") } != nil,
                "a STATUS= saying stalled:\n\(notify.transcript)")
        // No WATCHDOG=1 for 3.5 s while stalled (0.5 s of grace for a datagram already on its way).
        while Date() < stalledAt.addingTimeInterval(4) { usleep(100_000) }
        let pings = notify.lines.filter { $0.text == "WATCHDOG=1" && $0.received > stalledAt.addingTimeInterval(0.5) }
        #expect(pings.isEmpty, "WATCHDOG=1 stops while a loop is stalled:\n\(notify.transcript)")
        let still = HTTP.get(healthz)
        #expect(still.status == 503, "still stalled while the lock is held: \(still)")
        #expect(try ws.current("dim_facilities", "F1")?["facility_name"] == "Mercy", "the change waits behind the lock")
        #expect(run.isRunning, "\(run.stderr)")

        // The lock goes: everything recovers.
        try blocker.execute("ROLLBACK")
        locked = false
        let releasedMark = notify.lines.count
        let recovered = HTTP.poll(healthz, timeout: 40) { $0.status == 200 }
        #expect(recovered.status == 200, "healthz 200 again: \(recovered)")
        #expect(notify.waitFor("WATCHDOG=1", from: releasedMark, timeout: 30) != nil, "WATCHDOG=1 resumes:\n\(notify.transcript)")
        try poll(what: "the change reaches the warehouse: \(run.stderr)") {
            try ws.current("dim_facilities", "F1")?["facility_name"] == "Mercy General"
        }
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")
    }

    // MARK: /metrics

    /// The contract's metrics and their types.
    static let contractMetrics: [(name: String, type: String)] = [
        ("cdc_capture_lag_bytes", "gauge"), ("cdc_capture_latency_seconds", "histogram"),
        ("cdc_log_events_total", "counter"), ("cdc_log_transactions_total", "counter"),
        ("cdc_log_head_seq", "gauge"), ("cdc_log_size_bytes", "gauge"),
        ("cdc_log_commit_records", "histogram"), ("cdc_log_commit_seconds", "histogram"),
        ("cdc_replication_connected", "gauge"), ("cdc_replication_reconnects_total", "counter"),
        ("cdc_slot_retained_wal_bytes", "gauge"), ("cdc_slot_retained_wal_limit_bytes", "gauge"),
        ("cdc_slot_wal_status", "gauge"), ("cdc_slot_active", "gauge"),
        ("cdc_projection_lag_seconds", "gauge"), ("cdc_projection_lag_records", "gauge"),
        ("cdc_projection_last_seq", "gauge"), ("cdc_projection_batch_seconds", "histogram"),
        ("cdc_projection_rows_total", "counter"), ("cdc_warehouse_connected", "gauge"),
        ("cdc_history_index_lag_records", "gauge"), ("cdc_loop_seconds_since_iteration", "gauge"),
        ("cdc_build_info", "gauge"), ("cdc_stream_open_transactions", "gauge"), ("cdc_backfill_tables_pending", "gauge"),
    ]
    static let processMetrics = ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"]

    @Test func metricsExposeTheContractPassPromtoolAndCountWhatWasLogged() throws {
        let port = try LoopbackPort.free()
        let ws = try Self.warehouse("svc_metrics", metricsPort: port)
        defer { ws.tearDown() }
        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify, watchdog: false))
        defer { run.killIfRunning() }
        try #require(notify.waitFor("READY=1", timeout: 90, giveUp: { !run.isRunning }) != nil, "\(notify.transcript)\n\(run.stderr)")
        let base = "http://127.0.0.1:\(port)"

        let (response, metrics) = Self.scrape(port)
        try #require(response.status == 200, "GET /metrics: \(response)\n\(run.stderr)")
        let contentType = response.header("Content-Type") ?? ""
        #expect(contentType.hasPrefix("text/plain") && contentType.contains("version=0.0.4"), "Content-Type: \(contentType)")
        for (name, type) in Self.contractMetrics {
            #expect(metrics.types[name] == type, "# TYPE \(name) \(type), got \(metrics.types[name] ?? "none")")
            #expect(metrics.help[name]?.isEmpty == false, "# HELP \(name) ...")
            if type == "histogram" {
                #expect(!metrics.samples(name + "_bucket", ["le": "+Inf"]).isEmpty && !metrics.samples(name + "_count").isEmpty
                        && !metrics.samples(name + "_sum").isEmpty, "\(name) is exposed as a histogram (buckets, sum, count)")
            }
        }
        for name in Self.processMetrics {
            #expect(metrics.types[name] != nil, "# TYPE \(name)")
            #expect(!metrics.samples(name).isEmpty, "a sample of \(name)")
        }
        #expect(metrics.malformed.isEmpty, "unparseable lines: \(metrics.malformed.prefix(5))")
        let lint = try Promtool.checkMetrics(response.body)
        #expect(lint.status == 0, "promtool check metrics: \(lint.stdout)\(lint.stderr)")

        #expect(HTTP.get(base + "/no-such-path").status == 404)
        #expect(HTTP.request(base + "/metrics", method: "POST").status == 405)
        #expect(HTTP.request(base + "/metrics", method: "HEAD").status == 200)

        // The state gauges (the slot's are refreshed every 5 s).
        let settled = Self.scrape(port, timeout: 30) {
            $0.value("cdc_replication_connected") == 1 && $0.value("cdc_warehouse_connected") == 1 && $0.value("cdc_slot_active") == 1
        }
        #expect(settled.value("cdc_replication_connected") == 1)
        #expect(settled.value("cdc_warehouse_connected") == 1)
        #expect(settled.value("cdc_slot_active") == 1)
        #expect(settled.value("cdc_slot_retained_wal_limit_bytes") == Double(4 * 1024 * 1024 * 1024), "the default max_retained_wal is 4GB")
        let walStatus = try #require(try Self.slotRow(ws.source)["wal_status"] ?? nil)
        let statuses = settled.samples("cdc_slot_wal_status")
        #expect(Set(statuses.compactMap { $0.labels["status"] }) == ["reserved", "extended", "unreserved", "lost"], "\(statuses)")
        #expect(statuses.filter { $0.value == 1 }.compactMap { $0.labels["status"] } == [walStatus], "the slot's wal_status is \(walStatus): \(statuses)")
        let build = settled.samples("cdc_build_info")
        #expect(build.count == 1 && build.first?.value == 1 && build.first?.labels["version"]?.isEmpty == false, "\(build)")
        #expect(Set(settled.samples("cdc_loop_seconds_since_iteration").compactMap { $0.labels["loop"] }) == ["capture", "projection", "history_index"])
        #expect((settled.value("cdc_log_size_bytes") ?? 0) > 0)

        // Source changes are counted as the log records them.
        let headBefore = try Self.digestSeq(ws.source)
        let before = Self.scrape(port, timeout: 30) { $0.value("cdc_log_head_seq") == Double(headBefore) }
        try #require(before.value("cdc_log_head_seq") == Double(headBefore), "cdc_log_head_seq is the log's head \(headBefore)")
        func events(_ m: MetricsText, _ op: String) -> Double { m.value("cdc_log_events_total", ["table": "public.facilities", "op": op]) ?? 0 }
        func dimensionRows(_ m: MetricsText) -> Double {
            m.samples("cdc_projection_rows_total").filter { $0.labels["table"]?.contains("dim_facilities") == true }.reduce(0) { $0 + $1.value }
        }
        try ws.change(Fixture.facility("F2", "Hope"))
        try ws.change("\(Fixture.facility("F3", "Grace")); \(Fixture.facility("F4", "Saint Mary"))")
        try ws.change("UPDATE facilities SET city = 'Cambridge' WHERE facility_id IN ('F2', 'F3')")
        try ws.change("DELETE FROM facilities WHERE facility_id = 'F4'")
        var head = 0
        var after = before
        try poll(what: "the log's head moves past \(headBefore) and cdc_log_head_seq and cdc_projection_last_seq reach it "
                     + "(head \(head), gauges \(after.value("cdc_log_head_seq") ?? -1) and \(after.value("cdc_projection_last_seq") ?? -1))",
                 timeout: 60) {
            head = try Self.digestSeq(ws.source)
            after = Self.scrape(port).metrics
            return head > headBefore && after.value("cdc_log_head_seq") == Double(head) && after.value("cdc_projection_last_seq") == Double(head)
        }
        #expect(after.value("cdc_log_head_seq") == Double(head), "cdc_log_head_seq equals the digest's seq \(head) once caught up")
        #expect(after.value("cdc_projection_last_seq") == Double(head), "the projector caught up")
        #expect(after.value("cdc_projection_lag_records") == 0)
        let logged = try ws.source.export(from: UInt64(headBefore + 1)).filter { $0["table"] as? String == "public.facilities" }
        for (op, expected) in [("insert", 3), ("update", 2), ("delete", 1)] {
            #expect(logged.filter { $0["op"] as? String == op }.count == expected, "the log has \(expected) \(op)s of facilities")
            #expect(events(after, op) - events(before, op) == Double(expected),
                    "cdc_log_events_total{table=\"public.facilities\",op=\"\(op)\"} grew by \(expected): \(events(before, op)) -> \(events(after, op))")
        }
        let transactions = (after.value("cdc_log_transactions_total") ?? 0) - (before.value("cdc_log_transactions_total") ?? 0)
        #expect(transactions == 4, "cdc_log_transactions_total grew by the 4 source transactions, by \(transactions)")
        #expect(dimensionRows(after) > dimensionRows(before), "cdc_projection_rows_total counts rows written to dim_facilities")
        let lintAfter = try Promtool.checkMetrics(Self.scrape(port).response.body)
        #expect(lintAfter.status == 0, "promtool check metrics after traffic: \(lintAfter.stdout)\(lintAfter.stderr)")
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: PrometheusServer.executable), "prometheus is not installed (tools/install-deps)"))
    func aRealPrometheusScrapesTheLogHeadAndZeroLag() throws {
        let port = try LoopbackPort.free()
        let ws = try Self.warehouse("svc_prom", metricsPort: port)
        defer { ws.tearDown() }
        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify, watchdog: false))
        defer { run.killIfRunning() }
        try #require(notify.waitFor("READY=1", timeout: 90, giveUp: { !run.isRunning }) != nil, "\(notify.transcript)\n\(run.stderr)")
        let prometheus = try PrometheusServer.start(scraping: "127.0.0.1:\(port)")
        defer { prometheus.stop() }
        try ws.change(Fixture.facility("F2", "Hope"))
        try ws.change("UPDATE facilities SET city = 'Cambridge' WHERE facility_id = 'F1'")
        // Caught up: the log holds both changes and the projector applied them.
        var head = 0
        try poll(what: "F1's new city is projected and cdc_projection_last_seq reaches the log's head \(head): \(run.stderr)", timeout: 60) {
            head = try Self.digestSeq(ws.source)
            return try ws.current("dim_facilities", "F1")?["city"] == "Cambridge" && Self.scrape(port).metrics.value("cdc_projection_last_seq") == Double(head)
        }

        let seen = try prometheus.waitForValue("cdc_log_head_seq", timeout: 60) { $0 == Double(head) }
        #expect(seen == Double(head), "Prometheus has cdc_log_head_seq = the log's head \(head), got \(seen.map { "\($0)" } ?? "no value"); targets: \(prometheus.targets())")
        let lag = try prometheus.waitForValue("cdc_projection_lag_seconds", timeout: 60) { $0 == 0 }
        #expect(lag == 0, "cdc_projection_lag_seconds is 0 once caught up, got \(lag.map { "\($0)" } ?? "no value"); targets: \(prometheus.targets())")
        #expect(try prometheus.value("up{job=\"cdc\"}") == 1, "targets: \(prometheus.targets())")
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")
    }

    // MARK: /healthz and /readyz

    @Test func readyzSaysWarehouseUnreachableDuringAnOutageWhileHealthzStaysOK() throws {
        let port = try LoopbackPort.free()
        let ws = try Self.warehouse("svc_outage", metricsPort: port)
        defer { ws.tearDown() }
        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify))  // stall threshold 5 s
        defer { run.killIfRunning() }
        let (healthz, readyz) = ("http://127.0.0.1:\(port)/healthz", "http://127.0.0.1:\(port)/readyz")
        try #require(notify.waitFor("READY=1", timeout: 90, giveUp: { !run.isRunning }) != nil, "\(notify.transcript)\n\(run.stderr)")
        let ready = HTTP.poll(readyz, timeout: 60) { $0.status == 200 }
        try #require(ready.status == 200, "readyz before the outage: \(ready)\n\(run.stderr)")
        #expect(ready.json?["ready"] as? Bool == true && Self.codes(ready.json, "reasons").isEmpty, "\(ready)")
        #expect(HTTP.get(healthz).status == 200)

        // The warehouse goes away: no new connections, the projector's connection terminated.
        try ws.server.execute("ALTER DATABASE \(ws.warehouseDatabase) ALLOW_CONNECTIONS false")
        var away = true
        defer { if away { _ = try? ws.server.execute("ALTER DATABASE \(ws.warehouseDatabase) ALLOW_CONNECTIONS true") } }
        try ws.server.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(ws.warehouseDatabase)'")
        let outageMark = notify.lines.count
        try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        let unready = HTTP.poll(readyz, timeout: 60) { $0.status == 503 && Self.codes($0.json, "reasons").contains("warehouse_unreachable") }
        try #require(unready.status == 503, "readyz 503 during the outage: \(unready)\n\(run.stderr)")
        #expect(unready.json?["ready"] as? Bool == false && Self.codes(unready.json, "reasons").contains("warehouse_unreachable"), "\(unready)")

        // Retrying is not a hang: past the stall threshold (5 s here) it is still live and feeding the watchdog.
        let pingMark = notify.lines.count
        usleep(7_000_000)
        let live = HTTP.get(healthz)
        #expect(live.status == 200, "healthz stays 200 while the projector retries: \(live)")
        let stillUnready = HTTP.get(readyz)
        #expect(stillUnready.status == 503 && Self.codes(stillUnready.json, "reasons").contains("warehouse_unreachable"), "\(stillUnready)")
        #expect(Self.scrape(port).metrics.value("cdc_warehouse_connected") == 0, "cdc_warehouse_connected is 0 during the outage")
        #expect(notify.lines[pingMark...].contains { $0.text == "WATCHDOG=1" }, "the watchdog is fed during the outage:\n\(notify.transcript)")
        #expect(notify.lines[outageMark...].contains { $0.key == "STATUS" && $0.value.contains("warehouse") },
                "a STATUS= mentioning the warehouse while retrying:\n\(notify.transcript)")
        #expect(run.isRunning, "\(run.stderr)")

        // It comes back.
        try ws.server.execute("ALTER DATABASE \(ws.warehouseDatabase) ALLOW_CONNECTIONS true")
        away = false
        let back = HTTP.poll(readyz, timeout: 90) { $0.status == 200 }
        #expect(back.status == 200, "readyz 200 after the warehouse returns: \(back)\n\(run.stderr)")
        try poll(what: "projection caught up: \(run.stderr)") { try ws.current("dim_facilities", "F1")?["facility_name"] == "Mercy General" }
        #expect(Self.scrape(port, timeout: 10) { $0.value("cdc_warehouse_connected") == 1 }.value("cdc_warehouse_connected") == 1)
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")
    }

    // MARK: cdc status

    @Test func statusReportsTheLogSlotAndProjectionAndExitsByHealth() throws {
        let ws = try WarehouseWorkspace("svc_status")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try ws.initialize()
        try ws.change("UPDATE facilities SET facility_name = 'Mercy General' WHERE facility_id = 'F1'")
        try ws.run()

        // No `cdc run`: problems, slot inactive.
        let lowWAL = try ws.server.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '\(ws.source.slot)'")[0][0]
        let (stopped, json) = try Self.status(ws.configPath)
        let highWAL = try ws.server.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = '\(ws.source.slot)'")[0][0]
        #expect(stopped.status == 1, "exit 1 without a running service: \(stopped.status) \(stopped.stderr)")
        try #require(json != nil, "--json prints one JSON object: \(stopped.stdout)")
        for key in ["log.path", "log.head_seq", "log.head_lsn", "log.head_commit_time", "log.resume_lsn", "log.size_bytes",
                    "slot.name", "slot.active", "slot.active_pid", "slot.restart_lsn", "slot.confirmed_flush_lsn",
                    "slot.retained_wal_bytes", "slot.wal_status", "slot.safe_wal_size",
                    "projection.schema", "projection.last_seq", "projection.last_lsn", "projection.last_commit_time",
                    "projection.lag_records", "projection.lag_seconds",
                    "history_index.position", "history_index.lag_records", "privacy", "healthy", "problems"] {
            #expect(Self.has(json, key), "the JSON has \(key): \(stopped.stdout)")
        }
        let head = try Self.digestSeq(ws.source)
        let last = try #require(try ws.source.export().last)
        let checkpoint = try #require(try ws.checkpoint().first)
        let slot = try Self.slotRow(ws.source)
        #expect(Self.field(json, "log.path") as? String == ws.source.logPath)
        #expect(Self.field(json, "log.head_seq") as? Int == head, "log.head_seq is the digest's seq \(head)")
        #expect(Self.field(json, "log.head_lsn") as? String == last["lsn"] as? String, "log.head_lsn is the last record's LSN")
        #expect((Self.field(json, "log.head_commit_time") as? String)?.prefix(19) == (last["commit_time"] as? String)?.prefix(19),
                "log.head_commit_time is the last commit's time (RFC 3339)")
        #expect(Self.isLSN(Self.field(json, "log.resume_lsn")), "log.resume_lsn as PostgreSQL prints LSNs")
        #expect((Self.number(Self.field(json, "log.size_bytes")) ?? 0) > 0)
        #expect(Self.field(json, "slot.name") as? String == ws.source.slot)
        #expect(Self.field(json, "slot.active") as? Bool == false)
        #expect(Self.field(json, "slot.restart_lsn") as? String == slot["restart_lsn"] ?? nil)
        #expect(Self.field(json, "slot.confirmed_flush_lsn") as? String == slot["confirmed_flush_lsn"] ?? nil)
        #expect(Self.field(json, "slot.wal_status") as? String == slot["wal_status"] ?? nil)
        let retained = Self.number(Self.field(json, "slot.retained_wal_bytes"))
        #expect(retained.map { $0 >= Double(lowWAL ?? "") ?? .infinity && $0 <= Double(highWAL ?? "") ?? -1 } == true,
                "slot.retained_wal_bytes \(retained.map { "\($0)" } ?? "none") is what the slot holds back (\(lowWAL ?? "?")...\(highWAL ?? "?"))")
        #expect(Self.field(json, "projection.schema") as? String == "dw")
        #expect(Self.field(json, "projection.last_seq") as? Int == head && checkpoint["last_seq"] == String(head), "caught up: \(checkpoint)")
        #expect(Self.field(json, "projection.last_lsn") as? String == checkpoint["last_lsn"])
        #expect(Self.field(json, "projection.lag_records") as? Int == 0)
        #expect(Self.number(Self.field(json, "projection.lag_seconds")) == 0)
        #expect(Self.number(Self.field(json, "history_index.lag_records")).map { $0 >= 0 } == true)
        #expect(Self.field(json, "healthy") as? Bool == false)
        #expect(Self.codes(json, "problems").contains("slot_inactive"), "\(stopped.stdout)")
        #expect((json?["problems"] as? [[String: Any]] ?? []).allSatisfy { ($0["message"] as? String)?.isEmpty == false })
        let text = try Self.status(ws.configPath, json: false).result
        #expect(text.status == 1, "text mode exits the same: \(text.status)")
        #expect((text.stdout + text.stderr).split(separator: "\n").contains { $0.hasPrefix("problem: slot_inactive: ") },
                "text mode prints `problem: slot_inactive: ...`:\n\(text.stdout)\(text.stderr)")

        // `cdc run` streaming and caught up: healthy.
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        var running = try Self.status(ws.configPath)
        try poll(what: "cdc status exits 0 while cdc run streams (or cdc run exits): \(running.result.stdout)\(running.result.stderr)", timeout: 60) {
            running = try Self.status(ws.configPath)
            return running.result.status == 0 || !run.isRunning
        }
        #expect(running.result.status == 0, "exit 0 while streaming and caught up: \(running.result.stdout)\(running.result.stderr)\n\(run.stderr)")
        #expect(running.object?["healthy"] as? Bool == true)
        #expect((running.object?["problems"] as? [Any])?.isEmpty == true, "\(running.result.stdout)")
        #expect(Self.field(running.object, "slot.active") as? Bool == true)
        let walsender = try Self.slotRow(ws.source)["active_pid"] ?? nil
        #expect((Self.field(running.object, "slot.active_pid") as? Int).map(String.init) == walsender, "slot.active_pid is the walsender's")
        let healthyText = try Self.status(ws.configPath, json: false).result
        #expect(healthyText.status == 0 && !(healthyText.stdout + healthyText.stderr).contains("problem:"), "\(healthyText.stdout)\(healthyText.stderr)")
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")

        // Cannot tell: the source or the warehouse does not answer.
        let closed = try LoopbackPort.free()
        func nowhere(_ database: String) -> String { "host=127.0.0.1 port=\(closed) dbname=\(database) user=postgres connect_timeout=5" }
        for code in ["source_unreachable", "warehouse_unreachable"] {
            if code == "source_unreachable" {
                try ws.writeConfig(sourceURL: nowhere(ws.source.database))
            } else {
                try ws.writeConfig(url: nowhere(ws.warehouseDatabase))
            }
            let plain = try Self.status(ws.configPath, json: false).result
            #expect(plain.status == 2, "\(code): exit 2, got \(plain.status)")
            let reason = plain.stderr.split(separator: "\n", omittingEmptySubsequences: true)
            #expect(reason.count == 1, "\(code): a one-line reason on stderr:\n\(plain.stderr)")
            let (result, object) = try Self.status(ws.configPath)
            #expect(result.status == 2, "\(code): --json exits 2 too, got \(result.status)")
            #expect(Self.codes(object, "problems").contains(code), "\(code) in problems: \(result.stdout)")
        }
    }

    @Test func statusBeforeInitNamesTheMissingLogAndSlotAndCreatesNothing() throws {
        let ws = try CDCWorkspace("svc_noinit")
        defer { ws.tearDown() }
        let (result, json) = try Self.status(ws.configPath)
        #expect(result.status == 1, "problems: exit 1, got \(result.status): \(result.stderr)")
        #expect(Set(Self.codes(json, "problems")).isSuperset(of: ["log_not_initialised", "slot_missing"]), "\(result.stdout)")
        #expect(Self.field(json, "slot") is NSNull, "slot is null when missing: \(result.stdout)")
        #expect(Self.field(json, "healthy") as? Bool == false)
        let text = try Self.status(ws.configPath, json: false).result
        #expect(text.status == 1)
        #expect((text.stdout + text.stderr).split(separator: "\n").contains { $0.hasPrefix("problem: log_not_initialised: ") }, "\(text.stdout)\(text.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ws.logPath), "status creates no log")
        #expect(try ws.server.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "0", "status creates no slot")
    }

    // MARK: Retained WAL

    @Test func aSlotHoldingMoreThanMaxRetainedWALIsAProblemAndNotReady() throws {
        let port = try LoopbackPort.free()
        let ws = try CDCWorkspace("svc_walhigh", extraSource: #"max_retained_wal = "1kB""#)
        defer { ws.tearDown() }
        try ws.appendConfig(Self.metricsSection(port))
        try ws.sql("CREATE TABLE filler (id int PRIMARY KEY, payload text)")
        try ws.initialize()
        // A transaction that has written and stays open keeps the slot's restart point behind it, so the
        // slot keeps holding the WAL written after it even while cdc streams.
        let pin = try ws.server.connect(database: ws.database)
        try pin.execute("BEGIN; INSERT INTO filler VALUES (0, 'pin')")
        defer { _ = try? pin.execute("ROLLBACK") }
        try ws.sql("INSERT INTO filler SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g")

        let (stopped, json) = try Self.status(ws.configPath)
        #expect(stopped.status == 1, "\(stopped.stdout)\(stopped.stderr)")
        #expect(Set(Self.codes(json, "problems")).isSuperset(of: ["retained_wal_high", "slot_inactive"]), "\(stopped.stdout)")
        #expect((Self.number(Self.field(json, "slot.retained_wal_bytes")) ?? 0) > 1024, "\(stopped.stdout)")
        let text = try Self.status(ws.configPath, json: false).result
        #expect((text.stdout + text.stderr).split(separator: "\n").contains { $0.hasPrefix("problem: retained_wal_high: ") }, "\(text.stdout)\(text.stderr)")

        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify, watchdog: false))
        defer { run.killIfRunning() }
        try #require(notify.waitFor("READY=1", timeout: 60, giveUp: { !run.isRunning }) != nil, "\(notify.transcript)\n\(run.stderr)")
        let readyz = HTTP.poll("http://127.0.0.1:\(port)/readyz", timeout: 30) {
            $0.status == 503 && Self.codes($0.json, "reasons").contains("retained_wal_high")
        }
        #expect(readyz.status == 503 && Self.codes(readyz.json, "reasons").contains("retained_wal_high"), "readyz: \(readyz)\n\(run.stderr)")
        let metrics = Self.scrape(port, timeout: 30) {
            ($0.value("cdc_slot_retained_wal_bytes") ?? 0) > ($0.value("cdc_slot_retained_wal_limit_bytes") ?? .infinity)
        }
        #expect(metrics.value("cdc_slot_retained_wal_limit_bytes") == 1024, "max_retained_wal = \"1kB\" is 1024 bytes")
        #expect((metrics.value("cdc_slot_retained_wal_bytes") ?? 0) > (metrics.value("cdc_slot_retained_wal_limit_bytes") ?? .infinity),
                "retained \(metrics.value("cdc_slot_retained_wal_bytes").map { "\($0)" } ?? "none") > limit")
        let (running, runningJSON) = try Self.status(ws.configPath)
        #expect(running.status == 1 && Self.codes(runningJSON, "problems").contains("retained_wal_high")
                && !Self.codes(runningJSON, "problems").contains("slot_inactive"), "while running: \(running.stdout)")
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")
    }

    @Test func whileStreamingTheSlotRetainsLittleWALWhenOthersWriteHeavily() throws {
        let ws = try CDCWorkspace("svc_walidle", extraSource: #"tables = ["public.facilities"]"#)
        defer { ws.tearDown() }
        try ws.sql("CREATE TABLE unpublished_fill (id bigint, payload text)")
        try ws.initialize()
        try #require(try ws.sql("SELECT count(*) FROM pg_publication_tables WHERE pubname = '\(ws.slot)' AND tablename = 'unpublished_fill'")[0][0] == "0")
        let other = try ws.server.createDatabase("svc_walidle_other", schema: false)
        defer { _ = try? ws.server.execute("DROP DATABASE IF EXISTS \(other) WITH (FORCE)") }
        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify, watchdog: false))
        defer { run.killIfRunning() }
        try #require(notify.waitFor("READY=1", timeout: 60, giveUp: { !run.isRunning }) != nil, "\(notify.transcript)\n\(run.stderr)")

        let start = try ws.server.currentLSN()
        try ws.sql("INSERT INTO unpublished_fill SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 100000) g")
        try ws.server.execute("CREATE TABLE noise (id bigint, payload text); INSERT INTO noise SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 50000) g",
                              database: other)
        let written = (lsnValue(try ws.server.currentLSN()) ?? 0) - (lsnValue(start) ?? 0)
        let limit = UInt64(64 * Self.mebibyte)
        try #require(written > limit + UInt64(8 * Self.mebibyte), "the writes made \(written) bytes of WAL, more than a slot that stayed put would be allowed")

        // The restart point moves at running-xacts records: a checkpoint writes one.
        let modern = try ws.server.connect().serverVersion >= 160000
        var retained: Double?
        var last = ""
        try poll(what: "slot.retained_wal_bytes falls below 64 MiB (or cdc run exits): \(last)", timeout: 120) {
            try ws.server.execute(modern ? "SELECT pg_log_standby_snapshot()" : "CHECKPOINT")
            usleep(2_000_000)  // for cdc to confirm past it
            let (result, json) = try Self.status(ws.configPath)
            last = result.stdout + result.stderr
            retained = Self.number(Self.field(json, "slot.retained_wal_bytes"))
            return (retained ?? .infinity) < Double(limit) || !run.isRunning
        }
        #expect(retained.map { $0 < Double(limit) } == true,
                "slot.retained_wal_bytes falls below 64 MiB after \(written) bytes of WAL the slot does not need: \(last)\n\(run.stderr)")

        // Capture goes on, and nothing of the unpublished table is in the log.
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try poll(what: "capture goes on: \(run.stderr)") { try ws.rowEvents(table: "facilities").count == 1 }
        #expect(try ws.export().allSatisfy { ($0["table"] as? String)?.contains("unpublished_fill") != true })
        run.send(SIGTERM)
        #expect(run.wait(timeout: 60).status == 0, "\(run.stderr)")
    }

    // MARK: Bad input

    @Test func aMetricsPortInUseIsRefusedBeforeTheSourceIsTouched() throws {
        let ws = try CDCWorkspace("svc_portbusy")
        defer { ws.tearDown() }
        try ws.initialize()
        let busy = try LoopbackListener()
        defer { busy.close() }
        try ws.appendConfig(Self.metricsSection(busy.port))
        let head = try Self.digestSeq(ws)
        let confirmed = try Self.slotRow(ws)["confirmed_flush_lsn"] ?? nil
        try ws.sql(Fixture.facility("F1", "Mercy"))  // what a run that did connect would capture

        let notify = try NotifySocket()
        defer { notify.close() }
        let run = try ws.startRun(environment: Self.systemd(notify))
        defer { run.killIfRunning() }
        let watcher = try ws.server.connect()
        var slotWasActive = false
        let deadline = Date().addingTimeInterval(60)
        while run.isRunning && Date() < deadline {
            if try watcher.execute("SELECT active FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'").value(0, 0) == "t" { slotWasActive = true }
            usleep(20_000)
        }
        Self.expectRefused(run, naming: ["127.0.0.1:\(busy.port)", "in use"])
        usleep(200_000)
        #expect(!notify.lines.contains { $0.text == "READY=1" }, "no READY=1:\n\(notify.transcript)")
        #expect(!slotWasActive, "the slot stays inactive")
        #expect(try Self.slotRow(ws)["confirmed_flush_lsn"] ?? nil == confirmed, "nothing is confirmed to the source")
        #expect(try Self.digestSeq(ws) == head, "the log does not move")
    }

    @Test(arguments: ["nonsense", "127.0.0.1:70000", "127.0.0.1"])
    func aMalformedMetricsListenIsAConfigError(listen: String) throws {
        let ws = try CDCWorkspace("svc_badlisten")
        defer { ws.tearDown() }
        try ws.initialize()
        try ws.appendConfig("[metrics]\nlisten = \"\(listen)\"")
        let head = try Self.digestSeq(ws)
        try ws.sql(Fixture.facility("F1", "Mercy"))
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        Self.expectRefused(run, naming: ["metrics.listen"])
        let error = run.stderr.split(separator: "\n").first { $0.hasPrefix("cdc: error:") } ?? ""
        #expect(error.hasPrefix("cdc: error: config "), "a config error: \(error)")
        #expect(try Self.digestSeq(ws) == head, "the log does not move")
    }

    // MARK: The systemd unit

    static let unitPath = PostgresServer.repositoryRoot + "/tools/cdc.service"

    /// The `[Service]` settings of a unit file: key → values in order.
    static func serviceSettings(_ text: String) -> [String: [String]] {
        var section = ""
        var settings: [String: [String]] = [:]
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.hasPrefix(";") || line.isEmpty { continue }
            if line.hasPrefix("[") { section = line; continue }
            guard section == "[Service]", let equals = line.firstIndex(of: "=") else { continue }
            settings[line[..<equals].trimmingCharacters(in: .whitespaces), default: []].append(line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces))
        }
        return settings
    }

    @Test func theSystemdUnitIsANotifyServiceWithAWatchdog() throws {
        let settings = Self.serviceSettings(try String(contentsOfFile: Self.unitPath, encoding: .utf8))
        #expect(settings["Type"] == ["notify"], "\(settings["Type"] ?? [])")
        #expect(settings["NotifyAccess"] == ["main"], "\(settings["NotifyAccess"] ?? [])")
        #expect(settings["WatchdogSec"] == ["30s"], "\(settings["WatchdogSec"] ?? [])")
        #expect(settings["Restart"] == ["on-failure"], "\(settings["Restart"] ?? [])")
        #expect(settings["ExecStart"]?.count == 1 && settings["ExecStart"]?.first?.hasPrefix("/usr/local/bin/cdc run ") == true, "\(settings["ExecStart"] ?? [])")
        for hardening in ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"] {
            #expect(settings[hardening] != nil, "keeps \(hardening)")
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze"), "systemd-analyze is not installed (tools/install-deps)"))
    func theSystemdUnitPassesSystemdAnalyzeVerify() throws {
        let analyze = "/usr/bin/systemd-analyze"
        // As shipped: the only complaint allowed is that /usr/local/bin/cdc is not installed here.
        let shipped = try Shell.run(analyze, ["verify", Self.unitPath])
        let complaints = (shipped.stdout + shipped.stderr).split(separator: "\n").filter { !$0.contains("/usr/local/bin/cdc") }
        #expect(complaints.isEmpty, "systemd-analyze verify tools/cdc.service:\n\(shipped.stdout)\(shipped.stderr)")
        // With ExecStart pointing at the built binary: clean.
        let text = try String(contentsOfFile: Self.unitPath, encoding: .utf8)
        let edited = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasPrefix("ExecStart=/usr/local/bin/cdc ") ? "ExecStart=" + CDCWorkspace.executable + line.dropFirst("ExecStart=/usr/local/bin/cdc".count) : String(line)
        }.joined(separator: "\n")
        try #require(edited != text, "the unit's ExecStart runs /usr/local/bin/cdc")
        let directory = try TemporaryDirectory.make(prefix: "unit")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try edited.write(toFile: directory + "/cdc.service", atomically: true, encoding: .utf8)
        let verified = try Shell.run(analyze, ["verify", directory + "/cdc.service"])
        #expect(verified.status == 0, "systemd-analyze verify (ExecStart=\(CDCWorkspace.executable)):\n\(verified.stdout)\(verified.stderr)")
        #expect(!(verified.stdout + verified.stderr).contains("cdc"), "no complaint about the unit:\n\(verified.stdout)\(verified.stderr)")
    }
}

/// The test support the service tests stand on: the notify socket, HTTP, the exposition parser,
/// promtool and a real Prometheus.
@Suite(.timeLimit(.minutes(15))) struct ServiceTestsSupportChecks {
    @Test func theNotifySocketReceivesEachDatagramLineByLine() throws {
        let notify = try NotifySocket()
        defer { notify.close() }
        try NotifySocket.send("STATUS=connecting to the source\nREADY=1", to: notify.path)
        try NotifySocket.send("WATCHDOG=1", to: notify.path)
        #expect(notify.waitFor("WATCHDOG=1", timeout: 10) == 2)
        #expect(notify.datagrams.map(\.lines) == [["STATUS=connecting to the source", "READY=1"], ["WATCHDOG=1"]])
        #expect(notify.lines.map(\.key) == ["STATUS", "READY", "WATCHDOG"] && notify.lines.map(\.datagram) == [0, 0, 1])
        #expect(notify.lines.first?.value == "connecting to the source")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-notify") {
            let sent = try Shell.run("/usr/bin/systemd-notify", ["--no-block", "--status=from systemd-notify"], environment: ["NOTIFY_SOCKET": notify.path])
            #expect(sent.status == 0, "\(sent.stderr)")
            #expect(notify.waitForLine(timeout: 10) { $0.text == "STATUS=from systemd-notify" } != nil, "\(notify.transcript)")
        }
    }

    @Test func theExpositionParserReadsLabelsEscapesAndSpecialValues() {
        let text = MetricsText("""
            # HELP cdc_log_events_total Events.
            # TYPE cdc_log_events_total counter
            cdc_log_events_total{table="public.facilities",op="insert"} 3
            cdc_log_events_total{table="",op="message"} 1 1712345678000
            # TYPE h histogram
            h_bucket{le="+Inf"} 0
            odd{a="x\\"y,z}"} NaN
            g -Inf
            """)
        #expect(text.types == ["cdc_log_events_total": "counter", "h": "histogram"])
        #expect(text.help["cdc_log_events_total"] == "Events.")
        #expect(text.value("cdc_log_events_total", ["table": "public.facilities", "op": "insert"]) == 3)
        #expect(text.value("cdc_log_events_total", ["table": "", "op": "message"]) == 1)
        #expect(text.samples("cdc_log_events_total").count == 2 && text.value("cdc_log_events_total") == nil)
        #expect(text.samples("h_bucket", ["le": "+Inf"]).count == 1)
        #expect(text.samples("odd").first?.labels == ["a": "x\"y,z}"] && text.samples("odd").first?.value.isNaN == true)
        #expect(text.value("g") == -.infinity)
        #expect(text.malformed.isEmpty)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: PrometheusServer.executable) && Promtool.isAvailable, "prometheus is not installed"))
    func prometheusStartsAnswersQueriesAndPromtoolLints() throws {
        let nothing = try LoopbackPort.free()
        let prometheus = try PrometheusServer.start(scraping: "127.0.0.1:\(nothing)")
        defer { prometheus.stop() }
        #expect(HTTP.get(prometheus.url + "/-/ready").status == 200)
        #expect(try prometheus.value("vector(42)") == 42)
        let up = try prometheus.waitForValue("up{job=\"cdc\"}", timeout: 30) { _ in true }
        #expect(up == 0, "nothing listens on the target: \(prometheus.targets())")
        // Prometheus's own /metrics: HTTP, the parser and promtool on a real exposition.
        let own = HTTP.get(prometheus.url + "/metrics")
        #expect(own.status == 200 && own.header("content-type")?.hasPrefix("text/plain") == true, "\(own.headers)")
        let metrics = MetricsText(own.body)
        #expect(metrics.types["prometheus_build_info"] == "gauge" && metrics.malformed.isEmpty)
        #expect(HTTP.get("http://127.0.0.1:\(nothing)/metrics").status == 0, "no response from a closed port")

        let good = "# HELP cdc_x_total Things.\n# TYPE cdc_x_total counter\ncdc_x_total 3\n"
        let passed = try Promtool.checkMetrics(good)
        #expect(passed.status == 0, "\(passed.stdout)\(passed.stderr)")
        let bad = "# TYPE cdc_x counter\ncdc_x 3\n"  // no HELP, a counter without _total
        let failed = try Promtool.checkMetrics(bad)
        #expect(failed.status != 0, "promtool rejects what the contract forbids: \(failed.stdout)\(failed.stderr)")
    }
}
