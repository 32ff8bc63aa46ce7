import Foundation
import PGClient
import Testing
import TestSupport

/// Value rendering: the snapshot (COPY) and the stream (pgoutput) give one text form, which is the
/// server's own text output; integers, finite floats and booleans are JSON numbers and booleans.
@Suite(.timeLimit(.minutes(15))) struct DataTypeTests {
    static let schema = """
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE TABLE typed (
            id               int PRIMARY KEY,
            c_numeric        numeric(40,20),
            c_numeric_nan    numeric,
            c_float8_nan     float8,
            c_float8_inf     float8,
            c_float8_tiny    float8,
            c_float4         float4,
            c_float4_neginf  float4,
            c_int8           int8,
            c_int2           int2,
            c_bool           bool,
            c_bool_false     bool,
            c_timestamptz    timestamptz,
            c_timestamp      timestamp,
            c_date           date,
            c_interval       interval,
            c_bytea          bytea,
            c_json           json,
            c_jsonb          jsonb,
            c_int4_array     int4[],
            c_text_array     text[],
            c_uuid           uuid,
            c_unicode        text,
            c_escapes        text,
            c_backslash_n    text,
            c_empty          text,
            c_mood           mood,
            c_mood_array     mood[],
            c_varchar        varchar(10),
            c_char           char(3),
            c_inet           inet,
            c_null           text
        );
        """

    /// One row; every value but the key is the same for every id.
    static func insert(id: Int) -> String {
        """
        INSERT INTO typed VALUES (
            \(id),
            '12345678901234567890.12345678901234567890',
            'NaN',
            'NaN',
            'Infinity',
            1e-300,
            3.14159,
            '-Infinity',
            9223372036854775807,
            -32768,
            true,
            false,
            '2024-02-29 23:59:59.123456+05:30',
            '1999-12-31 23:59:59.999999',
            'infinity',
            '1 year 2 months 3 days 04:05:06.789',
            '\\x00ff80fe5c0a00'::bytea,
            '{ "a" : 1,
              "a":2 ,\t"b" :[1, 2 ]  }',
            '{"b": [1, 2], "a": {"x": null}, "c": "é"}',
            '{1,NULL,3}',
            ARRAY['a,b', 'c"d', 'e\\f', ' sp ', 'NULL', '', '{}'],
            'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
            'emoji 😀👩‍👩‍👧 CJK 汉字かな 한국어 combining e\u{0301} a\u{0308}\u{0323} RTL שָׁלוֹם مرحبا',
            'tab\there\nnewline\\backslash "double" ''single'' \r cr \\t not-a-tab',
            '\\N',
            '',
            'happy',
            '{sad,happy}',
            'ten chars!',
            'ab',
            '2001:db8::1/64',
            NULL
        )
        """
    }

    @Test func snapshotAndStreamRenderEveryTypeAsTheServersText() throws {
        let ws = try CDCWorkspace("types")
        defer { ws.tearDown() }
        try ws.sql(Self.schema)
        try ws.sql(Self.insert(id: 1))
        try ws.initialize()
        try ws.sql(Self.insert(id: 2))
        try ws.catchUp()

        let lines = try ws.exportLines()
        let events = try lines.map(parseEvent)
        expectExportInvariants(events)
        let rowIndices = events.indices.filter { events[$0]["table"] as? String == "public.typed" && events[$0]["op"] as? String != "relation" }
        try #require(rowIndices.count == 2, "one snapshot row and one streamed insert")
        let snapshot = events[rowIndices[0]], streamed = events[rowIndices[1]]
        #expect(snapshot["op"] as? String == "snapshot")
        #expect(streamed["op"] as? String == "insert")
        let snapshotAfter = try #require(row(snapshot)), streamedAfter = try #require(row(streamed))
        #expect(snapshotAfter["id"] as? Int == 1)
        #expect(streamedAfter["id"] as? Int == 2)

        // COPY and pgoutput give one text form: the rows are equal but for the key.
        var a = snapshotAfter, b = streamedAfter
        a["id"] = nil
        b["id"] = nil
        #expect(canonicalJSON(a) == canonicalJSON(b), "snapshot and streamed rows differ:\n\(lines[rowIndices[0]])\n\(lines[rowIndices[1]])")

        // Each row's relation record describes the table as the catalog does.
        let connection = try ws.server.connect(database: ws.database)
        let catalog = try connection.execute("""
            SELECT a.attname, a.atttypid::int8, a.atttypmod,
                   CASE WHEN t.oid < 16384 THEN t.typname::text ELSE n.nspname || '.' || t.typname END
            FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE a.attrelid = 'typed'::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """)
        #expect(relationRecords(events, table: "public.typed").count == 1, "the stream's definition is the snapshot's: no second version")
        let tableOID = Int(try connection.execute("SELECT 'typed'::regclass::oid::int8").value(0, 0) ?? "")
        for event in [snapshot, streamed] {
            let relationSeq = event["relation_seq"] as? Int
            let relation = events.first { $0["seq"] as? Int == relationSeq }
            let described = columns(relation)
            try #require(described.count == catalog.rowCount, "relation record \(relationSeq ?? -1) lists every column")
            #expect((relation?["relation"] as? [String: Any])?["oid"] as? Int == tableOID)
            #expect((relation?["relation"] as? [String: Any])?["replica_identity"] as? String == "d")
            for (index, column) in described.enumerated() {
                let name = catalog.value(index, 0) ?? "?"
                #expect(column["name"] as? String == name)
                #expect(column["type_oid"] as? Int == Int(catalog.value(index, 1) ?? ""), "type_oid of \(name)")
                #expect(column["typmod"] as? Int == Int(catalog.value(index, 2) ?? ""), "typmod of \(name)")
                #expect(column["type"] as? String == catalog.value(index, 3), "type of \(name)")
                #expect(column["key"] as? Bool == (name == "id"), "key flag of \(name)")
            }
            #expect(described.first { $0["name"] as? String == "c_mood" }?["type"] as? String == "public.mood")
            #expect(described.first { $0["name"] as? String == "c_mood_array" }?["type"] as? String == "public._mood")
            #expect(Set(row(event)?.keys.map { $0 } ?? []) == Set(described.compactMap { $0["name"] as? String }),
                    "the row has exactly the relation's columns")
        }

        // Every value is what the server itself prints (timezone UTC, DateStyle ISO, extra_float_digits 3):
        // a query's text-format result, which is the type's output function. (Not `::text`, which
        // strips char(n)'s padding.)
        let names = (0..<catalog.rowCount).map { catalog.value($0, 0)! }
        for (id, index) in [(1, rowIndices[0]), (2, rowIndices[1])] {
            let line = lines[index]
            let after = row(events[index]) ?? [:]
            let server = try connection.execute("SELECT " + names.map { connection.quoteIdentifier($0) }.joined(separator: ", ")
                                                + " FROM typed WHERE id = \(id)")
            for (column, name) in names.enumerated() {
                let type = catalog.value(column, 3) ?? ""
                var text = server.value(0, column)
                if type == "bool" { text = text.map { $0 == "t" ? "true" : $0 == "f" ? "false" : $0 } }
                let exported = after[name]
                guard let text else {
                    #expect(exported is NSNull, "\(name) of row \(id) is NULL: exported \(String(describing: exported))")
                    #expect(rawScalar(line, key: name) == "null")
                    continue
                }
                switch type {
                case "int2", "int4", "int8":
                    #expect(rawScalar(line, key: name) == text, "\(name) of row \(id) is the JSON number \(text): \(line)")
                    #expect(exported is NSNumber && !isJSONBool(exported as! NSNumber))
                case "float4", "float8":
                    if ["NaN", "Infinity", "-Infinity"].contains(text) {
                        #expect(exported as? String == text, "\(name) of row \(id) is the string \(text)")
                    } else {
                        #expect(rawScalar(line, key: name) == text, "\(name) of row \(id) is the JSON number \(text): \(line)")
                        #expect((exported as? NSNumber)?.doubleValue == Double(text), "\(name) of row \(id) parses to \(text)")
                    }
                case "bool":
                    #expect(rawScalar(line, key: name) == text, "\(name) of row \(id) is JSON \(text): \(line)")
                    #expect((exported as? NSNumber).map(isJSONBool) == true)
                default:
                    #expect(exported is String, "\(name) of row \(id) is a JSON string: \(String(describing: exported))")
                    #expect(sameBytes(exported as? String, text),
                            "\(name) of row \(id): exported \(canonicalJSON(exported)) but the server prints \(canonicalJSON(text)) (\(text))")
                }
            }
        }

        // A few values spelled out, so that a server-side surprise cannot make both sides wrong alike.
        #expect(streamedAfter["c_numeric"] as? String == "12345678901234567890.12345678901234567890")
        #expect(streamedAfter["c_numeric_nan"] as? String == "NaN")
        #expect(streamedAfter["c_float8_inf"] as? String == "Infinity")
        #expect(streamedAfter["c_float4_neginf"] as? String == "-Infinity")
        #expect(streamedAfter["c_timestamptz"] as? String == "2024-02-29 18:29:59.123456+00")
        #expect(streamedAfter["c_date"] as? String == "infinity")
        #expect(streamedAfter["c_bytea"] as? String == "\\x00ff80fe5c0a00")
        #expect(sameBytes(streamedAfter["c_json"] as? String, "{ \"a\" : 1,\n      \"a\":2 ,\t\"b\" :[1, 2 ]  }"),
                "json keeps its whitespace and duplicate keys verbatim")
        #expect(streamedAfter["c_int4_array"] as? String == "{1,NULL,3}")
        #expect(streamedAfter["c_text_array"] as? String == #"{"a,b","c\"d","e\\f"," sp ","NULL","","{}"}"#)
        #expect(streamedAfter["c_uuid"] as? String == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        #expect(sameBytes(streamedAfter["c_escapes"] as? String, "tab\there\nnewline\\backslash \"double\" 'single' \r cr \\t not-a-tab"))
        #expect(streamedAfter["c_backslash_n"] as? String == "\\N", "a text '\\N' is not NULL")
        #expect(streamedAfter["c_empty"] as? String == "", "an empty string is not NULL")
        #expect(snapshotAfter["c_backslash_n"] as? String == "\\N", "a text '\\N' is not NULL in the snapshot either")
        #expect(snapshotAfter["c_empty"] as? String == "", "an empty string is not NULL in the snapshot either")
        #expect(streamedAfter["c_char"] as? String == "ab ")
        #expect(rawScalar(lines[rowIndices[1]], key: "c_int8") == "9223372036854775807")
        #expect(rawScalar(lines[rowIndices[1]], key: "c_float8_tiny") == "1e-300")
    }

    @Test func quotedNamesAndOtherSchemas() throws {
        let ws = try CDCWorkspace("names")
        defer { ws.tearDown() }
        try ws.sql(#"""
            CREATE SCHEMA "Sales";
            CREATE TABLE "Sales"."Order Items" ("Item ID" int PRIMARY KEY, "qty ""x""" int, "ñame" text, "tab	col" text);
            INSERT INTO "Sales"."Order Items" VALUES (1, 10, 'first', 't1');
            """#)
        try ws.initialize()
        try ws.sql(#"INSERT INTO "Sales"."Order Items" VALUES (2, 20, 'second', 't2')"#)
        try ws.sql(#"UPDATE "Sales"."Order Items" SET "qty ""x""" = 11 WHERE "Item ID" = 1"#)
        try ws.catchUp()

        let events = try ws.export()
        expectExportInvariants(events)
        let quantity = #"qty "x""#, tab = "tab\tcol"
        let relations = relationRecords(events, table: "Sales.Order Items")
        #expect(relations.map(columnNames).first == ["Item ID", quantity, "ñame", tab])
        let rows = events.filter { $0["table"] as? String == "Sales.Order Items" && $0["op"] as? String != "relation" }
        #expect(rows.map { $0["op"] as? String } == ["snapshot", "insert", "update"])
        #expect(canonicalJSON(row(rows.first)) == canonicalJSON(["Item ID": 1, quantity: 10, "ñame": "first", tab: "t1"]))
        #expect(canonicalJSON(row(rows.dropFirst().first)) == canonicalJSON(["Item ID": 2, quantity: 20, "ñame": "second", tab: "t2"]))
        #expect(canonicalJSON(row(rows.last)) == canonicalJSON(["Item ID": 1, quantity: 11, "ñame": "first", tab: "t1"]))
    }
}
