import Foundation

/// The golden log checked in under Tests/Fixtures/golden-log/ (made by tools/make-golden-log with the
/// real `cdc init` and `cdc run`): its `data.mdb`, its JSONL export, its digest and its verify line.
public enum GoldenLog {
    public static let directory = PostgresServer.repositoryRoot + "/Tests/Fixtures/golden-log"

    /// A fresh copy of the log directory (the fixture itself is never opened: LMDB would add lock.mdb).
    public static func copy() throws -> String {
        let log = try TemporaryDirectory.make(prefix: "golden") + "/log"
        try FileManager.default.createDirectory(atPath: log, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: directory + "/log/data.mdb", toPath: log + "/data.mdb")
        return log
    }

    /// A checked-in file of the fixture (`export.jsonl`, `digest.json`, `verify.txt`).
    public static func file(_ name: String) throws -> String {
        try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
    }

    /// The first line where `actual` and `expected` differ, for a readable failure ("" when equal).
    public static func firstDifference(_ actual: String, _ expected: String) -> String {
        let a = actual.split(separator: "\n", omittingEmptySubsequences: false)
        let e = expected.split(separator: "\n", omittingEmptySubsequences: false)
        for i in 0..<max(a.count, e.count) where i >= a.count || i >= e.count || a[i] != e[i] {
            return "line \(i + 1):\n  got      \(i < a.count ? String(a[i]) : "(nothing)")\n  expected \(i < e.count ? String(e[i]) : "(nothing)")"
        }
        return ""
    }
}
