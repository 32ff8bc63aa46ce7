import Foundation
import Testing
import TestSupport

/// The real `cdc` binary on a copy of the golden log (Tests/Fixtures/golden-log): `cdc log export`,
/// `cdc log digest` and `cdc log verify --digest` print exactly what the build that wrote it printed.
@Suite(.timeLimit(.minutes(15))) struct GoldenLogTests {
    static func cdc(_ arguments: [String]) throws -> Shell.Result {
        let result = try Shell.run(CDCWorkspace.executable, arguments)
        #expect(result.status == 0, "cdc \(arguments.joined(separator: " ")): \(result.stderr)")
        return result
    }

    @Test func exportDigestAndVerifyPrintTheCheckedInOutput() throws {
        let log = try GoldenLog.copy()
        for (arguments, file) in [(["log", "export", "--log", log, "--format", "jsonl"], "export.jsonl"),
                                  (["log", "digest", "--log", log], "digest.json"),
                                  (["log", "verify", "--log", log, "--digest", GoldenLog.directory + "/digest.json"], "verify.txt")] {
            let output = try Self.cdc(arguments).stdout
            let expected = try GoldenLog.file(file)
            #expect(output == expected, "\(file): \(GoldenLog.firstDifference(output, expected))")
        }
    }
}
