@testable import Capture
import EventLog
import Testing

/// A pgoutput message written field by field from "Logical Replication Message Formats" in the
/// PostgreSQL documentation (protocol version 1): network byte order, C strings, TupleData.
struct PgWire {
    var bytes: [UInt8] = []

    init(_ tag: Character) { bytes.append(tag.asciiValue!) }

    mutating func byte(_ v: UInt8) { bytes.append(v) }
    mutating func tag(_ c: Character) { bytes.append(c.asciiValue!) }
    mutating func int16(_ v: UInt16) { bytes += [UInt8(v >> 8), UInt8(v & 0xFF)] }
    mutating func int32(_ v: UInt32) { for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) } }
    mutating func int64(_ v: UInt64) { int32(UInt32(v >> 32)); int32(UInt32(v & 0xFFFF_FFFF)) }
    mutating func string(_ s: String) { bytes += Array(s.utf8) + [0] }

    /// One TupleData column.
    enum Column {
        case null, unchangedToast
        case text(String)
    }

    /// TupleData: Int16 column count, then per column 'n', 'u', or 't' Int32 length and the bytes.
    mutating func tuple(_ columns: [Column]) {
        int16(UInt16(columns.count))
        for column in columns {
            switch column {
            case .null: tag("n")
            case .unchangedToast: tag("u")
            case .text(let s):
                tag("t")
                int32(UInt32(s.utf8.count))
                bytes += Array(s.utf8)
            }
        }
    }
}

/// Decodes `wire` and hands the message to `body` while its buffer is alive.
func decoded<T>(_ wire: PgWire, _ body: (PgOutputMessage) throws -> T) throws -> T {
    try wire.bytes.withUnsafeBytes { try body(try PgOutputMessage.decode($0)) }
}

/// A decoded tuple transcoded into the log's encoding and read back with the log's own decoder.
func values(_ tuple: PgOutputMessage.Tuple, protecting methods: [PrivacyPolicy.Method?]? = nil,
            with protector: ColumnProtector? = nil) throws -> [Datum] {
    var w = ByteWriter()
    let count = try PgOutputMessage.transcode(tuple, into: &w, protecting: methods, with: protector)
    let datums = try w.bytes.withUnsafeBytes { buffer -> [Datum] in
        var r = ByteReader(buffer)
        let datums = try RecordCodec.decodeTuple(&r)
        #expect(r.remaining == 0)
        return datums
    }
    #expect(datums.count == count)
    return datums
}

func text(_ s: String) -> Datum { .text(Array(s.utf8)) }

