@testable import Projection
import Testing

/// A fact row's values in one buffer must hold exactly what the array of Strings held: NULL apart from
/// the empty text, every byte of every value (UTF-8, tabs, backslashes), whatever order the fold sets
/// them in, and equal rows exactly when the values are.
@Suite struct RowValuesTests {
    static let rows: [[String?]] = [
        [], [nil], [""], ["", nil, ""], ["1", nil, "Ünïcødé ✓", "tab\there", "back\\slash", "line\nbreak", String(repeating: "x", count: 300)],
        [nil, nil, "end"], ["start", nil, nil],
    ]

    @Test func valuesComeBackAsTheyWent() {
        for values in Self.rows {
            let row = RowValues(values)
            #expect(row.values == values)
            #expect(row.count == values.count)
            for (i, value) in values.enumerated() {
                #expect(row[i] == value)
                #expect(row.value(i, equals: value))
                #expect(!row.value(i, equals: value == nil ? "" : nil), "NULL and the empty text differ")
                row.withValue(i) { bytes in #expect(bytes.map { Array($0) } == value.map { Array($0.utf8) }) }
            }
        }
        var nulls = RowValues.Builder()
        nulls.reset(3)
        #expect(nulls.build().values == [nil, nil, nil])
        var empty: [UInt8] = []
        TableLayout.appendCopyLine(RowValues([]), to: &empty)
        #expect(empty == [0x0A], "a row of no columns is an empty line")
    }

    @Test func equalExactlyWhenTheValuesAre() {
        for a in Self.rows {
            for b in Self.rows { #expect((RowValues(a) == RowValues(b)) == (a == b), "\(a) against \(b)") }
        }
        #expect(RowValues(["ab", "c"]) != RowValues(["a", "bc"]), "the same bytes cut elsewhere are another row")
    }

    @Test func theBuilderTakesValuesInAnyOrderAndTheLastSetWins() {
        var builder = RowValues.Builder()
        builder.reset(4)
        builder.set(3, "last")
        builder.set(0, integer: 42)
        builder.set(1, "first try")
        builder.set(1, "second")
        builder.set(2, integer: -9_223_372_036_854_775_808)
        #expect(builder.value(1) == "second")
        let row = builder.build()
        #expect(row.values == ["42", "second", "-9223372036854775808", "last"])
        for n: Int64 in [0, 7, -7, 1_000_000, Int64.max] {
            builder.reset(1)
            builder.set(0, integer: n)
            #expect(builder.build()[0] == String(n))
        }
        // Reused for the next row: nothing of the previous one stays.
        builder.reset(2)
        builder.set(1, "only")
        #expect(builder.build().values == [nil, "only"])
        // A changed copy of a row: the values around the changed ones keep theirs.
        builder.load(row)
        builder.set(1, nil as String?)
        builder.set(3, "a longer last value")
        let changed = builder.build()
        #expect(changed.values == ["42", nil, "-9223372036854775808", "a longer last value"])
        builder.load(changed)
        builder.set(0, "x")
        #expect(builder.build().values == ["x", nil, "-9223372036854775808", "a longer last value"])
        #expect(row.values == ["42", "second", "-9223372036854775808", "last"], "the original row is a value: unchanged")
        #expect(row.prepending(["id", nil]).values == ["id", nil, "42", "second", "-9223372036854775808", "last"])
    }

    /// A source row image: an unchanged TOASTed value is neither NULL nor a value, and a change to the
    /// row keeps it apart.
    @Test func aSourceImageKeepsUnchangedToastApart() {
        let image = ChangeRecord.image([.value("1"), .unchanged, .value(nil), .value("")])
        #expect(image.incoming(0) == .value("1"))
        #expect(image.incoming(1) == .unchanged)
        #expect(image.incoming(2) == .value(nil))
        #expect(image.incoming(3) == .value(""))
        #expect(image.isUnchanged(1) && !image.isUnchanged(2))
        #expect(image != ChangeRecord.image([.value("1"), .value(nil), .value(nil), .value("")]))
        var builder = RowValues.Builder()
        builder.load(image)
        builder.set(0, "2")
        #expect(builder.build() == ChangeRecord.image([.value("2"), .unchanged, .value(nil), .value("")]))
    }

    /// The writer's text COPY line of a row: tab-separated, \N for NULL, the four escapes.
    @Test func aCopyLineEscapesAsPostgreSQLReadsIt() {
        var out: [UInt8] = []
        TableLayout.appendCopyLine(RowValues(["a\tb", nil, "", "c\\d\ne\rf", "plain"]), to: &out)
        #expect(String(decoding: out, as: UTF8.self) == "a\\tb\t\\N\t\tc\\\\d\\ne\\rf\tplain\n")
    }
}
