import CLMDB
#if canImport(Glibc)
import Glibc
#endif

/// Checks of `data.mdb` for damage (a copy cut short, overwritten meta or data pages), made before
/// LMDB reads a data page, so that a damaged file gives one line naming the file and the damage
/// instead of a crash.
///
/// LMDB maps the file and trusts it: a page past the end of a truncated file faults (SIGBUS) when read,
/// and a garbled branch or leaf page makes liblmdb follow wild offsets (SIGBUS, SIGSEGV) or fail one
/// of its assertions (SIGABRT). `mdb_env_open` itself checks only the two meta pages (flags, magic,
/// version: `MDB_INVALID`, `MDB_VERSION_MISMATCH`). So, when a log is opened:
///
/// 1. an empty file is refused (LMDB would initialise it as a new environment);
/// 2. a failed `mdb_env_open` is explained: which meta page is not one;
/// 3. the file must reach the end of LMDB's last page in use (`mdb_env_info` `me_last_pgno` + 1 pages
///    of `mdb_env_stat` `ms_psize` bytes);
/// 4. every page reachable from the meta page of a read transaction (held open meanwhile, so that a
///    concurrent writer cannot reuse them) is checked through a private read-only mapping of exactly
///    the file's length: each page's header names that page, branch and leaf pages have sane bounds,
///    every node, key, inline value and overflow run lies inside its page or inside the file, children
///    sit one level down, no page is used twice, free-list entries name pages that exist.
///
/// The layout is LMDB 0.9's (data version 1) on a 64-bit little-endian machine, the one this build links.
enum DataFileCheck {
    static let magic: UInt32 = 0xBEEF_C0DE
    static let dataVersion: UInt32 = 1
    static let invalidPage = UInt64.max  // P_INVALID: an empty tree
    static let pageHeader = 16  // PAGEHDRSZ
    static let metaSize = 152  // page header + MDB_meta (through mm_txnid)

    // Page flags (mp_flags) and node flags (mn_flags).
    static let pBranch: UInt16 = 0x01, pLeaf: UInt16 = 0x02, pOverflow: UInt16 = 0x04, pMeta: UInt16 = 0x08
    static let fBigData: UInt16 = 0x01, fSubData: UInt16 = 0x02, fDupData: UInt16 = 0x04

    /// The error for a damaged file: one line naming it, the damage, and what to do.
    static func damaged(_ file: String, _ what: String) -> EventLogError {
        EventLogError(.corrupt, "log \(file) is damaged: \(what): restore it from a good copy")
    }

    /// The damage when the file ends before LMDB's last page in use does.
    static func cutShort(_ file: String, size: UInt64, lastPage: UInt64, pageSize: UInt64) -> EventLogError? {
        let (end, overflow) = (lastPage &+ 1).multipliedReportingOverflow(by: pageSize)
        guard overflow || size < end else { return nil }
        return damaged(file, "the file is \(size) bytes but LMDB's last page \(lastPage) ends at \(overflow ? "more than 2^64" : String(end)) (truncated copy?)")
    }

    /// Before `mdb_env_open`: an existing but empty data file (LMDB would silently start a new log in it).
    static func checkBeforeOpen(file: String) throws {
        var st = stat()
        guard stat(file, &st) == 0 else { return }
        if st.st_size == 0 { throw damaged(file, "the file is empty (0 bytes; LMDB's two meta pages are missing)") }
    }

