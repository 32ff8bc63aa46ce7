import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// An LMDB environment (one directory holding `data.mdb` and `lock.mdb`).
///
/// Write transactions must stay on the thread that began them; the writer of the event log owns one
/// thread for that. Read transactions use `MDB_NOTLS`, so they may be used from any single thread at a time.
///
/// Changing the map size is only allowed while no transaction of this process is open on the
/// environment (lmdb.h, `mdb_env_set_mapsize`): every transaction holds `resizeLock` shared, and a
/// resize holds it exclusively.
public final class LMDBEnvironment: @unchecked Sendable {
    let env: OpaquePointer
    /// Whether the environment was opened with `MDB_RDONLY`.
    public let readOnly: Bool
    /// Shared by transactions, exclusive for a map resize (reader-preferring: nested reads are safe).
    private let resizeLock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)

    /// Opens (and, unless read-only, creates) the environment in directory `path`. `extraFlags` are
    /// added to `mdb_env_open`'s flags (e.g. `MDB_NOSYNC` for a scratch environment).
    public init(path: String, readOnly: Bool, mapSize: Int = 1 << 30, maxDatabases: UInt32 = 16, extraFlags: UInt32 = 0) throws {
        var env: OpaquePointer?
        try LMDBError.check(mdb_env_create(&env), "mdb_env_create")
        guard let env else { throw LMDBError(call: "mdb_env_create", code: ENOMEM) }
        self.env = env
        self.readOnly = readOnly
        pthread_rwlock_init(resizeLock, nil)
        do {
            try LMDBError.check(mdb_env_set_maxdbs(env, maxDatabases), "mdb_env_set_maxdbs")
            try LMDBError.check(mdb_env_set_maxreaders(env, 256), "mdb_env_set_maxreaders")
            if !readOnly { try LMDBError.check(mdb_env_set_mapsize(env, mapSize), "mdb_env_set_mapsize") }
            var flags = UInt32(MDB_NOTLS) | extraFlags
            if readOnly { flags |= UInt32(MDB_RDONLY) }
            try LMDBError.check(mdb_env_open(env, path, flags, 0o640), "mdb_env_open(\(path))")
            var dead: Int32 = 0
            _ = mdb_reader_check(env, &dead)
        } catch {
            // Every stored property is set, so throwing runs deinit, which closes the handle (lmdb.h:
            // after a failed mdb_env_open, mdb_env_close must be called, once). Closing here as well was
            // a double free on every failed open (a damaged data.mdb: MDB_INVALID).
            throw error
        }
    }

    deinit {
        mdb_env_close(env)
        pthread_rwlock_destroy(resizeLock)
        resizeLock.deallocate()
    }

    /// The current map size (the maximum size of the data file) in bytes.
    public var mapSize: Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return info.me_mapsize
    }

    /// Sets the map size; 0 adopts the size another process grew the map to. Waits until no other
    /// thread of this process has a transaction open; the caller must have none.
    public func setMapSize(_ size: Int) throws {
        pthread_rwlock_wrlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        try LMDBError.check(mdb_env_set_mapsize(env, size), "mdb_env_set_mapsize")
    }

    /// Flushes the data buffers to disk (used after writes made without sync).
    public func sync() throws { try LMDBError.check(mdb_env_sync(env, 1), "mdb_env_sync") }

    /// Opens a named database inside a write transaction, creating it if missing.
    /// With `sortedDuplicates`, a key holds a sorted set of fixed-size values (MDB_DUPSORT | MDB_DUPFIXED).
    public func openDatabase(_ name: String, create: Bool, sortedDuplicates: Bool = false) throws -> LMDBDatabase {
        var dbi: MDB_dbi = 0
        var txn: OpaquePointer?
        pthread_rwlock_rdlock(resizeLock)
        defer { pthread_rwlock_unlock(resizeLock) }
        try LMDBError.check(mdb_txn_begin(env, nil, create ? 0 : UInt32(MDB_RDONLY), &txn), "mdb_txn_begin")
        var flags: UInt32 = create ? UInt32(MDB_CREATE) : 0
        if sortedDuplicates { flags |= UInt32(MDB_DUPSORT | MDB_DUPFIXED) }
        let code = mdb_dbi_open(txn, name, flags, &dbi)
        guard code == 0 else {
            mdb_txn_abort(txn)
            throw LMDBError(call: "mdb_dbi_open(\(name))", code: code)
        }
        // The handle outlives the transaction only when the transaction commits (read-only ones too).
        try LMDBError.check(mdb_txn_commit(txn), "mdb_txn_commit")
        return LMDBDatabase(dbi: dbi, name: name)
    }

    /// Looks a named database up for reading: nil when it does not exist.
    public func existingDatabase(_ name: String, sortedDuplicates: Bool = false) throws -> LMDBDatabase? {
        do { return try openDatabase(name, create: false, sortedDuplicates: sortedDuplicates) } catch let error as LMDBError where error.isNotFound {
            return nil
        }
    }

    /// Runs `body` in a transaction. Commits when `body` returns, aborts when it throws.
    /// A read-only transaction that finds the map grown by another process adopts the new size and retries.
    @discardableResult
    public func withTransaction<R>(readOnly: Bool, _ body: (LMDBTransaction) throws -> R) throws -> R {
        var attempts = 0
        while true {
            attempts += 1
            var txn: OpaquePointer?
            pthread_rwlock_rdlock(resizeLock)
            let code = mdb_txn_begin(env, nil, readOnly ? UInt32(MDB_RDONLY) : 0, &txn)
            if code == MDB_MAP_RESIZED, attempts < 5 {
                pthread_rwlock_unlock(resizeLock)
                try setMapSize(0)
                continue
            }
            defer { pthread_rwlock_unlock(resizeLock) }
            try LMDBError.check(code, "mdb_txn_begin")
            let transaction = LMDBTransaction(txn: txn!)
            let result: R
            do {
                result = try body(transaction)
            } catch {
                mdb_txn_abort(txn)
                throw error
            }
            if readOnly {
                mdb_txn_abort(txn)
            } else {
                // lmdb.h: mdb_txn_commit frees the transaction "even if it fails" (ENOSPC, EIO, ...):
                // it must not be aborted afterwards (that was a double free on a full disk).
                try LMDBError.check(mdb_txn_commit(txn), "mdb_txn_commit")
            }
            return result
        }
    }

    /// `mdb_env_info`: the map size and, from the newest meta page, the last page in use and the last
    /// transaction id. Reads only the meta pages.
    public func info() -> MDB_envinfo {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return info
    }

    /// `mdb_env_stat`: the page size (`ms_psize`) and the main database's statistics. Reads only the
    /// meta pages.
    public func environmentStat() -> MDB_stat {
        var stat = MDB_stat()
        mdb_env_stat(env, &stat)
        return stat
    }

    /// The id of the snapshot a read transaction sees (`mdb_txn_id`): its meta page is `id & 1`.
    public func transactionID(_ txn: LMDBTransaction) -> UInt64 { UInt64(mdb_txn_id(txn.txn)) }

    /// Statistics of a database: entries and pages.
    public func stat(_ db: LMDBDatabase) throws -> MDB_stat {
        try withTransaction(readOnly: true) { txn in
            var stat = MDB_stat()
            try LMDBError.check(mdb_stat(txn.txn, db.dbi, &stat), "mdb_stat")
            return stat
        }
    }
}

/// A handle to a named database inside an environment.
public struct LMDBDatabase: Sendable {
    let dbi: MDB_dbi
    /// The database's name.
    public let name: String
}
