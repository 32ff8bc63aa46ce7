import CLMDB

/// A transaction, valid only inside the closure given to `LMDBEnvironment.withTransaction`.
public struct LMDBTransaction {
    let txn: OpaquePointer

    /// Reads the value of `key`; the buffer is valid only until the transaction ends.
    public func get(_ db: LMDBDatabase, key: [UInt8]) throws -> UnsafeRawBufferPointer? {
        try key.withUnsafeBytes { keyBytes in
            var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
            var v = MDB_val()
            let code = mdb_get(txn, db.dbi, &k, &v)
            if code == MDB_NOTFOUND { return nil }
            try LMDBError.check(code, "mdb_get(\(db.name))")
            return UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
        }
    }

    /// Stores `value` under `key`. With `append`, the key must sort after every key already stored.
    public func put(_ db: LMDBDatabase, key: [UInt8], value: UnsafeRawBufferPointer, append: Bool = false) throws {
        try key.withUnsafeBytes { try put(db, key: $0, value: value, append: append) }
    }

    /// Stores `value` under `key` (both only read during the call).
    @inline(__always)
    public func put(_ db: LMDBDatabase, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, append: Bool = false) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        try LMDBError.check(mdb_put(txn, db.dbi, &k, &v, append ? UInt32(MDB_APPEND) : 0), "mdb_put(\(db.name))")
    }

    /// Stores `value` under the 8-byte big-endian key of `key` (a sequence number), with no allocation.
    @inline(__always)
    public func put(_ db: LMDBDatabase, seq key: UInt64, value: UnsafeRawBufferPointer, append: Bool = false) throws {
        try withUnsafeBytes(of: key.bigEndian) { try put(db, key: $0, value: value, append: append) }
    }

    /// Stores `value` under `key`.
    public func put(_ db: LMDBDatabase, key: [UInt8], value: [UInt8], append: Bool = false) throws {
        try value.withUnsafeBytes { try put(db, key: key, value: $0, append: append) }
    }

    /// Adds `value` to the sorted set of `key` in a ``LMDBEnvironment/openDatabase(_:create:sortedDuplicates:)``
    /// database; a value already there is left as it is.
    public func addDuplicate(_ db: LMDBDatabase, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) throws {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val(mv_size: value.count, mv_data: UnsafeMutableRawPointer(mutating: value.baseAddress))
        let code = mdb_put(txn, db.dbi, &k, &v, UInt32(MDB_NODUPDATA))
        if code == MDB_KEYEXIST { return }
        try LMDBError.check(code, "mdb_put(\(db.name))")
    }

    /// Visits the sorted values of `key` in a sorted-duplicates database, in order.
    public func duplicates(_ db: LMDBDatabase, key: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &cursor), "mdb_cursor_open(\(db.name))")
        defer { mdb_cursor_close(cursor) }
        var keyCopy = key
        try keyCopy.withUnsafeMutableBytes { bytes in
            var k = MDB_val(mv_size: bytes.count, mv_data: bytes.baseAddress)
            var v = MDB_val()
            var code = mdb_cursor_get(cursor, &k, &v, MDB_SET_KEY)
            while code == 0 {
                try body(UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size))
                code = mdb_cursor_get(cursor, &k, &v, MDB_NEXT_DUP)
            }
            if code != MDB_NOTFOUND { try LMDBError.check(code, "mdb_cursor_get(\(db.name))") }
        }
    }

    /// Empties a database (keeps it).
    public func empty(_ db: LMDBDatabase) throws {
        try LMDBError.check(mdb_drop(txn, db.dbi, 0), "mdb_drop(\(db.name))")
    }

    /// Deletes `key`; returns false when it was absent.
    @discardableResult
    public func delete(_ db: LMDBDatabase, key: [UInt8]) throws -> Bool {
        try key.withUnsafeBytes { keyBytes in
            var k = MDB_val(mv_size: keyBytes.count, mv_data: UnsafeMutableRawPointer(mutating: keyBytes.baseAddress))
            let code = mdb_del(txn, db.dbi, &k, nil)
            if code == MDB_NOTFOUND { return false }
            try LMDBError.check(code, "mdb_del(\(db.name))")
            return true
        }
    }

    /// Visits entries in key order starting at the first key >= `from` (or the first key), until
    /// `body` returns false.
    public func scan(_ db: LMDBDatabase, from: [UInt8]?, _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &cursor), "mdb_cursor_open(\(db.name))")
        defer { mdb_cursor_close(cursor) }
        var k = MDB_val()
        var v = MDB_val()
        var code: Int32
        var startKey = from ?? []
        code = startKey.withUnsafeMutableBytes { bytes in
            if from != nil {
                k = MDB_val(mv_size: bytes.count, mv_data: bytes.baseAddress)
                return mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE)
            }
            return mdb_cursor_get(cursor, &k, &v, MDB_FIRST)
        }
        while code == 0 {
            let key = UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size)
            let value = UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
            if try !body(key, value) { return }
            code = mdb_cursor_get(cursor, &k, &v, MDB_NEXT)
        }
        if code != MDB_NOTFOUND { try LMDBError.check(code, "mdb_cursor_get(\(db.name))") }
    }

    /// The last entry's key, or nil when the database is empty.
    public func lastKey(_ db: LMDBDatabase) throws -> [UInt8]? {
        var cursor: OpaquePointer?
        try LMDBError.check(mdb_cursor_open(txn, db.dbi, &cursor), "mdb_cursor_open(\(db.name))")
        defer { mdb_cursor_close(cursor) }
        var k = MDB_val()
        var v = MDB_val()
        let code = mdb_cursor_get(cursor, &k, &v, MDB_LAST)
        if code == MDB_NOTFOUND { return nil }
        try LMDBError.check(code, "mdb_cursor_get(\(db.name))")
        return Array(UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size))
    }
}