    /// Explains an `mdb_env_open` that failed with `MDB_INVALID` or `MDB_VERSION_MISMATCH`: which of
    /// the two meta pages (read with pread, not mapped) is not a valid one. Nil for other failures.
    static func explainOpenFailure(file: String, _ error: LMDBError) -> EventLogError? {
        guard error.code == MDB_INVALID || error.code == MDB_VERSION_MISMATCH else { return nil }
        let fd = open(file, O_RDONLY)
        guard fd >= 0 else { return damaged(file, "LMDB rejects its meta pages (\(error.message))") }
        defer { close(fd) }
        var st = stat()
        let size = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
        func read(at offset: Int) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: metaSize)
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, metaSize, off_t(offset)) }
            return Array(bytes.prefix(max(n, 0)))
        }
        let first = read(at: 0)
        var pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        if metaProblem(first, page: 0) == nil {
            let recorded = Int(first.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 40, as: UInt32.self) })
            if recorded >= 512, recorded <= 65536, recorded & (recorded - 1) == 0 { pageSize = recorded }
        }
        let problems = [metaProblem(first, page: 0), metaProblem(read(at: pageSize), page: 1)].compactMap { $0 }
        let what = problems.isEmpty ? "LMDB rejects its meta pages" : problems.joined(separator: " and ")
        return damaged(file, "\(what) (the file is \(size) bytes; LMDB: \(error.message))")
    }

    /// What is wrong with the bytes of meta page `page`, nil when it looks like one.
    static func metaProblem(_ bytes: [UInt8], page: Int) -> String? {
        guard bytes.count == metaSize else { return "meta page \(page) is cut short" }
        return bytes.withUnsafeBytes { b in
            let flags = b.loadUnaligned(fromByteOffset: 10, as: UInt16.self)
            if flags & pMeta == 0 { return "meta page \(page) is overwritten (not an LMDB meta page)" }
            if b.loadUnaligned(fromByteOffset: 16, as: UInt32.self) != magic { return "meta page \(page) is overwritten (no LMDB magic number)" }
            let version = b.loadUnaligned(fromByteOffset: 20, as: UInt32.self)
            if version != dataVersion { return "meta page \(page) has LMDB data version \(version), not \(dataVersion) (written by another LMDB, or overwritten)" }
            return nil
        }
    }

    /// After `mdb_env_open`: the file's size against LMDB's last page, then, with `walkingPages`,
    /// every reachable page (a read of the whole file: the readers' check; the writer, whose start must
    /// not cost a pass over a log of hundreds of GB, checks the size and meta pages only).
    static func check(_ environment: LMDBEnvironment, file: String, walkingPages: Bool = true) throws {
        let last = UInt64(environment.info().me_last_pgno)
        let pageSize = UInt64(environment.environmentStat().ms_psize)
        var st = stat()
        guard stat(file, &st) == 0 else {
            throw EventLogError(.openFailed, "cannot stat \(file): \(String(cString: strerror(errno)))", call: "stat(\(file))", returnCode: errno)
        }
        if let damage = cutShort(file, size: UInt64(max(st.st_size, 0)), lastPage: last, pageSize: pageSize) { throw damage }
        guard walkingPages else { return }
        try environment.withTransaction(readOnly: true) { txn in
            try checkPages(file: file, pageSize: Int(pageSize), snapshot: environment.transactionID(txn))
        }
    }

    /// Maps the file privately (exactly its length) and walks the trees of the meta page of `snapshot`.
    private static func checkPages(file: String, pageSize: Int, snapshot: UInt64) throws {
        let fd = open(file, O_RDONLY)
        guard fd >= 0 else {
            throw EventLogError(.openFailed, "cannot open \(file): \(String(cString: strerror(errno)))", call: "open(\(file))", returnCode: errno)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size >= 2 * pageSize else { throw damaged(file, "the file is shorter than its two meta pages") }
        let length = Int(st.st_size)
        guard let map = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw EventLogError(.openFailed, "cannot map \(file): \(String(cString: strerror(errno)))", call: "mmap(\(file))", returnCode: errno)
        }
        defer { munmap(map, length) }
        var walker = PageWalker(file: file, bytes: UnsafeRawBufferPointer(start: map, count: length), pageSize: pageSize)
        try walker.walk(snapshot: snapshot)
    }
}

/// Walks LMDB's B-trees through a bounds-checked view of the file.
private struct PageWalker {
    let file: String
    let bytes: UnsafeRawBufferPointer
    let pageSize: Int
    var lastPage: UInt64 = 1
    var seen: [UInt64] = []

    init(file: String, bytes: UnsafeRawBufferPointer, pageSize: Int) {
        self.file = file
        self.bytes = bytes
        self.pageSize = pageSize
    }

    typealias C = DataFileCheck

    enum Tree { case main, free, data }

    func damaged(_ what: String) -> EventLogError { C.damaged(file, what) }

    func u16(_ at: Int) -> UInt16 { bytes.loadUnaligned(fromByteOffset: at, as: UInt16.self) }
    func u32(_ at: Int) -> UInt32 { bytes.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
    func u64(_ at: Int) -> UInt64 { bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self) }

    func describe(_ page: UInt64) -> String { "page \(page) (at byte \(page * UInt64(pageSize)))" }

    mutating func walk(snapshot: UInt64) throws {
        let metaPage = Int(snapshot & 1)
        let meta = metaPage * pageSize
        guard C.metaProblem(Array(bytes[meta..<(meta + C.metaSize)]), page: metaPage) == nil,
              u64(meta + 144) == snapshot else {
            throw damaged("meta page \(metaPage) does not hold transaction \(snapshot), the one LMDB reads")
        }
        lastPage = u64(meta + 136)
        if let damage = C.cutShort(file, size: UInt64(bytes.count), lastPage: lastPage, pageSize: UInt64(pageSize)) { throw damage }
        seen = [UInt64](repeating: 0, count: Int(lastPage / 64) + 1)
        try walk(database: meta + 40, name: "free-page list", tree: .free)
        try walk(database: meta + 88, name: "main database", tree: .main)
    }

    /// An MDB_db record at byte `at`: its root, walked with its depth.
    mutating func walk(database at: Int, name: String, tree: Tree) throws {
        let root = u64(at + 40)
        if root == C.invalidPage { return }
        let depth = Int(u16(at + 6))
        guard depth >= 1, depth <= 32 else { throw damaged("the \(name)'s depth \(depth) is impossible") }
        try walk(page: root, depth: depth, name: name, tree: tree)
    }

    /// Marks `page` used, after checking that it exists and that its header names it.
    mutating func use(_ page: UInt64, _ name: String) throws -> Int {
        guard page >= 2, page <= lastPage else {
            throw damaged("the \(name) refers to page \(page), outside pages 2...\(lastPage)")
        }
        try mark(page, name)
        let offset = Int(page) * pageSize
        let recorded = u64(offset)
        guard recorded == page else { throw damaged("\(describe(page)) of the \(name) is overwritten (its header names page \(recorded))") }
        return offset
    }

