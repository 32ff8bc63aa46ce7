import ArgumentParser
import EventLog
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Auditor-facing, read-only inspection: `cdc log show`, `txn`, `tail`, `stats`, and the filters of
// `export`. Every read transaction is short (see EventLog.visitRecords) and ends before anything is
// written to stdout, so a slow terminal or pipe never pins the log's pages while `cdc run` writes.

// MARK: Shared options

/// `--table`, `--op`, `--since`, `--until`, `--from`, `--to`.
struct EventFilterOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Only events of this table: schema.table, or a bare table name in any schema (repeatable, or comma-separated).",
                               valueName: "table"))
    var table: [String] = []

    @Option(help: ArgumentHelp("Only these operations: snapshot, insert, update, delete, truncate, message, relation (repeatable, or comma-separated).",
                               valueName: "op"))
    var op: [String] = []

    @Option(help: ArgumentHelp("Only events committed at or after this time: RFC 3339 (2026-11-22T02:02:55Z; no offset means UTC) or a date (2026-11-22, midnight UTC).",
                               valueName: "time"))
    var since: String?

    @Option(help: ArgumentHelp("Only events committed before this time (exclusive); same forms as --since.", valueName: "time"))
    var until: String?

    @Option(help: ArgumentHelp("First sequence number.", valueName: "seq"))
    var from: String?

    @Option(help: ArgumentHelp("Last sequence number (default: the head).", valueName: "seq"))
    var to: String?

    @Option(help: ArgumentHelp("Only changes of transactions whose actor ([audit] actor) has this db_user or app_user.", valueName: "name"))
    var actor: String?

    /// The parsed filter; warns (one line on stderr) about a --table the log has no table of.
    func filter(log: EventLog) throws -> EventFilter {
        var filter = try EventFilter.parse(tables: table, operations: op, since: since, until: until, from: from, to: to)
        if let actor {
            guard !actor.isEmpty else { throw InspectError("--actor needs a name: a db_user or an app_user") }
            filter.actor = actor
        }
        if !filter.tables.isEmpty {
            let known = try log.currentTableNames()
            for wanted in filter.tables where !known.contains(where: { EventFilter.name(wanted, matches: $0) }) {
                warn("no table named \(wanted) among the log's tables (\(known.joined(separator: ", "))); searching older table names too")
            }
        }
        return filter
    }
}

/// `--format table|jsonl`.
struct EventFormatOption: ParsableArguments {
    @Option(help: ArgumentHelp("table (for people; the default on a terminal) or jsonl (exactly the export format; the default when stdout is not a terminal).",
                               valueName: "format"))
    var format: String?

    func resolve() throws -> EventPrinter.Format {
        switch format ?? (isatty(STDOUT_FILENO) != 0 ? "table" : "jsonl") {
        case "table": return .table
        case "jsonl": return .jsonl
        case let other: throw InspectError("--format \(other) is not supported: use table or jsonl")
        }
    }
}

/// One line on stderr, `cdc: warning: ...`.
func warn(_ message: String) {
    FileHandle.standardError.write(Data(("cdc: warning: " + message + "\n").utf8))
}

/// The width to cut table lines to: COLUMNS, else the terminal's (TIOCGWINSZ on stdout), else none.
func terminalWidth() -> Int? {
    if let text = ProcessInfo.processInfo.environment["COLUMNS"], let columns = Int(text), columns > 0 { return columns }
    var size = winsize()
    if isatty(STDOUT_FILENO) != 0, ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 { return Int(size.ws_col) }
    return nil
}

// MARK: Printing events

/// Buffered stdout, written with write(2) only when no read transaction is open.
struct StandardOutput {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(1 << 20) }

    mutating func line(_ text: String) {
        bytes.append(contentsOf: text.utf8)
        bytes.append(0x0A)
    }

    mutating func flushIfFull() throws { if bytes.count >= 1 << 20 { try flush() } }

    mutating func flush() throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                if errno == EPIPE { exit(0) }  // the reader went away (`| head`): nothing more to do
                throw InspectError("cannot write to stdout: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
        bytes.removeAll(keepingCapacity: true)
    }
}

