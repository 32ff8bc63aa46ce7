/// Bytes from hex digits (spaces allowed, for grouping fields); for expected values pasted from a spec
/// or from a tool's output. Traps on anything else: a typo in a test's literal is the test's bug.
public func bytes(hex text: String) -> [UInt8] {
    let digits = text.utf8.filter { $0 != 0x20 && $0 != 0x0A }
    precondition(digits.count % 2 == 0, "odd number of hex digits in \(text)")
    func value(_ c: UInt8) -> UInt8 {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: preconditionFailure("not a hex digit in \(text)")
        }
    }
    return stride(from: 0, to: digits.count, by: 2).map { value(digits[$0]) << 4 | value(digits[$0 + 1]) }
}
