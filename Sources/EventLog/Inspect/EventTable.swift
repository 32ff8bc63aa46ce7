/// The compact "change" text of an event, for tables read by people.
///
/// - snapshot, insert: the new row, `col: value, ...`.
/// - update with the old row (REPLICA IDENTITY FULL): only the columns that changed, `col: old → new`
///   (`bed_count: 300 → 301`). (Under FULL every column is flagged as key, so the log does not say
///   which columns identify the row: `cdc log show SEQ --format jsonl` gives the whole rows.)
/// - update with the old key only (REPLICA IDENTITY DEFAULT or INDEX, key changed): the key columns as
///   `key: old → new` (or `key: value` for a part that did not change), then every other column as
///   `col: → new`: its old value is not in the log.
/// - update without old values (DEFAULT or INDEX, key unchanged): just the new values, `col: new`.
/// - delete: the old key (or the old row under REPLICA IDENTITY FULL).
/// - truncate, message, relation: their options, content, or columns.
///
/// NULL is `NULL`; an unchanged TOASTed value (not sent by PostgreSQL) is left out of updates and shown
/// as `(unchanged TOAST)` elsewhere. Control characters are escaped (`\n`) so that one event is one line,
/// and each value is cut at `maxValueWidth` columns.
public enum ChangeSummary {
    public static func describe(_ record: Record, relation: RelationDefinition?, maxValueWidth: Int = 80) -> String {
        let columns = relation?.columns ?? []
        func name(_ i: Int) -> String { i < columns.count ? columns[i].name : "column_\(i + 1)" }
        func value(_ d: Datum?) -> String {
            switch d {
            case nil: return "?"
            case .null?: return "NULL"
            case .unchangedToast?: return "(unchanged TOAST)"
            case .text(let bytes)?: return DisplayText.clip(DisplayText.escaped(bytes), to: maxValueWidth)
            }
        }
        func pairs(_ row: [Datum], _ indices: [Int]) -> [String] {
            indices.map { "\(name($0)): \(value(row[$0]))" }
        }
        switch record.body {
        case .row(let old, let before, let after):
            let keys = relation?.keyColumnIndices ?? []
            switch record.header.op {
            case .delete:
                let row = before ?? []
                let shown = old == .key && !keys.isEmpty ? keys.filter { $0 < row.count } : Array(row.indices)
                return pairs(row, shown).joined(separator: ", ")
            case .update:
                let new = after ?? []
                var parts: [String] = []
                switch old {
                case .row:
                    let row = before ?? []
                    for i in 0..<max(row.count, new.count) {
                        let a = i < new.count ? new[i] : nil
                        let b = i < row.count ? row[i] : nil
                        if a == .unchangedToast || a == b { continue }
                        parts.append("\(name(i)): \(b == nil ? "" : value(b)) → \(value(a))")
                    }
                    if parts.isEmpty { parts.append("no column changed") }
                case .key:
                    let row = before ?? []
                    for i in new.indices where new[i] != .unchangedToast {
                        if keys.contains(i) {
                            let b = i < row.count ? row[i] : nil
                            parts.append(b == new[i] ? "\(name(i)): \(value(new[i]))" : "\(name(i)): \(value(b)) → \(value(new[i]))")
                        } else {
                            parts.append("\(name(i)): → \(value(new[i]))")
                        }
                    }
                case .none:
                    for i in new.indices where new[i] != .unchangedToast {
                        parts.append("\(name(i)): \(value(new[i]))")
                    }
                }
                return parts.joined(separator: ", ")
            default:
                let row = after ?? []
                return pairs(row, Array(row.indices)).joined(separator: ", ")
            }
        case .truncate:
            var text = "all rows"
            if record.header.flags.contains(.cascade) { text += ", cascade" }
            if record.header.flags.contains(.restartIdentity) { text += ", restart identity" }
            return text
        case .message(let prefix, let content):
            let body: String
            if String(validating: content, as: UTF8.self) != nil {
                body = DisplayText.clip(DisplayText.escaped(content), to: maxValueWidth)
            } else {
                body = "base64 " + DisplayText.clip(base64(content), to: maxValueWidth)
            }
            let kind = record.header.flags.contains(.transactional) ? "" : " (non-transactional)"
            return "\(DisplayText.escaped(Array(prefix.utf8))): \(body)\(kind)"
        case .relation(let d):
            let identity: String
            switch d.replicaIdentity {
            case UInt8(ascii: "d"): identity = "default"
            case UInt8(ascii: "f"): identity = "full"
            case UInt8(ascii: "i"): identity = "index"
            case UInt8(ascii: "n"): identity = "nothing"
            default: identity = String(UnicodeScalar(d.replicaIdentity))
            }
            let list = d.columns.map { "\($0.name) \($0.typeName)\($0.isKey && d.replicaIdentity != UInt8(ascii: "f") ? " key" : "")" }
            return "replica identity \(identity); " + list.joined(separator: ", ")
        case .origin(let name, let lsn):
            return "replicated from origin \(DisplayText.escaped(Array(name.utf8)))" + (lsn == .zero ? "" : " (its commit \(lsn))")
        }
    }
}

