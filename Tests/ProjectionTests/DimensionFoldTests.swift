import Crypto
import EventLog
@testable import Projection
import Testing

/// The SCD2 fold of one dimension, on in-memory transactions (no warehouse): which changes open a
/// version, which update the current one in place, and what deletes, key changes and truncates leave.
@Suite(.timeLimit(.minutes(15))) struct DimensionFoldTests {
    static let (t1, t2, t3) = (FoldFixture.transaction(1), FoldFixture.transaction(2), FoldFixture.transaction(3))

    /// record_hash as the warehouse DDL documents it: SHA-256 (hex) over the type-2 values and the
    /// lookups' business keys, each as a 4-byte big-endian length and its UTF-8 bytes (NULL: ffffffff).
    static func recordHash(_ values: [String?]) -> String {
        var data: [UInt8] = []
        for value in values {
            guard let value else { data += [0xFF, 0xFF, 0xFF, 0xFF]; continue }
            let n = UInt32(value.utf8.count)
            data += [UInt8(n >> 24), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF)] + Array(value.utf8)
        }
        return hex(Array(SHA256.hash(data: data)))
    }

    func mercy(_ f: FoldFixture, _ ctx: ChangeContext = t1) {
        f.insert("facilities", ["F1", "Mercy", "Boston", "300"], ctx)
    }

    /// F1 inserted at t1, then updated to `values` at t2, each in its own batch: the fold and F1's rows.
    func mercyUpdated(_ values: [String?]) throws -> (FoldFixture, [WarehouseRow]) {
        let f = try FoldFixture()
        mercy(f)
        f.commit()
        f.update("facilities", values, Self.t2)
        f.commit()
        return (f, f.facilities.versions("F1"))
    }

    @Test func anInsertOpensTheFirstVersion() throws {
        let f = try FoldFixture()
        mercy(f)
        f.commit()
        let versions = f.facilities.versions("F1")
        try #require(versions.count == 1)
        let v = versions[0]
        #expect(v["facility_key"] == "1" && v["name"] == "Mercy" && v["city"] == "Boston" && v["beds"] == "300")
        #expect(v["valid_from"] == Self.t1.timestamp && v["effective_date"] == "2026-11-21")
        #expect(v["valid_to"] == nil && v["expiration_date"] == nil)
        #expect(v["is_current"] == "t" && v["change_type"] == "INSERT" && v["is_inferred"] == "f")
        #expect(v["source_lsn"] == "0/1000")
        #expect(v["record_hash"] == Self.recordHash(["Mercy", "Boston"]), "type-2 columns only")
    }

    @Test func aType2ChangeClosesTheVersionAndOpensAnother() throws {
        let (f, versions) = try mercyUpdated(["F1", "Mercy General", "Boston", "300"])
        try #require(versions.count == 2, "\(versions)")
        let (old, new) = (versions[0], versions[1])
        #expect(old["name"] == "Mercy" && old["is_current"] == "f")
        #expect(old["valid_to"] == Self.t2.timestamp && old["expiration_date"] == "2026-11-22")
        #expect(new["facility_key"] == "2" && new["name"] == "Mercy General" && new["beds"] == "300")
        #expect(new["valid_from"] == Self.t2.timestamp && new["effective_date"] == "2026-11-22" && new["valid_to"] == nil)
        #expect(new["is_current"] == "t" && new["change_type"] == "UPDATE" && new["source_lsn"] == "0/2000")
        #expect(f.facilities.updated == [1] && f.facilities.inserted == [1, 2], "the old version is updated, the new one inserted")
    }

    @Test func aType1ChangeUpdatesTheCurrentVersionInPlace() throws {
        let (f, versions) = try mercyUpdated(["F1", "Mercy", "Boston", "301"])
        try #require(versions.count == 1, "a type-1 change opens no version: \(versions)")
        #expect(versions[0]["beds"] == "301" && versions[0]["facility_key"] == "1")
        #expect(versions[0]["valid_from"] == Self.t1.timestamp && versions[0]["is_current"] == "t" && versions[0]["change_type"] == "INSERT")
        // The next version carries the type-1 value along.
        f.update("facilities", ["F1", "Mercy", "Cambridge", "301"], Self.t3)
        f.commit()
        #expect(f.facilities.current("F1")?["beds"] == "301")
        #expect(f.facilities.versions("F1").count == 2)
    }

    @Test func aNoOpUpdateWritesNothing() throws {
        let (f, versions) = try mercyUpdated(["F1", "Mercy", "Boston", "300"])
        #expect(versions.count == 1)
        #expect(f.facilities.updated.isEmpty)
    }

    @Test func severalChangesInOneTransactionMakeOneVersion() throws {
        let f = try FoldFixture()
        mercy(f)
        f.update("facilities", ["F1", "Mercy 2", "Boston", "300"], Self.t1)  // same transaction as the insert
        f.commit()
        let first = f.facilities.versions("F1")
        #expect(first.count == 1 && first[0]["name"] == "Mercy 2" && first[0]["change_type"] == "INSERT")
        #expect(first[0]["record_hash"] == Self.recordHash(["Mercy 2", "Boston"]))

        f.update("facilities", ["F1", "Mercy 3", "Boston", "300"], Self.t2)
        f.update("facilities", ["F1", "Mercy 3", "Salem", "300"], Self.t2)
        f.update("facilities", ["F1", "Mercy 3", "Salem", "310"], Self.t2)
        f.commit()
        let versions = f.facilities.versions("F1")
        try #require(versions.count == 2, "\(versions)")
        #expect(versions[0]["valid_to"] == Self.t2.timestamp)
        #expect(versions[1]["name"] == "Mercy 3" && versions[1]["city"] == "Salem" && versions[1]["beds"] == "310")
        #expect(versions[1]["record_hash"] == Self.recordHash(["Mercy 3", "Salem"]))
    }

    @Test func aDeleteClosesTheCurrentVersionAndRecordsTheDeletion() throws {
        let f = try FoldFixture()
        mercy(f)
        f.commit()
        f.delete("facilities", key: "F1", Self.t3)
        f.commit()
        #expect(f.facilities.current("F1") == nil, "no current row after a delete")
        let versions = f.facilities.versions("F1")
        try #require(versions.count == 2, "\(versions)")
        #expect(versions[0]["valid_to"] == Self.t3.timestamp && versions[0]["change_type"] == "INSERT")
        let deletion = versions[1]
        #expect(deletion["change_type"] == "DELETE" && deletion["valid_from"] == Self.t3.timestamp && deletion["is_current"] == "f")
        #expect(deletion["name"] == "Mercy" && deletion["source_lsn"] == "0/3000")
        // Inserted again: a new current version.
        f.insert("facilities", ["F1", "Mercy", "Boston", "300"], FoldFixture.transaction(4))
        f.commit()
        #expect(f.facilities.current("F1")?["facility_key"] == "3")
    }

    @Test func insertedAndDeletedInOneTransactionLeavesNoTrace() throws {
        let f = try FoldFixture()
        f.insert("facilities", ["F2", "Brief", nil, "1"], Self.t1)
        f.delete("facilities", key: "F2", Self.t1)
        f.commit()
        #expect(f.facilities.versions("F2").isEmpty)
    }

    @Test func updatedThenDeletedInOneTransactionIsOneDeletion() throws {
        let f = try FoldFixture()
        mercy(f)
        f.commit()
        f.update("facilities", ["F1", "Mercy 2", "Boston", "300"], Self.t2)
        f.delete("facilities", key: "F1", Self.t2)
        f.commit()
        let versions = f.facilities.versions("F1")
        try #require(versions.count == 2, "\(versions)")
        #expect(versions[1]["change_type"] == "DELETE" && versions[1]["name"] == "Mercy 2" && versions[1]["is_current"] == "f")
        #expect(f.facilities.current("F1") == nil)
    }

    @Test func aKeyChangeEndsTheOldKeyAndStartsTheNew() throws {
        let f = try FoldFixture()
        mercy(f)
        f.commit()
        f.update("facilities", ["F9", "Mercy", "Boston", "300"], oldKey: "F1", Self.t2)
        f.commit()
        #expect(f.facilities.current("F1") == nil)
        #expect(f.facilities.versions("F1").last?["change_type"] == "DELETE")
        let moved = try #require(f.facilities.current("F9"))
        #expect(moved["name"] == "Mercy" && moved["valid_from"] == Self.t2.timestamp)
    }

    @Test func anUnchangedToastValueKeepsTheValue() throws {
        let f = try FoldFixture()
        mercy(f)
        f.commit()
        f.update("facilities", [.value("F1"), .unchanged, .value("Boston"), .value("300")], Self.t2)
        f.commit()
        #expect(f.facilities.versions("F1").count == 1, "unchanged TOAST is not a change")
        f.update("facilities", [.value("F1"), .unchanged, .value("Salem"), .value("300")], Self.t3)
        f.commit()
        #expect(f.facilities.current("F1")?["name"] == "Mercy", "the unchanged value is carried into the new version")
        #expect(f.facilities.current("F1")?["city"] == "Salem")
    }

    @Test func aTruncateClosesEveryCurrentVersionInKeyOrder() throws {
        let f = try FoldFixture()
        mercy(f)
        f.insert("facilities", ["F2", "Hope", nil, "10"], Self.t1)
        f.commit()
        f.truncate("facilities", Self.t2)
        f.commit()
        #expect(f.facilities.current("F1") == nil && f.facilities.current("F2") == nil)
        #expect(f.facilities.versions("F1").map { $0["facility_key"] } == ["1", "3"])
        #expect(f.facilities.versions("F2").map { $0["facility_key"] } == ["2", "4"])
        #expect(f.facilities.versions("F2").last?["change_type"] == "DELETE")
    }
}