/// Prints events as export lines (jsonl) or table lines.
struct EventPrinter {
    enum Format { case jsonl, table }

    let log: EventLog
    let format: Format
    /// Renders jsonl, and caches relation definitions for the table and --table.
    var exporter: JSONLExporter
    var renderer: EventTableRenderer?
    var json = JSONWriter(capacity: 1 << 16)
    var out = StandardOutput()
    var printed = 0
    /// The actor ([audit] actor) and origin of each printed record's transaction.
    var transactions: TransactionTracker

    init(log: EventLog, format: Format) throws {
        self.log = log
        self.format = format
        exporter = JSONLExporter(log: log)
        transactions = TransactionTracker(log: log)
        if format == .table {
            let position = try log.position()
            let sampleXID = position.head > 0 ? try log.record(position.head)?.header.xid : nil
            renderer = EventTableRenderer(width: terminalWidth(), headSeq: position.head, headLSN: position.lastCommitLSN,
                                          sampleXID: sampleXID, tables: try log.currentTableNames())
        }
    }

    /// The table name (nil for messages) and the relation definition of a record.
    mutating func relation(of record: Record) throws -> (table: String?, definition: RelationDefinition?) {
        switch record.body {
        case .relation(let definition): return (definition.qualifiedName, definition)
        case .message: return (nil, nil)
        default:
            let definition = try exporter.relation(record.header.relationSeq)
            return (definition?.qualifiedName ?? "(relation \(record.header.relationSeq) missing)", definition)
        }
    }

    /// Whether `record` passes `filter` (the seq range is the caller's).
    mutating func matches(_ record: Record, _ filter: EventFilter, seq: UInt64) throws -> Bool {
        guard filter.headerMatches(record.header) else { return false }
        if let name = filter.actor, try transactions.actor(seq: seq, record: record)?.matches(name) != true { return false }
        if filter.tables.isEmpty { return true }
        return filter.matches(record.header, table: try relation(of: record).table)
    }

    mutating func header() {
        if let renderer { out.line(renderer.header()) }
    }

    /// A line introducing a group of events (table only).
    mutating func banner(_ text: String) {
        if let renderer { out.line(renderer.banner(text)) }
    }

    mutating func print(seq: UInt64, record: Record) throws {
        printed += 1
        let context = try transactions.context(seq: seq, record: record)
        switch format {
        case .jsonl:
            try exporter.render(seq: seq, record: record, context: context, into: &json)
            out.bytes.append(contentsOf: json.bytes)
            json.bytes.removeAll(keepingCapacity: true)
        case .table:
            let (table, definition) = try relation(of: record)
            out.line(renderer!.row(seq: seq, record: record, table: table, relation: definition, actor: context.actor))
        }
        try out.flushIfFull()
    }

    /// Ends the listing: in a table, says so when nothing matched.
    mutating func finish() throws {
        if format == .table && printed == 0 { out.line("(no matching events)") }
        try out.flush()
    }
}

// MARK: cdc log show

struct LogShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print one event by seq, or every event of the transaction with a commit LSN (X/Y).",
        discussion: "A commit LSN that is the snapshot's consistent point prints the whole snapshot.")

    @OptionGroup var location: LogLocation

    @Argument(help: ArgumentHelp("A sequence number (42) or a commit LSN as PostgreSQL prints it (0/16B3748).", valueName: "seq-or-lsn"))
    var target: String

    @OptionGroup var output: EventFormatOption

    func run() async throws {
        do {
            let format = try output.resolve()
            let text = target.trimmingCharacters(in: .whitespaces)
            let seq = UInt64(text)
            let lsn = text.contains("/") ? LSN(text) : nil
            guard seq != nil || lsn != nil else {
                throw InspectError("\"\(target)\" is neither a sequence number (42) nor a commit LSN as PostgreSQL prints one (0/16B3748)")
            }
            let log = try EventLog.openForReading(path: try location.path())
            let position = try log.position()
            var printer = try EventPrinter(log: log, format: format)
            if let seq {
                guard let record = try log.visibleRecord(seq) else {
                    throw InspectError("no event with seq \(seq): the log holds seq 1 to \(position.head)")
                }
                printer.header()
                try printer.print(seq: seq, record: record)
            } else if let lsn {
                guard let range = try log.recordRange(commitLSN: lsn, head: position.head) else {
                    throw InspectError("no transaction with commit LSN \(lsn) in the log (its last commit LSN is \(position.lastCommitLSN))")
                }
                printer.header()
                try log.visitRecords(from: range.lowerBound, to: range.upperBound) { seq, bytes in
                    try printer.print(seq: seq, record: try log.decode(seq, bytes))
                    return true
                }
            }
            try printer.finish()
        } catch {
            fail(error)
        }
    }
}

