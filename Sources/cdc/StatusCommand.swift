import ArgumentParser
import CDCService
import Foundation
import Lifecycle
#if canImport(Glibc)
import Glibc
#endif

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the log head, the slot, the warehouse checkpoint and their lag, and any problems.",
        discussion: """
            Read-only: works with or without a running `cdc run` and never takes the writer lock. \
            Exit 0 when healthy, 1 when there are problems (one per line, `problem: CODE: message`), \
            2 when it cannot tell (the source or the warehouse is unreachable).
            """)

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Print one JSON object (keys: log, slot, projection, history_index, privacy, backfills, healthy, problems).")
    var json = false

    func run() async throws {
        let config: Config
        do { config = try global.loadConfig() } catch { fail(error, status: 2) }
        let report = try await runOnDedicatedThread(name: "cdc-status") { StatusReport.gather(config) }
        if json {
            let data = try JSONSerialization.data(withJSONObject: report.jsonObject(), options: [.sortedKeys, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for line in report.lines() { print(line) }
        }
        if report.cannotTell, let reason = report.problems.first(where: { $0.code.hasSuffix("_unreachable") }) {
            FileHandle.standardError.write(Data("cdc: cannot tell: \(reason.message)\n".utf8))
        }
        finish(status: report.exitCode)
    }
}
