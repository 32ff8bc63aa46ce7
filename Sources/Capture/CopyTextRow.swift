import EventLog

/// Parses rows of `COPY ... TO STDOUT` in text format: tab-separated fields, `\N` for NULL and
/// backslash escapes. The field values are the same output-function text that pgoutput sends.
enum CopyTextRow {
    /// Transcodes one row (with or without its trailing newline) into the log's tuple encoding.
    /// Columns `methods` names are protected by `protector`.
    static func transcode(_ row: UnsafeRawBufferPointer, columns: Int, into w: inout ByteWriter, scratch: inout [UInt8],
                          protecting methods: [PrivacyPolicy.Method?]? = nil, with protector: ColumnProtector? = nil) throws {
        var end = row.count
        if end > 0, row[end - 1] == 0x0A { end -= 1 }
        TupleWriter.count(columns, into: &w)
        var index = 0
        var fields = 0
        while true {
            var fieldEnd = index
            while fieldEnd < end, row[fieldEnd] != 0x09 { fieldEnd += 1 }
            fields += 1
            guard fields <= columns else { throw CaptureError.protocolViolation("COPY row has more than \(columns) fields") }
            let field = UnsafeRawBufferPointer(rebasing: row[index..<fieldEnd])
            if field.count == 2, field[0] == 0x5C, field[1] == 0x4E {  // \N
                TupleWriter.null(into: &w)
            } else if let methods, fields <= methods.count, let method = methods[fields - 1], let protector {
                scratch.removeAll(keepingCapacity: true)
                try unescape(field, into: &scratch)
                scratch.withUnsafeBytes { protector.write(method, value: $0, into: &w) }
            } else if !field.contains(0x5C) {
                TupleWriter.text(field, into: &w)
            } else {
                scratch.removeAll(keepingCapacity: true)
                try unescape(field, into: &scratch)
                scratch.withUnsafeBytes { TupleWriter.text($0, into: &w) }
            }
            if fieldEnd >= end { break }
            index = fieldEnd + 1
        }
        guard fields == columns else { throw CaptureError.protocolViolation("COPY row has \(fields) fields, expected \(columns)") }
    }

    static func unescape(_ field: UnsafeRawBufferPointer, into out: inout [UInt8]) throws {
        var i = 0
        while i < field.count {
            let c = field[i]
            guard c == 0x5C, i + 1 < field.count else { out.append(c); i += 1; continue }
            let e = field[i + 1]
            i += 2
            switch e {
            case 0x62: out.append(0x08)  // \b
            case 0x66: out.append(0x0C)  // \f
            case 0x6E: out.append(0x0A)  // \n
            case 0x72: out.append(0x0D)  // \r
            case 0x74: out.append(0x09)  // \t
            case 0x76: out.append(0x0B)  // \v
            case 0x30...0x37:  // \ooo
                var value = Int(e - 0x30)
                var digits = 1
                while digits < 3, i < field.count, (0x30...0x37).contains(field[i]) {
                    value = value * 8 + Int(field[i] - 0x30)
                    i += 1
                    digits += 1
                }
                out.append(UInt8(truncatingIfNeeded: value))
            case 0x78:  // \xhh
                var value = 0
                var digits = 0
                while digits < 2, i < field.count, let h = hexValue(field[i]) {
                    value = value * 16 + h
                    i += 1
                    digits += 1
                }
                if digits == 0 { out.append(0x78) } else { out.append(UInt8(value)) }
            default: out.append(e)
            }
        }
    }

    static func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case 0x30...0x39: Int(c - 0x30)
        case 0x41...0x46: Int(c - 0x41 + 10)
        case 0x61...0x66: Int(c - 0x61 + 10)
        default: nil
        }
    }
}
