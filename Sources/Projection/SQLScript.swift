/// A DDL file cut into its statements, to be sent one at a time.
///
/// A file sent whole is one simple-protocol query holding several commands; Citus forwards a
/// distributed CREATE INDEX's whole query text to its workers, which refuse more than one command
/// ("cannot execute multiple utility events"), so cdc sends each statement by itself, as psql does.
/// The cut follows PostgreSQL's lexical rules for what can hide a semicolon: quoted strings
/// (`'...'` with `''`, `E'...'` with backslash escapes), quoted identifiers (`"..."`), dollar quotes
/// (`$tag$...$tag$`), `--` comments and nested `/* */` comments. Statements keep their text as
/// written (comments included); empty ones (only whitespace and comments) are dropped.
public enum SQLScript {
    /// One statement: its text (from its first keyword to before its semicolon) and the line it
    /// starts on (1-based), for errors.
    public struct Statement: Sendable, Equatable {
        public var text: String
        public var line: Int
    }

    /// The statements of `text`, without their terminating semicolons.
    public static func statements(_ text: String) -> [Statement] {
        let bytes = Array(text.utf8)
        var statements: [Statement] = []
        var i = 0
        var first: Int?  // the current statement's first byte that is not whitespace or comment
        var meaningful: Bool {
            get { first != nil }
            set { if newValue, first == nil { first = i } }
        }
        var line = 1, counted = 0  // line of byte `counted`
        func flush(_ end: Int) {
            guard let start = first else { return }
            line += bytes[counted..<start].lazy.filter { $0 == UInt8(ascii: "\n") }.count
            counted = start
            if let statement = String(bytes: bytes[start..<end], encoding: .utf8) {
                statements.append(Statement(text: statement.trimmingWhitespace(), line: line))
            }
            first = nil
        }
        while i < bytes.count {
            let c = bytes[i]
            switch c {
            case UInt8(ascii: "-") where i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "-"):
                while i < bytes.count, bytes[i] != UInt8(ascii: "\n") { i += 1 }
                continue
            case UInt8(ascii: "/") where i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "*"):
                var depth = 0
                while i < bytes.count {
                    if bytes[i] == UInt8(ascii: "/"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "*") {
                        depth += 1; i += 2
                    } else if bytes[i] == UInt8(ascii: "*"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: "/") {
                        depth -= 1; i += 2
                        if depth == 0 { break }
                    } else {
                        i += 1
                    }
                }
                continue
            case UInt8(ascii: "'"):
                meaningful = true
                let escapes = i > 0 && (bytes[i - 1] == UInt8(ascii: "E") || bytes[i - 1] == UInt8(ascii: "e"))
                    && (i < 2 || !isIdentifierByte(bytes[i - 2]))
                i = skipQuoted(bytes, from: i, quote: UInt8(ascii: "'"), backslashEscapes: escapes)
                continue
            case UInt8(ascii: "\""):
                meaningful = true
                i = skipQuoted(bytes, from: i, quote: UInt8(ascii: "\""), backslashEscapes: false)
                continue
            case UInt8(ascii: "$") where i == 0 || !isIdentifierByte(bytes[i - 1]):
                // $tag$ or $$; not a parameter ($1) and not part of an identifier (a$b).
                var j = i + 1
                while j < bytes.count, isIdentifierByte(bytes[j]), !(j == i + 1 && isDigit(bytes[j])) { j += 1 }
                if j < bytes.count, bytes[j] == UInt8(ascii: "$") {
                    meaningful = true
                    let tag = Array(bytes[i...j])
                    var k = j + 1
                    while k < bytes.count, !bytes[k...].starts(with: tag) { k += 1 }
                    i = min(bytes.count, k + tag.count)
                    continue
                }
                meaningful = true
            case UInt8(ascii: ";"):
                flush(i)
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\n"), UInt8(ascii: "\r"):
                break
            default:
                meaningful = true
            }
            i += 1
        }
        flush(bytes.count)
        return statements
    }

    /// The index after the closing quote of the quoted text opened at `from` (a doubled quote is one
    /// quote character; with `backslashEscapes`, a backslash escapes the next byte).
    private static func skipQuoted(_ bytes: [UInt8], from: Int, quote: UInt8, backslashEscapes: Bool) -> Int {
        var i = from + 1
        while i < bytes.count {
            if backslashEscapes, bytes[i] == UInt8(ascii: "\\") { i += 2; continue }
            if bytes[i] == quote {
                if i + 1 < bytes.count, bytes[i + 1] == quote { i += 2; continue }
                return i + 1
            }
            i += 1
        }
        return bytes.count
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    private static func isIdentifierByte(_ b: UInt8) -> Bool {
        isDigit(b) || (b >= UInt8(ascii: "a") && b <= UInt8(ascii: "z")) || (b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z"))
            || b == UInt8(ascii: "_") || b >= 0x80
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
