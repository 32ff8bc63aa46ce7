import EventLog
@testable import Projection
import Testing

/// A grain keeps an integer id as an Int64, but it must behave exactly as the list of texts it stands
/// for: equal texts give equal grains (whichever way they were built), different texts different
/// grains, and the texts come back unchanged (the warehouse writes them, record_hash hashes them).
@Suite struct GrainTests {
    static let texts = ["0", "7", "-7", "42", "123456789012345678", "-123456789012345678",
                        "007", "-0", "+7", " 7", "7 ", "1e3", "7.0", "", "-", "--7", "9223372036854775807",
                        "-9223372036854775808", "99999999999999999999", "U1", "٣", "7\u{0}"]

    @Test func integersAreKeptAsIntegersOnlyInTheirCanonicalText() {
        #expect(Grain(one: "42") == .int(42))
        #expect(Grain(one: "-7") == .int(-7))
        #expect(Grain(one: "0") == .int(0))
        #expect(Grain(one: "123456789012345678") == .int(123_456_789_012_345_678))
        for text in ["007", "-0", "+7", " 7", "7 ", "1e3", "7.0", "", "-", "--7", "9223372036854775807", "99999999999999999999", "٣", "7\u{0}"] {
            #expect(Grain(one: text) == .text(text), "\(text.debugDescription)")
        }
        #expect(Grain(one: nil) == .values([nil]))
        #expect(Grain(["1", "2"]) == .values(["1", "2"]))
    }

    @Test func equalExactlyWhenTheTextsAreAndTheTextsComeBack() {
        let lists: [[String?]] = Self.texts.map { [$0] } + [[nil], ["1", "2"], ["1", nil], ["01", "2"], []]
        for a in lists {
            let grain = Grain(a)
            #expect(grain.values == a)
            #expect(grain.count == a.count)
            #expect((0..<a.count).map { grain[$0] } == a)
            #expect(grain.hasNull == a.contains(where: { $0 == nil }))
            // Built from a row's columns, the same grain.
            #expect(Grain(a + ["other"], Array(a.indices)) == grain)
            for b in lists {
                #expect((Grain(a) == Grain(b)) == (a == b), "\(a) against \(b)")
                if a == b { #expect(Grain(a).hashValue == Grain(b).hashValue) }
            }
        }
    }

    /// The projectors look grains up in dictionaries: an id read back from the warehouse finds the row
    /// noted from the log.
    @Test func aGrainFromTheLogFindsTheOneFromTheWarehouse() {
        let relation = RelationDefinition(oid: 1, namespace: "public", name: "t", replicaIdentity: UInt8(ascii: "d"), columns: [
            .init(name: "name", typeOID: 25, typeModifier: -1, isKey: false, typeName: "text"),
            .init(name: "id", typeOID: 20, typeModifier: -1, isKey: true, typeName: "int8"),
        ])
        let plan = SourcePlan(["id", "name"], in: relation)
        let tuple = ChangeRecord.image([.value("Mercy"), .value("1234")])
        let fromLog = plan.grain(tuple, 0..<1)
        var rows: [Grain: String] = [:]
        rows[Grain(["1234"])] = "from the warehouse"
        #expect(fromLog == .int(1234))
        #expect(rows[fromLog] == "from the warehouse")
        #expect(plan.grain(tuple, 0..<2) == Grain(["1234", "Mercy"]))
        #expect(plan.grain(ChangeRecord.image([.value("Mercy"), .unchanged]), 0..<1).hasNull)
    }
}
