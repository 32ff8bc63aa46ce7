/// An error in what an inspection command was asked (a bad option value, an unknown seq or LSN).
/// Its description is one line for `cdc: error: ...`.
public struct InspectError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Which events a listing command (`cdc log txn`, `tail`, `export`) prints.
///
/// Every condition must hold: the table (`schema.table` or a bare table name, any of `tables`), the
/// operation (any of `operations`), the commit time (`since` inclusive, `until` exclusive, in µs since
/// 1970 UTC; an event without a known commit time fails both) and the seq range `from...to`.
public struct EventFilter: Sendable, Equatable {
    /// Table names, each `schema.table` or a bare `table` (any schema). Empty: every event, messages too.
    public var tables: [String] = []
    /// Operations to keep; nil: every operation.
    public var operations: Set<Operation>?
    /// Commit time lower bound (inclusive), µs since 1970 UTC.
    public var since: Int64?
    /// Commit time upper bound (exclusive), µs since 1970 UTC.
    public var until: Int64?
    /// First seq (inclusive).
    public var from: UInt64 = 1
    /// Last seq (inclusive); nil: the head.
    public var to: UInt64?
    /// Only row and truncate records of transactions whose actor's db_user or app_user is this
    /// (``TransactionActor/matches(_:)``); checked by the reader, which knows the actors.
    public var actor: String?

    public init() {}

    /// True when only the seq range restricts the events.
    public var isSeqRangeOnly: Bool { tables.isEmpty && operations == nil && since == nil && until == nil && actor == nil }

    /// Whether an event with header `h` (seq range not checked) of table `table` (nil for messages) is kept.
    public func matches(_ h: RecordHeader, table: String?) -> Bool {
        if let operations, !operations.contains(h.op) { return false }
        if since != nil || until != nil {
            guard let time = h.commitTime else { return false }
            if let since, time < since { return false }
            if let until, time >= until { return false }
        }
        if !tables.isEmpty {
            guard let table else { return false }
            return tables.contains { Self.name($0, matches: table) }
        }
        return true
    }

    /// Whether a header-only check (everything but the table) can already reject the event.
    public func headerMatches(_ h: RecordHeader) -> Bool {
        if let operations, !operations.contains(h.op) { return false }
        if since != nil || until != nil {
            guard let time = h.commitTime else { return false }
            if let since, time < since { return false }
            if let until, time >= until { return false }
        }
        if !tables.isEmpty && h.op == .message { return false }
        return true
    }

    /// `schema.table` matches itself and its bare `table`.
    public static func name(_ wanted: String, matches qualified: String) -> Bool {
        if wanted == qualified { return true }
        guard let dot = qualified.firstIndex(of: ".") else { return false }
        return qualified[qualified.index(after: dot)...] == wanted
    }

    // MARK: Parsing option values

    /// `--table` values: repeatable and comma-separated.
    public static func parseTables(_ values: [String]) throws -> [String] {
        let names = values.flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces }.filter { !$0.isEmpty }
        if names.isEmpty && !values.isEmpty { throw InspectError("--table needs a table name (schema.table or table)") }
        return names
    }

    /// `--op` values: repeatable and comma-separated; nil when none was given.
    public static func parseOperations(_ values: [String]) throws -> Set<Operation>? {
        guard !values.isEmpty else { return nil }
        var set = Set<Operation>()
        for value in values {
            for part in value.split(separator: ",", omittingEmptySubsequences: false) {
                let name = part.trimmingSpaces.lowercased()
                guard let op = Operation(name: name) else {
                    let known = Operation.allCases.map(\.name).joined(separator: ", ")
                    throw InspectError("unknown --op \"\(part)\": use one or more of \(known) (repeat --op or separate with commas)")
                }
                set.insert(op)
            }
        }
        return set
    }

    /// A sequence number given as `option` (records are numbered from 1; `--from 0` means from the start).
    public static func parseSeq(_ text: String, option: String) throws -> UInt64 {
        guard let value = UInt64(text.trimmingSpaces) else {
            throw InspectError("\(option) \"\(text)\" is not a sequence number (records are numbered from 1)")
        }
        return value
    }

    /// A time given as `option`: RFC 3339 (`2026-11-22T02:02:55.254715Z`, `2026-11-22T03:02:55+01:00`; a
    /// space may replace the `T`, seconds may be left out, no offset means UTC) or a date `YYYY-MM-DD`
    /// (midnight UTC). Returns µs since 1970 UTC; fractions below a microsecond round up, so that
    /// `>= since` and `< until` keep exactly the events at or after, and before, the given instant.
    public static func parseTime(_ text: String, option: String) throws -> Int64 {
        guard let value = InspectTime.parse(text.trimmingSpaces) else {
            throw InspectError("\(option) \"\(text)\" is not a time: write RFC 3339 (2026-11-22T02:02:55Z, 2026-11-22T03:02:55+01:00) or a date (2026-11-22); times are compared in UTC")
        }
        return value
    }

    /// Builds a filter from option values, checking that the ranges are not empty by mistake.
    public static func parse(tables: [String], operations: [String], since: String?, until: String?,
                             from: String?, to: String?) throws -> EventFilter {
        var filter = EventFilter()
        filter.tables = try parseTables(tables)
        filter.operations = try parseOperations(operations)
        filter.since = try since.map { try parseTime($0, option: "--since") }
        filter.until = try until.map { try parseTime($0, option: "--until") }
        if let from { filter.from = max(1, try parseSeq(from, option: "--from")) }
        filter.to = try to.map { try parseSeq($0, option: "--to") }
        if let s = filter.since, let u = filter.until, s >= u {
            throw InspectError("--since (\(rfc3339(microseconds: s))) must be before --until (\(rfc3339(microseconds: u))), which is exclusive")
        }
        if let to = filter.to, to < filter.from {
            throw InspectError("--from \(filter.from) is after --to \(to)")
        }
        return filter
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" { s.removeFirst() }
        while let c = s.last, c == " " || c == "\t" { s.removeLast() }
        return String(s)
    }
}

