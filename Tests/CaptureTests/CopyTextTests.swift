@testable import Capture
import EventLog
import Testing

/// `COPY ... TO STDOUT` text format, as the PostgreSQL documentation of COPY ("Text Format") defines
/// it: fields separated by tabs, `\N` for NULL, and backslash escapes \b \f \n \r \t \v, \digits (one to
/// three octal digits), \xdigits (one or two hex digits); any other backslashed character stands for
/// itself.
@Suite(.timeLimit(.minutes(15))) struct CopyTextTests {
    /// The row as the log's tuple, read back with the log's decoder.
    static func row(_ line: String, columns: Int, protecting methods: [PrivacyPolicy.Method?]? = nil,
                    with protector: ColumnProtector? = nil) throws -> [Datum] {
        var w = ByteWriter()
        var scratch: [UInt8] = []
        try Array(line.utf8).withUnsafeBytes {
            try CopyTextRow.transcode($0, columns: columns, into: &w, scratch: &scratch, protecting: methods, with: protector)
        }
        return try w.bytes.withUnsafeBytes { buffer in
            var r = ByteReader(buffer)
            let datums = try RecordCodec.decodeTuple(&r)
            #expect(r.remaining == 0)
            return datums
        }
    }

    static func unescaped(_ field: String) throws -> [UInt8] {
        var out: [UInt8] = []
        try Array(field.utf8).withUnsafeBytes { try CopyTextRow.unescape($0, into: &out) }
        return out
    }

    @Test func everyDocumentedEscape() throws {
        let cases: [(String, [UInt8])] = [
            (#"\b"#, [0x08]), (#"\f"#, [0x0C]), (#"\n"#, [0x0A]), (#"\r"#, [0x0D]), (#"\t"#, [0x09]), (#"\v"#, [0x0B]),
            (#"\\"#, [0x5C]),
            (#"\0"#, [0x00]), (#"\7"#, [0x07]), (#"\12"#, [0x0A]), (#"\101"#, [0x41]), (#"\1011"#, [0x41, 0x31]),  // at most three octal digits
            (#"\18"#, [0x01, 0x38]),  // 8 is not octal
            (#"\x41"#, [0x41]), (#"\x4"#, [0x04]), (#"\x4g"#, [0x04, 0x67]), (#"\x414"#, [0x41, 0x34]),  // at most two hex digits
            (#"\xfF"#, [0xFF]), (#"\xg"#, [0x78, 0x67]),  // \x without a hex digit: the x itself
            (#"\N"#, [0x4E]), (#"\q"#, [0x71]), (#"\."#, [0x2E]),  // any other character stands for itself
            ("plain", Array("plain".utf8)), ("é", [0xC3, 0xA9]),
            (#"a\tb\\c\nd"#, [0x61, 0x09, 0x62, 0x5C, 0x63, 0x0A, 0x64]),
        ]
        for (field, expected) in cases {
            #expect(try Self.unescaped(field) == expected, "\(field)")
        }
    }

    @Test func fieldsNullsAndEscapesInARow() throws {
        let line = "1\t\\N\tcol\\twith tab\t\t\\\\N\tline\\nbreak\n"
        #expect(try Self.row(line, columns: 6) == [
            .text(Array("1".utf8)), .null, .text(Array("col\twith tab".utf8)), .text([]),
            .text(Array(#"\N"#.utf8)),  // an escaped backslash then N: the two characters, not NULL
            .text(Array("line\nbreak".utf8)),
        ])
        #expect(try Self.row("\\N", columns: 1) == [.null])
        #expect(try Self.row("", columns: 1) == [.text([])], "one empty field")
        #expect(try Self.row("x\\Ny", columns: 1) == [.text(Array("xNy".utf8))], "\\N inside a field is not NULL")
    }

    @Test func wrongFieldCountsAreRefused() {
        #expect(throws: CaptureError.self) { try Self.row("1\t2\t3", columns: 2) }
        #expect(throws: CaptureError.self) { try Self.row("1", columns: 2) }
    }

    @Test func protectedColumnsAreUnescapedBeforeHashing() throws {
        let protector = try ColumnProtector(columns: ["public.t.secret": .hash], key: ColumnProtectorTests.key)
        let datums = try Self.row("1\ta\\tb\t\\N", columns: 3, protecting: [nil, .hash, .hash], with: protector)
        // HMAC-SHA-256 of "a<TAB>b": printf 'a\tb' | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f
        #expect(datums == [.text(Array("1".utf8)), .text(Array("523f00b4c1faa9ae2f5171109dd2751b755a15d4a35ee25d7a37002a9125a73f".utf8)), .null])
    }
}
