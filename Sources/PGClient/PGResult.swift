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
