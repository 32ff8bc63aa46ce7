import Foundation
import PGClient

/// A load whose committed history is known exactly, to check the log against: transaction k inserts
/// ledger rows 3k, 3k+1, 3k+2 and sets counter.n = k; every seventh attempt is rolled back instead.
///
/// After the load, the log must hold, in order: for each committed k, three inserts and one update,
/// contiguous, sharing one commit LSN, with no k missing or repeated, and nothing of a rolled-back one.
public final class LedgerLoad: @unchecked Sendable {
    public let workspace: CDCWorkspace
    private let lock = NSLock()
    private var stopRequested = false
    private var thread: Thread?
    private var committed = 0
    private var failure: Error?
    private var done = false

    /// Creates the `ledger` and `counter` tables (call before `cdc init` to have them in the snapshot).
    public init(workspace: CDCWorkspace) throws {
        self.workspace = workspace
        try workspace.sql("""
            CREATE TABLE IF NOT EXISTS ledger (id bigint PRIMARY KEY, txn int NOT NULL, payload text);
            CREATE TABLE IF NOT EXISTS counter (id int PRIMARY KEY, n bigint NOT NULL);
            INSERT INTO counter VALUES (1, 0) ON CONFLICT DO NOTHING;
            """)
    }

    /// Starts committing transactions on a background thread, as fast as the server takes them
    /// (or with `pause` microseconds between them), stopping by itself after `limit` commits.
    public func start(pause: UInt32 = 0, limit: Int = 20_000) {
        let thread = Thread { [self] in
            do {
                let connection = try workspace.server.connect(database: workspace.database)
                var k = 0
                var attempt = 0
                while !isStopping && k < limit {
                    attempt += 1
                    if attempt % 7 == 0 {
                        try connection.execute("BEGIN; INSERT INTO ledger VALUES (-\(attempt), -1, 'rolled back'); UPDATE counter SET n = -1; ROLLBACK")
                        continue
                    }
                    k += 1
                    try connection.execute("""
                        BEGIN;
                        INSERT INTO ledger VALUES (\(3 * k), \(k), 'a\(k)'), (\(3 * k + 1), \(k), 'b\(k)'), (\(3 * k + 2), \(k), 'c\(k)');
                        UPDATE counter SET n = \(k) WHERE id = 1;
                        COMMIT
                        """)
                    lock.withLock { committed = k }
                    if pause > 0 { usleep(pause) }
                }
            } catch {
                lock.withLock { failure = error }
            }
            lock.withLock { done = true }
        }
        self.thread = thread
        thread.start()
    }

    private var isStopping: Bool { lock.withLock { stopRequested } }

    /// Transactions committed so far.
    public var committedTransactions: Int { lock.withLock { committed } }

    /// Stops the load and returns the number of committed transactions. Throws what the load hit, or
    /// a ``TestFailure`` when its thread has not finished after `timeout` seconds.
    @discardableResult
    public func stop(timeout: Double = 60) throws -> Int {
        lock.withLock { stopRequested = true }
        let deadline = Date().addingTimeInterval(timeout)
        while !lock.withLock({ done }) {
            guard Date() < deadline else { throw TestFailure("the ledger load did not stop within \(timeout) s") }
            usleep(10_000)
        }
        if let failure = lock.withLock({ failure }) { throw failure }
        return committedTransactions
    }

    /// Checks `events` (the whole export) against `transactions` committed transactions; returns the
    /// problems found (empty when the log is exact).
    public static func check(_ events: [[String: Any]], transactions: Int) -> [String] {
        var problems: [String] = []
        let seqs: [Int] = events.compactMap { $0["seq"] as? Int }
        let dense: [Int] = Array(0..<events.count).map { $0 + 1 }
        if seqs != dense { problems.append("seq is not dense from 1") }
        var lastLSN = ""
        for e in events {
            let lsn = e["lsn"] as? String ?? ""
            if compareLSN(lsn, lastLSN) < 0 { problems.append("lsn decreases at seq \(e["seq"] ?? "?")"); break }
            lastLSN = lsn
        }
        let ledger = events.filter { $0["table"] as? String == "public.ledger" && $0["op"] as? String == "insert" }
        let counter = events.filter { $0["table"] as? String == "public.counter" && $0["op"] as? String == "update" }
        let ids = ledger.compactMap { ($0["after"] as? [String: Any])?["id"] as? Int }
        if ids.count != 3 * transactions { problems.append("\(ids.count) ledger inserts, expected \(3 * transactions)") }
        var expected = Set<Int>()
        for k in 0..<transactions { expected.formUnion([3 * (k + 1), 3 * (k + 1) + 1, 3 * (k + 1) + 2]) }
        if Set(ids) != expected {
            problems.append("ledger ids differ from the committed ones (duplicates or gaps)")
        }
        if ids.contains(where: { $0 < 0 }) { problems.append("a rolled-back insert is in the log") }
        let ns = counter.compactMap { ($0["after"] as? [String: Any])?["n"] as? Int }
        if ns != Array(0..<transactions).map({ $0 + 1 }) {
            problems.append("counter updates are not exactly 1...\(transactions) in order (got \(ns.count), first problems near \(firstMismatch(ns, transactions)))")
        }
        // Each transaction k: its four events are contiguous and share lsn and xid.
        var byTxn: [Int: [[String: Any]]] = [:]
        for e in ledger { if let k = (e["after"] as? [String: Any])?["txn"] as? Int { byTxn[k, default: []].append(e) } }
        for e in counter { if let k = (e["after"] as? [String: Any])?["n"] as? Int { byTxn[k, default: []].append(e) } }
        for (k, group) in byTxn {
            let seqs = group.compactMap { $0["seq"] as? Int }.sorted()
            if Set(group.compactMap { $0["lsn"] as? String }).count != 1 || Set(group.compactMap { $0["xid"] as? Int }).count != 1 {
                problems.append("transaction \(k) is split across commit LSNs or xids"); break
            }
            if seqs.count != 4 || seqs.last! - seqs.first! != 3 { problems.append("transaction \(k) is not 4 contiguous events"); break }
        }
        return problems
    }

    static func firstMismatch(_ ns: [Int], _ n: Int) -> String {
        for (i, v) in ns.enumerated() where v != i + 1 { return "index \(i): \(v)" }
        return "end (\(ns.count) vs \(n))"
    }

    /// Compares two "X/Y" LSNs (anything else counts as 0/0).
    public static func compareLSN(_ a: String, _ b: String) -> Int {
        let (x, y) = (lsnValue(a) ?? 0, lsnValue(b) ?? 0)
        return x < y ? -1 : (x > y ? 1 : 0)
    }
}