@Suite(.timeLimit(.minutes(15))) struct PgOutputDecodingTests {
    /// 2026-11-22T02:02:55.254715Z as PostgreSQL sends it: µs since 2000-01-01.
    static let pgTime: UInt64 = 848_628_175_254_715
    static let unixTime: Int64 = 1_795_312_975_254_715

    @Test func beginCarriesFinalLSNCommitTimeAndXid() throws {
        var w = PgWire("B")
        w.int64(0x0000_0001_0203_0405)
        w.int64(Self.pgTime)
        w.int32(0xDEAD_BEEF)
        try decoded(w) { message throws in
            guard case .begin(let lsn, let time, let xid) = message else { Issue.record("not a begin: \(message)"); return }
            #expect(lsn == LSN("1/2030405"))
            #expect(time == Self.unixTime)
            #expect(rfc3339(microseconds: time) == "2026-11-22T02:02:55.254715Z")
            #expect(xid == 0xDEAD_BEEF)
        }
    }

    @Test func commitCarriesCommitAndEndLSN() throws {
        var w = PgWire("C")
        w.byte(0)
        w.int64(0x16B_3748)
        w.int64(0x16B_3780)
        w.int64(Self.pgTime)
        try decoded(w) { message throws in
            guard case .commit(let flags, let commit, let end, let time) = message else { Issue.record("not a commit: \(message)"); return }
            #expect(flags == 0 && commit == LSN("0/16B3748") && end == LSN("0/16B3780") && time == Self.unixTime)
        }
    }

    @Test func originAndType() throws {
        var o = PgWire("O")
        o.int64(77)
        o.string("upstream")
        try decoded(o) { message throws in
            guard case .origin(let lsn, let name) = message else { Issue.record("not an origin: \(message)"); return }
            #expect(lsn == LSN(77) && name == "upstream")
        }
        var y = PgWire("Y")
        y.int32(16_390)
        y.string("public")
        y.string("mood")
        try decoded(y) { message throws in
            guard case .type(let oid, let namespace, let name) = message else { Issue.record("not a type: \(message)"); return }
            #expect(oid == 16_390 && namespace == "public" && name == "mood")
        }
        // An empty namespace means pg_catalog.
        var catalog = PgWire("Y")
        catalog.int32(25)
        catalog.string("")
        catalog.string("text")
        try decoded(catalog) { message throws in
            guard case .type(_, let namespace, _) = message else { Issue.record("not a type: \(message)"); return }
            #expect(namespace == "pg_catalog")
        }
    }

    @Test func relationCarriesColumnsKeysTypesAndModifiers() throws {
        var w = PgWire("R")
        w.int32(16_385)
        w.string("sales")
        w.string("orders")
        w.tag("f")
        w.int16(3)
        w.byte(1); w.string("id"); w.int32(20); w.int32(0xFFFF_FFFF)
        w.byte(0); w.string("note"); w.int32(1043); w.int32(68)  // varchar(64): typmod 64 + 4
        w.byte(0); w.string("mood"); w.int32(16_390); w.int32(0xFFFF_FFFF)
        try decoded(w) { message throws in
            guard case .relation(let oid, let namespace, let name, let identity, let columns) = message else {
                Issue.record("not a relation: \(message)"); return
            }
            #expect(oid == 16_385 && namespace == "sales" && name == "orders" && identity == UInt8(ascii: "f"))
            #expect(columns.map(\.name) == ["id", "note", "mood"])
            #expect(columns.map(\.isKey) == [true, false, false])
            #expect(columns.map(\.typeOID) == [20, 1043, 16_390])
            #expect(columns.map(\.typeModifier) == [-1, 68, -1])
        }
        // An empty namespace means pg_catalog.
        var catalog = PgWire("R")
        catalog.int32(1259)
        catalog.string("")
        catalog.string("pg_class")
        catalog.tag("n")
        catalog.int16(0)
        try decoded(catalog) { message throws in
            guard case .relation(_, let namespace, let name, let identity, let columns) = message else { Issue.record("not a relation: \(message)"); return }
            #expect(namespace == "pg_catalog" && name == "pg_class" && identity == UInt8(ascii: "n") && columns.isEmpty)
        }
    }

    @Test func insertTupleHasNullUnchangedToastAndText() throws {
        var w = PgWire("I")
        w.int32(16_385)
        w.tag("N")
        w.tuple([.text("42"), .null, .unchangedToast, .text(""), .text("tab\there é")])
        try decoded(w) { message throws in
            guard case .insert(let oid, let new) = message else { Issue.record("not an insert: \(message)"); return }
            #expect(oid == 16_385)
            #expect(try values(new) == [text("42"), .null, .unchangedToast, text(""), text("tab\there é")])
        }
    }

    @Test func unchangedToastIsNeverNull() throws {
        var w = PgWire("U")
        w.int32(1)
        w.tag("N")
        w.tuple([.text("1"), .unchangedToast])
        try decoded(w) { message throws in
            guard case .update(_, _, _, let new) = message else { Issue.record("not an update: \(message)"); return }
            let after = try values(new)
            #expect(after[1] == .unchangedToast)
            #expect(after[1] != .null)
        }
    }

    @Test func updateWithoutOldValues() throws {
        var w = PgWire("U")
        w.int32(16_385)
        w.tag("N")
        w.tuple([.text("1"), .text("b")])
        try decoded(w) { message throws in
            guard case .update(let oid, let old, let oldTuple, let new) = message else { Issue.record("not an update: \(message)"); return }
            #expect(oid == 16_385 && old == .none && oldTuple == nil)
            #expect(try values(new) == [text("1"), text("b")])
        }
    }

    @Test func updateWithOldKey() throws {
        var w = PgWire("U")
        w.int32(16_385)
        w.tag("K")
        w.tuple([.text("1"), .null])
        w.tag("N")
        w.tuple([.text("2"), .text("b")])
        try decoded(w) { message throws in
            guard case .update(_, let old, let oldTuple, let new) = message, let oldTuple else { Issue.record("not an update with old key: \(message)"); return }
            #expect(old == .key)
            #expect(try values(oldTuple) == [text("1"), .null])
            #expect(try values(new) == [text("2"), text("b")])
        }
    }

    @Test func updateWithOldRow() throws {
        var w = PgWire("U")
        w.int32(16_385)
        w.tag("O")
        w.tuple([.text("1"), .text("a"), .unchangedToast])
        w.tag("N")
        w.tuple([.text("1"), .text("b"), .unchangedToast])
        try decoded(w) { message throws in
            guard case .update(_, let old, let oldTuple, let new) = message, let oldTuple else { Issue.record("not an update with old row: \(message)"); return }
            #expect(old == .row)
            #expect(try values(oldTuple) == [text("1"), text("a"), .unchangedToast])
            #expect(try values(new) == [text("1"), text("b"), .unchangedToast])
        }
    }

    @Test func deleteWithKeyOrRow() throws {
        for (kind, expected) in [("K", OldValues.key), ("O", OldValues.row)] {
            var w = PgWire("D")
            w.int32(16_385)
            w.tag(Character(kind))
            w.tuple([.text("7"), kind == "K" ? .null : .text("x")])
            try decoded(w) { message throws in
                guard case .delete(let oid, let old, let oldTuple) = message else { Issue.record("not a delete: \(message)"); return }
                #expect(oid == 16_385 && old == expected)
                #expect(try values(oldTuple) == [text("7"), kind == "K" ? .null : text("x")])
            }
        }
    }

    @Test func truncateListsRelationsAndOptions() throws {
        var w = PgWire("T")
        w.int32(3)
        w.byte(3)  // 1 CASCADE | 2 RESTART IDENTITY
        for oid: UInt32 in [16_385, 16_390, 70_000] { w.int32(oid) }
        try decoded(w) { message throws in
            guard case .truncate(let options, let oids) = message else { Issue.record("not a truncate: \(message)"); return }
            #expect(options == 3 && oids == [16_385, 16_390, 70_000])
        }
    }

    @Test func logicalDecodingMessage() throws {
        for transactional in [true, false] {
            var w = PgWire("M")
            w.byte(transactional ? 1 : 0)
            w.int64(0x2_0000_0010)
            w.string("audit")
            w.int32(3)
            w.bytes += [0x00, 0xFF, 0x41]
            try decoded(w) { message throws in
                guard case .message(let flag, let lsn, let prefix, let content) = message else { Issue.record("not a message: \(message)"); return }
                #expect(flag == transactional && lsn == LSN("2/10") && prefix == "audit" && Array(content) == [0x00, 0xFF, 0x41])
            }
        }
    }

    @Test func truncatedAndUnknownMessagesAreProtocolViolations() throws {
        var insert = PgWire("I")
        insert.int32(16_385)
        insert.tag("N")
        insert.tuple([.text("hello")])
        for cut in 1..<insert.bytes.count {
            let prefix = Array(insert.bytes.prefix(cut))
            let error = #expect(throws: CaptureError.self, "cut at \(cut)") {
                _ = try prefix.withUnsafeBytes { try PgOutputMessage.decode($0) }
            }
            #expect(error?.code == .protocolViolation)
        }
        var unknown = PgWire("Z")
        unknown.int32(0)
        #expect(throws: CaptureError.self) { _ = try decoded(unknown) { _ in () } }
        var noNew = PgWire("I")
        noNew.int32(16_385)
        noNew.tag("K")
        noNew.tuple([.text("1")])
        #expect(throws: CaptureError.self) { _ = try decoded(noNew) { _ in () } }
    }
}
