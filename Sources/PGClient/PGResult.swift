import CLibPQ

/// The rows of a completed query. Values are PostgreSQL's text output; `nil` is SQL NULL.
public final class PGResult {
    let handle: OpaquePointer

    init(handle: OpaquePointer) { self.handle = handle }
    deinit { PQclear(handle) }

    /// The number of rows returned.
    public var rowCount: Int { Int(PQntuples(handle)) }
    /// The number of columns returned.
    public var columnCount: Int { Int(PQnfields(handle)) }
    /// The command tag's row count (`INSERT 0 5` gives 5), 0 when absent.
    public var affectedRows: Int { Int(String(cString: PQcmdTuples(handle))) ?? 0 }

    /// The name of column `column`.
    public func columnName(_ column: Int) -> String { String(cString: PQfname(handle, Int32(column))) }

    /// The text value at (`row`, `column`), or `nil` for NULL.
    public func value(_ row: Int, _ column: Int) -> String? {
        if PQgetisnull(handle, Int32(row), Int32(column)) == 1 { return nil }
        return String(cString: PQgetvalue(handle, Int32(row), Int32(column)))
    }

    /// The bytes of the text value at (`row`, `column`), nil for NULL, valid only inside `body` (no copy).
    @inline(__always)
    public func withBytes<T>(_ row: Int, _ column: Int, _ body: (UnsafeRawBufferPointer?) throws -> T) rethrows -> T {
        let r = Int32(row), c = Int32(column)
        if PQgetisnull(handle, r, c) == 1 { return try body(nil) }
        return try body(UnsafeRawBufferPointer(start: PQgetvalue(handle, r, c), count: Int(PQgetlength(handle, r, c))))
    }

    /// The text value at (`row`, column named `name`), or `nil` for NULL or an unknown column.
    public func value(_ row: Int, _ name: String) -> String? {
        let column = PQfnumber(handle, name)
        guard column >= 0 else { return nil }
        return value(row, Int(column))
    }

    /// Every row as an array of optional strings.
    public var rows: [[String?]] {
        (0..<rowCount).map { r in (0..<columnCount).map { c in value(r, c) } }
    }
}

extension PGError {
    /// The error a failed `result` reports, with the server's diagnostic fields. Reads every field
    /// before returning: PQresultErrorField points into the PGresult, valid only until PQclear.
    ///
    /// - Parameter fallback: the connection's message, for results that carry none.
    init(result: OpaquePointer, call: String, fallback: String) {
        func field(_ code: UInt8) -> String? {
            PQresultErrorField(result, Int32(code)).map { String(cString: $0) }
        }
        // PG_DIAG_* (postgres_ext.h) are character constants, which Swift does not import.
        let sqlState = field(UInt8(ascii: "C")).flatMap(SQLState.init(rawValue:))  // PG_DIAG_SQLSTATE
        var message = field(UInt8(ascii: "M")) ?? ""  // PG_DIAG_MESSAGE_PRIMARY
        if message.isEmpty { message = String(cString: PQresultErrorMessage(result)) }
        if message.isEmpty { message = fallback }
        let status = PQresultStatus(result)
        let kind: Kind
        if sqlState != nil {
            kind = .server
        } else if status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR {
            // An error result libpq made itself (the connection broke mid-command): no SQLSTATE.
            kind = .connection
        } else {
            // PGRES_BAD_RESPONSE, or a success status where another one was needed.
            kind = .protocol
            if message.isEmpty { message = "unexpected result \(String(cString: PQresStatus(status)))" }
        }
        self.init(call: call, kind: kind, sqlState: sqlState, message: message,
                  severity: field(UInt8(ascii: "V")) ?? field(UInt8(ascii: "S")),  // PG_DIAG_SEVERITY_NONLOCALIZED, PG_DIAG_SEVERITY
                  detail: field(UInt8(ascii: "D")),  // PG_DIAG_MESSAGE_DETAIL
                  hint: field(UInt8(ascii: "H")),  // PG_DIAG_MESSAGE_HINT
                  position: field(UInt8(ascii: "P")).flatMap { Int($0) },  // PG_DIAG_STATEMENT_POSITION
                  context: field(UInt8(ascii: "W")),  // PG_DIAG_CONTEXT
                  schemaName: field(UInt8(ascii: "s")),  // PG_DIAG_SCHEMA_NAME
                  tableName: field(UInt8(ascii: "t")),  // PG_DIAG_TABLE_NAME
                  columnName: field(UInt8(ascii: "c")),  // PG_DIAG_COLUMN_NAME
                  dataTypeName: field(UInt8(ascii: "d")),  // PG_DIAG_DATATYPE_NAME
                  constraintName: field(UInt8(ascii: "n")))  // PG_DIAG_CONSTRAINT_NAME
    }
}
