import Foundation
import Testing
import TestSupport

/// Type names in relation records: the stream names every column type as the snapshot does and as the
/// catalog does (`pg_type`: built-ins by name, user types `schema.name`), so an unchanged table keeps one
/// relation version. pgoutput's Type message names a domain by its base type; cdc asks the catalog.
@Suite(.timeLimit(.minutes(15))) struct TypeNameTests {
    static let schema = """
        CREATE SCHEMA "Other Schema";
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE DOMAIN positive AS int CHECK (VALUE > 0);
        CREATE DOMAIN small_positive AS positive CHECK (VALUE < 1000);
        CREATE DOMAIN "Other Schema".label AS varchar(20);
        CREATE DOMAIN good_mood AS mood CHECK (VALUE <> 'sad');
        CREATE DOMAIN positives AS int[];
        CREATE TYPE pair AS (a int, b text);
        CREATE TYPE floatrange AS RANGE (subtype = float8);
        CREATE TABLE typed_user (
            id          int PRIMARY KEY,
            c_domain    positive,
            c_dom_dom   small_positive,
            c_label     "Other Schema".label,
            c_dom_enum  good_mood,
            c_dom_array positives,
            c_array_dom positive[],
            c_enum      mood,
            c_enum_arr  mood[],
            c_composite pair,
            c_range     floatrange,
            c_multi     floatmultirange,
            c_text      text
        );
        """

    static func insert(_ id: Int) -> String {
        """
        INSERT INTO typed_user VALUES (\(id), 5, 7, 'l', 'happy', '{1,2}', '{3}', 'ok', '{sad,happy}',
                                       ROW(1, 'x'), '[1.5,2.5)', '{[1,2)}', 't')
        """
    }

    @Test func streamNamesDomainEnumArrayCompositeAndRangeColumnsAsTheSnapshotAndTheCatalog() throws {
        let ws = try CDCWorkspace("typenames")
        defer { ws.tearDown() }
        try ws.sql(Self.schema)
        try ws.sql(Self.insert(1))
        try ws.initialize()
        // Changes streamed by two `cdc run` sessions (each resolves type names afresh).
        try ws.sql(Self.insert(2))
        try ws.sql("UPDATE typed_user SET c_text = 'u' WHERE id = 1")
        try ws.catchUp()
        try ws.sql("DELETE FROM typed_user WHERE id = 2")
        try ws.catchUp()

        let events = try ws.export()
        let rows = events.filter { $0["table"] as? String == "public.typed_user" && $0["op"] as? String != "relation" }
        #expect(rows.compactMap { $0["op"] as? String } == ["snapshot", "insert", "update", "delete"])
        let relations = relationRecords(events, table: "public.typed_user")
        #expect(relations.count == 1, "an unchanged table has one relation version; the log has \(relations.count): \(relations.map(columns))")
        #expect(Set(rows.map { $0["relation_seq"] as? Int }) == [relations.first?["seq"] as? Int], "every row refers to the one version")

        // The catalog's own names, by the log's rule, for every column.
        let catalog = try ws.sql("""
            SELECT a.attname, a.atttypid::int8::text,
                   CASE WHEN t.oid < 16384 THEN t.typname::text ELSE n.nspname || '.' || t.typname END,
                   format_type(a.atttypid, NULL)
            FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE a.attrelid = 'typed_user'::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """)
        for relation in relations {
            let described = columns(relation)
            try #require(described.count == catalog.count)
            for (column, row) in zip(described, catalog) {
                #expect(column["name"] as? String == row[0])
                #expect((column["type_oid"] as? Int).map(String.init) == row[1], "type_oid of \(row[0] ?? "?")")
                #expect(column["type"] as? String == row[2], "type of \(row[0] ?? "?") (format_type: \(row[3] ?? "?"))")
            }
        }
        // Spelled out, so that a wrong catalog query cannot make both sides wrong alike.
        let types = Dictionary(uniqueKeysWithValues: columns(relations.first).map { ($0["name"] as? String ?? "", $0["type"] as? String ?? "") })
        #expect(types == [
            "id": "int4", "c_domain": "public.positive", "c_dom_dom": "public.small_positive",
            "c_label": "Other Schema.label", "c_dom_enum": "public.good_mood", "c_dom_array": "public.positives",
            "c_array_dom": "public._positive", "c_enum": "public.mood", "c_enum_arr": "public._mood",
            "c_composite": "public.pair", "c_range": "public.floatrange", "c_multi": "public.floatmultirange",
            "c_text": "text",
        ])
    }

    /// A domain created after the snapshot, and a column changed to it: the new version names the domain.
    @Test func aColumnAlteredToANewDomainGetsTheDomainsNameInTheNewVersion() throws {
        let ws = try CDCWorkspace("typenames_alter")
        defer { ws.tearDown() }
        try ws.sql("CREATE TABLE later (id int PRIMARY KEY, amount int)")
        try ws.sql("INSERT INTO later VALUES (1, 1)")
        try ws.initialize()
        try ws.sql("CREATE DOMAIN cents AS int CHECK (VALUE >= 0)")
        try ws.sql("ALTER TABLE later ALTER COLUMN amount TYPE cents")
        try ws.sql("INSERT INTO later VALUES (2, 2)")
        try ws.catchUp()

        let relations = relationRecords(try ws.export(), table: "public.later")
        try #require(relations.count == 2, "the snapshot's version and the altered one")
        #expect(columns(relations[0]).map { $0["type"] as? String } == ["int4", "int4"])
        #expect(columns(relations[1]).map { $0["type"] as? String } == ["int4", "public.cents"])
    }

    /// The catalog lookup needs an ordinary connection besides the replication one. When it cannot be
    /// made (here: the role's connection limit is taken by the walsender), `cdc run` logs why, writes
    /// nothing, retries, and streams the change once the lookup succeeds.
    @Test func aFailedTypeLookupIsRetriedAndLosesNothing() throws {
        let ws = try CDCWorkspace("typenames_retry", schema: false)
        defer { ws.tearDown() }
        let role = try ws.createRole("types", "WITH LOGIN REPLICATION PASSWORD 'types-secret'")
        try ws.sql("""
            CREATE DOMAIN positive AS int CHECK (VALUE > 0);
            CREATE TABLE t (id int PRIMARY KEY, n positive);
            INSERT INTO t VALUES (1, 1);
            GRANT SELECT ON t TO \(role);
            CREATE PUBLICATION \(ws.slot) FOR ALL TABLES;
            """)
        try ws.writeConfigFile(url: "host=127.0.0.1 port=\(ws.server.port) dbname=\(ws.database) user=\(role) password=types-secret")
        try ws.initialize()
        let before = try ws.exportLines()

        try ws.server.execute("ALTER ROLE \(role) CONNECTION LIMIT 1")
        try ws.sql("INSERT INTO t VALUES (2, 2)")
        let run = try ws.startRun()
        defer { run.killIfRunning() }
        #expect(run.waitForLog("cannot look up the source's type names in pg_type"), "the lookup's failure is logged: \(run.stderr)")
        #expect(run.stderr.contains("too many connections"), "with the server's reason")
        #expect(run.waitForLog("reconnecting") && run.isRunning, "a failed lookup is retried, not fatal: \(run.stderr.suffix(2000))")
        #expect(try ws.exportLines() == before, "nothing is written while the table's types are unknown")

        try ws.server.execute("ALTER ROLE \(role) CONNECTION LIMIT -1")
        try poll(what: "the insert streamed after the lookup succeeds", timeout: 60) {
            guard run.isRunning else { throw TestFailure("cdc run exited: \(run.stderr.suffix(2000))") }
            return try ws.export().contains { $0["op"] as? String == "insert" }
        }
        run.send(SIGTERM)
        #expect(run.wait().status == 0, "cdc run stops cleanly: \(run.stderr.suffix(2000))")
        let events = try ws.export()
        let relations = relationRecords(events, table: "public.t")
        #expect(relations.count == 1, "one relation version")
        #expect(columns(relations.first).map { $0["type"] as? String } == ["int4", "public.positive"])
        #expect(events.filter { $0["op"] as? String == "insert" }.count == 1, "the insert once")
    }
}
