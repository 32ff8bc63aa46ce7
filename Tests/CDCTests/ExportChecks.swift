import Foundation
import Testing
import TestSupport

/// One exported event (a parsed JSON line).
typealias Event = [String: Any]

extension CDCWorkspace {
    /// `cdc log export --format jsonl`, as the raw lines it printed.
    func exportLines() throws -> [String] {
        let result = try cdc(["log", "export", "--log", logPath, "--format", "jsonl"])
        guard result.status == 0 else { throw TestFailure("cdc log export failed (\(result.status)): \(result.stderr)") }
        return result.stdout.split(separator: "\n").map(String.init)
    }

    /// `cdc run --no-project --endpos <current insert LSN>` with extra arguments, returning the result
    /// whatever the exit status.
    func runToCurrentLSN(_ extra: [String] = [], environment: [String: String] = [:]) throws -> Shell.Result {
        let endpos = try server.currentLSN()
        return try cdc(["run", "--config", configPath, "--no-project", "--endpos", endpos] + extra, environment: environment)
    }

    /// Writes a cdc.toml by hand (for configurations `writeConfig` cannot express).
    func writeConfigFile(url: String, slot: String? = nil, publication: String? = nil, logPath: String? = nil,
                         extraSource: String = "") throws {
        let text = """
            [source]
            url = "\(url)"
            slot = "\(slot ?? self.slot)"
            publication = "\(publication ?? self.slot)"
            \(extraSource)
            [log]
            path = "\(logPath ?? self.logPath)"

            """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }
}

/// Parses one export line.
func parseEvent(_ line: String) throws -> Event {
    guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? Event else {
        throw TestFailure("export line is not a JSON object: \(line)")
    }
    return object
}

/// A deterministic text form of a JSON value (keys sorted, strings byte-exact), for comparisons that
/// must not be fooled by Unicode canonical equivalence or dictionary ordering.
func canonicalJSON(_ value: Any?) -> String {
    guard let value, !(value is NSNull) else { return "null" }
    if let dictionary = value as? [String: Any] {
        return "{" + dictionary.keys.sorted().map { key in
            canonicalJSON(key) + ":" + canonicalJSON(dictionary[key])
        }.joined(separator: ",") + "}"
    }
    if let array = value as? [Any] { return "[" + array.map { canonicalJSON($0) }.joined(separator: ",") + "]" }
    if let string = value as? String {
        // Unicode scalars spelled out: "é" and "e\u{301}" stay different.
        return "\"" + string.unicodeScalars.map { String($0.value, radix: 16) }.joined(separator: " ") + "\""
    }
    if let number = value as? NSNumber {
        if isJSONBool(number) { return number.boolValue ? "true" : "false" }
        return "n:" + number.stringValue
    }
    return "?\(value)"
}

/// True when JSONSerialization produced this NSNumber from `true`/`false` (objCType "c"; JSON numbers
/// parse as "q" or "d").
func isJSONBool(_ number: NSNumber) -> Bool {
    String(cString: number.objCType) == "c"
}

/// Byte-exact string comparison (Swift's `==` treats canonically equivalent strings as equal).
func sameBytes(_ a: String?, _ b: String?) -> Bool {
    guard let a, let b else { return a == nil && b == nil }
    return Array(a.utf8) == Array(b.utf8)
}

/// The raw JSON text of the scalar (number, true, false, null) that follows `"key":` in `line`.
func rawScalar(_ line: String, key: String) -> String? {
    guard let range = line.range(of: "\"\(key)\":") else { return nil }
    let rest = line[range.upperBound...]
    let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) ?? rest.endIndex
    return String(rest[..<end])
}

/// The `after` (or `before`) object of an event.
func row(_ event: Event?, _ side: String = "after") -> [String: Any]? {
    event?[side] as? [String: Any]
}

