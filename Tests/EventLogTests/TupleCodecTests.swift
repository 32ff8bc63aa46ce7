import EventLog
import Testing

/// The one tuple writer and reader: every datum kind, the empty tuple and long values round-trip
/// byte for byte, and malformed tuples are refused (as a ``RecordDecodingError`` naming the record).
@Suite(.timeLimit(.minutes(15))) struct TupleCodecTests {
    /// Records each visitor call, to check the reader's order and column numbers.
    struct Trace: TupleVisitor {
        var calls: [String] = []
        mutating func begin(columns: Int) { calls.append("begin \(columns)") }
        mutating func null(column: Int) { calls.append("n\(column)") }
        mutating func unchangedToast(column: Int) { calls.append("u\(column)") }
        mutating func text(column: Int, _ bytes: UnsafeRawBufferPointer) {
            calls.append("t\(column)=" + String(decoding: bytes, as: UTF8.self))
        }
    }

    func written(_ values: [Datum]) -> [UInt8] {
        var w = ByteWriter()
        TupleWriter.write(values, into: &w)
        return w.bytes
    }

    func read(_ bytes: [UInt8]) throws -> [Datum] {
        try bytes.withUnsafeBytes { buffer in
            var r = ByteReader(buffer)
            let values = try TupleReader.datums(&r)
            #expect(r.remaining == 0)
            return values
        }
    }

    @Test func everyDatumKindHasItsDocumentedBytes() throws {
        let values: [Datum] = [.null, .unchangedToast, .text(Array("ab".utf8)), .text([])]
        #expect(written(values) == [0x04, 0x6E, 0x75, 0x74, 0x02, 0x61, 0x62, 0x74, 0x00])
        #expect(try read(written(values)) == values)
        var trace = Trace()
        let count = try written(values).withUnsafeBytes { buffer in
            var r = ByteReader(buffer)
            return try TupleReader.read(&r, into: &trace)
        }
        #expect(count == 4)
        #expect(trace.calls == ["begin 4", "n0", "u1", "t2=ab", "t3="])
    }

    @Test func theStepByStepWriterWritesWhatTheWholeTupleWriterWrites() {
        var w = ByteWriter()
        TupleWriter.count(3, into: &w)
        TupleWriter.null(into: &w)
        TupleWriter.unchangedToast(into: &w)
        Array("x".utf8).withUnsafeBytes { TupleWriter.text($0, into: &w) }
        #expect(w.bytes == written([.null, .unchangedToast, .text(Array("x".utf8))]))
        var legacy = ByteWriter()
        RecordCodec.writeTuple([.null, .unchangedToast, .text(Array("x".utf8))], to: &legacy)
        #expect(legacy.bytes == w.bytes)
    }

    @Test func emptyTupleIsOneZeroByte() throws {
        #expect(written([]) == [0x00])
        #expect(try read([0x00]) == [])
    }

    @Test func longValuesAndManyColumnsRoundTrip() throws {
        let long = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let values: [Datum] = [.text(long), .null, .text(Array(repeating: 0x7A, count: 128))]
        let bytes = written(values)
        #expect(bytes.count == 1 + (1 + 3 + long.count) + 1 + (1 + 2 + 128))
        #expect(try read(bytes) == values)
        let wide = (0..<1000).map { $0 % 3 == 0 ? Datum.null : $0 % 3 == 1 ? .unchangedToast : .text(Array("\($0)".utf8)) }
        #expect(try read(written(wide)) == wide)
    }

    @Test func malformedTuplesAreRefused() {
        let cases: [(String, [UInt8])] = [
            ("unknown datum kind 66", [0x01, 0x42]),
            ("column count 5", [0x05, 0x6E]),
            ("record is truncated", [0x02, 0x74, 0x01]),
            ("record is truncated", [0x01, 0x74, 0x05, 0x61]),
            ("record is truncated", []),
        ]
        for (reason, bytes) in cases {
            #expect(throws: FormatError.self) { try read(bytes) }
            do { _ = try read(bytes); Issue.record("\(bytes) decoded") } catch { #expect("\(error)".contains(reason), "\(error)") }
            // Inside a record, the same bytes throw a RecordDecodingError naming the record.
            let header = Record(header: RecordHeader(op: .insert, lsn: LSN(1), xid: 2, commitTime: 3, relationSeq: 1), body: .truncate)
            let record = RecordCodec.encode(header) + bytes
            let result = record.withUnsafeBytes { buffer in
                Result { () throws(RecordDecodingError) -> Record in try RecordCodec.decode(buffer, seq: 7) }
            }
            guard case .failure(let error) = result else { Issue.record("record with \(bytes) decoded"); continue }
            #expect(error == RecordDecodingError(seq: 7, reason: reasonOf(bytes), file: nil))
            #expect("\(error)".contains(reason), "\(error)")
        }
    }

    func reasonOf(_ bytes: [UInt8]) -> FormatError {
        do { _ = try read(bytes) } catch let error as FormatError { return error } catch {}
        return .truncated
    }
}
