/// Appends JSON text to a byte buffer: strings escaped per RFC 8259, nothing else interpreted.
public struct JSONWriter {
    public var bytes: [UInt8] = []

    public init(capacity: Int = 1 << 16) { bytes.reserveCapacity(capacity) }

    @inline(__always) public mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    @inline(__always) public mutating func raw(_ s: String) {
        bytes.append(contentsOf: s.utf8)
    }

    @inline(__always) public mutating func raw<C: Collection>(_ c: C) where C.Element == UInt8 {
        bytes.append(contentsOf: c)
    }

    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { string(UnsafeRawBufferPointer($0)) }
    }

    public mutating func string(_ utf8: UnsafeRawBufferPointer) {
        bytes.append(0x22)
        var runStart = 0
        for i in 0..<utf8.count {
            let c = utf8[i]
            if c >= 0x20 && c != 0x22 && c != 0x5C { continue }
            if runStart < i { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: utf8[runStart..<i])) }
            runStart = i + 1
            switch c {
            case 0x22: raw("\\\"")
            case 0x5C: raw("\\\\")
            case 0x0A: raw("\\n")
            case 0x0D: raw("\\r")
            case 0x09: raw("\\t")
            case 0x08: raw("\\b")
            case 0x0C: raw("\\f")
            default:
                raw("\\u00")
                bytes.append(Self.hex[Int(c >> 4)])
                bytes.append(Self.hex[Int(c & 0xF)])
            }
        }
        if runStart < utf8.count { bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: utf8[runStart..<utf8.count])) }
        bytes.append(0x22)
    }

    public mutating func string(_ utf8: [UInt8]) {
        utf8.withUnsafeBytes { string($0) }
    }

    public mutating func number<T: BinaryInteger>(_ n: T) { raw(String(n)) }

    static let hex: [UInt8] = Array("0123456789abcdef".utf8)
}

/// RFC 3339 UTC text for microseconds since 1970: `2026-11-22T01:51:41.123456Z`.
public func rfc3339(microseconds: Int64) -> String {
    var seconds = microseconds / 1_000_000
    var micros = microseconds % 1_000_000
    if micros < 0 { micros += 1_000_000; seconds -= 1 }
    var days = seconds / 86_400
    var secondOfDay = seconds % 86_400
    if secondOfDay < 0 { secondOfDay += 86_400; days -= 1 }
    let (year, month, day) = CivilCalendar.date(days: days)
    let pad = CivilCalendar.pad
    return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(micros, 6))Z"
}