/// Terminal text: escaping, display width, clipping.
public enum DisplayText {
    /// UTF-8 bytes as one line: control characters escaped (`\n`, `\t`, `\u{1b}`), invalid UTF-8 replaced.
    public static func escaped(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || ($0.value >= 0x7F && $0.value < 0xA0) }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0..<0x20, 0x7F..<0xA0: out += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// Columns a terminal uses for `scalar`: 0 for combining marks and format characters, 2 for East
    /// Asian wide and fullwidth characters and most emoji, 1 otherwise.
    public static func width(_ scalar: Unicode.Scalar) -> Int {
        let v = scalar.value
        if v < 0x300 { return 1 }
        switch scalar.properties.generalCategory {
        case .nonspacingMark, .enclosingMark, .format: return 0
        default: break
        }
        switch v {
        case 0x1100...0x115F, 0x2E80...0x303E, 0x3041...0x33FF, 0x3400...0x4DBF, 0x4E00...0x9FFF, 0xA000...0xA4CF,
             0xAC00...0xD7A3, 0xF900...0xFAFF, 0xFE30...0xFE4F, 0xFF00...0xFF60, 0xFFE0...0xFFE6,
             0x1F300...0x1F64F, 0x1F900...0x1F9FF, 0x20000...0x3FFFD:
            return 2
        default:
            return 1
        }
    }

    public static func width<S: StringProtocol>(_ text: S) -> Int {
        var total = 0
        for scalar in text.unicodeScalars { total += width(scalar) }
        return total
    }

    /// `text` cut to at most `limit` columns, ending with `…` when cut.
    public static func clip(_ text: String, to limit: Int) -> String {
        guard limit > 0 else { return "" }
        guard width(text) > limit else { return text }
        var used = 0
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            let w = width(scalar)
            if used + w > limit - 1 { break }
            out.append(scalar)
            used += w
        }
        return String(out) + "…"
    }

    /// `text` padded with spaces to `columns` (left-aligned, or right-aligned).
    public static func pad(_ text: String, _ columns: Int, right: Bool = false) -> String {
        let missing = columns - width(text)
        guard missing > 0 else { return text }
        let spaces = String(repeating: " ", count: missing)
        return right ? spaces + text : text + spaces
    }
}

/// Renders events as table lines, one per event, as they stream: columns seq, commit time (UTC), lsn,
/// xid, table, op, who (the transaction's actor: its app_user, else its db_user; `-` when it has none)
/// and the change (``ChangeSummary``). Columns start at widths guessed from the log's
/// head and widen when a value does not fit. With a `width`, every line is cut to it (ending `…`).
public struct EventTableRenderer {
    public let width: Int?
    public var maxValueWidth: Int
    var widths: [Int]  // seq, time, lsn, xid, table, op, who
    static let titles = ["seq", "commit time (UTC)", "lsn", "xid", "table", "op", "who"]

    /// - Parameters:
    ///   - width: the terminal's width, nil for no limit.
    ///   - headSeq, headLSN, sampleXID: the log's newest seq, commit LSN and an xid, to size the columns.
    ///   - tables: the table names likely to appear.
    public init(width: Int?, headSeq: UInt64, headLSN: LSN, sampleXID: UInt32?, tables: [String], maxValueWidth: Int = 80) {
        self.width = width
        self.maxValueWidth = maxValueWidth
        widths = [max(3, String(headSeq).count), 26, max(3, headLSN.description.count),
                  max(3, String(sampleXID ?? 0).count), max(5, min(40, tables.map { DisplayText.width($0) }.max() ?? 0)), 8, 3]
    }

    public func header() -> String {
        fit(zip(Self.titles, widths).enumerated().map { i, pair in
            DisplayText.pad(pair.0, pair.1, right: i == 0 || i == 3)
        }.joined(separator: "  ") + "  change")
    }

    /// One line (without newline) for event `seq` of `table` (nil for messages), of a transaction made by `actor`.
    public mutating func row(seq: UInt64, record: Record, table: String?, relation: RelationDefinition?, actor: TransactionActor? = nil) -> String {
        let h = record.header
        let who = record.isChange ? DisplayText.clip(DisplayText.escaped(Array((actor?.appUser ?? actor?.dbUser ?? "-").utf8)), to: 40) : "-"
        let cells = [String(seq), InspectTime.display(h.commitTime), h.lsn.description,
                     h.xid.map { String($0) } ?? "-", table ?? "-", h.op.name, who]
        var line = ""
        for (i, cell) in cells.enumerated() {
            let w = DisplayText.width(cell)
            if w > widths[i] { widths[i] = w }
            if i > 0 { line += "  " }
            line += DisplayText.pad(cell, widths[i], right: i == 0 || i == 3)
        }
        line += "  " + ChangeSummary.describe(record, relation: relation, maxValueWidth: maxValueWidth)
        return fit(line)
    }

    /// A line introducing a group of events (a transaction).
    public func banner(_ text: String) -> String { fit("── " + text + " ──") }

    func fit(_ line: String) -> String {
        guard let width else { return line }
        return DisplayText.clip(line, to: width)
    }
}

/// A plain text table (for summaries): a header, rows, some columns right-aligned.
public struct TextTable {
    public var header: [String]
    public var rows: [[String]] = []
    public var rightAligned: Set<Int> = []

    public init(header: [String], rightAligned: Set<Int> = []) {
        self.header = header
        self.rightAligned = rightAligned
    }

    public func lines(width: Int?) -> [String] {
        var widths = header.map { DisplayText.width($0) }
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], DisplayText.width(cell)) }
        }
        func line(_ cells: [String]) -> String {
            var out = cells.enumerated().map { i, cell in
                i == cells.count - 1 && !rightAligned.contains(i) ? cell : DisplayText.pad(cell, widths[i], right: rightAligned.contains(i))
            }.joined(separator: "  ")
            while out.hasSuffix(" ") { out.removeLast() }
            return width.map { DisplayText.clip(out, to: $0) } ?? out
        }
        return [line(header)] + rows.map(line)
    }
}
