import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The deadlines the tests stand on fail the test when they pass, instead of letting it go on or hang.
@Suite(.timeLimit(.minutes(15))) struct TestSupportChecks {
    @Test func pollFailsTheTestAtItsDeadlineSayingWhatNeverHappened() throws {
        var thrown: (any Error)?
        withKnownIssue("poll records an issue at its deadline") {
            do {
                try poll(what: "a condition that never holds", timeout: 0.3) { false }
            } catch {
                thrown = error
            }
        } matching: { issue in
            issue.comments.contains { $0.rawValue == "gave up after 0.3 s waiting for: a condition that never holds" }
        }
        #expect(thrown is PollTimedOut, "and throws, so that the caller stops: \(String(describing: thrown))")
        var evaluations = 0
        try poll(what: "the third evaluation") {
            evaluations += 1
            return evaluations == 3
        }
        #expect(evaluations == 3, "a condition that holds ends the wait")
    }

    @Test func shellRunKillsACommandAndWhatItStartedAtItsDeadline() throws {
        let directory = try TemporaryDirectory.make(prefix: "deadline")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pidFile = directory + "/child.pid"
        let error = #expect(throws: TestFailure.self) {
            try Shell.run("/bin/sh", ["-c", "sleep 60 & echo $! > \(pidFile); wait"], timeout: 1)
        }
        #expect(error?.description.contains("`/bin/sh -c sleep 60 &") == true && error?.description.contains("within 1.0 s") == true,
                "the failure names the command and the timeout: \(String(describing: error))")
        let child = try #require(pid_t(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        try poll(what: "the command's own child (pid \(child)) is killed with it") { !Shell.isRunning(child) }
    }

    @Test func waitingForAProcessPastItsDeadlineKillsItAndFailsTheTest() throws {
        let pid = try Shell.spawn("/bin/sleep", ["60"], stdout: "/dev/null", stderr: "/dev/null")
        var status: Int32 = -1
        withKnownIssue("Shell.wait records an issue at its deadline") {
            status = Shell.wait(pid, timeout: 0.5)
        } matching: { issue in
            issue.comments.contains { $0.rawValue.contains("did not exit within 0.5 s: killed") }
        }
        #expect(status == 128 + SIGKILL)
        #expect(kill(pid, 0) != 0, "killed and reaped")
    }

    @Test func exitStatusesReadAsAShellShowsThem() throws {
        #expect(try Shell.run("/bin/sh", ["-c", "exit 3"]).status == 3)
        #expect(try Shell.run("/bin/sh", ["-c", "kill -9 $$"]).status == 128 + SIGKILL)
        #expect(Shell.exitStatus(0) == 0 && Shell.exitStatus(1 << 8) == 1 && Shell.exitStatus(SIGTERM) == 128 + SIGTERM)
    }

    @Test func lsnTextIsReadAsPostgreSQLPrintsIt() {
        #expect(lsnValue("0/16B3748") == 0x16B3748)
        #expect(lsnValue("1A/0") == 0x1A << 32)
        #expect(lsnValue("FFFFFFFF/FFFFFFFF") == UInt64.max)
        #expect(lsnValue("16B3748") == nil && lsnValue("0/") == nil && lsnValue("x/1") == nil && lsnValue(nil) == nil)
    }
}
