import Crypto
import EventLog
import Foundation
import Testing
import TestSupport

/// The golden log (Tests/Fixtures/golden-log, written by an earlier build's `cdc init` and `cdc run`)
/// read with this build's library: the same export byte for byte, the same Merkle root, and a clean
/// verification. A failure here means the on-disk or export format changed: if that is deliberate,
/// bump EventLog.formatVersion and regenerate the fixture with tools/make-golden-log (see README).
@Suite(.timeLimit(.minutes(15))) struct GoldenLogTests {
    static func open() throws -> EventLog { try EventLog.openForReading(path: try GoldenLog.copy()) }

    static func digest() throws -> LogDigest {
        try JSONDecoder().decode(LogDigest.self, from: Data(try GoldenLog.file("digest.json").utf8))
    }

    @Test func exportIsByteForByteTheCheckedInOne() throws {
        let log = try Self.open()
        var exporter = JSONLExporter(log: log)
        var json = JSONWriter()
        try log.scan { seq, bytes in
            try exporter.render(seq: seq, record: try RecordCodec.decode(bytes), into: &json)
            return true
        }
        let exported = String(decoding: json.bytes, as: UTF8.self)
        let expected = try GoldenLog.file("export.jsonl")
        #expect(exported == expected, "\(GoldenLog.firstDifference(exported, expected))")
    }

    @Test func verifiesToTheCheckedInRootAndDigest() throws {
        let log = try Self.open()
        let digest = try Self.digest()
        let report = try log.verify(digest: digest)
        #expect(hex(report.root) == digest.root && report.digestChecked)
        #expect(report.records == digest.seq && report.head == digest.seq)
        #expect(try GoldenLog.file("verify.txt").contains(
            "\(report.records) records and \(report.transactions) transactions verified, \(report.rootsChecked) stored roots matched; head \(report.head), root \(digest.root)"))
        #expect(try log.digest() == digest)
    }

    @Test func rootIsTheRFC6962RootOfTheStoredRecordBytes() throws {
        // Recomputed from the raw records with the test's own MTH (EventLogFormatTests.referenceRoot),
        // and every stored leaf checked against SHA-256(0x00 ‖ record): the stored bytes are what the
        // root commits to, whatever MerkleFrontier does.
        let log = try Self.open()
        var records: [[UInt8]] = []
        try log.scan { _, bytes in records.append(Array(bytes)); return true }
        for (i, record) in records.enumerated() {
            #expect(try log.leaf(UInt64(i + 1)) == Array(SHA256.hash(data: [0x00] + record)), "leaf \(i + 1)")
        }
        #expect(hex(EventLogFormatTests.referenceRoot(records[...])) == (try Self.digest().root))
    }

    @Test func metaIsReadable() throws {
        let log = try Self.open()
        let source = try #require(try log.sourceIdentity())
        #expect(source.database == "golden" && source.slot == "golden" && source.publication == "golden")
        #expect(try source.systemIdentifier == Self.digest().systemIdentifier)
        #expect(try log.state() == .ready)
        let privacy = try log.privacyHistory()
        try #require(privacy.count == 1)
        #expect(privacy[0].sinceSeq == 1)
        #expect(privacy[0].policy.columns == ["public.parents.note": .hash, "public.children.secret": .redact])
        #expect(privacy[0].policy.keyID?.count == 16)
        let position = try log.position(), digest = try Self.digest()
        #expect(position.head == 34 && position.lastCommitLSN.description == digest.lsn)
        #expect(position.resumeLSN > position.lastCommitLSN)
        // Two versions of public.children: the snapshot's and the one after ALTER TABLE ADD COLUMN.
        let children = try #require(try log.record(27))
        guard case .relation(let definition) = children.body else { Issue.record("record 27 is not a relation"); return }
        #expect(definition.qualifiedName == "public.children" && definition.columns.last?.name == "extra")
        #expect(try log.relationIndex()[definition.oid] == 27)
    }
}
