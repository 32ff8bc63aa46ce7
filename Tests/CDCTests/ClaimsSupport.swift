import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Helpers of the README-claim tests (InitTests, PrivacyTests, RunClaimsTests): what a user looks at
/// from outside — `ls -l data.mdb`, `cdc log stats`, `cdc log tail`, the slots on the server.

extension CDCWorkspace {
    /// `data.mdb`'s size as `ls -l` shows it (0 when there is none). LMDB writes committed pages with
    /// pwrite, so the file grows with each commit that adds pages, visible or not.
    var dataFileSize: Int {
        var info = stat()
        return stat(logPath + "/data.mdb", &info) == 0 ? Int(info.st_size) : 0
    }

    /// `cdc log stats --format json`, parsed.
    func stats() throws -> [String: Any] {
        let result = try cdc(["log", "stats", "--log", logPath, "--format", "json"])
        guard result.status == 0,
              let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any] else {
            throw TestFailure("cdc log stats failed (\(result.status)): \(result.stderr)")
        }
        return object
    }

    /// Events of `table` (e.g. "public.bulk") with operation `op`, from `cdc log stats`.
    func statsCount(_ table: String, _ op: String) throws -> Int {
        ((try stats()["by_table"] as? [String: Any])?[table] as? [String: Any])?[op] as? Int ?? 0
    }

    /// The seq of the last visible event, from `cdc log tail -n 1` (0 for an empty log).
    func lastVisibleSeq() throws -> Int {
        let result = try cdc(["log", "tail", "-n", "1", "--format", "jsonl", "--log", logPath])
        guard result.status == 0 else { throw TestFailure("cdc log tail failed (\(result.status)): \(result.stderr)") }
        guard let line = result.stdout.split(separator: "\n").last else { return 0 }
        guard let seq = try parseEvent(String(line))["seq"] as? Int else { throw TestFailure("no seq in \(line)") }
        return seq
    }

    /// The replication slots of this workspace's database.
    func slotNames() throws -> [String] {
        try sql("SELECT slot_name FROM pg_replication_slots WHERE database = '\(database)' ORDER BY 1").compactMap { $0[0] }
    }
}

/// Creates `table` (id bigint primary key, payload text) for bulk loads.
func createBulkTable(_ ws: CDCWorkspace, _ table: String = "bulk") throws {
    try ws.sql("CREATE TABLE \(table) (id bigint PRIMARY KEY, payload text NOT NULL)")
}

/// One transaction inserting rows `first...last` into `table`, each with a payload of `bytes` bytes
/// (a repeated md5, so that TOAST compresses it in the WAL while pgoutput sends it whole).
func insertBulk(_ ws: CDCWorkspace, _ first: Int, _ last: Int, bytes: Int, table: String = "bulk") throws {
    try ws.sql("INSERT INTO \(table) SELECT g, left(repeat(md5(g::text), \(bytes / 32 + 1)), \(bytes)) FROM generate_series(\(first), \(last)) g")
}

/// Where `text` occurs in `data` (the raw bytes of a file), for "never in clear text" checks.
func occurs(_ text: String, in data: Data) -> Bool { data.range(of: Data(text.utf8)) != nil }
