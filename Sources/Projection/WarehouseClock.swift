import EventLog
import Foundation

/// Dates and times as the warehouse writes them, in the warehouse's time zone (`[warehouse] timezone`).
///
/// Nothing here reads the wall clock: every time the warehouse holds is a source commit time from the
/// log or a timestamp value of a source row.
public struct WarehouseClock: Sendable {
    public let timeZone: TimeZone
    private let isUTC: Bool

    /// `identifier` is an IANA zone name such as `UTC` or `Europe/Paris`; nil when unknown.
    public init?(timeZone identifier: String) {
        guard let zone = TimeZone(identifier: identifier) else { return nil }
        timeZone = zone
        isUTC = zone.secondsFromGMT(for: Date(timeIntervalSince1970: 0)) == 0
            && zone.secondsFromGMT(for: Date(timeIntervalSince1970: 1_720_000_000)) == 0
            && zone.secondsFromGMT(for: Date(timeIntervalSince1970: 1_700_000_000)) == 0
    }

    /// Seconds to add to UTC for local time at `epochSeconds`.
    func offset(at epochSeconds: Int64) -> Int64 {
        if isUTC { return 0 }
        return Int64(timeZone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(epochSeconds))))
    }

    /// The local date (`YYYY-MM-DD`) of a commit time.
    public func date(micros: Int64) -> String {
        let utc = floorDiv(micros, 1_000_000)
        let local = utc + offset(at: utc)
        let (y, m, d) = CivilCalendar.date(days: floorDiv(local, 86_400))
        return "\(CivilCalendar.pad(y, 4))-\(CivilCalendar.pad(m, 2))-\(CivilCalendar.pad(d, 2))"
    }

    /// The dim_date key (YYYYMMDD) and dim_time key (HHMM00) of a source timestamp value, in the
    /// warehouse's zone; nil for text that is not a finite date or timestamp.
    ///
    /// Accepts PostgreSQL's ISO output: `2026-11-22`, `2026-11-22 10:15:00[.ffffff]` (timestamp: taken
    /// as local wall time) and `2026-11-22 10:15:00[.ffffff]+05[:30[:00]]` (timestamptz: converted).
    public func keys(of text: String) -> (date: Int, time: Int)? {
        var text = text
        return text.withUTF8 { keys(of: $0) }
    }

    /// The keys of a text given as its UTF-8 bytes (see the String form).
    func keys(of utf8: UnsafeBufferPointer<UInt8>) -> (date: Int, time: Int)? {
        guard !utf8.reversed().starts(with: " BC".utf8.reversed()), utf8.count >= 10, utf8[4] == UInt8(ascii: "-"), utf8[7] == UInt8(ascii: "-"),
              let year = Self.number(utf8, 0, 4), let month = Self.number(utf8, 5, 2), let day = Self.number(utf8, 8, 2) else { return nil }
        guard utf8.count >= 19, utf8[10] == UInt8(ascii: " "),
              let hour = Self.number(utf8, 11, 2), let minute = Self.number(utf8, 14, 2), let second = Self.number(utf8, 17, 2) else {
            return utf8.count == 10 ? (year * 10_000 + month * 100 + day, 0) : nil
        }
        var i = 19
        while i < utf8.count, utf8[i] == UInt8(ascii: ".") || (utf8[i] >= 0x30 && utf8[i] <= 0x39) { i += 1 }
        guard i < utf8.count else {
            return (year * 10_000 + month * 100 + day, hour * 10_000 + minute * 100)
        }
        // An offset: +HH, +HH:MM or +HH:MM:SS.
        let sign: Int64 = utf8[i] == UInt8(ascii: "-") ? -1 : 1
        guard utf8[i] == UInt8(ascii: "+") || utf8[i] == UInt8(ascii: "-"), let oh = Self.number(utf8, i + 1, 2) else { return nil }
        var offset = Int64(oh) * 3600
        if utf8.count >= i + 6, utf8[i + 3] == UInt8(ascii: ":"), let om = Self.number(utf8, i + 4, 2) { offset += Int64(om) * 60 }
        if utf8.count >= i + 9, utf8[i + 6] == UInt8(ascii: ":"), let os = Self.number(utf8, i + 7, 2) { offset += Int64(os) }
        let days = CivilCalendar.days(year: Int64(year), month: Int64(month), day: Int64(day))
        let utc = days * 86_400 + Int64(hour * 3600 + minute * 60 + second) - sign * offset
        let local = utc + self.offset(at: utc)
        let (y, m, d) = CivilCalendar.date(days: floorDiv(local, 86_400))
        let secondOfDay = local - floorDiv(local, 86_400) * 86_400
        return (Int(y) * 10_000 + Int(m) * 100 + Int(d), Int(secondOfDay / 3600) * 10_000 + Int(secondOfDay / 60 % 60) * 100)
    }

    static func number(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ count: Int) -> Int? {
        guard start + count <= bytes.count else { return nil }
        var value = 0
        for i in start..<(start + count) {
            let b = bytes[i]
            guard b >= 0x30, b <= 0x39 else { return nil }
            value = value * 10 + Int(b - 0x30)
        }
        return value
    }
}

@inline(__always) func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    a >= 0 ? a / b : -((-a + b - 1) / b)
}
