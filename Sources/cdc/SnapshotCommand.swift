import ArgumentParser
import CDCService
import Capture
import EventLog
import Foundation
import Lifecycle
#if canImport(Glibc)
import Glibc
#endif

struct Snapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask the running `cdc run` to backfill (or re-read) tables, and wait until their rows are in the log.",
        discussion: """
            The request travels through the source as a transactional logical message \
            (pg_logical_emit_message, prefix cdc.snapshot.request): the one writer receives it in WAL order, \
            the slot keeps it until the log holds it, and the log records it. `cdc run` reads the tables in \
            key-ordered chunks between watermarks (DBLog) while it streams. Waiting reads the log (read-only) \
            until each table's final chunk record is there.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: "Tables to read (schema.table, or table for public).")
    var tables: [String]

    @Option(name: .customLong("where"), help: "Read only the rows matching this SQL condition (re-read for repair).")
    var whereSQL: String?

    @Option(help: "Rows per chunk.")
    var chunkSize: Int?

    @Flag(help: "Return once the request is sent.")
    var noWait = false

    func run() async throws {
        do {
            if let chunkSize, chunkSize < 1 || chunkSize > 1_000_000 {
                throw ValidationError("--chunk-size must be from 1 to 1000000")
            }
            let config = try global.loadConfig()
            let request = SnapshotRequest(id: UUID().uuidString.lowercased(), tables: [], whereSQL: whereSQL, chunkSize: chunkSize)
            let sent: (SnapshotRequest, UInt64) = try await runOnDedicatedThread(name: "cdc-snapshot") { [tables, whereSQL] in
                let sql = try SourceInitializer.connect(config.source.url)
                var request = request
                request.tables = try SnapshotRequester.check(sql, publication: config.source.publication, tables: tables, whereSQL: whereSQL)
                // The log's head before the request: its final chunk records come after it.
                let head = (try? EventLog.openForReading(path: config.log.path).position().head) ?? 0
                try SnapshotRequester.send(sql, request, log: config.log.path)
                return (request, head)
            }
            let (final, head) = sent
            if noWait {
                print("snapshot requested: \(final.tables.joined(separator: ", ")) (request \(final.id))")
                finish(status: 0)
            }
            let started = Date()
            let done: [String: BackfillChunkRecord] = try await runOnDedicatedThread(name: "cdc-snapshot-wait") {
                let log = try EventLog.openForReading(path: config.log.path)
                var seq = head + 1
                var done: [String: BackfillChunkRecord] = [:]
                while done.count < final.tables.count {
                    done.merge(try SnapshotRequester.finalChunks(log, request: final.id, from: &seq)) { $1 }
                    if done.count < final.tables.count { usleep(200_000) }
                }
                return done
            }
            let seconds = Date().timeIntervalSince(started)
            if let refused = done.values.first(where: { $0.error != nil }) {
                throw SnapshotRequester.Failure(description: "cdc run refused the snapshot of \(refused.table): \(refused.error!)")
            }
            let rows = done.values.reduce(0) { $0 + $1.total }
            let chunks = done.values.reduce(0) { $0 + $1.chunk }
            print("snapshot done: \(final.tables.joined(separator: ", ")): \(rows) rows in \(chunks) chunks, \(String(format: "%.1f", seconds)) s (request \(final.id))")
        } catch {
            fail(error)
        }
        finish(status: 0)
    }
}
