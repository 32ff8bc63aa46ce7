import Foundation
@testable import Projection
import Testing

/// DDL files are sent one statement at a time (Citus forwards a CREATE INDEX's whole query text to
/// its workers, which refuse several commands): the cut must never fall inside a string, a quoted
/// identifier, a dollar quote or a comment, and each statement must come out whole.
@Suite struct SQLScriptTests {
    func texts(_ sql: String) -> [String] { SQLScript.statements(sql).map(\.text) }

    @Test func semicolonsInsideQuotesAndCommentsDoNotEndAStatement() {
        let sql = """
            -- a comment; with a semicolon
            CREATE TABLE "odd;name" (a text DEFAULT 'x;y', b text DEFAULT 'it''s; fine');
            /* block; /* nested; */ still comment; */ SELECT E'back\\'slash;' AS e;
            CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; SELECT 2; $body$;
            DO $$ BEGIN PERFORM 1; END $$;
            SELECT $1::int, a$b FROM t
            """
        #expect(texts(sql) == [
            #"CREATE TABLE "odd;name" (a text DEFAULT 'x;y', b text DEFAULT 'it''s; fine')"#,
            #"SELECT E'back\'slash;' AS e"#,
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $body$ SELECT 1; SELECT 2; $body$",
            "DO $$ BEGIN PERFORM 1; END $$",
            "SELECT $1::int, a$b FROM t",
        ])
    }

    @Test func emptyStatementsAndTrailingCommentsAreDropped() {
        #expect(texts(";;\n  ; -- only a comment\n/* and another */\n").isEmpty)
        #expect(texts("SELECT 1;\n-- the end\n") == ["SELECT 1"])
    }

    @Test func eachStatementKnowsTheLineItStartsOn() {
        let sql = "SELECT 1;\n\n-- comment\nSELECT\n  2;\n/* two\nlines */ SELECT 'a\nb'; SELECT 4;"
        #expect(SQLScript.statements(sql).map(\.line) == [1, 4, 7, 8])
    }

    /// The shipped DDL files cut into the statements psql would run: every statement begins with a
    /// SQL keyword (a cut inside a string or comment would leave a fragment).
    @Test func theShippedDDLFilesCutIntoWholeStatements() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let keywords = ["CREATE", "INSERT", "SELECT", "SET", "COMMENT", "ALTER", "DO"]
        for file in ["schemas/warehouse/001_tables.sql", "schemas/warehouse/002_dim_date_time.sql", "schemas/warehouse/003_views.sql",
                     "schemas/warehouse/citus/001_distribute.sql"] {
            let statements = SQLScript.statements(try String(contentsOfFile: root + "/" + file, encoding: .utf8))
            #expect(statements.count >= 2, "\(file)")
            for statement in statements {
                let upper = statement.text.uppercased()
                #expect(keywords.contains { upper.hasPrefix($0) }, "\(file) line \(statement.line): \(statement.text.prefix(80))")
                #expect(!statement.text.hasSuffix(";"))
            }
        }
    }
}
