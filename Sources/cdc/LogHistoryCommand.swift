import ArgumentParser
import EventLog
import Foundation

// MARK: cdc log history

struct LogHistory: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "history",
        abstract: "Print every change to one row, oldest first, with what changed.",
        discussion: """
            The row is named by its table and the values of its replica-identity key columns, in column \
            order (two values for a two-column key), as PostgreSQL prints them. Served from the history \
            index in <log>/history (kept up to date by `cdc run`; brought up to the head first when the \
            files are writable), then from the records after the index's end. Lists the row's snapshot, \
            inserts, updates (also those that moved it to or from another key), deletes, and the truncates \
            of its table while it existed. In a table, an update shows the columns that changed, \
            `col: old → new`; --format jsonl prints exactly the export's events.
            """)

    @OptionGroup var location: LogLocation

    @Argument(help: ArgumentHelp("schema.table, or a table name found in one schema.", valueName: "table"))
    var table: String

    @Argument(help: ArgumentHelp("The key column values, in order.", valueName: "key"))
    var key: [String] = []

    @OptionGroup var output: EventFormatOption

    @Option(help: ArgumentHelp("Only the changes made in transactions whose actor ([audit] actor) has this db_user or app_user.", valueName: "name"))
    var actor: String?

    @Flag(help: "Say on stderr how the events were found (from the index, records read after it).")
    var explain = false

    func run() async throws {
        do {
            let format = try output.resolve()
            guard !key.isEmpty else { throw InspectError("give the row's key value(s) after the table name") }
            var filter = EventFilter()
            if let actor {
                guard !actor.isEmpty else { throw InspectError("--actor needs a name: a db_user or an app_user") }
                filter.actor = actor
            }
            let log = try EventLog.openForReading(path: try location.path())
            var index = try HistoryIndex.open(log: log)
            if let writable = index, !writable.readOnly { try writable.catchUpToHead() }
            // A read-only index that does not match the log (another log's, or one left from before the
            // log was restored) cannot be rebuilt here: every record is read instead.
            var mismatched = false
            if let readOnly = index, readOnly.readOnly, try !readOnly.matchesLog() {
                index = nil
                mismatched = true
            }
            let history = try log.history(table: table, key: key, index: index)
            if explain {
                let source = history.indexedThrough.map { "\(history.fromIndex) from the history index (records 1...\($0))" }
                    ?? (mismatched ? "the history index does not match this log and cannot be rebuilt (read-only log directory): not used"
                                   : "no history index (read-only log directory without one)")
                warnLine("history: \(history.events.count) events; \(source), \(history.scanned) records read after it")
            }
            var printer = try EventPrinter(log: log, format: format)
            printer.header()
            var state: [Datum]?
            for (seq, record) in history.events {
                // The table's prior state follows every event, also those --actor leaves out.
                var shown = record
                if format == .table { (shown, state) = Self.withPriorState(record, state) }
                if filter.actor != nil, try !printer.matches(record, filter, seq: seq) { continue }
                try printer.print(seq: seq, record: shown)
            }
            try printer.finish()
        } catch {
            fail(error)
        }
    }

    /// For the table: an update that carries no old row is shown against the row as the history
    /// built it so far, so that only the columns that changed appear (`col: old → new`). Returns the
    /// record to show and the row after it.
    static func withPriorState(_ record: Record, _ state: [Datum]?) -> (Record, [Datum]?) {
        guard case .row(let old, let before, let after) = record.body else {
            return (record, record.header.op == .truncate ? nil : state)
        }
        switch record.header.op {
        case .snapshot, .insert:
            return (record, after)
        case .delete:
            return (record, nil)
        case .update:
            guard let after else { return (record, state) }
            var row = after
            if let state {
                for i in row.indices where row[i] == .unchangedToast && i < state.count { row[i] = state[i] }
            }
            guard old != .row, let state else { return (record, row) }
            var shown = record
            // The key part of an old key (K) stays as sent; the rest comes from the row so far.
            var prior = state
            if old == .key, let before {
                for i in before.indices where i < prior.count && before[i] != .null { prior[i] = before[i] }
            }
            shown.body = .row(old: .row, before: prior, after: after)
            return (shown, row)
        default:
            return (record, state)
        }
    }
}

/// One line on stderr, `cdc: ...`.
func warnLine(_ message: String) {
    FileHandle.standardError.write(Data(("cdc: " + message + "\n").utf8))
}
