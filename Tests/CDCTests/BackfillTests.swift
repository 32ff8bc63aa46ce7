import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Backfill of tables that join the publication after `cdc init` (DBLog watermarks), through the real
/// `cdc` binary against a real PostgreSQL: the folded log of the table equals the source table.
@Suite(.timeLimit(.minutes(15))) struct BackfillTests {
    /// The table's rows as the log says: snapshot, insert and update are upserts by key, delete
    /// removes the key, truncate empties the table.
    static func fold(_ ws: CDCWorkspace, table: String) throws -> [Int: String] {
        var rows: [Int: String] = [:]
        for event in try ws.rowEvents(table: table) {
            let after = event["after"] as? [String: Any]
            let before = event["before"] as? [String: Any]
            switch event["op"] as? String {
            case "snapshot", "insert", "update":
                if let old = before?["id"] as? Int, old != after?["id"] as? Int { rows[old] = nil }
                if let id = after?["id"] as? Int { rows[id] = after?["v"] as? String ?? "<null>" }
            case "delete":
                if let id = before?["id"] as? Int { rows[id] = nil }
            case "truncate":
                rows = [:]
            default:
                break
            }
        }
        return rows
    }

    static func source(_ ws: CDCWorkspace, table: String) throws -> [Int: String] {
        var rows: [Int: String] = [:]
        for row in try ws.sql("SELECT id, v FROM \(table)") { rows[Int(row[0]!)!] = row[1] ?? "<null>" }
        return rows
    }

    /// Stops `cdc run` gracefully, then catches up to the current WAL position.
    static func stopAndCatchUp(_ ws: CDCWorkspace, _ run: RunningCDC) throws {
        run.send(SIGTERM)
        #expect(run.wait().status == 0)
        try ws.catchUp()
    }

    static func expectFoldEqualsSource(_ ws: CDCWorkspace, table: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let folded = try fold(ws, table: table)
        let source = try source(ws, table: table)
        #expect(folded.count == source.count, "rows: log \(folded.count), source \(source.count)", sourceLocation: sourceLocation)
        let wrong = source.filter { folded[$0.key] != $0.value }.keys.sorted()
        let extra = folded.keys.filter { source[$0] == nil }.sorted()
        #expect(wrong.isEmpty && extra.isEmpty, "keys differing: \(wrong.prefix(10)), in the log only: \(extra.prefix(10))", sourceLocation: sourceLocation)
        let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
        #expect(verify.status == 0, "cdc log verify: \(verify.stdout) \(verify.stderr)", sourceLocation: sourceLocation)
    }

    /// Runs `statement` on a thread of its own; the returned function waits for it.
    static func background(_ ws: CDCWorkspace, _ statement: String) -> () -> Void {
        let done = DispatchSemaphore(value: 0)
        Thread {
            do { try ws.sql(statement) } catch { Issue.record("background SQL failed: \(error)") }
            done.signal()
        }.start()
        return { done.wait() }
    }

    /// Requests a snapshot of `table` (`cdc snapshot --no-wait`) whose chunk SELECTs each sleep
    /// `seconds` (a --where), and returns once the first one is running: changes made now fall inside
    /// its window.
    static func snapshotHeldOpen(_ ws: CDCWorkspace, table: String, chunkSize: Int, seconds: Int) throws {
        let sent = try ws.cdc(["snapshot", table, "--config", ws.configPath, "--chunk-size", "\(chunkSize)", "--no-wait",
                               "--where", "(SELECT pg_sleep(\(seconds))) IS NOT NULL"], timeout: 60)
        #expect(sent.status == 0, "\(sent.stderr)")
        try poll(what: "the chunk's SELECT is running", timeout: 30) {
            try !ws.sql("""
                SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT %pg_sleep(\(seconds))%LIMIT \(chunkSize)' AND pid <> pg_backend_pid()
                """).isEmpty
        }
    }

    /// Updates, deletes and inserts in `bf` across its whole key range, one transaction each, until a
    /// row is put in `stop_writer`.
    static let writerLoop = """
        DO $$ DECLARE i bigint := 0; BEGIN
          WHILE NOT EXISTS (SELECT 1 FROM stop_writer) LOOP
            i := i + 1;
            UPDATE bf SET v = 'u' || i WHERE id = (i * 7919) % 3000 + 1;
            UPDATE bf SET v = 'w' || i WHERE id = (i * 7) % 6000 + 1;
            DELETE FROM bf WHERE id = (i * 104729) % 3000 + 1;
            INSERT INTO bf VALUES (3000 + i, 'n' || i);
            UPDATE bf SET id = 100000 + i WHERE id = (i * 31) % 3000 + 1;
            COMMIT;
            PERFORM pg_sleep(0.002);
          END LOOP;
        END $$
        """

    /// A workspace initialised with facilities published, and bf (3,000 rows) outside the publication.
    static func initialisedWithoutBF(_ name: String, chunkSize: Int) throws -> CDCWorkspace {
        let ws = try CDCWorkspace(name, extraSource: "tables = [\"public.facilities\"]\nbackfill_chunk_size = \(chunkSize)")
        try ws.sql("""
            CREATE TABLE bf (id int PRIMARY KEY, v text);
            INSERT INTO bf SELECT g, 'v' || g FROM generate_series(1, 3000) g;
            CREATE TABLE stop_writer (x int);
            """)
        try ws.initialize()
        return ws
    }

    @Test func tableAddedLaterIsBackfilledExactlyWhileItChanges() throws {
        let ws = try Self.initialisedWithoutBF("backfill", chunkSize: 50)
        defer { ws.tearDown() }
        let port = try LoopbackPort.free()
        try ws.appendConfig("[metrics]\nlisten = \"127.0.0.1:\(port)\"")
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        try poll(what: "cdc run streams") { run.stderr.contains("streaming") }
        let writer = Self.background(ws, Self.writerLoop)
        try ws.sql("ALTER PUBLICATION \(ws.slot) ADD TABLE bf")
        try poll(what: "the backfill ends: \(run.stderr.suffix(600))", timeout: 90) { run.stderr.contains("backfill done") }
        try ws.sql("INSERT INTO stop_writer VALUES (1)")
        writer()
        // The metrics count what the chunks made durable (a chunk line is logged once it is staged).
        let metrics = ServiceTests.scrape(port, timeout: 10) { $0.value("cdc_backfill_tables_pending") == 0 }
        try Self.stopAndCatchUp(ws, run)
        let chunks = run.stderr.split(separator: "\n").filter { $0.hasSuffix("[Capture] backfill chunk") }.count
        let snapshotted = try ws.rowEvents(table: "bf").filter { $0["op"] as? String == "snapshot" }.count
        #expect(metrics.value("cdc_backfill_tables_pending") == 0)
        #expect(metrics.value("cdc_backfill_rows_total", ["table": "public.bf"]) == Double(snapshotted), "the log holds \(snapshotted) snapshot rows of bf")
        #expect(metrics.value("cdc_log_events_total", ["table": "public.bf", "op": "snapshot"]) == Double(snapshotted))
        #expect(metrics.value("cdc_backfill_chunks_total", ["table": "public.bf"]) == Double(chunks + 1), "\(chunks) chunk lines and the last")
        let status = try ws.cdc(["status", "--config", ws.configPath])
        #expect(status.stdout.contains("backfill    public.bf: done, ") && status.stdout.contains("chunks (request auto-"), "\(status.stdout)")
        #expect(chunks >= 20, "many chunks (\(chunks))")
        try Self.expectFoldEqualsSource(ws, table: "bf")
        // Backfilled rows are snapshot records of no transaction, after the watermark messages.
        let events = try ws.export()
        let snapshots = events.filter { $0["table"] as? String == "public.bf" && $0["op"] as? String == "snapshot" }
        #expect(!snapshots.isEmpty && snapshots.allSatisfy { $0["xid"] is NSNull })
        // The log knows it is done: a restart does not backfill the table again.
        try ws.catchUp()
        #expect(try ws.export().count == events.count)
    }

    @Test func killedInTheMiddleOfABackfillResumesFromItsLastChunk() throws {
        let ws = try Self.initialisedWithoutBF("backfillkill", chunkSize: 20)
        defer { ws.tearDown() }
        try ws.sql("ALTER PUBLICATION \(ws.slot) ADD TABLE bf")
        let writer = Self.background(ws, Self.writerLoop)
        let first = try ws.startRun()
        defer { first.killIfRunning() }
        try poll(what: "ten chunks", timeout: 60) { first.stderr.components(separatedBy: "backfill chunk").count > 10 }
        first.send(SIGKILL)
        _ = first.wait()
        #expect(!first.stderr.contains("backfill done"))
        let second = try ws.startRun()
        defer { second.killIfRunning() }
        try poll(what: "the backfill ends after the restart: \(second.stderr.suffix(600))", timeout: 90) { second.stderr.contains("backfill done") }
        try ws.sql("INSERT INTO stop_writer VALUES (1)")
        writer()
        try Self.stopAndCatchUp(ws, second)
        try Self.expectFoldEqualsSource(ws, table: "bf")
        // No overlap: no key is snapshotted twice (the restart read on from the last durable chunk).
        let keys = try ws.rowEvents(table: "bf").filter { $0["op"] as? String == "snapshot" }.compactMap { ($0["after"] as? [String: Any])?["id"] as? Int }
        #expect(Set(keys).count == keys.count, "\(keys.count - Set(keys).count) keys snapshotted twice")
    }

    /// A change committed after the chunk's SELECT took its snapshot and before the high watermark: the
    /// chunk holds the old row, the stream (inside the window) the new one. Without the window's
    /// filtering the stale row, written after the change, would win (and a deleted row come back). The
    /// chunk's SELECT is held open by a --where that sleeps, and the changes are made while it sleeps.
    @Test func changesInsideTheWindowWinOverTheChunkAndSnapshotRequests() throws {
        let ws = try CDCWorkspace("backfillwin", extraSource: "tables = [\"public.facilities\", \"public.bf\", \"public.nokey\"]")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE bf (id int PRIMARY KEY, v text);
            INSERT INTO bf SELECT g, 'v' || g FROM generate_series(1, 200) g;
            CREATE TABLE nokey (a int);
            CREATE TABLE unpublished (id int PRIMARY KEY);
            """)
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        try poll(what: "cdc run streams") { run.stderr.contains("streaming") }

        // Errors: one line naming what is wrong, non-zero exit.
        for (arguments, word) in [(["nosuch"], "unknown table"), (["public.unpublished"], "ALTER PUBLICATION"),
                                  (["nokey"], "primary key"), (["bf", "--where", "nosuchcolumn > 1"], "--where")] {
            let result = try ws.cdc(["snapshot"] + arguments + ["--config", ws.configPath], timeout: 60)
            #expect(result.status != 0 && result.stderr.contains(word) && result.stderr.split(separator: "\n").count == 1,
                    "cdc snapshot \(arguments): \(result.status) \(result.stderr)")
        }

        // Any role may emit a logical message: a request not signed with the log's snapshot.key is ignored.
        try ws.sql("SELECT pg_logical_emit_message(true, 'cdc.snapshot.request', '{\"id\": \"forged\", \"tables\": [\"public.bf\"], \"where\": \"pg_sleep(1) IS NULL\"}')")
        try poll(what: "the forged request is ignored") { run.stderr.contains("ignoring a snapshot request not signed") }

        try Self.snapshotHeldOpen(ws, table: "public.bf", chunkSize: 1000, seconds: 3)
        try ws.sql("UPDATE bf SET v = 'changed' WHERE id = 1")
        try ws.sql("DELETE FROM bf WHERE id = 2")
        // A second request, waited for: it is served after the first.
        let waited = try ws.cdc(["snapshot", "bf", "--config", ws.configPath, "--where", "id <= 10"], timeout: 120)
        #expect(waited.status == 0 && waited.stdout.hasPrefix("snapshot done: public.bf: 9 rows"), "\(waited.stdout) \(waited.stderr)")
        try Self.stopAndCatchUp(ws, run)
        try Self.expectFoldEqualsSource(ws, table: "bf")
        #expect(try Self.fold(ws, table: "bf")[1] == "changed")
        let chunkLines = run.stderr.split(separator: "\n").filter { $0.contains("backfill done") }
        #expect(chunkLines.contains { $0.contains("cdc.changed_in_window=2") }, "\(chunkLines)")
    }

    /// A transaction that has written its commit record (which the stream delivers, before the low
    /// watermark) but is not yet visible to the chunk's SELECT: under synchronous replication with a
    /// standby that never answers, the committing session waits, invisible, for as long as it is
    /// absent. The chunk would read the row's older state and, written after the stream's update, win.
    /// The chunk's snapshot lists that transaction as in progress: the chunk is read again once the
    /// transaction is visible. Then the same with a transaction that changed 65 other tables before bf:
    /// past the 64 tables cdc tracks per transaction, it counts as changing every table.
    @Test func aChangeCommittedButNotYetVisibleBeforeTheLowWatermarkWinsOverTheChunk() throws {
        let server = try PostgresServer.start(name: "syncrep")
        defer { server.destroy() }
        let wide = (1...65).map { "w\($0)" }
        let tables = (["facilities", "bf", "other"] + wide).map { "\"public.\($0)\"" }.joined(separator: ", ")
        let ws = try CDCWorkspace("backfillsync", server: server, extraSource: "tables = [\(tables)]")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE bf (id int PRIMARY KEY, v text);
            INSERT INTO bf SELECT g, 'v' || g FROM generate_series(1, 100) g;
            CREATE TABLE other (id int PRIMARY KEY);
            """ + wide.map { "CREATE TABLE \($0) (id int PRIMARY KEY);" }.joined())
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        try poll(what: "cdc run streams") { run.stderr.contains("streaming") }

        try server.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        try server.execute("SELECT pg_reload_conf()")
        try poll(what: "a new session waits for the standby 'nobody'") {
            try server.execute("SHOW synchronous_standby_names")[0][0] == "nobody"
        }
        var released = false
        func release() throws {
            try server.execute("ALTER SYSTEM RESET synchronous_standby_names")
            try server.execute("SELECT pg_reload_conf()")
            released = true
        }
        defer { if !released { try? release() } }
        // Committed in the WAL, waiting for the standby: invisible to every other session. One that
        // changed another table does not hold bf's chunks back.
        let other = Self.background(ws, "SET synchronous_commit = on; INSERT INTO other VALUES (1)")
        try poll(what: "the other table's insert reaches the log") { try !ws.rowEvents(table: "other").isEmpty }
        #expect(try ws.sql("SELECT count(*) FROM other")[0][0] == "0", "the committing transaction is not yet visible")
        let first = try ws.cdc(["snapshot", "bf", "--config", ws.configPath], timeout: 60)
        #expect(first.status == 0 && first.stdout.hasPrefix("snapshot done: public.bf: 100 rows"), "\(first.stdout) \(first.stderr)")
        #expect(!run.stderr.contains("backfill chunk deferred"), "\(run.stderr.suffix(600))")
        let update = Self.background(ws, "SET synchronous_commit = on; UPDATE bf SET v = 'invisible' WHERE id = 5")
        try poll(what: "the update reaches the log: \(run.stderr.suffix(400))") {
            try ws.rowEvents(table: "bf").contains { $0["op"] as? String == "update" && ($0["after"] as? [String: Any])?["v"] as? String == "invisible" }
        }
        #expect(try ws.sql("SELECT v FROM bf WHERE id = 5")[0][0] == "v5", "the committing transaction is not yet visible")
        let sent = try ws.cdc(["snapshot", "bf", "--config", ws.configPath, "--no-wait"], timeout: 60)
        #expect(sent.status == 0, "\(sent.stderr)")
        try poll(what: "the chunk is deferred: \(run.stderr.suffix(600))", timeout: 30) { run.stderr.contains("backfill chunk deferred") }
        #expect(run.stderr.components(separatedBy: "backfill done").count == 2, "only the first snapshot is done")

        try release()
        update()
        other()
        #expect(try ws.sql("SELECT v FROM bf WHERE id = 5")[0][0] == "invisible")
        try poll(what: "the backfill ends once the transaction is visible: \(run.stderr.suffix(600))", timeout: 30) {
            run.stderr.components(separatedBy: "backfill done").count == 3
        }

        // A transaction of 66 tables, bf last, committed and not yet visible.
        try server.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'")
        try server.execute("SELECT pg_reload_conf()")
        released = false
        try poll(what: "a new session waits for the standby 'nobody'") {
            try server.execute("SHOW synchronous_standby_names")[0][0] == "nobody"
        }
        let deferredBefore = run.stderr.components(separatedBy: "backfill chunk deferred").count
        let wideUpdate = Self.background(ws, "SET synchronous_commit = on; BEGIN; "
                                         + wide.map { "INSERT INTO \($0) VALUES (1);" }.joined()
                                         + "UPDATE bf SET v = 'wide' WHERE id = 7; COMMIT")
        try poll(what: "the 66-table transaction reaches the log: \(run.stderr.suffix(400))") {
            try ws.rowEvents(table: "bf").contains { ($0["after"] as? [String: Any])?["v"] as? String == "wide" }
        }
        #expect(try ws.sql("SELECT v FROM bf WHERE id = 7")[0][0] == "v7", "the committing transaction is not yet visible")
        let third = try ws.cdc(["snapshot", "bf", "--config", ws.configPath, "--no-wait"], timeout: 60)
        #expect(third.status == 0, "\(third.stderr)")
        try poll(what: "the chunk is deferred for the 66-table transaction: \(run.stderr.suffix(600))", timeout: 30) {
            run.stderr.components(separatedBy: "backfill chunk deferred").count > deferredBefore
        }
        #expect(run.stderr.components(separatedBy: "backfill done").count == 3, "the third snapshot waits")
        try release()
        wideUpdate()
        try poll(what: "the third backfill ends once the transaction is visible: \(run.stderr.suffix(600))", timeout: 30) {
            run.stderr.components(separatedBy: "backfill done").count == 4
        }
        try Self.stopAndCatchUp(ws, run)
        try Self.expectFoldEqualsSource(ws, table: "bf")
        #expect(try Self.fold(ws, table: "bf")[5] == "invisible")
        #expect(try Self.fold(ws, table: "bf")[7] == "wide")
    }

    /// A table keyed by a replica identity index (no primary key) is read by that index; a TRUNCATE
    /// issued while a chunk's SELECT runs (it waits for the SELECT's lock, and so lands in or after the
    /// window) and new rows after it: the folded log is the table, the old rows gone.
    @Test func aReplicaIdentityIndexKeysTheChunksAndATruncateDuringTheBackfillIsExact() throws {
        let ws = try CDCWorkspace("backfillri", extraSource: "tables = [\"public.facilities\", \"public.bf\"]")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE bf (id int NOT NULL, v text);
            CREATE UNIQUE INDEX bf_id ON bf (id);
            ALTER TABLE bf REPLICA IDENTITY USING INDEX bf_id;
            INSERT INTO bf SELECT g, 'v' || g FROM generate_series(1, 300) g;
            """)
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        try poll(what: "cdc run streams") { run.stderr.contains("streaming") }
        try Self.snapshotHeldOpen(ws, table: "bf", chunkSize: 100, seconds: 2)
        try ws.sql("TRUNCATE bf")
        try ws.sql("INSERT INTO bf SELECT g, 'after' || g FROM generate_series(1, 150) g")
        try poll(what: "the backfill ends: \(run.stderr.suffix(600))", timeout: 60) { run.stderr.contains("backfill done") }
        try Self.stopAndCatchUp(ws, run)
        try Self.expectFoldEqualsSource(ws, table: "bf")
        let lines = run.stderr.split(separator: "\n").filter { $0.contains("cdc.table=public.bf") && $0.contains("[Capture] backfill") }
        #expect(lines.first?.contains("cdc.rows_read=100") == true, "the first chunk read 100 rows by the index: \(lines)")
        #expect(try Self.fold(ws, table: "bf")[1] == "after1")
    }

    /// A table dropped from the publication in the middle of its backfill: the backfill ends with an
    /// error naming it, which a waiting `cdc snapshot` reports (one line, non-zero), and the log still
    /// verifies.
    @Test func aTableLeavingThePublicationMidBackfillEndsItWithAnError() throws {
        let ws = try CDCWorkspace("backfillleave", extraSource: "tables = [\"public.facilities\", \"public.bf\"]")
        defer { ws.tearDown() }
        try ws.sql("""
            CREATE TABLE bf (id int PRIMARY KEY, v text);
            INSERT INTO bf SELECT g, 'v' || g FROM generate_series(1, 200) g;
            """)
        try ws.initialize()
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        try poll(what: "cdc run streams") { run.stderr.contains("streaming") }
        let waiting = try ws.start(["snapshot", "bf", "--config", ws.configPath, "--chunk-size", "10",
                                       "--where", "(SELECT pg_sleep(0.3)) IS NOT NULL"])
        defer { waiting.killIfRunning() }
        try poll(what: "three chunks: \(run.stderr.suffix(600))", timeout: 60) { run.stderr.components(separatedBy: "[Capture] backfill chunk\n").count > 3 }
        try ws.sql("ALTER PUBLICATION \(ws.slot) DROP TABLE bf")
        let status = waiting.wait(timeout: 60).status
        #expect(status != 0 && waiting.stderr.contains("left the publication") && waiting.stderr.split(separator: "\n").count == 1,
                "cdc snapshot: \(status) \(waiting.stderr)")
        #expect(run.stderr.contains("backfill refused: public.bf left the publication"), "\(run.stderr.suffix(800))")
        #expect(run.isRunning, "capture goes on")
        try Self.stopAndCatchUp(ws, run)
        let verify = try ws.cdc(["log", "verify", "--log", ws.logPath])
        #expect(verify.status == 0, "cdc log verify: \(verify.stdout) \(verify.stderr)")
        let status2 = try ws.cdc(["status", "--config", ws.configPath])
        #expect(status2.stdout.contains("left the publication"), "\(status2.stdout)")
    }
}