    /// Records that `page` (at most the last page) is in use; a page used twice is damage.
    mutating func mark(_ page: UInt64, _ name: String) throws {
        let (word, bit) = (Int(page / 64), page % 64)
        guard seen[word] & (1 << bit) == 0 else { throw damaged("\(describe(page)) is used twice (in the \(name))") }
        seen[word] |= 1 << bit
    }

    mutating func walk(page: UInt64, depth: Int, name: String, tree: Tree) throws {
        let p = try use(page, name)
        let flags = u16(p + 10)
        let want = depth == 1 ? C.pLeaf : C.pBranch
        guard flags & (C.pBranch | C.pLeaf | C.pOverflow | C.pMeta | 0x20 | 0x40) == want else {
            throw damaged("\(describe(page)) of the \(name) is overwritten (flags 0x\(String(flags, radix: 16)), expected a \(depth == 1 ? "leaf" : "branch") page)")
        }
        let lower = Int(u16(p + 12)), upper = Int(u16(p + 14))
        guard lower >= C.pageHeader, lower <= upper, upper <= pageSize, (lower - C.pageHeader) % 2 == 0 else {
            throw damaged("\(describe(page)) of the \(name) is overwritten (free space \(lower)...\(upper) is impossible)")
        }
        let count = (lower - C.pageHeader) / 2
        guard count >= 1 else { throw damaged("\(describe(page)) of the \(name) has no entries") }
        for i in 0..<count {
            let node = Int(u16(p + C.pageHeader + 2 * i))
            guard node >= upper, node + 8 <= pageSize else {
                throw damaged("\(describe(page)) of the \(name) is overwritten (entry \(i) at offset \(node) lies outside the page)")
            }
            let n = p + node
            let keySize = Int(u16(n + 6))
            guard node + 8 + keySize <= pageSize else {
                throw damaged("\(describe(page)) of the \(name) is overwritten (entry \(i)'s key of \(keySize) bytes runs past the page)")
            }
            let lo = UInt64(u16(n)), hi = UInt64(u16(n + 2)), nodeFlags = u16(n + 4)
            if depth > 1 {
                try walk(page: lo | hi << 16 | UInt64(nodeFlags) << 32, depth: depth - 1, name: name, tree: tree)
                continue
            }
            let dataSize = Int(lo | hi << 16)
            let keyEnd = n + 8 + keySize
            let value: Int  // where the value's bytes start in the file
            if nodeFlags & C.fBigData != 0 {
                guard node + 8 + keySize + 8 <= pageSize else { throw damaged("\(describe(page)) of the \(name) is overwritten (entry \(i) runs past the page)") }
                value = try overflow(u64(keyEnd), size: dataSize, name: name)
            } else {
                guard node + 8 + keySize + dataSize <= pageSize else {
                    throw damaged("\(describe(page)) of the \(name) is overwritten (entry \(i)'s value of \(dataSize) bytes runs past the page)")
                }
                value = keyEnd
            }
            switch tree {
            case .main:
                // A named database: its MDB_db record (the event log has no sorted-duplicate ones).
                guard nodeFlags & C.fSubData != 0, nodeFlags & C.fDupData == 0, dataSize == 48 else {
                    throw damaged("\(describe(page)) of the \(name) is overwritten (entry \(i) is not a named database)")
                }
                let dbName = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(n + 8)..<keyEnd]), as: UTF8.self)
                try walk(database: value, name: "\(dbName) database", tree: .data)
            case .data:
                guard nodeFlags & (C.fSubData | C.fDupData) == 0 else {
                    throw damaged("\(describe(page)) of the \(name) is overwritten (entry \(i) has flags 0x\(String(nodeFlags, radix: 16)))")
                }
            case .free:
                // An ID list: a count, then that many page numbers.
                guard dataSize >= 8, u64(value) <= UInt64(dataSize / 8 - 1) else {
                    throw damaged("\(describe(page)) of the \(name) is overwritten (entry \(i) is not a page list)")
                }
                for j in stride(from: 1, through: Int(u64(value)), by: 1) where u64(value + 8 * j) > lastPage {
                    throw damaged("the \(name) names page \(u64(value + 8 * j)), past the last page \(lastPage)")
                }
            }
        }
    }

    /// An overflow run starting at `page` holding `size` bytes: its first byte's offset.
    mutating func overflow(_ page: UInt64, size: Int, name: String) throws -> Int {
        let p = try use(page, name)
        let pages = UInt64(u32(p + 12))
        guard u16(p + 10) & C.pOverflow != 0, pages >= 1, page + pages - 1 <= lastPage,
              size <= Int(pages) * pageSize - C.pageHeader else {
            throw damaged("\(describe(page)) of the \(name) is overwritten (not an overflow page holding \(size) bytes)")
        }
        for extra in 1..<pages { try mark(page + extra, name) }
        return p + C.pageHeader
    }
}
