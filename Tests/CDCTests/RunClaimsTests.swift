import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What README.md promises about `cdc run` ("Commands" and "How it stays exact") and no other test
/// checked: the reconnection backoff, the 16 MiB batch cap, the chunks of a huge transaction staying
/// invisible until its commit, and the invisible tail a crash leaves being deleted on restart.
@Suite(.timeLimit(.minutes(15))) struct RunClaimsTests {
    // MARK: Backoff

    /// `pg-sandbox stop|start DIR` (start keeps the port unless another server took it meanwhile).
    static func sandbox(_ command: String, _ server: PostgresServer) throws {
        let result = try Shell.run(PostgresServer.repositoryRoot + "/tools/pg-sandbox",
                                   [command, server.directory] + (command == "start" ? ["--fast"] : []))
        guard result.status == 0 else { throw TestFailure("pg-sandbox \(command) failed: \(result.stderr)") }
        if command == "start" && !result.stdout.contains("PGPORT=\(server.port)\n") {
            throw TestFailure("the restarted server is on another port: \(result.stdout)")
        }
    }

    /// The `reconnecting` lines of `cdc run`'s log: the wait each announces (`cdc.backoff_seconds`) and
    /// how many were held back before it (`cdc.repeated`, README: a repeating warning is logged at most
    /// once a minute).
    static func reconnects(_ stderr: String) -> [(wait: Double?, heldBack: Int)] {
        func value(_ key: String, _ line: Substring) -> String? {
            guard let range = line.range(of: key + "=") else { return nil }
            return String(line[range.upperBound...].prefix { !$0.isWhitespace })
        }
        return stderr.split(separator: "\n").filter { $0.hasSuffix("reconnecting") }.map { line in
            (value("cdc.backoff_seconds", line).flatMap(Double.init), value("cdc.repeated", line).flatMap { Int($0) } ?? 0)
        }
    }

    @Test func reconnectionWaitsStartAtHalfASecondDoubleAndStopGrowingAt30Seconds() throws {
        let server = try PostgresServer.start(name: "backoff")
        defer { server.destroy() }
        let ws = try CDCWorkspace("backoff", server: server)
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1"))
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("streaming"), "\(run.stderr)")

        // The server goes away for good: cdc keeps retrying, logging the first wait at once and the
        // next one a minute later, with the count of those held back in between.
        try Self.sandbox("stop", server)
        #expect(run.waitForLog("reconnecting", count: 2, timeout: 180), "\(run.stderr)")
        #expect(run.isRunning, "a lost source is retried, not fatal")
        let outage = Self.reconnects(run.stderr)
        #expect(outage.first?.wait == 0.5 && outage.first?.heldBack == 0, "the first wait is 0.5 s: \(outage)")
        // Between them: 1, 2, 4, 8, 16 and 30 s (31.5 s in all before the 30 s wait, 61.5 s after it),
        // so the first line a minute later announces the longest wait, 30 s, and six held back. No
        // cap would make it 32 s (or 64); no doubling, 0.5 s and a hundred held back.
        #expect(outage.count >= 2 && outage[1].wait == 30 && outage[1].heldBack == 6,
                "doubling from 0.5 s, at most 30 s: \(outage)\n\(run.stderr)")

        // The server comes back: streaming resumes and captures what is committed then.
        try Self.sandbox("start", server)
        #expect(run.waitForLog("streaming", count: 2, timeout: 60), "\(run.stderr)")
        try ws.sql(Fixture.facility("F2"))
        try poll(what: "F2 captured after the outage (head \((try? ws.lastVisibleSeq()).map(String.init) ?? "?")): \(run.stderr.suffix(1500))", timeout: 60) {
            (try? ws.lastVisibleSeq()) == 9
        }

        // After a success the backoff starts over: a new outage waits 0.5 s first again.
        try Self.sandbox("stop", server)
        #expect(run.waitForLog("reconnecting", count: 3, timeout: 60), "\(run.stderr)")
        #expect(Self.reconnects(run.stderr).last?.wait == 0.5, "\(Self.reconnects(run.stderr))")
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "SIGTERM while waiting to reconnect: \(run.stderr)")
        for wait in Self.reconnects(run.stderr).compactMap(\.wait) {
            #expect(wait >= 0.5 && wait <= 30, "every logged wait is within 0.5...30 s")
        }
        try Self.sandbox("start", server)
        #expect(try ws.rowEvents(table: "facilities").map { row($0)?["facility_id"] as? String } == ["F1", "F2"])
    }

    // MARK: Huge transactions

    /// A log holding one small transaction (bulk row 0) after `cdc init`, and a transaction of
    /// `rows` rows of `bytes` bytes each committed on the source but not yet captured. Returns the
    /// head before the big transaction and the data file's size then.
    static func backlog(_ ws: CDCWorkspace, rows: Int, bytes: Int) throws -> (head: Int, size: Int) {
        try createBulkTable(ws)
        try ws.initialize()
        try insertBulk(ws, 0, 0, bytes: 10)
        try ws.catchUp()
        let head = try ws.lastVisibleSeq()
        try insertBulk(ws, 1, rows, bytes: bytes)
        return (head, ws.dataFileSize)
    }

    /// Rows of the huge transaction of the chunk tests: 200,000 of 300 bytes, ~60 MB of records, drained
    /// in several chunks (at most 16 MiB or 100,000 records each).
    static let hugeRows = 200_000

    /// ``backlog(_:rows:bytes:)`` with the huge transaction, and `cdc run` started to capture it (and
    /// then to stop, with `endpos`).
    static func drainHugeTransaction(_ ws: CDCWorkspace, endpos: Bool) throws -> (run: RunningCDC, head: Int, size: Int) {
        let (head, size) = try backlog(ws, rows: hugeRows, bytes: 300)
        return (try ws.startRun(endpos ? ["--endpos", try ws.server.currentLSN()] : []), head, size)
    }

    /// After the big transaction of ``backlog(_:rows:bytes:)`` was captured: it is in the log whole,
    /// each row once, and the log verifies.
    static func expectWhole(_ ws: CDCWorkspace, head: Int, rows: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let stats = try ws.stats()
        #expect(stats["head"] as? Int == head + rows, "\(stats)", sourceLocation: sourceLocation)
        #expect(try ws.statsCount("public.bulk", "insert") == rows + 1, sourceLocation: sourceLocation)
        #expect(try ws.sql("SELECT count(*) FROM bulk")[0][0] == String(rows + 1), sourceLocation: sourceLocation)
        let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)", sourceLocation: sourceLocation)
        let last = try parseEvent(try ws.cdc(["log", "tail", "-n", "1", "--format", "jsonl", "--log", ws.logPath]).stdout)
        #expect(row(last)?["id"] as? Int == rows, "the transaction's last row ends the log", sourceLocation: sourceLocation)
    }

    /// What a user sees of the batch cap (CaptureOptions.maxBatchBytes): the group-commit histogram.
    /// Two rules bound a batch: the cap, checked after each message, and, whenever libpq holds no
    /// complete message, a flush once a quarter of the cap is pending. On loopback the second one
    /// fires first (commits of ~4 MiB), so this checks the bound both keep, not which one fired.
    @Test func aStreamOfMoreThan16MiBIsWrittenInSeveralCommitsOfAtMost16MiB() throws {
        let ws = try CDCWorkspace("batchcap")
        defer { ws.tearDown() }
        let port = try LoopbackPort.free()
        try ws.appendConfig("[metrics]\nlisten = \"127.0.0.1:\(port)\"")
        // 96 rows of 1 MiB in one transaction: 96 MiB of records, six times the cap.
        let rows = 96
        let (head, _) = try Self.backlog(ws, rows: rows, bytes: 1 << 20)
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        let metrics = ServiceTests.scrape(port, timeout: 300) { $0.value("cdc_log_head_seq") == Double(head + rows) }
        #expect(metrics.value("cdc_log_head_seq") == Double(head + rows), "the transaction was captured: \(run.stderr)")

        // cdc_log_commit_records: one observation per durable LMDB commit, of the records it held.
        let commits = metrics.value("cdc_log_commit_records_count") ?? 0
        let atMost20 = metrics.samples("cdc_log_commit_records_bucket").first { Double($0.labels["le"] ?? "") == 20 }?.value
        #expect(commits >= Double(rows / 16), "96 MiB in commits of at most 16 MiB takes at least 6 of them: \(commits)")
        #expect(atMost20 == commits, "no commit held more than 20 records of 1 MiB: \(metrics.samples("cdc_log_commit_records_bucket"))")
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "\(run.stderr)")
        try Self.expectWhole(ws, head: head, rows: rows)
    }

    @Test func readersNeverSeePartOfAHugeTransactionWhileItsChunksAreWritten() throws {
        let ws = try CDCWorkspace("chunks")
        defer { ws.tearDown() }
        let rows = Self.hugeRows
        let (run, head, size) = try Self.drainHugeTransaction(ws, endpos: true)
        defer { run.killIfRunning() }
        // A reader polls the log's last visible event while the transaction drains (~60 MB of records).
        var samples: [(size: Int, seq: Int)] = []
        while run.isRunning {
            let size = ws.dataFileSize
            samples.append((size, try ws.lastVisibleSeq()))
        }
        #expect(run.wait().status == 0, "\(run.stderr)")
        samples.append((ws.dataFileSize, try ws.lastVisibleSeq()))
        let seen = Set(samples.map(\.seq))
        #expect(seen.isSubset(of: [head, head + rows]), "the reader saw the log end inside the transaction: \(seen.sorted())")
        // Not vacuous: chunks were in data.mdb (it had grown by 8 MiB) while the reader still saw the old head.
        #expect(samples.contains { $0.seq == head && $0.size >= size + (8 << 20) },
                "no sample caught chunks written but invisible: \(samples.map { "\($0.seq)@\($0.size >> 20)MiB" })")
        try Self.expectWhole(ws, head: head, rows: rows)
    }

    @Test func theInvisibleTailAKilledRunLeavesIsDeletedOnRestart() throws {
        let ws = try CDCWorkspace("crashtail")
        defer { ws.tearDown() }
        let rows = Self.hugeRows
        let (run, head, size) = try Self.drainHugeTransaction(ws, endpos: false)
        defer { run.killIfRunning() }
        // kill -9 once chunks of the transaction are in data.mdb but not visible.
        try poll(what: "chunks in data.mdb while the transaction is invisible (running: \(run.isRunning))", timeout: 300) {
            guard run.isRunning else { return true }
            return try ws.dataFileSize >= size + (8 << 20) && ws.lastVisibleSeq() == head
        }
        #expect(run.isRunning, "chunks written while the transaction is still open: \(run.stderr)")
        run.send(SIGKILL)
        #expect(run.wait().status == 128 + SIGKILL)
        // The crash tail: records in data.mdb beyond the head, which no reader sees.
        #expect(try ws.lastVisibleSeq() == head, "the killed transaction is invisible")
        #expect(ws.dataFileSize >= size + (8 << 20))

        // The restart deletes that tail (appending over it would fail: records are appended by key)
        // and writes the transaction again, whole and once.
        let restart = try ws.runToCurrentLSN()
        #expect(restart.status == 0, "\(restart.stderr)")
        try Self.expectWhole(ws, head: head, rows: rows)
    }
}
