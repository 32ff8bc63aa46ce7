@testable import Projection
import Testing

/// When a bulk replay analyzes a table: each time its committed rows double, from 50,000; never on the
/// rows of a source transaction still applied in chunks (ANALYZE would sample the table without them).
@Suite struct ReplayStatisticsTests {
    @Test func aTableIsAnalyzedEachTimeItsCommittedRowsDouble() {
        var statistics = Projector.Statistics()
        statistics.wrote(["fact_procedure_telemetry": 49_999, "dim_robots": 10], committed: true)
        #expect(statistics.stale().isEmpty)
        statistics.wrote(["fact_procedure_telemetry": 1], committed: true)
        #expect(statistics.stale() == ["fact_procedure_telemetry"])
        #expect(statistics.stale().isEmpty, "analyzed once per doubling")
        statistics.wrote(["fact_procedure_telemetry": 49_999], committed: true)
        #expect(statistics.stale().isEmpty)
        statistics.wrote(["fact_procedure_telemetry": 1], committed: true)
        #expect(statistics.stale() == ["fact_procedure_telemetry"])
    }

    @Test func theChunksOfAnOpenTransactionCountOnlyOnceItCommits() {
        var statistics = Projector.Statistics()
        statistics.wrote(["fact_procedures": 60_000], committed: false)
        statistics.wrote(["fact_procedures": 60_000], committed: false)
        #expect(statistics.stale().isEmpty, "the transaction's rows are not committed yet")
        statistics.wrote(["fact_procedures": 1], committed: true)
        #expect(statistics.stale() == ["fact_procedures"])
    }
}
