import ArgumentParser
import CDCService
import EventLog
import Foundation
import Lifecycle
import PGClient
import Projection
#if canImport(Glibc)
import Glibc
#endif

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild the warehouse from the log into a new schema (optionally as it was at a moment), and swap it in.",
        discussion: """
            Reads only the log: the source is not contacted. The schema is created with the mapping's DDL; \
            if it already holds a replay of this log, the replay continues from its checkpoint. Replaying the \
            same log gives the same rows and surrogate keys as `cdc run`. With --swap, the rebuilt schema and \
            the live one ([warehouse] schema) exchange names in one transaction, so readers see either the old \
            warehouse or the new one, never a half-built one; `cdc run` then continues on the new one from its \
            checkpoint.
            """)

    @OptionGroup var global: GlobalOptions

    @Option(help: "The schema to build (not the live [warehouse] schema).")
    var schema: String

    @Option(help: "Stop after the last transaction committed at or before this LSN (X/Y).")
    var untilLsn: String?

    @Option(help: "Stop after the last transaction committed at or before this time (e.g. '2026-11-22 10:00:00+00').")
    var untilTime: String?

    @Flag(help: "Afterwards, exchange the rebuilt schema with the live one in one transaction.")
    var swap = false

    func run() async throws {
        do {
            _ = try global.logger()  // validates --log-level
            let config = try global.loadConfig()
            guard let warehouse = config.warehouse else {
                throw ConfigError("config \(global.config) has no [warehouse] section: add url, schema and mapping to replay into")
            }
            guard Config.isName(schema) else {
                throw ValidationError("--schema must be a lower-case name of letters, digits and underscores, not starting with a digit")
            }
            guard schema != warehouse.schema else {
                throw ValidationError("--schema \(schema) is the live schema ([warehouse] schema): replay into another schema, then --swap")
            }
            guard untilLsn == nil || untilTime == nil else { throw ValidationError("give --until-lsn or --until-time, not both") }
            var bound: Projector.Bound?
            if let untilLsn {
                guard let lsn = LSN(untilLsn) else { throw ValidationError("--until-lsn \"\(untilLsn)\" is not an LSN: write it as PostgreSQL prints one, e.g. 0/16B3748") }
                bound = .lsn(lsn)
            }
            let schema = self.schema, untilTime = self.untilTime, swap = self.swap, lsnBound = bound
            let interactive = isatty(STDERR_FILENO) == 1
            let summary = try await runOnDedicatedThread(name: "cdc-replay") { () -> String in
                let target = warehouse.target(schema: schema)
                var bound = lsnBound
                // One connection for the replay's own statements (the projector opens its own).
                let admin = try target.connect(application: "cdc")
                if let untilTime {
                    guard let result = try? admin.query("SELECT (extract(epoch FROM $1::timestamptz) * 1000000)::bigint", [untilTime]),
                          let micros = result.value(0, 0).flatMap({ Int64($0) }) else {
                        throw ValidationError("--until-time \"\(untilTime)\" is not a timestamp: write e.g. '2026-11-22 10:00:00+00'")
                    }
                    bound = .time(micros)
                }
                let (created, mapping) = try config.prepareWarehouse(schema: schema)
                // A replay that built the schema defers its secondary indexes to the end; one that
                // continues a replay builds them at its end too (re-running the DDL creates what is missing).
                if created { _ = try WarehouseSchema.deferIndexes(admin, schema: schema, mapping: mapping) }
                let log = try EventLog.openForReading(path: config.log.path)
                let projector = try Projector(mapping: mapping, target: target, log: log)
                let start = projector.position
                let head = try log.position().head
                let clock = ContinuousClock()
                let began = clock.now
                var progress = Progress(total: head, start: start, interactive: interactive)
                let (records, changes) = try projector.run(until: bound) { position in
                    progress.update(position, elapsed: began.duration(to: clock.now))
                }
                progress.finish(projector.position, elapsed: began.duration(to: clock.now))
                try WarehouseSchema.restoreIndexes(admin, schema: schema, mapping: mapping)
                let seconds = max(Self.seconds(began.duration(to: clock.now)), 0.001)
                var line = "replayed \(records) log records (\(changes) row changes) into schema \(schema)"
                    + (created ? "" : " (continued from record \(start))")
                    + String(format: " in %.1f s, %.0f records/s; checkpoint at record %llu", seconds, Double(records) / seconds, projector.position)
                if swap {
                    try Self.swap(admin, live: warehouse.schema, rebuilt: schema)
                    line += "; swapped: \(warehouse.schema) is the rebuilt warehouse, \(schema) the previous one"
                }
                return line
            }
            print(summary)
        } catch {
            fail(error)
        }
    }

    /// Exchanges the names of `live` and `rebuilt` in one transaction, after waiting for the live
    /// projector's batch in flight (its checkpoint row is locked by every batch).
    static func swap(_ connection: PGConnection, live: String, rebuilt: String) throws {
        let l = connection.quoteIdentifier(live), r = connection.quoteIdentifier(rebuilt)
        let parking = connection.quoteIdentifier("cdc_swap_" + String(UInt32.random(in: 0...UInt32.max)))
        try connection.execute("BEGIN")
        do {
            let exists = try WarehouseSchema.tableExists(connection, schema: live, table: "cdc_checkpoint")
            if exists {
                try connection.execute("LOCK TABLE \(l).cdc_checkpoint IN ACCESS EXCLUSIVE MODE")
                try connection.execute("ALTER SCHEMA \(l) RENAME TO \(parking)")
            } else if try connection.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [live]).rowCount > 0 {
                throw WarehouseError(.notAWarehouse, "the live schema \(live) exists but is not a cdc warehouse: not swapping it away")
            }
            try connection.execute("ALTER SCHEMA \(r) RENAME TO \(l)")
            if exists { try connection.execute("ALTER SCHEMA \(parking) RENAME TO \(r)") }
            try connection.execute("COMMIT")
        } catch {
            _ = try? connection.execute("ROLLBACK")
            throw error
        }
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
}

/// A one-line progress bar on stderr (records, records/s, ETA), drawn only on a terminal.
struct Progress {
    let total: UInt64
    let start: UInt64
    let interactive: Bool
    var lastDraw = -1.0
    /// The position the bar shows.
    var drawn: UInt64

    init(total: UInt64, start: UInt64, interactive: Bool) {
        self.total = total
        self.start = start
        self.interactive = interactive
        drawn = start
    }

    /// Redraws the bar at `position`, at most every 0.2 s unless `force`.
    mutating func update(_ position: UInt64, elapsed: Duration, force: Bool = false) {
        guard interactive else { return }
        let seconds = Replay.seconds(elapsed)
        guard force || seconds - lastDraw >= 0.2 else { return }
        lastDraw = seconds
        drawn = position
        let done = position - start, all = max(total - start, 1)
        let fraction = min(Double(done) / Double(all), 1)
        let rate = seconds > 0 ? Double(done) / seconds : 0
        let eta = rate > 0 ? Double(all - min(done, all)) / rate : 0
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let line = String(format: "\r[%@] %3.0f%%  %llu/%llu records  %.0f/s  ETA %d:%02d ", bar, fraction * 100, position, total, rate,
                          Int(eta) / 60, Int(eta) % 60)
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// Draws the final position (the last batches may have come too fast to be drawn) and ends the line.
    mutating func finish(_ position: UInt64, elapsed: Duration) {
        guard interactive else { return }
        if position != drawn { update(position, elapsed: elapsed, force: true) }
        if lastDraw >= 0 { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
