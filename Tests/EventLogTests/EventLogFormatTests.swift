import Crypto
import EventLog
import Testing
import TestSupport

/// The log's primitive formats, checked against definitions that do not come from the product: RFC
/// 6962 written out here with swift-crypto's SHA-256, published test vectors, and record bytes written
/// by hand from schemas/event-log.md.
@Suite(.timeLimit(.minutes(15))) struct EventLogFormatTests {
    /// MTH from RFC 6962 §2.1, with its own hashing: leaf = SHA-256(0x00 ‖ d), node = SHA-256(0x01 ‖
    /// left ‖ right), left subtree = the largest power of two below n. Nothing of MerkleFrontier is used.
    static func referenceRoot(_ leaves: ArraySlice<[UInt8]>) -> [UInt8] {
        switch leaves.count {
        case 0: return Array(SHA256.hash(data: [UInt8]()))
        case 1: return Array(SHA256.hash(data: [0x00] + leaves.first!))
        default:
            var k = 1
            while k * 2 < leaves.count { k *= 2 }
            let start = leaves.startIndex
            let left = referenceRoot(leaves[start..<start + k]), right = referenceRoot(leaves[(start + k)...])
            return Array(SHA256.hash(data: [0x01] + left + right))
        }
    }

    /// The leaf inputs of the RFC 6962 test vectors used by certificate-transparency, Trillian and
    /// transparency-dev/merkle (`testonly.LeafInputs()` in github.com/transparency-dev/merkle,
    /// testonly/constants.go).
    static let vectorLeaves = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                               "606162636465666768696a6b6c6d6e6f"].map { bytes(hex: $0) }

    /// Their roots for tree sizes 0...8 (`testonly.RootHashes()`, same file). Sizes 2 and 3 were
    /// recomputed by hand with `openssl dgst -sha256` before these were trusted, and all nine with a
    /// separate Python MTH.
    static let vectorRoots = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ]

    static func leafHash(_ data: [UInt8]) -> Hash { data.withUnsafeBytes { MerkleFrontier.leafHash($0) } }

    @Test func merkleRootsEqualThePublishedRFC6962Vectors() {
        var frontier = MerkleFrontier()
        #expect(hex(frontier.root) == Self.vectorRoots[0], "empty tree: SHA-256 of nothing")
        for (i, leaf) in Self.vectorLeaves.enumerated() {
            frontier.append(leaf: Self.leafHash(leaf))
            #expect(hex(frontier.root) == Self.vectorRoots[i + 1], "tree size \(i + 1)")
            #expect(hex(Self.referenceRoot(Self.vectorLeaves[...i])) == Self.vectorRoots[i + 1], "the test's own MTH, size \(i + 1)")
        }
    }

    @Test func merkleRootMatchesAnIndependentMTHForEveryTreeSizeUpTo70() {
        var frontier = MerkleFrontier()
        var leaves: [[UInt8]] = []
        for i in 0..<70 {
            let data = [UInt8(i), 1, 2, 3]
            leaves.append(data)
            frontier.append(leaf: Self.leafHash(data))
            #expect(frontier.root == Self.referenceRoot(leaves[...]), "size \(i + 1)")
            #expect(frontier.size == UInt64(i + 1))
            let decoded = frontier.encoded.withUnsafeBytes { try? MerkleFrontier(encoded: $0) }
            #expect(decoded == frontier)
        }
    }

    @Test func leafAndNodeHashesAreDomainSeparatedAsRFC6962Says() {
        // leaf: SHA-256(0x00 ‖ d); of the empty string it is the vectors' first leaf hash.
        #expect(hex(Self.leafHash([])) == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
        #expect(Self.leafHash([0x42]) == Array(SHA256.hash(data: [0x00, 0x42])))
        // node: SHA-256(0x01 ‖ left ‖ right), left first (fac5... is the root of the first two vector leaves).
        let (left, right) = (Self.leafHash(Self.vectorLeaves[0]), Self.leafHash(Self.vectorLeaves[1]))
        #expect(hex(MerkleFrontier.nodeHash(left, right)) == "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")
        #expect(MerkleFrontier.nodeHash(left, right) != MerkleFrontier.nodeHash(right, left))
    }

    @Test func frontierEncodingIsTheDocumentedLayout() throws {
        // After the first three vector leaves: the perfect subtree of leaves 0-1 (height 1) and leaf 2
        // (height 0); node hashes from transparency-dev's testonly.NodeHashes().
        var frontier = MerkleFrontier()
        for leaf in Self.vectorLeaves.prefix(3) { frontier.append(leaf: Self.leafHash(leaf)) }
        let expected = bytes(hex: """
            0000000000000003 02
            01 fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125
            00 0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7
            """)
        #expect(frontier.encoded == expected)
        let decoded = try expected.withUnsafeBytes { try MerkleFrontier(encoded: $0) }
        #expect(decoded == frontier)
        #expect(hex(decoded.root) == Self.vectorRoots[3])
        // A frontier whose nodes do not add up to its size is refused.
        var wrong = expected
        wrong[7] = 4
        #expect(throws: FormatError.self) { try wrong.withUnsafeBytes { try MerkleFrontier(encoded: $0) } }
    }

    // MARK: Records, byte for byte

    static let relation = RelationDefinition(oid: 16385, namespace: "public", name: "t", replicaIdentity: 0x64, columns: [
        .init(name: "id", typeOID: 23, typeModifier: -1, isKey: true, typeName: "int4"),
        .init(name: "doc", typeOID: 25, typeModifier: -1, isKey: false, typeName: "text"),
    ])
    static let commitTime: Int64 = 1_795_312_975_254_715  // 0x000660d3e02694bb

    /// Records and their bytes, written from the "Record" section of schemas/event-log.md: u8 op, u8
    /// flags, u64 lsn, u32 xid, i64 commit time, varint relation_seq, body; every integer big-endian.
    static let encodings: [(String, Record, [UInt8])] = [
        ("update with old key, unchanged TOAST",
         Record(header: RecordHeader(op: .update, flags: .endOfTransaction, lsn: LSN(0x0102_0304_0506_0708), xid: 0x0A0B_0C0D,
                                     commitTime: 0x0011_2233_4455_6677, relationSeq: 300),
                body: .row(old: .key, before: [.text([0x31]), .null], after: [.text([0x32]), .unchangedToast])),
         bytes(hex: "03 01 0102030405060708 0a0b0c0d 0011223344556677 ac02  4b 02 74 01 31 6e  02 74 01 32 75")),
        ("relation, no xid, no commit time",
         Record(header: RecordHeader(op: .relation, lsn: LSN(0x1_0000_0010), xid: nil, commitTime: nil, relationSeq: 0), body: .relation(relation)),
         bytes(hex: """
             07 00 0000000100000010 00000000 8000000000000000 00
             00004001 06 7075626c6963 01 74 64 02
             01 02 6964 00000017 ffffffff 04 696e7434
             00 03 646f63 00000019 ffffffff 04 74657874
             """)),
        ("transactional message before 1970",
         Record(header: RecordHeader(op: .message, flags: [.transactional], lsn: LSN(5), xid: nil, commitTime: -5, relationSeq: 0),
                body: .message(prefix: "p", content: [0, 255])),
         bytes(hex: "06 08 0000000000000005 00000000 fffffffffffffffb 00  01 70 02 00ff")),
        ("truncate cascade restart identity",
         Record(header: RecordHeader(op: .truncate, flags: [.endOfTransaction, .cascade, .restartIdentity], lsn: LSN(0x16B_3748),
                                     xid: 4242, commitTime: commitTime, relationSeq: 2), body: .truncate),
         bytes(hex: "05 07 00000000016b3748 00001092 000660d3e02694bb 02")),
        ("delete with the old row, a 200-byte value",
         Record(header: RecordHeader(op: .delete, flags: .endOfTransaction, lsn: LSN(0x16B_3748), xid: 4243, commitTime: commitTime, relationSeq: 2),
                body: .row(old: .row, before: [.text([0x37]), .text([UInt8](repeating: 0x78, count: 200))], after: nil)),
         bytes(hex: "04 01 00000000016b3748 00001093 000660d3e02694bb 02  4f 02 74 01 37 74 c801") + [UInt8](repeating: 0x78, count: 200)),
        ("insert with a NULL",
         Record(header: RecordHeader(op: .insert, lsn: LSN(0x16B_3748), xid: 4243, commitTime: commitTime, relationSeq: 2),
                body: .row(old: .none, before: nil, after: [.text([0x38]), .null])),
         bytes(hex: "02 00 00000000016b3748 00001093 000660d3e02694bb 02  02 74 01 38 6e")),
        ("update without old values",
         Record(header: RecordHeader(op: .update, flags: .endOfTransaction, lsn: LSN(0x16B_3748), xid: 4243, commitTime: commitTime, relationSeq: 2),
                body: .row(old: .none, before: nil, after: [.text([0x38]), .text([0x79])])),
         bytes(hex: "03 01 00000000016b3748 00001093 000660d3e02694bb 02  00  02 74 01 38 74 01 79")),
        ("snapshot row with an empty string",
         Record(header: RecordHeader(op: .snapshot, flags: .endOfTransaction, lsn: LSN(0x16B_3748), xid: nil, commitTime: commitTime, relationSeq: 1),
                body: .row(old: .none, before: nil, after: [.text([0x39]), .text([])])),
         bytes(hex: "01 01 00000000016b3748 00000000 000660d3e02694bb 01  02 74 01 39 74 00")),
    ]

    @Test(arguments: encodings.indices) func recordsEncodeAsDocumented(_ i: Int) throws {
        let (name, record, expected) = Self.encodings[i]
        #expect(hex(RecordCodec.encode(record)) == hex(expected), "\(name)")
        let decoded = try expected.withUnsafeBytes { try RecordCodec.decode($0) }
        #expect(decoded == record, "\(name)")
    }

    @Test func malformedRecordsAreRefused() {
        let good = Self.encodings[0].2
        func decode(_ bytes: [UInt8]) throws { _ = try bytes.withUnsafeBytes { try RecordCodec.decode($0) } }
        #expect(throws: FormatError.truncated) { try decode(Array(good.dropLast())) }
        #expect(throws: FormatError.self) { try decode(good + [0]) }  // trailing byte
        var op = good
        op[0] = 9
        #expect(throws: FormatError.self) { try decode(op) }
        var kind = good
        kind[kind.count - 1] = 0x78  // neither n, u nor t
        #expect(throws: FormatError.self) { try decode(kind) }
    }

    @Test func varintsAreUnsignedLEB128() throws {
        let cases: [(UInt64, String)] = [(0, "00"), (127, "7f"), (128, "8001"), (300, "ac02"), (16_384, "808001"),
                                         (UInt64.max, "ffffffffffffffffff01")]
        for (value, encoding) in cases {
            var w = ByteWriter()
            w.varint(value)
            #expect(hex(w.bytes) == encoding)
            let back = try w.bytes.withUnsafeBytes { buffer -> UInt64 in
                var r = ByteReader(buffer)
                return try r.varint()
            }
            #expect(back == value)
        }
    }

    @Test func keysAreBigEndian() {
        #expect(hex(keyBytes(UInt64(0x0102_0304_0506_0708))) == "0102030405060708")
        #expect(hex(keyBytes(UInt32(16385))) == "00004001")
        #expect(keyBytes(UInt64(0xFEDC_BA98_7654_3210)).withUnsafeBytes { readU64($0) } == 0xFEDC_BA98_7654_3210)
    }

    @Test func lsnParsesAndPrintsLikePostgreSQL() {
        #expect(LSN("0/16B3748")?.value == 0x16B3748)
        #expect(LSN("1A/0")?.description == "1A/0")
        #expect(LSN("FFFFFFFF/FFFFFFFF")?.value == UInt64.max)
        #expect(LSN(0x16B_3748).description == "0/16B3748")
        #expect(LSN(0x1_0000_0000).description == "1/0")
        #expect(LSN("0/16b3748")?.value == 0x16B3748, "PostgreSQL's pg_lsn input accepts lower case")
        #expect(LSN("16B3748") == nil && LSN("0/XYZ") == nil && LSN("1/2/3") == nil && LSN("") == nil)
        #expect(LSN("/1") == nil && LSN("1/") == nil && LSN("100000000/0") == nil)
        #expect(LSN(1) < LSN(0x1_0000_0000))
    }

    @Test func commitTimesPrintAsRFC3339UTC() {
        #expect(rfc3339(microseconds: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(rfc3339(microseconds: 1_795_312_975_254_715) == "2026-11-22T02:02:55.254715Z")
        #expect(rfc3339(microseconds: -1) == "1969-12-31T23:59:59.999999Z")
        #expect(rfc3339(microseconds: 951_782_400_000_000) == "2000-02-29T00:00:00.000000Z", "a leap day")
    }

    @Test func privacyKeyIDIsTheDocumentedDigestPrefix() {
        // key_id = first 8 bytes of SHA-256("cdc-privacy-key" ‖ key), from
        //   printf 'cdc-privacy-key' | cat - key | openssl dgst -sha256
        // with key = the 32 bytes 00 01 ... 1f.
        let key = (0..<32).map { UInt8($0) }
        #expect(PrivacyPolicy.keyID(of: key) == "c638cad6e5fd4e1e")
    }
}