/// Parsing and printing of commit times for inspection.
public enum InspectTime {
    /// µs since 1970 UTC for RFC 3339 or `YYYY-MM-DD` (see ``EventFilter/parseTime(_:option:)``); nil if malformed.
    public static func parse(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        var i = 0
        func digits(_ n: Int) -> Int64? {
            guard i + n <= b.count else { return nil }
            var v: Int64 = 0
            for k in i..<(i + n) {
                guard (0x30...0x39).contains(b[k]) else { return nil }
                v = v * 10 + Int64(b[k] - 0x30)
            }
            i += n
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < b.count, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let year = digits(4), expect(0x2D), let month = digits(2), expect(0x2D), let day = digits(2) else { return nil }
        guard (1...12).contains(month), day >= 1, day <= daysIn(month: month, year: year) else { return nil }
        var hour: Int64 = 0, minute: Int64 = 0, second: Int64 = 0, nanos: Int64 = 0, offset: Int64 = 0
        if i < b.count {
            guard b[i] == 0x54 || b[i] == 0x74 || b[i] == 0x20 else { return nil }  // T t space
            i += 1
            guard let h = digits(2), expect(0x3A), let m = digits(2) else { return nil }
            (hour, minute) = (h, m)
            if expect(0x3A) {
                guard let s = digits(2) else { return nil }
                second = s
                if expect(0x2E) || expect(0x2C) {
                    var scale: Int64 = 100_000_000
                    var count = 0
                    while i < b.count, (0x30...0x39).contains(b[i]) {
                        if scale > 0 { nanos += Int64(b[i] - 0x30) * scale; scale /= 10 }
                        i += 1
                        count += 1
                    }
                    guard count > 0 else { return nil }
                }
            }
            guard hour < 24, minute < 60, second <= 60 else { return nil }
            if i < b.count {
                if b[i] == 0x5A || b[i] == 0x7A {  // Z z
                    i += 1
                } else if b[i] == 0x2B || b[i] == 0x2D {  // + -
                    let sign: Int64 = b[i] == 0x2B ? 1 : -1
                    i += 1
                    guard let oh = digits(2) else { return nil }
                    _ = expect(0x3A)
                    guard let om = digits(2), oh < 24, om < 60 else { return nil }
                    offset = sign * (oh * 3600 + om * 60)
                } else {
                    return nil
                }
            }
            guard i == b.count else { return nil }
        }
        let days = CivilCalendar.days(year: year, month: month, day: day)
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        return seconds * 1_000_000 + (nanos + 999) / 1000
    }

    static func daysIn(month: Int64, year: Int64) -> Int64 {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// `2026-11-22 02:02:55.254715` (UTC), for tables.
    public static func display(_ microseconds: Int64?) -> String {
        guard let microseconds else { return "-" }
        let text = rfc3339(microseconds: microseconds)
        return String(text.dropLast().map { $0 == "T" ? " " : $0 })
    }
}
