import Foundation
import Testing
import TestSupport

/// `[audit] actor = true`: the source names the actor of each transaction in a `cdc.actor` message.
@Suite(.timeLimit(.minutes(15))) struct AuditActorTests {
    static let keys: Set<String> = ["db_user", "current_user", "application_name", "client_addr", "backend_pid", "app_user"]

    /// The `cdc.actor` messages of the export, decoded, with the xid and seq of each.
    static func actorMessages(_ events: [[String: Any]]) throws -> [(xid: Int, seq: Int, actor: [String: Any])] {
        try events.filter { $0["op"] as? String == "message" && $0["prefix"] as? String == "cdc.actor" }.map { event in
            #expect(event["transactional"] as? Bool == true)
            let content = try #require(event["content"] as? String)
            let actor = try #require(try JSONSerialization.jsonObject(with: Data(content.utf8), options: [.fragmentsAllowed]) as? [String: Any])
            return (event["xid"] as? Int ?? -1, event["seq"] as? Int ?? -1, actor)
        }
    }

    @Test func eachTransactionNamesItsActorOnceBeforeItsRows() throws {
        let ws = try CDCWorkspace("actor", schema: false)
        defer { ws.tearDown() }
        let role = try ws.createRole("actor_role")
        try ws.sql("CREATE TABLE acct (id int PRIMARY KEY, v text); GRANT ALL ON acct TO \(role)")
        try ws.appendConfig("[audit]\nactor = true")
        let initResult = try ws.cdc(["init", "--config", ws.configPath])
        #expect(initResult.status == 0, "init: \(initResult.stderr)")
        #expect(initResult.stdout.contains("audit: installed the actor trigger on 1 tables"), "\(initResult.stdout)")

        try ws.sql("""
            SET application_name = 'billing';
            BEGIN;
            SET LOCAL ROLE \(role);
            SET LOCAL cdc.app_user = 'alice@example.com';
            INSERT INTO acct VALUES (1, 'a');
            INSERT INTO acct VALUES (2, 'b');
            UPDATE acct SET v = 'c';
            COMMIT;
            """)
        try ws.sql("INSERT INTO acct VALUES (3, 'plain')")
        // A savepoint rolled back takes its message with it; the next statement names the actor again.
        try ws.sql("BEGIN; SAVEPOINT s; INSERT INTO acct VALUES (4); ROLLBACK TO s; INSERT INTO acct VALUES (5); COMMIT;")
        // A table that joins the publication (FOR ALL TABLES) after init: its first transaction comes
        // before any trigger; cdc run installs one when it connects.
        try ws.sql("CREATE TABLE late (id int PRIMARY KEY)")
        try ws.sql("INSERT INTO late VALUES (1)")
        try ws.catchUp()
        try ws.sql("INSERT INTO late VALUES (2)")
        try ws.sql("TRUNCATE late")
        try ws.catchUp()

        let events = try ws.export()
        let messages = try Self.actorMessages(events)
        let rows = events.filter { ["insert", "update", "delete", "truncate"].contains($0["op"] as? String ?? "") }
        let xids = Set(rows.compactMap { $0["xid"] as? Int })
        for (xid, seq, actor) in messages {
            #expect(Set(actor.keys) == Self.keys, "exactly the documented keys: \(actor.keys.sorted())")
            #expect(actor["db_user"] as? String == "postgres")
            #expect(actor["backend_pid"] is Int)
            let first = rows.filter { $0["xid"] as? Int == xid }.compactMap { $0["seq"] as? Int }.min() ?? 0
            #expect(seq < first, "the message precedes its transaction's rows")
        }
        #expect(Dictionary(grouping: messages, by: \.xid).values.allSatisfy { $0.count == 1 }, "one message per transaction")

        func actor(ofRowWith table: String, id: Int) -> [String: Any]? {
            guard let row = rows.first(where: { $0["table"] as? String == "public." + table && (($0["after"] as? [String: Any])?["id"] as? Int) == id }),
                  let xid = row["xid"] as? Int else { return nil }
            return messages.first { $0.xid == xid }?.actor
        }
        let alice = try #require(actor(ofRowWith: "acct", id: 1))
        #expect(alice["app_user"] as? String == "alice@example.com")
        #expect(alice["current_user"] as? String == role)
        #expect(alice["application_name"] as? String == "billing")
        #expect(actor(ofRowWith: "acct", id: 2)?["app_user"] as? String == "alice@example.com", "same transaction, same actor")
        let plain = try #require(actor(ofRowWith: "acct", id: 3))
        #expect(plain["app_user"] is NSNull, "no cdc.app_user: null")
        #expect(plain["current_user"] as? String == "postgres")
        #expect(actor(ofRowWith: "acct", id: 5) != nil, "the statement after a rolled-back savepoint names the actor")
        #expect(actor(ofRowWith: "late", id: 1) == nil, "before the trigger existed")
        #expect(actor(ofRowWith: "late", id: 2) != nil, "cdc run put the trigger on the new table")
        let truncate = try #require(rows.first { $0["op"] as? String == "truncate" })
        #expect(messages.contains { $0.xid == truncate["xid"] as? Int }, "a TRUNCATE names its actor too")
        #expect(xids.count == messages.count + 1, "every transaction but the first on `late` has its actor")

        // Readers attach it: every row event of a transaction with an actor message has `actor`, exactly
        // the message's keys and values; the others have none.
        for row in rows {
            let message = messages.first { $0.xid == row["xid"] as? Int }
            let attached = row["actor"] as? [String: Any]
            #expect((attached == nil) == (message == nil), "seq \(row["seq"] ?? "?")")
            if let attached, let message {
                #expect(Set(attached.keys) == Self.keys)
                #expect(NSDictionary(dictionary: attached).isEqual(to: message.actor), "the message's values")
            }
        }
        // A reader that starts inside a transaction (after its message) finds the actor all the same.
        let second = try #require(rows.first { ($0["after"] as? [String: Any])?["id"] as? Int == 2 })
        let fromSecond = try ws.export(from: UInt64(second["seq"] as! Int))
        #expect((fromSecond.first?["actor"] as? [String: Any])?["app_user"] as? String == "alice@example.com")
        // --actor NAME keeps the events of the transactions whose db_user or app_user is NAME.
        let alices = try ws.cdc(["log", "export", "--log", ws.logPath, "--actor", "alice@example.com"])
        #expect(alices.status == 0, "\(alices.stderr)")
        let kept = alices.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(Set(kept.compactMap { $0["xid"] as? Int }) == [try #require(rows.first?["xid"] as? Int)])
        #expect(kept.filter { $0["op"] as? String != "message" && $0["op"] as? String != "relation" }.count == 4, "2 inserts and 2 updates")
        let txn = try ws.cdc(["log", "txn", String(try #require(rows.first?["xid"] as? Int)), "--log", ws.logPath, "--format", "jsonl"])
        #expect(txn.stdout.split(separator: "\n").filter { $0.contains("\"actor\":{") }.count == 4, "cdc log txn shows it too")
        let table = try ws.cdc(["log", "txn", String(try #require(rows.first?["xid"] as? Int)), "--log", ws.logPath, "--format", "table"], environment: ["COLUMNS": "300"])
        let lines = table.stdout.split(separator: "\n")
        #expect(lines.first?.contains("  who  ") == true, "\(table.stdout)")
        #expect(lines.filter { $0.contains(" alice@example.com  ") }.count == 4, "the who column names the app_user: \(table.stdout)")
        // cdc log history: the row's events carry it, and --actor keeps only that actor's changes.
        func history(_ id: Int, _ extra: [String] = []) throws -> [[String: Any]] {
            let result = try ws.cdc(["log", "history", "acct", String(id), "--log", ws.logPath, "--format", "jsonl"] + extra)
            #expect(result.status == 0, "history: \(result.stderr)")
            return result.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        }
        let rowOne = try history(1)
        #expect(rowOne.map { $0["op"] as? String } == ["insert", "update"], "\(rowOne)")
        #expect(rowOne.allSatisfy { ($0["actor"] as? [String: Any])?["app_user"] as? String == "alice@example.com" }, "\(rowOne)")
        #expect(try history(1, ["--actor", "alice@example.com"]).count == 2)
        #expect(try history(3).count == 1)
        #expect(try history(3, ["--actor", "alice@example.com"]).isEmpty, "row 3 was not alice's change")
        #expect(try history(3, ["--actor", "postgres"]).count == 1, "db_user matches too")
    }

    @Test func printAuditSqlIsTheShippedFileAndRemovingItIsOneStatement() throws {
        let ws = try CDCWorkspace("actorsql", schema: false)
        defer { ws.tearDown() }
        try ws.sql("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); CREATE PUBLICATION \(ws.slot) FOR TABLE a")
        // No source contact: a DBA prints it anywhere.
        try ws.writeConfig(conninfo: "host=127.0.0.1 port=1 dbname=nowhere connect_timeout=1")
        let printed = try ws.cdc(["init", "--print-audit-sql", "--config", ws.configPath])
        #expect(printed.status == 0, "\(printed.stderr)")
        let file = try String(contentsOfFile: PostgresServer.repositoryRoot + "/schemas/audit/actor.sql", encoding: .utf8)
        #expect(printed.stdout == file + "\nSELECT cdc_audit.install('\(ws.slot)');\n")

        try ws.sql(printed.stdout)
        try ws.sql(printed.stdout)  // re-runnable
        let triggers = { try ws.sql("SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE tgname LIKE 'cdc_actor%' ORDER BY 1, 2").map { "\($0[0] ?? "") \($0[1] ?? "")" } }
        #expect(try triggers() == ["a cdc_actor", "a cdc_actor_truncate"], "only the publication's tables")
        try ws.sql("DROP SCHEMA cdc_audit CASCADE")
        #expect(try triggers().isEmpty, "the documented removal takes the triggers with it")
    }

    /// `cdc run` touches no table when every published table has its trigger (CREATE TRIGGER would wait
    /// for, and hold up, the table's writers), and when one lacks it, gives up after lock_timeout on a
    /// table a transaction holds, goes on capturing, and installs at a later session.
    @Test func runLeavesTablesWithTheTriggerAloneAndNeverWaitsLongOnALock() throws {
        let ws = try CDCWorkspace("actorlock", schema: false)
        defer { ws.tearDown() }
        try ws.sql("CREATE TABLE acct (id int PRIMARY KEY)")
        try ws.appendConfig("[audit]\nactor = true")
        let initResult = try ws.cdc(["init", "--config", ws.configPath])
        try #require(initResult.status == 0, "init: \(initResult.stderr)")
        func run() throws -> Shell.Result {
            let result = try ws.cdc(["run", "--config", ws.configPath, "--no-project", "--endpos", try ws.server.currentLSN()])
            #expect(result.status == 0, "cdc run: \(result.stderr)")
            return result
        }
        try ws.sql("CREATE TABLE other (id int PRIMARY KEY)")
        _ = try ws.sql("SELECT cdc_audit.install('\(ws.slot)')")  // a DBA put it on `other` already
        try ws.sql("INSERT INTO other VALUES (1)")
        // A writer holds acct (ROW EXCLUSIVE) in an open transaction.
        let writer = try ws.server.connect(database: ws.database)
        try writer.execute("BEGIN; INSERT INTO acct VALUES (100)")
        let quiet = try run()
        #expect(!quiet.stderr.contains("actor trigger"), "every table has it: nothing installed, no lock asked for: \(quiet.stderr)")

        // A table without the trigger: the install needs acct's lock too, gives up after lock_timeout,
        // and capture goes on (the new table's rows are logged, without an actor).
        try ws.sql("CREATE TABLE late (id int PRIMARY KEY); INSERT INTO late VALUES (1)")
        let blocked = try run()
        #expect(blocked.stderr.contains("cannot install the actor trigger") && blocked.stderr.contains("55P03"),
                "one warning naming the lock timeout: \(blocked.stderr)")
        try writer.execute("COMMIT")
        try ws.sql("INSERT INTO late VALUES (2)")
        let installed = try run()
        #expect(installed.stderr.contains("installed the actor trigger"), "\(installed.stderr)")
        try ws.sql("INSERT INTO late VALUES (3)")
        _ = try run()

        let events = try ws.export()
        let rows = events.filter { $0["op"] as? String == "insert" }
        func actor(_ table: String, _ id: Int) -> Bool? {
            rows.first { $0["table"] as? String == "public." + table && ($0["after"] as? [String: Any])?["id"] as? Int == id }
                .map { $0["actor"] != nil }
        }
        #expect(actor("acct", 100) == true, "the held transaction committed with its actor")
        #expect(actor("other", 1) == true)
        #expect(actor("late", 1) == false, "no trigger yet")
        #expect(actor("late", 3) == true, "installed once the lock was free")
    }

    @Test func initRefusesWhenTheRoleCannotInstallTheTrigger() throws {
        let ws = try CDCWorkspace("actorperm", schema: false)
        defer { ws.tearDown() }
        let role = try ws.createRole("actor_norights", "WITH LOGIN REPLICATION PASSWORD 'actor-pass'")
        try ws.sql("CREATE TABLE t (id int PRIMARY KEY); GRANT SELECT ON t TO \(role); CREATE PUBLICATION \(ws.slot) FOR ALL TABLES; GRANT CREATE ON DATABASE \(ws.database) TO \(role)")
        try ws.writeConfig(conninfo: "host=127.0.0.1 port=\(ws.server.port) dbname=\(ws.database) user=\(role)")
        try ws.appendConfig("[audit]\nactor = true")
        let result = try ws.cdc(["init", "--config", ws.configPath], environment: ["PGPASSWORD": "actor-pass"])
        #expect(result.status != 0)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("cannot install the actor trigger") && lines[0].contains("--print-audit-sql")
                && lines[0].contains("42501"), "\(result.stderr)")
        #expect(try ws.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "0", "no slot is created")
    }
}
