import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A damaged `data.mdb` (a copy cut short, meta pages or a page in use overwritten) gives one line
/// naming the file and the damage and a normal non-zero exit from every command that reads the log —
/// never a signal (LMDB maps the file: pages past the end of a truncated file fault, garbled pages
/// send liblmdb to wild offsets or failed assertions).
@Suite(.timeLimit(.minutes(15))) struct DamagedLogTests {
    /// A log written by the real cdc: a snapshot of 3,000 surgeons (branch pages in the events tree),
    /// a facility whose name is too big for a page (overflow pages), then transactions.
    struct Built: Sendable {
        let ws: CDCWorkspace
        let size: Int
    }

    static let shared: Result<Built, any Error> = Result {
        let ws = try CDCWorkspace("damaged")
        try ws.sql("""
            INSERT INTO surgeons SELECT 'S' || g, 'Surgeon ' || g, 'Urology', g % 40, 'Basic' FROM generate_series(1, 3000) g;
            INSERT INTO facilities VALUES ('F1', repeat('Mercy ', 2000), 'Boston', 'MA', 'US', 'Academic', 300);
            """)
        try ws.initialize()
        for i in 1...20 {
            try ws.sql("BEGIN; UPDATE surgeons SET years_experience = \(i) WHERE surgeon_id = 'S\(i)'; UPDATE facilities SET bed_count = \(300 + i); COMMIT")
        }
        try ws.catchUp()
        guard let size = try FileManager.default.attributesOfItem(atPath: ws.logPath + "/data.mdb")[.size] as? Int else {
            throw TestFailure("no size for \(ws.logPath)/data.mdb")
        }
        return Built(ws: ws, size: size)
    }

    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// A copy of the log directory, damaged by `damage` (given the copy's data.mdb path).
    func damagedCopy(_ name: String, _ damage: (String) throws -> Void) throws -> String {
        let built = try Self.shared.get()
        let copy = built.ws.directory + "/copy-" + name
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: built.ws.logPath, toPath: copy)
        try damage(copy + "/data.mdb")
        return copy
    }

    func truncate(_ file: String, to size: Int) throws {
        guard Glibc.truncate(file, off_t(size)) == 0 else { throw TestFailure("truncate \(file): \(String(cString: strerror(errno)))") }
    }

    /// Overwrites `bytes.count` bytes of `file` at `offset`.
    func overwrite(_ file: String, at offset: Int, with bytes: [UInt8]) throws {
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: file))
        defer { try? handle.close() }
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: Data(bytes))
    }

    /// A page of bytes from a fixed-seed generator (SplitMix64), the same on every run.
    func randomPage(seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<Self.pageSize).map { _ in
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return UInt8(truncatingIfNeeded: z ^ (z >> 31))
        }
    }

    /// The pages of `file` holding `text` (a record's value): the page in use, and stale copies of it
    /// that LMDB freed when it copied the page on write.
    func pages(holding text: String, in file: String) throws -> [Int] {
        let data = try Data(contentsOf: URL(fileURLWithPath: file))
        var pages: [Int] = []
        var from = data.startIndex
        while let range = data.range(of: Data(text.utf8), in: from..<data.endIndex) {
            if pages.last != range.lowerBound / Self.pageSize { pages.append(range.lowerBound / Self.pageSize) }
            from = range.upperBound
        }
        try #require(!pages.isEmpty, "\(text) not found in \(file)")
        return pages
    }

    /// Overwrites, at `offset` into each page of `pages`, with `bytes(page)`.
    func overwrite(_ file: String, pages: [Int], offset: Int = 0, with bytes: (Int) -> [UInt8]) throws {
        for page in pages { try overwrite(file, at: page * Self.pageSize + offset, with: bytes(page)) }
    }

    /// Every reading command on `log`.
    func commands(_ log: String) -> [(String, [String])] {
        [("verify", ["log", "verify", "--log", log]),
         ("export", ["log", "export", "--log", log, "--format", "jsonl"]),
         ("stats", ["log", "stats", "--log", log]),
         ("tail", ["log", "tail", "--log", log, "--format", "jsonl"]),
         ("digest", ["log", "digest", "--log", log]),
         ("show", ["log", "show", "--log", log, "1", "--format", "jsonl"]),
         ("history", ["log", "history", "--log", log, "surgeons", "S1", "--format", "jsonl"])]
    }

    /// Runs every command on the damaged copy: each exits 1 (not by a signal) with exactly one line on
    /// stderr naming the copy's data.mdb and `damage`.
    func expectRefused(_ log: String, _ damage: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ws = try Self.shared.get().ws
        for (name, arguments) in commands(log) {
            let result = try ws.cdc(arguments)
            let lines = result.stderr.split(separator: "\n")
            #expect(result.status == 1, "cdc log \(name): exit \(result.status) (128+ is a signal): \(result.stderr.prefix(2000))", sourceLocation: sourceLocation)
            #expect(lines.count == 1, "cdc log \(name): stderr is not one line: \(result.stderr.prefix(2000))", sourceLocation: sourceLocation)
            #expect(lines.first?.hasPrefix("cdc: error: log \(log)/data.mdb is damaged: ") == true && result.stderr.contains(damage),
                    "cdc log \(name): \(result.stderr.prefix(2000))", sourceLocation: sourceLocation)
        }
    }

    @Test func theUndamagedLogReads() throws {
        let log = try damagedCopy("none") { _ in }
        let ws = try Self.shared.get().ws
        for (name, arguments) in commands(log) {
            let result = try ws.cdc(arguments)
            #expect(result.status == 0, "cdc log \(name): \(result.stderr)")
        }
    }

    @Test func truncatedCopiesAreRefused() throws {
        let size = try Self.shared.get().size
        let page = Self.pageSize
        #expect(size > 20 * page, "the log should span many pages: \(size) bytes")
        let half = try damagedCopy("half") { try truncate($0, to: size / 2) }
        try expectRefused(half, "the file is \(size / 2) bytes but LMDB's last page \(size / page - 1) ends at \(size) (truncated copy?): restore it from a good copy")
        let boundary = try damagedCopy("boundary") { try truncate($0, to: 3 * page) }
        try expectRefused(boundary, "the file is \(3 * page) bytes but LMDB's last page")
        let onePage = try damagedCopy("onepage") { try truncate($0, to: page) }
        try expectRefused(onePage, "meta page 1 is cut short")
        let empty = try damagedCopy("empty") { try truncate($0, to: 0) }
        try expectRefused(empty, "the file is empty (0 bytes")
    }

    @Test func overwrittenMetaPagesAreRefused() throws {
        let zeros = [UInt8](repeating: 0, count: Self.pageSize)
        let first = try damagedCopy("meta0") { try overwrite($0, at: 0, with: zeros) }
        try expectRefused(first, "meta page 0 is overwritten (not an LMDB meta page)")
        let second = try damagedCopy("meta1") { try overwrite($0, at: Self.pageSize, with: randomPage(seed: 1)) }
        try expectRefused(second, "meta page 1 is overwritten")
        let both = try damagedCopy("meta01") {
            try overwrite($0, at: 0, with: randomPage(seed: 2))
            try overwrite($0, at: Self.pageSize, with: zeros)
        }
        try expectRefused(both, "meta page 0 is overwritten")
        #expect(try Self.shared.get().ws.cdc(["log", "verify", "--log", both]).stderr.contains("and meta page 1 is overwritten"))
    }

    @Test func overwrittenPagesInUseAreRefused() throws {
        let file = try Self.shared.get().ws.logPath + "/data.mdb"
        // Leaves of the events tree (they hold a snapshot row), and the first overflow page of the big name.
        let leaves = try pages(holding: "Surgeon 1500", in: file)
        let overflow = try pages(holding: "Mercy Mercy", in: file).prefix(1).map { $0 }
        let zeros = [UInt8](repeating: 0, count: Self.pageSize)
        let zeroed = try damagedCopy("zeroed") { try overwrite($0, pages: leaves) { _ in zeros } }
        try expectRefused(zeroed, "of the events database is overwritten (its header names page 0)")
        let random = try damagedCopy("random") { try overwrite($0, pages: leaves) { randomPage(seed: 42 + UInt64($0)) } }
        try expectRefused(random, "of the events database is overwritten (its header names page ")
        let big = try damagedCopy("overflow") { try overwrite($0, pages: overflow) { randomPage(seed: 7 + UInt64($0)) } }
        try expectRefused(big, "page \(overflow[0]) (at byte \(overflow[0] * Self.pageSize)) of the events database is overwritten")
        // Page headers intact but the entry table garbled: an entry's offset past the page.
        let table = try damagedCopy("entries") { try overwrite($0, pages: leaves, offset: 16) { _ in [0xFF, 0xFF, 0xF0, 0xFF] } }
        try expectRefused(table, "of the events database is overwritten (entry 0 at offset 65535 lies outside the page)")
    }

    @Test func aChangedRecordValueFailsVerificationNamingItsSeq() throws {
        let ws = try Self.shared.get().ws
        let export = try ws.export()
        let seq = try #require(export.first { ($0["after"] as? [String: Any])?["surgeon_name"] as? String == "Surgeon 2222" }?["seq"] as? Int)
        let log = try damagedCopy("flipped") { file in
            // Same length, so the record's structure holds; every copy of the page, stale or in use.
            let data = try Data(contentsOf: URL(fileURLWithPath: file))
            for page in try pages(holding: "Surgeon 2222", in: file) {
                let start = page * Self.pageSize
                let at = try #require(data.range(of: Data("Surgeon 2222".utf8), in: start..<(start + Self.pageSize))).lowerBound
                try overwrite(file, at: at, with: Array("Sargeon 2222".utf8))
            }
        }
        let verify = try ws.cdc(["log", "verify", "--log", log])
        #expect(verify.status == 1, "\(verify.stderr)")
        #expect(verify.stderr == "cdc: error: verification failed at seq \(seq): record does not match its hash (changed after it was written)\n")
        // The structure is intact: the other commands read what the file now holds, without crashing.
        for (name, arguments) in commands(log) where name != "verify" {
            let result = try ws.cdc(arguments)
            #expect(result.status == 0, "cdc log \(name): \(result.stderr)")
        }
    }

    @Test func runRefusesADamagedLog() throws {
        let built = try Self.shared.get()
        let ws = built.ws
        let log = try damagedCopy("run") { try truncate($0, to: built.size / 2) }
        let config = ws.directory + "/damaged.toml"
        let text = try String(contentsOfFile: ws.configPath, encoding: .utf8)
        try text.replacingOccurrences(of: "path = \"\(ws.logPath)\"", with: "path = \"\(log)\"").write(toFile: config, atomically: true, encoding: .utf8)
        let result = try ws.cdc(["run", "--config", config, "--no-project", "--endpos", try ws.server.currentLSN()])
        #expect(result.status == 1, "cdc run: exit \(result.status): \(result.stderr.suffix(2000))")
        let line = "log \(log)/data.mdb is damaged: the file is \(built.size / 2) bytes but LMDB's last page"
        #expect(result.stderr.contains(line), "\(result.stderr.suffix(2000))")
        // Its last word is that line (other parts may log warnings while it stops).
        #expect(result.stderr.split(separator: "\n").last?.hasPrefix("cdc: error: " + line) == true, "\(result.stderr.suffix(2000))")
        // The original log is untouched and still verifies.
        #expect(try ws.cdc(["log", "verify", "--log", ws.logPath]).status == 0)
    }
}
