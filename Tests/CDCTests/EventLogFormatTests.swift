import EventLog
import Testing

/// The log's primitive formats, checked against independent definitions.
@Suite(.timeLimit(.minutes(5))) struct EventLogFormatTests {
    /// MTH from RFC 6962 §2.1, written recursively: the definition the frontier must agree with.
    func referenceRoot(_ leaves: ArraySlice<Hash>) -> Hash {
        if leaves.count == 1 { return leaves.first! }
        var k = 1
        while k * 2 < leaves.count { k *= 2 }
        let start = leaves.startIndex
        return MerkleFrontier.nodeHash(referenceRoot(leaves[start..<start + k]), referenceRoot(leaves[(start + k)...]))
    }

    @Test func merkleRootMatchesRFC6962ForEveryTreeSizeUpTo70() {
        var frontier = MerkleFrontier()
        var leaves: [Hash] = []
        #expect(hex(frontier.root) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "empty tree: SHA-256 of nothing")
        for i in 0..<70 {
            let leaf = [UInt8(i), 1, 2, 3].withUnsafeBytes { MerkleFrontier.leafHash($0) }
            leaves.append(leaf)
            frontier.append(leaf: leaf)
            #expect(frontier.root == referenceRoot(leaves[...]), "size \(i + 1)")
            let decoded = frontier.encoded.withUnsafeBytes { try? MerkleFrontier(encoded: $0) }
            #expect(decoded == frontier)
        }
    }

    @Test func leafHashIsDomainSeparated() {
        // RFC 6962: leaf = SHA-256(0x00 || data); of the empty string it is this well-known value.
        let empty = [UInt8]().withUnsafeBytes { MerkleFrontier.leafHash($0) }
        #expect(hex(empty) == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    }

    @Test func recordsRoundTrip() throws {
        let relation = RelationDefinition(oid: 16385, namespace: "public", name: "t", replicaIdentity: 0x64, columns: [
            .init(name: "id", typeOID: 23, typeModifier: -1, isKey: true, typeName: "int4"),
            .init(name: "doc", typeOID: 25, typeModifier: -1, isKey: false, typeName: "text"),
        ])
        let records = [
            Record(header: RecordHeader(op: .relation, lsn: LSN(0x1_0000_0010), xid: 7, commitTime: 1, relationSeq: 0), body: .relation(relation)),
            Record(header: RecordHeader(op: .update, flags: .endOfTransaction, lsn: LSN(99), xid: 8, commitTime: nil, relationSeq: 1),
                   body: .row(old: .key, before: [.text([0x31]), .null], after: [.text([0x32]), .unchangedToast])),
            Record(header: RecordHeader(op: .message, flags: [.transactional], lsn: LSN(5), xid: nil, commitTime: -5, relationSeq: 0),
                   body: .message(prefix: "p", content: [0, 255])),
        ]
        for record in records {
            let decoded = try RecordCodec.encode(record).withUnsafeBytes { try RecordCodec.decode($0) }
            #expect(decoded == record)
        }
    }

    @Test func lsnParsesAndPrintsLikePostgreSQL() {
        #expect(LSN("0/16B3748")?.value == 0x16B3748)
        #expect(LSN("1A/0")?.description == "1A/0")
        #expect(LSN("16B3748") == nil && LSN("0/XYZ") == nil && LSN("1/2/3") == nil && LSN("") == nil)
    }

    @Test func commitTimesPrintAsRFC3339UTC() {
        #expect(rfc3339(microseconds: 0) == "1970-01-01T00:00:00.000000Z")
        #expect(rfc3339(microseconds: 1_795_312_975_254_715) == "2026-11-22T02:02:55.254715Z")
        #expect(rfc3339(microseconds: -1) == "1969-12-31T23:59:59.999999Z")
    }
}
