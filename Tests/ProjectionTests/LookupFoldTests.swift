@testable import Projection
import Testing

private func t(_ n: Int) -> ChangeContext { FoldFixture.transaction(n) }

/// Lookups in the fold: a fact (or a dimension) points at the dimension version in effect when its
/// source transaction committed, whatever the batch boundaries.
@Suite(.timeLimit(.minutes(15))) struct LookupFoldTests {
    /// Facility F1 and robot R1 at t1, a use at t2, F1 renamed (type 2) at t3, a second use at t4, R1's
    /// model changed at t5, a third use at t6. `commitEach`: a batch per transaction, else one batch.
    static func history(commitEach: Bool) throws -> FoldFixture {
        let f = try FoldFixture()
        func end() { if commitEach { f.commit() } }
        f.insert("facilities", ["F1", "Mercy", "Boston", "300"], t(1))
        f.insert("robots", ["R1", "Xi", "F1"], t(1))
        end()
        f.insert("uses", ["U1", "R1", "F1", "first"], t(2))
        end()
        f.update("facilities", ["F1", "Mercy General", "Boston", "300"], t(3))
        end()
        f.insert("uses", ["U2", "R1", "F1", "second"], t(4))
        end()
        f.update("robots", ["R1", "Xi 2", "F1"], t(5))
        end()
        f.insert("uses", ["U3", "R1", "F1", "third"], t(6))
        f.commit()
        return f
    }

    @Test(arguments: [false, true]) func factsPointAtTheVersionsInEffectAtTheirCommit(_ commitEach: Bool) throws {
        let f = try Self.history(commitEach: commitEach)
        let facilityKeys = f.facilities.versions("F1").map { $0["facility_key"]! }
        let robotKeys = f.robots.versions("R1").map { $0["robot_key"]! }
        try #require(facilityKeys.count == 2 && robotKeys.count == 2)
        let u1 = try #require(f.uses.row("U1")), u2 = try #require(f.uses.row("U2")), u3 = try #require(f.uses.row("U3"))
        #expect(u1["facility_key"] == facilityKeys[0], "U1 was committed before the rename")
        #expect(u2["facility_key"] == facilityKeys[1] && u3["facility_key"] == facilityKeys[1])
        #expect(u1["robot_key"] == robotKeys[0] && u2["robot_key"] == robotKeys[0] && u3["robot_key"] == robotKeys[1])
        // The robot's versions point at the facility version in effect when each opened.
        #expect(f.robots.versions("R1").map { $0["facility_key"] } == [facilityKeys[0], facilityKeys[1]])
        #expect(u1["created_at"] == t(2).timestamp && u1["source_lsn"] == "0/2000")
    }

    @Test func batchBoundariesDoNotChangeTheWarehouse() throws {
        let one = try Self.history(commitEach: false), many = try Self.history(commitEach: true)
        #expect(one.facilities.rows == many.facilities.rows)
        #expect(one.robots.rows == many.robots.rows)
        #expect(one.uses.rows == many.uses.rows)
    }

    @Test func aType1ChangeDoesNotRepointFacts() throws {
        let f = try FoldFixture()
        f.insert("facilities", ["F1", "Mercy", "Boston", "300"], t(1))
        f.insert("uses", ["U1", nil, "F1", nil], t(2))
        f.update("facilities", ["F1", "Mercy", "Boston", "301"], t(3))
        f.insert("uses", ["U2", nil, "F1", nil], t(4))
        f.commit()
        #expect(f.uses.row("U1")?["facility_key"] == "1" && f.uses.row("U2")?["facility_key"] == "1")
    }

    /// A fact row's value that the source left TOASTed and unchanged keeps what the row holds; a NULL
    /// sent for it clears it.
    @Test func anUnchangedToastValueOfAFactKeepsTheRowsValue() throws {
        let f = try FoldFixture()
        f.insert("uses", ["U1", nil, nil, "a long note"], t(1))
        f.update("uses", [.value("U1"), .value(nil), .value(nil), .unchanged], t(2))
        f.commit()
        #expect(f.uses.row("U1")?["note"] == "a long note")
        #expect(f.uses.row("U1")?["source_lsn"] == "0/2000", "the update was applied")
        let g = try FoldFixture()
        g.insert("uses", ["U1", nil, nil, "a long note"], t(1))
        g.update("uses", [.value("U1"), .value(nil), .value(nil), .value(nil)], t(2))
        g.commit()
        #expect(g.uses.row("U1")?["note"] == nil)
    }

    @Test func aFactBeforeItsDimensionRowMakesAnInferredMemberThatTheRowCompletes() throws {
        let f = try FoldFixture()
        f.insert("uses", ["U1", "R7", nil, nil], t(1))
        f.commit()
        let inferred = try #require(f.robots.current("R7"))
        #expect(inferred["is_inferred"] == "t" && inferred["model"] == "Unknown", "NOT NULL text: Unknown")
        #expect(inferred["facility_key"] == "-1")
        #expect(f.uses.row("U1")?["robot_key"] == inferred["robot_key"])
        #expect(f.uses.row("U1")?["facility_key"] == "-1", "a NULL business key looks up -1")

        f.insert("robots", ["R7", "Xi", nil], t(2))
        f.commit()
        let versions = f.robots.versions("R7")
        try #require(versions.count == 1, "the real row completes the inferred member in place: \(versions)")
        #expect(versions[0]["robot_key"] == inferred["robot_key"] && versions[0]["is_inferred"] == "f" && versions[0]["model"] == "Xi")
    }

    @Test func aFactUpdateRepointsOnlyWhenItsBusinessKeyChanges() throws {
        // One batch: fact rows of earlier batches come from the warehouse (prefetch), which this fold has not.
        let f = try FoldFixture()
        f.insert("facilities", ["F1", "Mercy", "Boston", "300"], t(1))
        f.insert("facilities", ["F2", "Hope", "Salem", "10"], t(1))
        f.insert("uses", ["U1", nil, "F1", "a"], t(2))
        f.update("facilities", ["F1", "Mercy General", "Boston", "300"], t(3))
        f.update("uses", ["U1", nil, "F1", "b"], t(4))
        #expect(f.uses.projector.rows[["U1"]]?.row[f.uses.projector.layout["facility_key"]] == "1",
                "same facility: still the version current at the insert")
        f.update("uses", ["U1", nil, "F2", "c"], t(5))
        f.commit()
        let u1 = try #require(f.uses.row("U1"))
        #expect(u1["facility_key"] == "2", "another facility: its version current at t5")
        #expect(u1["note"] == "c" && u1["updated_at"] == t(5).timestamp && u1["created_at"] == t(2).timestamp)
    }
}
