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

    /// A commit time (µs since 1970, UTC) as timestamptz text: `2026-11-22 10:15:00.123456+00`.
    public static func timestamptz(micros: Int64) -> String {
        let seconds = floorDiv(micros, 1_000_000)
        let fraction = micros - seconds * 1_000_000
        let (y, m, d) = civil(days: floorDiv(seconds, 86_400))
        let secondOfDay = seconds - floorDiv(seconds, 86_400) * 86_400
        var text = "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2)) \(pad(secondOfDay / 3600, 2)):\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2))"
        if fraction != 0 { text += "." + pad(fraction, 6) }
        return text + "+00"
    }

    /// The local date (`YYYY-MM-DD`) of a commit time.
    public func date(micros: Int64) -> String {
        let local = floorDiv(micros, 1_000_000) + offset(at: floorDiv(micros, 1_000_000))
        let (y, m, d) = Self.civil(days: floorDiv(local, 86_400))
        return "\(Self.pad(y, 4))-\(Self.pad(m, 2))-\(Self.pad(d, 2))"
    }

    /// The dim_date key (YYYYMMDD) and dim_time key (HHMM00) of a source timestamp value, in the
    /// warehouse's zone; nil for text that is not a finite date or timestamp.
    ///
    /// Accepts PostgreSQL's ISO output: `2026-11-22`, `2026-11-22 10:15:00[.ffffff]` (timestamp: taken
    /// as local wall time) and `2026-11-22 10:15:00[.ffffff]+05[:30[:00]]` (timestamptz: converted).
    public func keys(of text: String) -> (date: Int, time: Int)? {
        var utf8 = Array(text.utf8)
        var bc = false
        if utf8.count > 3, utf8.suffix(3) == Array(" BC".utf8) { bc = true; utf8.removeLast(3) }
        guard !bc, utf8.count >= 10, utf8[4] == UInt8(ascii: "-"), utf8[7] == UInt8(ascii: "-"),
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
        let days = Self.days(year: Int64(year), month: Int64(month), day: Int64(day))
        let utc = days * 86_400 + Int64(hour * 3600 + minute * 60 + second) - sign * offset
        let local = utc + self.offset(at: utc)
        let (y, m, d) = Self.civil(days: floorDiv(local, 86_400))
        let secondOfDay = local - floorDiv(local, 86_400) * 86_400
        return (Int(y) * 10_000 + Int(m) * 100 + Int(d), Int(secondOfDay / 3600) * 10_000 + Int(secondOfDay / 60 % 60) * 100)
    }

    // MARK: Civil calendar (proleptic Gregorian), after H. Hinnant's days_from_civil / civil_from_days.

    static func days(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }

    static func number(_ bytes: [UInt8], _ start: Int, _ count: Int) -> Int? {
        guard start + count <= bytes.count else { return nil }
        var value = 0
        for i in start..<(start + count) {
            let b = bytes[i]
            guard b >= 0x30, b <= 0x39 else { return nil }
            value = value * 10 + Int(b - 0x30)
        }
        return value
    }

    static func pad(_ value: Int64, _ width: Int) -> String {
        let s = String(value)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}

@inline(__always) func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
    a >= 0 ? a / b : -((-a + b - 1) / b)
}
