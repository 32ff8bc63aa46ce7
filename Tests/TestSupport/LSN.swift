/// A PostgreSQL LSN as PostgreSQL and the export print it, `X/Y` (hex halves), as a 64-bit position;
/// nil for anything else.
public func lsnValue(_ text: String?) -> UInt64? {
    guard let text else { return nil }
    let halves = text.split(separator: "/", omittingEmptySubsequences: false)
    guard halves.count == 2, let high = UInt64(halves[0], radix: 16), let low = UInt64(halves[1], radix: 16) else { return nil }
    return high << 32 | low
}
