import CLMDB

/// An error returned by an LMDB call: the call's name, LMDB's result code and its message.
public struct LMDBError: Error, CustomStringConvertible, Sendable {
    /// The LMDB function that failed, e.g. `"mdb_env_open"`.
    public var call: String
    /// LMDB's return code (an `MDB_*` constant or an errno value).
    public var code: Int32
    /// `mdb_strerror(code)`.
    public var message: String

    public init(call: String, code: Int32) {
        self.call = call
        self.code = code
        self.message = String(cString: mdb_strerror(code))
    }

    public var description: String { "\(call) failed: \(message) (code \(code))" }

    public var isMapFull: Bool { code == MDB_MAP_FULL }
    public var isMapResized: Bool { code == MDB_MAP_RESIZED }
    public var isNotFound: Bool { code == MDB_NOTFOUND }

    @inline(__always)
    static func check(_ code: Int32, _ call: @autoclosure () -> String) throws {
        if code != 0 { throw LMDBError(call: call(), code: code) }
    }
}
