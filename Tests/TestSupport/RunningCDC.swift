import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A `cdc` process running in the background (e.g. `cdc run`), for tests that signal or kill it.
public final class RunningCDC: @unchecked Sendable {
    public let pid: pid_t
    public let stderrPath: String
    private var finished: (status: Int32, maxRSSKilobytes: Int)?

    init(pid: pid_t, stderrPath: String) {
        self.pid = pid
        self.stderrPath = stderrPath
    }

    /// Sends `signal` (SIGTERM, SIGKILL, ...).
    public func send(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the process; returns its exit status (128 + signal when killed) and its peak RSS,
    /// read from /proc/PID/status (VmHWM) while it runs. (wait4's ru_maxrss is no good here: for a
    /// posix_spawn'ed child it counts the test process's own memory from before the exec.)
    @discardableResult
    public func wait() -> (status: Int32, maxRSSKilobytes: Int) {
        if let finished { return finished }
        var peak = 0
        var status: Int32 = 0
        while true {
            if let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
               let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
                peak = max(peak, kb)
            }
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { break }
            if r == -1 && errno != EINTR { break }
            usleep(20_000)
        }
        let code: Int32 = status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        finished = (code, peak)
        return finished!
    }

    /// Waits up to `timeout` seconds for the process to exit and returns its exit status; when it is
    /// still running then, kills it (SIGKILL), reaps it and returns nil.
    public func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning && Date() < deadline { usleep(20_000) }
        if isRunning {
            send(SIGKILL)
            wait()
            return nil
        }
        return wait().status
    }

    /// True while the process has not exited (does not reap it).
    public var isRunning: Bool {
        if finished != nil { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            finished = (status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F), 0)
            return false
        }
        return true
    }

    /// What the process wrote to stderr so far.
    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    /// Waits until stderr contains `text` `count` times, or `timeout` seconds pass. Returns whether it did.
    @discardableResult
    public func waitForLog(_ text: String, count: Int = 1, timeout: Double = 60) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if stderr.components(separatedBy: text).count - 1 >= count { return true }
            if !isRunning { return stderr.components(separatedBy: text).count - 1 >= count }
            usleep(50_000)
        }
        return false
    }
}

extension CDCWorkspace {
    /// Starts `cdc run --config cdc.toml --no-project ARGS...` in the background, with `environment`
    /// added to the test process's (e.g. `NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    public func startRun(_ arguments: [String] = [], environment: [String: String] = [:]) throws -> RunningCDC {
        let path = directory + "/run-\(UInt32.random(in: 0...UInt32.max)).stderr"
        let pid = try Shell.spawn(Self.executable, ["run", "--config", configPath, "--no-project"] + arguments,
                                  environment: environment, stdout: "/dev/null", stderr: path)
        return RunningCDC(pid: pid, stderrPath: path)
    }
}
