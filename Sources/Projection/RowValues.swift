/// A warehouse row's values as PostgreSQL text (nil: NULL), in one byte buffer: per column the end of
/// its bytes, then the bytes. Also a source row image as a log record holds it, where a value may
/// be an unchanged TOASTed one (``isUnchanged(_:)``, read as NULL): folded from its bytes, with a
/// String made only for a value that needs one.
///
/// A fact row used to be an array of Strings. Freeing one read every element to release it, in
/// memory gone cold by the time a batch was done (a fifth of the fold's thread), and COPY retained each
/// value to read it. This buffer is freed without being read, and the COPY encoders read its bytes in
/// place. Built by a ``Builder`` (one allocation per row), which also makes a changed copy of a row.
struct RowValues: Equatable, Sendable {
    /// `count` little-endian UInt32 words, the end of each value's bytes past the words (the high bit
    /// set for NULL, the next one too for unchanged TOAST), then the values' bytes one after another.
    private var storage: [UInt8]
    let count: Int

    private static let null: UInt32 = 0x8000_0000
    private static let unchanged: UInt32 = 0x4000_0000
    private static let end: UInt32 = 0x3FFF_FFFF

    init(_ values: [String?]) {
        var builder = Builder()
        builder.reset(values.count)
        for (i, value) in values.enumerated() { builder.set(i, value) }
        self = builder.build()
    }

    fileprivate init(storage: [UInt8], count: Int) {
        self.storage = storage
        self.count = count
    }

    /// The values as Strings.
    var values: [String?] { (0..<count).map { self[$0] } }

    var indices: Range<Int> { 0..<count }

    /// Value `i`.
    subscript(i: Int) -> String? {
        withValue(i) { $0.map { String(decoding: $0, as: UTF8.self) } }
    }

    /// Whether value `i` is `text` (both NULL, or the same bytes), without making a String.
    func value(_ i: Int, equals text: String?) -> Bool {
        withValue(i) { bytes in
            guard let bytes, var text else { return bytes == nil && text == nil }
            return text.withUTF8 { $0.elementsEqual(bytes) }
        }
    }

    /// Value `i` is an unchanged TOASTed value (of a source row image).
    func isUnchanged(_ i: Int) -> Bool { withReader { $0.isUnchanged(i) } }

    /// Value `i` as the projectors read a source value.
    func incoming(_ i: Int) -> Incoming {
        withReader { reader in
            if reader.isUnchanged(i) { return .unchanged }
            return .value(reader.bytes(i).map { String(decoding: $0, as: UTF8.self) })
        }
    }

    /// Calls `body` with value `i`'s bytes, nil for NULL.
    func withValue<R>(_ i: Int, _ body: (UnsafeBufferPointer<UInt8>?) -> R) -> R {
        withReader { body($0.bytes(i)) }
    }

