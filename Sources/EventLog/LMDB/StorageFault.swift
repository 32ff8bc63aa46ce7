import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// A write to an LMDB environment that failed because of the storage under it, not because of the
/// data: the filesystem is full or read-only, the device reports I/O errors, or the map cannot grow.
/// Such a write can be retried unchanged once the condition clears (the failed transaction left
/// nothing behind: lmdb.h, `mdb_txn_commit`), so `cdc run` pauses and retries instead of stopping.
public struct StorageFault: Sendable, Equatable {
    /// What is wrong, as the suffix of a stable health code (`log_no_space`, `history_index_io_error`).
    public enum Kind: String, Sendable {
        /// ENOSPC or EDQUOT: the filesystem (or the user's quota) is full.
        case noSpace = "no_space"
        /// EIO and other device errors.
        case ioError = "io_error"
        /// EROFS, EACCES, EPERM: the filesystem or the file is not writable.
        case readOnly = "read_only"
        /// MDB_MAP_FULL after growing failed, ENOMEM or EFBIG: the data file cannot grow.
        case mapFull = "map_full"
    }

    public var kind: Kind
    /// The errno (or `MDB_*` code) the failing call returned.
    public var code: Int32
    /// The LMDB call that failed, e.g. `mdb_txn_commit`.
    public var call: String

    /// Classifies a failed LMDB call on the environment in `directory`; nil when the error is not
    /// about storage (a bug, a corrupt file). LMDB reports a short write as EIO: when the directory's
    /// filesystem has no space left, that EIO is a full disk.
    public init?(_ error: LMDBError, directory: String? = nil) {
        switch error.code {
        case ENOSPC, EDQUOT: kind = .noSpace
        case EIO where directory.map(Self.isFull) == true: kind = .noSpace
        case EIO, ENXIO, ENODEV, ESTALE: kind = .ioError
        case EROFS, EACCES, EPERM: kind = .readOnly
        case MDB_MAP_FULL, ENOMEM, EFBIG: kind = .mapFull
        default: return nil
        }
        code = error.code
        call = error.call
    }

    /// True when the filesystem holding `directory` has less than one LMDB page (4 KiB) free for
    /// unprivileged writers.
    static func isFull(_ directory: String) -> Bool {
        guard let fs = filesystem(of: directory) else { return false }
        return fs.freeBytes < 4096
    }

    /// The filesystem holding `directory` (statvfs): bytes free for unprivileged writers, and whether
    /// it is mounted read-only. Nil when it cannot be examined.
    public static func filesystem(of directory: String) -> (freeBytes: UInt64, readOnly: Bool)? {
        var info = statvfs()
        guard statvfs(directory, &info) == 0 else { return nil }
        return (UInt64(info.f_bavail) * UInt64(info.f_frsize), info.f_flag & UInt(ST_RDONLY) != 0)
    }

    /// The errno's symbolic name and its text, e.g. `no space left on device (ENOSPC)`.
    public var reason: String {
        if code == MDB_MAP_FULL { return "the LMDB map is full and could not grow (MDB_MAP_FULL)" }
        if code == EIO, kind == .noSpace { return "no space left on device (a short write, EIO)" }
        let text = String(cString: strerror(code))
        let lowered = text.prefix(1).lowercased() + text.dropFirst()
        return "\(lowered) (\(Self.errnoName(code)))"
    }

    /// What the operator should do about it.
    public var remedy: String {
        switch kind {
        case .noSpace: "free space on that filesystem"
        case .ioError: "check the device (dmesg, SMART) or move the directory to healthy storage"
        case .readOnly: "make the filesystem writable (remount read-write, fix permissions)"
        case .mapFull: "free memory or address space (ulimit -v) and file-size limits (ulimit -f)"
        }
    }

    static func errnoName(_ code: Int32) -> String {
        switch code {
        case ENOSPC: "ENOSPC"
        case EDQUOT: "EDQUOT"
        case EIO: "EIO"
        case ENXIO: "ENXIO"
        case ENODEV: "ENODEV"
        case ESTALE: "ESTALE"
        case EROFS: "EROFS"
        case EACCES: "EACCES"
        case EPERM: "EPERM"
        case ENOMEM: "ENOMEM"
        case EFBIG: "EFBIG"
        default: "errno \(code)"
        }
    }
}