extension EventLog {
    /// Decodes record `seq` copied out of the log; damaged bytes throw a ``RecordDecodingError`` naming it.
    func decode(_ seq: UInt64, _ bytes: [UInt8]) throws -> Record {
        try bytes.withUnsafeBytes { try RecordCodec.decode($0, seq: seq, file: dataFile) }
    }
}

// MARK: cdc log txn

struct LogTxn: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "txn",
        abstract: "Print every event of a source transaction, by xid.",
        discussion: """
            An xid is unique only within a wraparound epoch: when several transactions in the log share it, \
            all are printed, each as a group of events with its own commit LSN, in commit order. \
            Reads the whole log (or --from...--to).
            """)

    @OptionGroup var location: LogLocation

    @Argument(help: ArgumentHelp("The source transaction id (as txid_current() % 2^32, or the export's xid).", valueName: "xid"))
    var xid: String

    @OptionGroup var filters: EventFilterOptions
    @OptionGroup var output: EventFormatOption

    func run() async throws {
        do {
            let format = try output.resolve()
            guard let wanted = UInt32(xid.trimmingCharacters(in: .whitespaces)), wanted > 0 else {
                throw InspectError("\"\(xid)\" is not a transaction id (an integer from 1 to 4294967295)")
            }
            let log = try EventLog.openForReading(path: try location.path())
            let filter = try filters.filter(log: log)
            let head = try log.position().head
            var printer = try EventPrinter(log: log, format: format)
            printer.header()
            var found = false
            var group: LSN?
            try log.visitRecords(from: filter.from, to: min(filter.to ?? head, head), keep: { _, h in h.xid == wanted }) { seq, bytes in
                found = true
                let record = try log.decode(seq, bytes)
                guard try printer.matches(record, filter, seq: seq) else { return true }
                if record.header.lsn != group {
                    group = record.header.lsn
                    printer.banner("transaction xid \(wanted), commit LSN \(record.header.lsn), \(InspectTime.display(record.header.commitTime)) UTC")
                }
                try printer.print(seq: seq, record: record)
                return true
            }
            guard found else {
                throw InspectError("no transaction with xid \(wanted) in the log" + (filter.from > 1 || filter.to != nil ? " between seq \(filter.from) and \(min(filter.to ?? head, head))" : ""))
            }
            try printer.finish()
        } catch {
            fail(error)
        }
    }
}

// MARK: cdc log tail

/// Set by SIGINT/SIGTERM while `cdc log tail -f` follows.
nonisolated(unsafe) var stopFollowing: sig_atomic_t = 0