    /// Calls `body` with a reader of the values in place.
    func withReader<R>(_ body: (Reader) -> R) -> R {
        storage.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else {
                // A row of no columns: an empty array may have no storage to point at.
                return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { body(Reader(base: UnsafePointer($0.baseAddress!), count: 0)) }
            }
            return body(Reader(base: base, count: count))
        }
    }

    /// The values of a row in place (valid only inside ``withReader(_:)``).
    struct Reader {
        let base: UnsafePointer<UInt8>
        let count: Int

        @inline(__always) private func word(_ i: Int) -> UInt32 {
            UnsafeRawPointer(base + 4 * i).loadUnaligned(as: UInt32.self).littleEndian
        }

        /// Where value `i`'s bytes start, past the words.
        @inline(__always) func start(_ i: Int) -> Int { i == 0 ? 0 : Int(word(i - 1) & RowValues.end) }

        @inline(__always) func isUnchanged(_ i: Int) -> Bool { word(i) & RowValues.unchanged != 0 }

        /// Value `i`'s bytes, nil for NULL.
        @inline(__always) func bytes(_ i: Int) -> UnsafeBufferPointer<UInt8>? {
            let end = word(i)
            guard end & RowValues.null == 0 else { return nil }
            let start = start(i)
            return UnsafeBufferPointer(start: base + 4 * count + start, count: Int(end) - start)
        }

        /// Every value's bytes, one after another.
        var data: UnsafeBufferPointer<UInt8> {
            UnsafeBufferPointer(start: base + 4 * count, count: count == 0 ? 0 : start(count))
        }
    }

    /// This row with `values` before its own.
    func prepending(_ values: [String?]) -> RowValues {
        var builder = Builder()
        builder.reset(values.count + count)
        for (i, value) in values.enumerated() { builder.set(i, value) }
        withReader { reader in
            for i in 0..<count { builder.set(values.count + i, reader.bytes(i)) }
        }
        return builder.build()
    }

    /// Assembles rows: values set in any order (a later set of a column wins), then ``build()`` copies
    /// them into one row. Keep one and ``reset(_:)`` it per row: its buffers are reused.
    struct Builder {
        private var data: [UInt8] = []
        /// Per column: start in `data` and length; length -1 for NULL, -2 for unchanged TOAST.
        private var spans: [(start: Int32, length: Int32)] = []

        init() {}

        /// Starts a row of `count` NULLs.
        mutating func reset(_ count: Int) {
            data.removeAll(keepingCapacity: true)
            spans.removeAll(keepingCapacity: true)
            spans.append(contentsOf: repeatElement((start: Int32(0), length: Int32(-1)), count: count))
        }

        /// Starts from `row`'s values.
        mutating func load(_ row: RowValues) {
            reset(row.count)
            row.withReader { reader in
                data.append(contentsOf: reader.data)
                for i in 0..<row.count {
                    guard let bytes = reader.bytes(i) else {
                        if reader.isUnchanged(i) { spans[i] = (0, -2) }
                        continue
                    }
                    spans[i] = (Int32(reader.start(i)), Int32(bytes.count))
                }
            }
        }

        mutating func setUnchanged(_ i: Int) { spans[i] = (0, -2) }

        mutating func set(_ i: Int, _ value: String?) {
            guard var value else { spans[i] = (0, -1); return }
            value.withUTF8 { set(i, $0) }
        }

        mutating func set(_ i: Int, _ bytes: UnsafeBufferPointer<UInt8>?) {
            guard let bytes else { spans[i] = (0, -1); return }
            precondition(data.count + bytes.count <= Int(RowValues.end), "a row of more than the 1 GiB a row's buffer addresses")
            spans[i] = (Int32(data.count), Int32(bytes.count))
            data.append(contentsOf: bytes)
        }

        /// Sets value `i` to the decimal text of `n`.
        mutating func set(_ i: Int, integer n: Int64) {
            let start = data.count
            if n < 0 { data.append(UInt8(ascii: "-")) }
            var magnitude = n.magnitude
            let digits = data.count
            repeat {
                data.append(UInt8(ascii: "0") + UInt8(magnitude % 10))
                magnitude /= 10
            } while magnitude > 0
            data[digits...].reverse()
            spans[i] = (Int32(start), Int32(data.count - start))
        }

        /// Value `i` as set so far, nil for NULL.
        func value(_ i: Int) -> String? {
            let span = spans[i]
            guard span.length >= 0 else { return nil }
            return data.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[Int(span.start)..<Int(span.start + span.length)]), as: UTF8.self) }
        }

        /// The row.
        func build() -> RowValues {
            let count = spans.count
            var total = 0
            for span in spans where span.length > 0 { total += Int(span.length) }
            // PostgreSQL caps a value at 1 GB, and a row COPY sends at 1 GB less its framing.
            precondition(total <= Int(RowValues.end), "a row of \(total) bytes: more than the 1 GiB a row's buffer addresses")
            let storage = [UInt8](unsafeUninitializedCapacity: 4 * count + total) { buffer, initialized in
                let base = buffer.baseAddress!
                var end = 0
                data.withUnsafeBufferPointer { source in
                    for (i, span) in spans.enumerated() {
                        let word: UInt32
                        if span.length < 0 {
                            word = UInt32(end) | RowValues.null | (span.length == -2 ? RowValues.unchanged : 0)
                        } else {
                            if span.length > 0 {
                                (base + 4 * count + end).update(from: source.baseAddress! + Int(span.start), count: Int(span.length))
                            }
                            end += Int(span.length)
                            word = UInt32(end)
                        }
                        UnsafeMutableRawPointer(base + 4 * i).storeBytes(of: word.littleEndian, as: UInt32.self)
                    }
                }
                initialized = 4 * count + total
            }
            return RowValues(storage: storage, count: count)
        }
    }
}
