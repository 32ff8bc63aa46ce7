import EventLog
import Testing

/// Decoding bytes read from a damaged file: every short or garbled buffer throws a
/// ``RecordDecodingError`` naming the record (seq and file) — it never traps, whatever the lengths and
/// counts inside say.
@Suite(.timeLimit(.minutes(15))) struct RecordDecodingTests {
    static let records: [Record] = EventLogFormatTests.encodings.map(\.1) + [
        Record(header: RecordHeader(op: .message, flags: [.transactional, .endOfTransaction], lsn: LSN(77), xid: 9, commitTime: 5, relationSeq: 0),
               body: .message(prefix: "audit", content: Array("nightly check".utf8))),
        Record(header: RecordHeader(op: .insert, lsn: LSN(78), xid: 10, commitTime: 6, relationSeq: 2),
               body: .row(old: .none, before: nil, after: [.text(Array(repeating: 0x41, count: 300)), .null, .unchangedToast])),
        Record(header: RecordHeader(op: .delete, flags: .endOfTransaction, lsn: LSN(79), xid: 11, commitTime: 7, relationSeq: 2),
               body: .row(old: .row, before: [.text([0x31]), .text([])], after: nil)),
    ]

    /// Decodes `bytes` as record `seq`: the record, or the RecordDecodingError naming it (any other
    /// error fails the test).
    func decode(_ bytes: [UInt8], seq: UInt64 = 41) -> Result<Record, RecordDecodingError> {
        bytes.withUnsafeBytes { buffer in
            Result { () throws(RecordDecodingError) -> Record in try RecordCodec.decode(buffer, seq: seq, file: "/x/data.mdb") }
        }
    }

    @Test func everyCutShortRecordThrowsNamingItsSeq() throws {
        for record in Self.records {
            let bytes = RecordCodec.encode(record)
            #expect(try decode(bytes).get() == record)
            for length in 0..<bytes.count {
                guard case .failure(let error) = decode(Array(bytes.prefix(length)), seq: UInt64(length)) else {
                    Issue.record("\(length) of \(bytes.count) bytes of \(record.header.op) decoded")
                    continue
                }
                #expect(error.seq == UInt64(length))
                #expect(error.description.hasPrefix("log /x/data.mdb is damaged: record \(length) cannot be decoded ("), "\(error)")
            }
        }
    }

    @Test func garbledLengthsAndCountsThrowInsteadOfTrapping() throws {
        // Every byte of every record replaced by each of a few values: huge varint lengths and column
        // counts, unknown ops and datum kinds, trailing bytes.
        for record in Self.records {
            let bytes = RecordCodec.encode(record)
            for position in bytes.indices {
                for value: UInt8 in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                    var garbled = bytes
                    garbled[position] = value
                    if case .failure(let error) = decode(garbled) { #expect(error.seq == 41) }
                }
            }
            // Ten-byte varints (more than 64 bits) in place of the relation seq.
            let long = Array(bytes.prefix(22)) + [UInt8](repeating: 0xFF, count: 10) + [0x01]
            #expect(throws: RecordDecodingError.self) { try decode(long).get() }
        }
    }

    @Test func randomBytesThrowInsteadOfTrapping() {
        var state: UInt64 = 0x5EED
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var decoded = 0
        for round in 0..<20_000 {
            // Start from a valid op byte half of the time so that decoding goes past the header.
            var bytes = (0..<Int(next() % 64)).map { _ in UInt8(truncatingIfNeeded: next()) }
            if round % 2 == 0, !bytes.isEmpty { bytes[0] = UInt8(next() % 8) }
            if case .success = decode(bytes) { decoded += 1 }
        }
        #expect(decoded < 20_000)
    }

    @Test func aGarbledMerkleFrontierThrows() {
        // 255 nodes of height 63 would sum past 2^64 leaves.
        var bytes = [UInt8](repeating: 0xFF, count: 8) + [0xFF]
        for _ in 0..<255 { bytes += [63] + [UInt8](repeating: 0, count: 32) }
        #expect(throws: FormatError.self) { try bytes.withUnsafeBytes { try MerkleFrontier(encoded: $0) } }
        #expect(throws: FormatError.self) { try [UInt8]([0, 0, 0, 0, 0, 0, 0, 1, 1, 0]).withUnsafeBytes { try MerkleFrontier(encoded: $0) } }
    }
}
