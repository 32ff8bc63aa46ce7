import CLMDB
import Foundation

/// Scratch storage for the changes of streamed transactions that have not committed yet (pgoutput
/// protocol 2): a separate LMDB environment in `<log>/inflight/`, NOT part of the log. Nothing in it is
/// hashed, exported or confirmed to the server, and nothing in it needs to survive a crash (the server
/// streams an unfinished transaction again, whole, after a reconnect), so it is opened with
/// `MDB_NOSYNC | MDB_NOMETASYNC` and wiped whenever it is opened and at every replication session.
///
/// Keys: 4-byte big-endian top-level xid ‖ 8-byte big-endian counter (the arrival order); values are
/// opaque to this type. Use it from the capture thread only (LMDB write transactions stay on their thread).
///
/// Every failure of the storage is an ``EventLogError`` of code `storage` (via ``EventLogError/write``)
/// and leaves the store as it was, so the same call can be retried (capture pauses on a full disk).
public final class InflightStore {
    public let path: String
    /// The data file as /proc/self/maps names it (symlinks resolved).
    private let mappedFile: String
    private let environment: LMDBEnvironment
    private let entries: LMDBDatabase

    /// Opens `<logPath>/inflight`, deleting whatever a previous process left there.
    public init(logPath: String) throws {
        path = logPath + "/inflight"
        let fm = FileManager.default
        for name in ["data.mdb", "lock.mdb"] { try? fm.removeItem(atPath: path + "/" + name) }
        do {
            try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw EventLogError(.createFailed, "cannot create the in-flight store \(path): \(error.localizedDescription)", underlying: error)
        }
        mappedFile = " " + URL(fileURLWithPath: path).resolvingSymlinksInPath().path + "/data.mdb"
        do {
            environment = try LMDBEnvironment(path: path, readOnly: false, mapSize: 1 << 30, maxDatabases: 2,
                                              extraFlags: UInt32(MDB_NOSYNC | MDB_NOMETASYNC))
            entries = try environment.openDatabase("inflight", create: true)
        } catch let error as LMDBError {
            throw EventLogError.write(error, what: "in-flight store", path: path, operation: "opening")
        }
    }

    public static func key(xid: UInt32, counter: UInt64) -> [UInt8] {
        keyBytes(xid) + keyBytes(counter)
    }

    /// Removes every entry.
    public func clear() throws {
        try write("clearing") { txn in try txn.empty(entries) }
    }

    /// Stores `count` entries in one transaction: entry `i` is `key(i)` → `value(i)`.
    public func put(count: Int, key: (Int) -> [UInt8], value: (Int) -> UnsafeRawBufferPointer) throws {
        guard count > 0 else { return }
        try write("storing \(count) streamed changes") { txn in
            for i in 0..<count { try txn.put(entries, key: key(i), value: value(i)) }
        }
    }

    /// Visits the entries of `xid` with a counter above `after` (all when nil), in order, until `body`
    /// returns false. Buffers are valid only during the call.
    public func scan(xid: UInt32, after: UInt64?, _ body: (UInt64, UnsafeRawBufferPointer) throws -> Bool) throws {
        let from = Self.key(xid: xid, counter: after.map { $0 &+ 1 } ?? 0)
        if after == .max { return }
        do {
            try environment.withTransaction(readOnly: true) { txn in
                try txn.scan(entries, from: from) { key, value in
                    guard key.count == 12, Self.xid(key) == xid else { return false }
                    return try body(Self.counter(key), value)
                }
            }
        } catch let error as LMDBError {
            throw EventLogError.write(error, what: "in-flight store", path: path, operation: "reading streamed changes of xid \(xid)")
        }
    }

    /// Deletes the entries of `xid` (all of them, or those from counter `from` on for which `matching`
    /// is true), in transactions of at most 50,000 deletions.
    public func delete(xid: UInt32, from: UInt64 = 0, matching: ((UnsafeRawBufferPointer) -> Bool)? = nil) throws {
        var start = from
        while true {
            var keys: [[UInt8]] = []
            var next: UInt64?
            try scan(xid: xid, after: start == 0 ? nil : start - 1) { counter, value in
                if keys.count >= 50_000 { next = counter; return false }
                if matching?(value) ?? true { keys.append(Self.key(xid: xid, counter: counter)) }
                return true
            }
            if !keys.isEmpty {
                try write("deleting streamed changes of xid \(xid)") { txn in
                    for key in keys { try txn.delete(entries, key: key) }
                }
            }
            guard let next else { return }
            start = next
        }
    }

    /// True when the store holds no entry.
    public func isEmpty() throws -> Bool {
        do {
            return try environment.withTransaction(readOnly: true) { txn in try txn.lastKey(entries) == nil }
        } catch let error as LMDBError {
            throw EventLogError.write(error, what: "in-flight store", path: path, operation: "reading")
        }
    }

    /// Drops this process's mapping of the store's pages (they stay in the page cache, and the next read
    /// faults them in again). LMDB maps the file read-only and shared (no MDB_WRITEMAP) and writes with
    /// pwrite, so the mapped pages are clean file pages: a replay of a million spilled rows would
    /// otherwise keep the whole file resident in cdc's RSS. Call with no transaction of this store open.
    public func releaseMappedPages() {
        // The map's address: mdb_env_info's me_mapaddr is only set with MDB_FIXEDMAP, so it is looked up
        // in /proc/self/maps (the map moves when it grows).
        guard let maps = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return }
        for line in maps.split(separator: "\n") where line.hasSuffix(mappedFile) {
            let range = line.prefix { $0 != " " }.split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16), end > start else { continue }
            _ = madvise(UnsafeMutableRawPointer(bitPattern: start), Int(end - start), MADV_DONTNEED)
        }
    }

    /// Size of the data file, in bytes (for logs and tests).
    public var dataFileSize: UInt64 {
        (try? FileManager.default.attributesOfItem(atPath: path + "/data.mdb")[.size] as? UInt64) ?? 0
    }

    private static func xid(_ key: UnsafeRawBufferPointer) -> UInt32 {
        UInt32(key[0]) << 24 | UInt32(key[1]) << 16 | UInt32(key[2]) << 8 | UInt32(key[3])
    }

    private static func counter(_ key: UnsafeRawBufferPointer) -> UInt64 {
        var value: UInt64 = 0
        for i in 4..<12 { value = value << 8 | UInt64(key[i]) }
        return value
    }

    /// One write transaction, growing the map when it is full (the failed transaction left nothing).
    private func write(_ operation: @autoclosure () -> String, _ body: (LMDBTransaction) throws -> Void) throws {
        while true {
            do {
                try environment.withTransaction(readOnly: false, body)
                return
            } catch let error as LMDBError where error.isMapFull {
                do {
                    try environment.setMapSize(environment.mapSize * 2)
                } catch let grow as LMDBError {
                    throw EventLogError.write(grow, what: "in-flight store", path: path, operation: "growing the map")
                }
            } catch let error as LMDBError {
                throw EventLogError.write(error, what: "in-flight store", path: path, operation: operation())
            }
        }
    }
}