struct LogTail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tail",
        abstract: "Print the last events; with -f, keep printing new ones as they become visible.",
        discussion: """
            With filters, prints the last N matching events. -f polls the head every 200 ms, each time in a \
            short read transaction (none is held between polls), and exits 0 on SIGINT or SIGTERM (or once \
            past --to).
            """)

    @OptionGroup var location: LogLocation

    @Option(name: [.customShort("n"), .customLong("lines")], help: ArgumentHelp("How many events.", valueName: "n"))
    var count: String = "10"

    @Flag(name: [.customShort("f"), .long], help: "Keep printing new events as `cdc run` makes them visible.")
    var follow = false

    @OptionGroup var filters: EventFilterOptions
    @OptionGroup var output: EventFormatOption

    func run() async throws {
        do {
            let format = try output.resolve()
            guard let n = Int(count.trimmingCharacters(in: .whitespaces)), n >= 0 else {
                throw InspectError("-n \"\(count)\" is not a number of events (0 or more)")
            }
            let log = try EventLog.openForReading(path: try location.path())
            let filter = try filters.filter(log: log)
            if follow {
                signal(SIGINT) { _ in stopFollowing = 1 }
                signal(SIGTERM) { _ in stopFollowing = 1 }
            }
            let head = try log.position().head
            var printer = try EventPrinter(log: log, format: format)
            let last = try log.lastRecords(count: n, from: filter.from, to: min(filter.to ?? head, head),
                                           keepHeader: { _, h in filter.headerMatches(h) }) { seq, bytes in
                try printer.matches(try log.decode(seq, bytes), filter, seq: seq)
            }
            printer.header()
            for (seq, bytes) in last { try printer.print(seq: seq, record: try log.decode(seq, bytes)) }
            guard follow else {
                try printer.finish()
                return
            }
            try printer.out.flush()
            var seen = head
            while stopFollowing == 0 {
                if let to = filter.to, seen >= to { break }
                let now = try log.position().head
                if now > seen {
                    try log.visitRecords(from: seen + 1, to: min(now, filter.to ?? now)) { seq, bytes in
                        let record = try log.decode(seq, bytes)
                        if seq >= filter.from, try printer.matches(record, filter, seq: seq) { try printer.print(seq: seq, record: record) }
                        return stopFollowing == 0
                    }
                    seen = now
                    try printer.out.flush()
                }
                for _ in 0..<4 where stopFollowing == 0 { usleep(50_000) }
            }
            try printer.out.flush()
        } catch {
            fail(error)
        }
    }
}

// MARK: cdc log stats

struct LogStats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Summarise the log: events per table and operation, first and last commit, size, head and resume LSN.",
        discussion: "Reads every record once, in short read transactions.")

    @OptionGroup var location: LogLocation

    @Option(help: ArgumentHelp("text (the default on a terminal) or json (one object; the default when stdout is not a terminal).", valueName: "format"))
    var format: String?

    func run() async throws {
        do {
            let json: Bool
            switch format ?? (isatty(STDOUT_FILENO) != 0 ? "text" : "json") {
            case "text": json = false
            case "json": json = true
            case let other: throw InspectError("--format \(other) is not supported: use text or json")
            }
            let log = try EventLog.openForReading(path: try location.path())
            let stats = try log.statistics()
            var out = StandardOutput()
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                out.line(String(decoding: try encoder.encode(stats), as: UTF8.self))
            } else {
                for line in stats.textLines(width: terminalWidth()) { out.line(line) }
            }
            try out.flush()
        } catch {
            fail(error)
        }
    }
}

// MARK: cdc log export (with filters)

/// `cdc log export`: the export format, now with the listing filters. Replaces `Export` in the
/// subcommand list (same name, same options and output when no filter is given).
struct FilteredExport: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Print events as JSON lines (see schemas/event-log.md).")

    @OptionGroup var location: LogLocation

    @Option(help: "Output format: jsonl.")
    var format: String = "jsonl"

    @OptionGroup var filters: EventFilterOptions

    func run() async throws {
        do {
            guard format == "jsonl" else { throw InspectError("--format \(format) is not supported: use --format jsonl") }
            let log = try EventLog.openForReading(path: try location.path())
            let filter = try filters.filter(log: log)
            var printer = try EventPrinter(log: log, format: .jsonl)
            try log.visitRecords(from: filter.from, to: filter.to, batch: 2000,
                                 keep: { _, h in filter.headerMatches(h) }) { seq, bytes in
                let record = try log.decode(seq, bytes)
                if try filter.tables.isEmpty && filter.actor == nil || printer.matches(record, filter, seq: seq) { try printer.print(seq: seq, record: record) }
                return true
            }
            try printer.out.flush()
        } catch {
            fail(error)
        }
    }
}