/// The contract's invariants over a whole export: seq dense from 1; lsn "X/Y" and non-decreasing;
/// the events of one source transaction share lsn and xid and are contiguous; commit_time RFC 3339
/// UTC when present; row and truncate events point at an earlier relation record of their table.
func expectExportInvariants(_ events: [Event], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(events.map { $0["seq"] as? Int } == (0..<events.count).map { $0 + 1 }, "seq is dense from 1",
            sourceLocation: sourceLocation)
    var previous: UInt64 = 0
    var lastIndexOfXid: [Int: Int] = [:]
    var lsnOfXid: [Int: String] = [:]
    let bySeq = Dictionary(events.compactMap { e in (e["seq"] as? Int).map { ($0, e) } }, uniquingKeysWith: { a, _ in a })
    let timeFormat = #/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z/#
    for (index, event) in events.enumerated() {
        let seq = event["seq"] as? Int ?? -1
        let lsnText = event["lsn"] as? String
        guard let lsn = lsnValue(lsnText) else {
            Issue.record("event \(seq) has no X/Y lsn: \(String(describing: event["lsn"]))", sourceLocation: sourceLocation)
            continue
        }
        #expect(lsn >= previous, "lsn is non-decreasing (seq \(seq): \(lsnText!))", sourceLocation: sourceLocation)
        previous = max(previous, lsn)
        if let xid = event["xid"] as? Int {
            if let last = lastIndexOfXid[xid] {
                #expect(last == index - 1, "events of xid \(xid) are contiguous (seq \(seq))", sourceLocation: sourceLocation)
                #expect(lsnOfXid[xid] == lsnText, "events of xid \(xid) share one lsn (seq \(seq))", sourceLocation: sourceLocation)
            }
            lastIndexOfXid[xid] = index
            lsnOfXid[xid] = lsnText
        } else {
            #expect(event["xid"] is NSNull, "xid is an integer or null (seq \(seq))", sourceLocation: sourceLocation)
        }
        if let time = event["commit_time"] as? String {
            #expect(time.wholeMatch(of: timeFormat) != nil, "commit_time is RFC 3339 UTC: \(time)", sourceLocation: sourceLocation)
        }
        let op = event["op"] as? String ?? "?"
        #expect(["snapshot", "insert", "update", "delete", "truncate", "message", "relation", "origin"].contains(op),
                "op \(op) is one of the contract's", sourceLocation: sourceLocation)
        if ["snapshot", "insert", "update", "delete", "truncate"].contains(op) {
            let relationSeq = event["relation_seq"] as? Int ?? 0
            let relation = bySeq[relationSeq]
            #expect(relationSeq < seq && relation?["op"] as? String == "relation"
                        && relation?["table"] as? String == event["table"] as? String,
                    "seq \(seq) points at an earlier relation record of \(event["table"] ?? "?")", sourceLocation: sourceLocation)
        }
        if op == "origin" {
            #expect(event["xid"] is Int && event["origin"] is String && event["origin_lsn"] is String,
                    "an origin record belongs to a transaction and names the origin (seq \(seq))", sourceLocation: sourceLocation)
            #expect(index == 0 || (events[index - 1]["xid"] as? Int) != (event["xid"] as? Int),
                    "an origin record is its transaction's first (seq \(seq))", sourceLocation: sourceLocation)
        }
    }
}

/// The relation records of `table` ("public.x"), in log order.
func relationRecords(_ events: [Event], table: String) -> [Event] {
    events.filter { $0["op"] as? String == "relation" && $0["table"] as? String == table }
}

/// The column names of a relation record, in order.
func columnNames(_ relation: Event?) -> [String] {
    ((relation?["relation"] as? [String: Any])?["columns"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
}

/// The columns of a relation record.
func columns(_ relation: Event?) -> [[String: Any]] {
    (relation?["relation"] as? [String: Any])?["columns"] as? [[String: Any]] ?? []
}

/// A failed command: non-zero exit, and stderr's error is one line starting `cdc: error:` that names
/// each of `words` (case-insensitive) and is the last thing written (no continuation lines).
func expectOneLineError(_ result: Shell.Result, naming words: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status != 0, "exits non-zero", sourceLocation: sourceLocation)
    let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: true)
    let errors = lines.filter { $0.hasPrefix("cdc: error:") }
    #expect(errors.count == 1, "exactly one `cdc: error:` line; stderr was:\n\(result.stderr)", sourceLocation: sourceLocation)
    #expect(lines.last?.hasPrefix("cdc: error:") == true,
            "the error is the last line (one line, nothing continues it); stderr was:\n\(result.stderr)", sourceLocation: sourceLocation)
    let error = errors.first.map(String.init)?.lowercased() ?? ""
    for word in words {
        #expect(error.contains(word.lowercased()), "the error names \(word): \(error)", sourceLocation: sourceLocation)
    }
}
