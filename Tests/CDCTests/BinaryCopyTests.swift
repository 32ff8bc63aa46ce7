import Foundation
import PGClient
@testable import Projection
import Testing
import TestSupport

/// The warehouse writer's binary COPY (PGBinaryCopy): what PostgreSQL stores from a value sent in
/// binary is what it stores from the same value's text, for every type the encoder knows and the
/// forms their output functions produce (and the forms cdc writes: RFC 3339 commit times). A form the
/// encoder does not know goes as text, in the same transaction; a bad value fails with PostgreSQL's own
/// error and writes nothing.
@Suite(.timeLimit(.minutes(10))) struct BinaryCopyTests {
    static let columns: [(name: String, type: String, values: [String])] = [
        ("c_text", "text", ["", "plain", "tab\there", "new\nline\r", "back\\slash", "ünïcödé ✓ 日本", String(repeating: "x", count: 5000)]),
        ("c_varchar", "varchar(10)", ["0123456789", "a"]),
        ("c_bool", "boolean", ["t", "f", "true", "false"]),
        ("c_int2", "smallint", ["0", "-32768", "32767", "-1"]),
        ("c_int4", "integer", ["0", "-2147483648", "2147483647", "20260210", "123100"]),
        ("c_int8", "bigint", ["0", "-9223372036854775808", "9223372036854775807", "-1", "42"]),
        ("c_num", "numeric", ["0", "-0", "0.0000", "1", "-1", "123456789.123456789", "0.0001", "0.00001", "10000", "9999",
                              "-0.5", ".5", "5.", "00012.3400", "NaN", "Infinity", "-Infinity",
                              "100000000000000000000000000000.000000000000000000001", "-164.3346"]),
        ("c_num4", "numeric(10,4)", ["1.23456", "0.00005", "-0.00004", "164.3346", "-999999.9999", "0"]),
        ("c_num2", "numeric(5,2)", ["6.98", "42.275", "-0.01"]),
        ("c_date", "date", ["2000-01-01", "1999-12-31", "2026-02-28", "2024-02-29", "0001-01-01", "9999-12-31",
                            "1970-01-01", "2100-03-01", "infinity", "-infinity"]),
        ("c_time", "time", ["00:00:00", "23:59:59.999999", "24:00:00", "12:34:56.5", "09:00:00.000001"]),
        ("c_ts", "timestamptz", ["2026-02-10 12:31:15+00", "2025-02-19 17:15:06.666667+00", "2026-12-05T06:43:16.767376Z",
                                 "2000-01-01 00:00:00", "1969-12-31 23:59:59.999999+00", "2026-03-29 01:30:00+05:30",
                                 "2026-03-29 01:30:00-03", "1900-01-01 00:00:00+00", "1883-11-18 12:00:00+05:53:28",
                                 "0001-01-01 00:00:00+00", "2024-02-29 23:59:59.1-11", "infinity", "-infinity"]),
        ("c_lsn", "pg_lsn", ["0/0", "0/2598D38", "FFFFFFFF/FFFFFFFF", "16/b374d848"]),
        ("c_jsonb", "jsonb", ["{\"a\": [1, 2.50, \"x\\ty\"], \"b\": null}", "null", "\"ü\"", "[]"]),
    ]

    /// One row per value of the longest list (shorter lists cycle), and a row of NULLs.
    static var rows: [[String?]] {
        let count = columns.map(\.values.count).max()!
        var rows: [[String?]] = []
        for i in 0..<count {
            var row: [String?] = [String(i)]
            for column in columns { row.append(column.values[i % column.values.count]) }
            rows.append(row)
        }
        rows.append([String(count)] + [String?](repeating: nil, count: columns.count))
        return rows
    }

    static func create(_ connection: PGConnection, _ table: String) throws {
        let definitions = ["id integer"] + columns.map { "\($0.name) \($0.type)" }
        try connection.execute("CREATE TABLE \(table) (\(definitions.joined(separator: ", ")))")
    }

    static var columnList: String { (["id"] + columns.map(\.name)).joined(separator: ", ") }

    /// The encoders the writer uses for these columns (as `format_type` names the types).
    static func encoders(_ connection: PGConnection, _ table: String) throws -> [PGBinaryCopy.Encoder] {
        let result = try connection.query("""
            SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 ORDER BY attnum
            """, [table])
        return try (0..<result.rowCount).map { r in
            let type = try #require(result.value(r, 0))
            return try #require(PGBinaryCopy.encoder(forType: type), "no binary encoder for \(type)")
        }
    }

    static func textCopy(_ connection: PGConnection, _ rows: [[String?]], into table: String) throws {
        var data: [UInt8] = []
        for row in rows { TableLayout.appendCopyLine(RowValues(row), to: &data) }
        var sent = false
        try connection.copyIn("COPY \(table) (\(columnList)) FROM STDIN") {
            defer { sent = true }
            return sent ? nil : data
        }
    }

    static func stored(_ connection: PGConnection, _ table: String) throws -> [[String?]] {
        try connection.execute("SELECT \(columnList) FROM \(table) ORDER BY id").rows
    }

    static func connect(_ database: String) throws -> PGConnection {
        try PGConnection(conninfo: PostgresServer.shared.conninfo(database: database), overrides: SessionSettings.sqlOverrides())
    }

    @Test func everyEncodedTypeIsStoredAsFromItsText() throws {
        let database = try PostgresServer.shared.createDatabase("binarycopy", schema: false)
        let connection = try Self.connect(database)
        try Self.create(connection, "t_text")
        try Self.create(connection, "t_binary")
        let encoders = try Self.encoders(connection, "t_binary")
        let rows = Self.rows
        try Self.textCopy(connection, rows, into: "t_text")

        // Small chunks: rows span several CopyData messages; every form is one the encoder knows.
        var next = 0
        var chunks: [[UInt8]] = []
        while true {
            let chunk = PGBinaryCopy.chunk(rows.map(RowValues.init), next: &next, encoders: encoders, size: 512)
            chunks.append(chunk.data)
            if chunk.last { break }
        }
        #expect(next == rows.count, "the encoder refused row \(next): \(next < rows.count ? "\(rows[next])" : "")")
        #expect(chunks.count > 3)
        var sent = 0
        try connection.copyIn("COPY t_binary (\(Self.columnList)) FROM STDIN (FORMAT binary)") {
            defer { sent += 1 }
            return sent < chunks.count ? chunks[sent] : nil
        }
        let text = try Self.stored(connection, "t_text"), binary = try Self.stored(connection, "t_binary")
        #expect(text.count == rows.count)
        for (t, b) in zip(text, binary) where t != b {
            Issue.record("row \(t[0] ?? "?"): from text \(t), from binary \(b)")
        }
        // A spot check against literals, not only text against binary: rounding by the column's scale,
        // zones, the end of day, the base-10,000 digits of a long numeric.
        let check = try connection.execute("""
            SELECT c_num4::text, c_ts = '2026-02-10 12:31:15+00'::timestamptz, c_time::text, c_num::text
            FROM t_binary WHERE id IN (0, 2, 17) ORDER BY id
            """).rows
        #expect(check == [["1.2346", "t", "00:00:00", "0"], ["0.0000", "f", "24:00:00", "0.0000"],
                          ["0.0000", "f", "24:00:00", "100000000000000000000000000000.000000000000000000001"]])
    }

    @Test func aFormTheEncoderDoesNotKnowGoesAsTextInTheSameTransaction() throws {
        let database = try PostgresServer.shared.createDatabase("binarycopy", schema: false)
        let connection = try Self.connect(database)
        try connection.execute("CREATE TABLE t (id integer, n numeric(10,4), ts timestamptz, b boolean, i integer)")
        let layoutTypes = ["integer", "numeric(10,4)", "timestamp with time zone", "boolean", "integer"]
        let encoders = layoutTypes.compactMap(PGBinaryCopy.encoder(forType:))
        #expect(encoders.count == layoutTypes.count)
        // Valid input PostgreSQL's text parsers take that no output function produces.
        let rows: [[String?]] = [
            ["1", "1.5", "2026-01-01 00:00:00+00", "t", "1"],
            ["2", "1e3", "2026-01-01 00:00:00+00", "t", "2"],
            ["3", " 7 ", "2026-01-01 00:00:00+00", "yes", "+3"],
            ["4", "2", "2026-01-01 10:00:00.1234567+00", "f", "4"],
            ["5", "3", "0044-03-15 12:00:00+00 BC", "on", " 5"],
            ["6", "4", "epoch", "t", "6"],
            ["7", "5", "2026-01-01 00:00:00+00", "f", "7"],
        ]
        var next = 0
        let first = PGBinaryCopy.chunk(rows.map(RowValues.init), next: &next, encoders: encoders, size: 1 << 20)
        #expect(first.last && next == 1, "the binary chunk ends before the first form it does not know")

        let writer = PostgresWriter(connection: connection, schema: "public", projection: "test")
        try connection.execute("BEGIN")
        try writer.copy(rows.map(RowValues.init), into: "t", columns: "id, n, ts, b, i", binary: encoders)
        try connection.execute("COMMIT")
        let stored = try connection.execute("SELECT id, n::text, ts::text, b::text, i FROM t ORDER BY id").rows
        #expect(stored == [
            ["1", "1.5000", "2026-01-01 00:00:00+00", "true", "1"],
            ["2", "1000.0000", "2026-01-01 00:00:00+00", "true", "2"],
            ["3", "7.0000", "2026-01-01 00:00:00+00", "true", "3"],
            ["4", "2.0000", "2026-01-01 10:00:00.123457+00", "false", "4"],
            ["5", "3.0000", "0044-03-15 12:00:00+00 BC", "true", "5"],
            ["6", "4.0000", "1970-01-01 00:00:00+00", "true", "6"],
            ["7", "5.0000", "2026-01-01 00:00:00+00", "false", "7"],
        ])
    }

    @Test func aBadValueFailsWithPostgreSQLsErrorAndWritesNothing() throws {
        let database = try PostgresServer.shared.createDatabase("binarycopy", schema: false)
        let connection = try Self.connect(database)
        try connection.execute("CREATE TABLE t (id integer, n numeric(5,2), d date)")
        let encoders = ["integer", "numeric(5,2)", "date"].compactMap(PGBinaryCopy.encoder(forType:))
        let writer = PostgresWriter(connection: connection, schema: "public", projection: "test")
        for (rows, state, column) in [([["1", "1.00", "2026-01-01"], ["2", "12345.67", "2026-01-02"]], "22003", "n"),  // overflow, found by numeric_recv
                                      ([["1", "1.00", "2026-01-01"], ["2", "2.00", "2026-02-30"]], "22008", "d")] {  // no such date: left to text
            try connection.execute("BEGIN")
            let error = #expect(throws: PGError.self) { try writer.copy(rows.map { RowValues($0) }, into: "t", columns: "id, n, d", binary: encoders) }
            try connection.execute("ROLLBACK")
            #expect(error?.sqlState?.rawValue == state, "\(String(describing: error))")
            #expect(error?.context?.contains("COPY t, line") == true && error?.context?.contains("column \(column)") == true,
                    "the server's context names the COPY, the line and the column: \(String(describing: error?.context))")
        }
        #expect(try connection.execute("SELECT count(*) FROM t").rows == [["0"]])
    }
}
