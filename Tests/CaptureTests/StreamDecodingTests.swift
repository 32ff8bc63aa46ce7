@testable import Capture
import EventLog
import Foundation
import Testing

/// Protocol 2's stream messages, written field by field from "Logical Replication Message Formats"
/// (PostgreSQL 15): Stream Start/Stop/Commit/Abort, and the xid that change messages carry inside a
/// stream block. Plus the in-flight bookkeeping of ``StreamedTransactions`` (no server needed).
@Suite(.timeLimit(.minutes(15))) struct StreamDecodingTests {
    static let pgEpoch: Int64 = 946_684_800_000_000

    @Test func streamStartAndStop() throws {
        var first = PgWire("S")
        first.int32(1234)
        first.byte(1)
        try decoded(first) { message in
            guard case .streamStart(let xid, let isFirst) = message else { Issue.record("\(message)"); return }
            #expect(xid == 1234 && isFirst)
        }
        var later = PgWire("S")
        later.int32(0xFFFF_FFF0)
        later.byte(0)
        try decoded(later) { message in
            guard case .streamStart(let xid, let isFirst) = message else { Issue.record("\(message)"); return }
            #expect(xid == 0xFFFF_FFF0 && !isFirst)
        }
        try decoded(PgWire("E")) { message in
            guard case .streamStop = message else { Issue.record("\(message)"); return }
        }
    }

    @Test func streamCommit() throws {
        var w = PgWire("c")
        w.int32(77)
        w.byte(0)
        w.int64(0x1_0000_0100)
        w.int64(0x1_0000_0180)
        w.int64(5_000_000)
        try decoded(w) { message in
            guard case .streamCommit(let xid, let flags, let commit, let end, let time) = message else { Issue.record("\(message)"); return }
            #expect(xid == 77 && flags == 0)
            #expect(commit == LSN(0x1_0000_0100) && end == LSN(0x1_0000_0180))
            #expect(time == 5_000_000 + Self.pgEpoch)
        }
        var short = PgWire("c")
        short.int32(77)
        short.byte(0)
        short.int64(1)
        #expect(throws: CaptureError.self) { try decoded(short) { _ in } }
    }

    @Test func streamAbortOfTransactionAndOfSubtransaction() throws {
        var top = PgWire("A")
        top.int32(900)
        top.int32(900)
        try decoded(top) { message in
            guard case .streamAbort(let xid, let subxid) = message else { Issue.record("\(message)"); return }
            #expect(xid == 900 && subxid == 900)
        }
        var sub = PgWire("A")
        sub.int32(900)
        sub.int32(905)
        try decoded(sub) { message in
            guard case .streamAbort(let xid, let subxid) = message else { Issue.record("\(message)"); return }
            #expect(xid == 900 && subxid == 905)
        }
    }

    /// Inside a block, I/U/D/T/R/Y/M carry an Int32 xid after the type byte; decode(inStream:) skips it
    /// and streamedXid reads it. Outside a block the same bytes would be misread.
    @Test func changeMessagesCarryTheirXidInsideABlock() throws {
        var insert = PgWire("I")
        insert.int32(905)  // the subtransaction's own xid
        insert.int32(16384)
        insert.tag("N")
        insert.tuple([.text("1"), .null])
        try insert.bytes.withUnsafeBytes { buffer in
            #expect(try PgOutputMessage.streamedXid(buffer) == 905)
            guard case .insert(let oid, let new) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not an insert"); return }
            #expect(oid == 16384)
            #expect(try values(new) == [.text(Array("1".utf8)), .null])
        }

        var update = PgWire("U")
        update.int32(900)
        update.int32(16384)
        update.tag("K")
        update.tuple([.text("1")])
        update.tag("N")
        update.tuple([.text("2"), .unchangedToast])
        try update.bytes.withUnsafeBytes { buffer in
            #expect(try PgOutputMessage.streamedXid(buffer) == 900)
            guard case .update(let oid, let old, let oldTuple, _) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not an update"); return }
            #expect(oid == 16384 && old == .key && oldTuple != nil)
        }

        var delete = PgWire("D")
        delete.int32(900)
        delete.int32(16385)
        delete.tag("O")
        delete.tuple([.text("9")])
        try delete.bytes.withUnsafeBytes { buffer in
            guard case .delete(let oid, let old, _) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not a delete"); return }
            #expect(oid == 16385 && old == .row)
        }

        var truncate = PgWire("T")
        truncate.int32(900)
        truncate.int32(2)
        truncate.byte(3)
        truncate.int32(16384)
        truncate.int32(16385)
        try truncate.bytes.withUnsafeBytes { buffer in
            guard case .truncate(let options, let oids) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not a truncate"); return }
            #expect(options == 3 && oids == [16384, 16385])
        }

        var relation = PgWire("R")
        relation.int32(901)
        relation.int32(16384)
        relation.string("public")
        relation.string("t")
        relation.byte(0x64)
        relation.int16(1)
        relation.byte(1)
        relation.string("id")
        relation.int32(23)
        relation.int32(0xFFFF_FFFF)
        try relation.bytes.withUnsafeBytes { buffer in
            #expect(try PgOutputMessage.streamedXid(buffer) == 901)
            guard case .relation(let oid, let namespace, let name, _, let columns) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not a relation"); return }
            #expect(oid == 16384 && namespace == "public" && name == "t" && columns.count == 1 && columns[0].isKey)
        }

        var type = PgWire("Y")
        type.int32(900)
        type.int32(70000)
        type.string("public")
        type.string("mood")
        try type.bytes.withUnsafeBytes { buffer in
            guard case .type(let oid, _, let name) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not a type"); return }
            #expect(oid == 70000 && name == "mood")
        }

        var message = PgWire("M")
        message.int32(900)
        message.byte(1)
        message.int64(0x500)
        message.string("app")
        message.int32(2)
        message.bytes += [0x68, 0x69]
        try message.bytes.withUnsafeBytes { buffer in
            guard case .message(let transactional, let lsn, let prefix, let content) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not a message"); return }
            #expect(transactional && lsn == LSN(0x500) && prefix == "app" && Array(content) == [0x68, 0x69])
        }

        // Messages without the field: streamedXid says so.
        var origin = PgWire("O")
        origin.int64(0)
        origin.string("upstream")
        try origin.bytes.withUnsafeBytes { buffer in
            #expect(try PgOutputMessage.streamedXid(buffer) == nil)
            guard case .origin(_, let name) = try PgOutputMessage.decode(buffer, inStream: true) else { Issue.record("not an origin"); return }
            #expect(name == "upstream")
        }
    }

    // MARK: StreamedTransactions

    static func temporaryLog() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("inflight-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func insert(_ xid: UInt32, _ value: String) -> [UInt8] {
        var w = PgWire("I")
        w.int32(xid)
        w.int32(16384)
        w.tag("N")
        w.tuple([.text(value)])
        return w.bytes
    }

    static func relation(_ xid: UInt32) -> [UInt8] {
        var w = PgWire("R")
        w.int32(xid)
        w.int32(16384)
        w.string("public")
        w.string("t")
        w.byte(0x64)
        w.int16(1)
        w.byte(1)
        w.string("v")
        w.int32(25)
        w.int32(0xFFFF_FFFF)
        return w.bytes
    }

    /// The values of the inserts a transaction replays, and the tags of all its messages, in order.
    static func replayed(_ s: StreamedTransactions, _ xid: UInt32) throws -> (tags: [Character], values: [String]) {
        var tags: [Character] = []
        var result: [String] = []
        var cursor: UInt64?
        while true {
            let chunk = try s.chunk(xid: xid, after: cursor, maxBytes: 64)
            if chunk.isEmpty { break }
            cursor = chunk.last
            try chunk.bytes.withUnsafeBytes { all in
                for range in chunk.ranges {
                    let message = try PgOutputMessage.decode(UnsafeRawBufferPointer(rebasing: all[range]))
                    tags.append(Character(UnicodeScalar(all[range.lowerBound])))
                    if case .insert(_, let new) = message, case .text(let bytes) = try values(new)[0] {
                        result.append(String(decoding: bytes, as: UTF8.self))
                    }
                }
            }
        }
        return (tags, result)
    }

    static func add(_ s: StreamedTransactions, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try s.add($0) }
        if s.needsSpill { try s.spill() }
    }

    /// Interleaved transactions, spilled (a tiny memory limit) and in memory; a subtransaction abort
    /// drops only that subtransaction's changes and keeps the relation message it carried; a top-level
    /// abort drops all; what replays is the protocol-1 form, in arrival order.
    @Test(arguments: [1 << 20, 100]) func interleavedTransactionsSubtransactionAbortAndSpill(memoryLimit: Int) throws {
        let log = try Self.temporaryLog()
        defer { try? FileManager.default.removeItem(atPath: log) }
        let s = StreamedTransactions(logPath: log, memoryLimit: memoryLimit)
        try s.reset()
        try s.startBlock(xid: 10, firstSegment: true)
        try Self.add(s, Self.relation(11))      // carried by subxact 11, which aborts later
        try Self.add(s, Self.insert(11, "a-sub"))
        try Self.add(s, Self.insert(10, "a1"))
        try s.stopBlock()
        try s.startBlock(xid: 20, firstSegment: true)
        try Self.add(s, Self.relation(20))
        try Self.add(s, Self.insert(20, "b1"))
        try s.stopBlock()
        try s.startBlock(xid: 10, firstSegment: false)
        try Self.add(s, Self.insert(12, "a-sub2"))
        try Self.add(s, Self.insert(10, "a2"))
        try s.stopBlock()
        #expect(s.openCount == 2)

        try s.abort(xid: 10, subxid: 11)
        let a = try Self.replayed(s, 10)
        #expect(a.values == ["a1", "a-sub2", "a2"])
        #expect(a.tags == ["R", "I", "I", "I"])  // the relation stays
        #expect(try Self.replayed(s, 20).values == ["b1"])

        try s.finish(xid: 10)
        #expect(try Self.replayed(s, 10).values == [])
        #expect(try Self.replayed(s, 20).values == ["b1"])
        try s.abort(xid: 20, subxid: 20)
        #expect(s.openCount == 0)
        #expect(try Self.replayed(s, 20).values == [])

        // A later segment of a transaction never started in this session is refused.
        #expect(throws: CaptureError.self) { try s.startBlock(xid: 30, firstSegment: false) }
        // reset forgets everything.
        try s.startBlock(xid: 40, firstSegment: true)
        try Self.add(s, Self.insert(40, "x"))
        try s.reset()
        #expect(s.openCount == 0 && s.blockXid == nil)
        #expect(try Self.replayed(s, 40).values == [])
    }
}
