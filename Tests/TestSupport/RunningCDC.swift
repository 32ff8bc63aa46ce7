import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

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

    /// Waits up to `timeout` seconds (default ``Shell/defaultTimeout``) for the process; returns its
    /// exit status (128 + signal when killed) and its peak RSS, read from /proc/PID/status (VmHWM)
    /// while it runs. (wait4's ru_maxrss is no good here: for a posix_spawn'ed child it counts the test
    /// process's own memory from before the exec.) A process still running at the deadline is killed
    /// (SIGKILL) and reaped, and an issue saying so is recorded: the status is then 128 + SIGKILL.
    @discardableResult
    public func wait(timeout: Double = Shell.defaultTimeout,
                     sourceLocation: SourceLocation = #_sourceLocation) -> (status: Int32, maxRSSKilobytes: Int) {
        if let finished { return finished }
        var peak = 0
        let status = Shell.reap(pid, timeout: timeout) {
            if let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
               let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
               let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
                peak = max(peak, kb)
            }
        }
        if status == nil {
            Issue.record("`cdc` (pid \(pid)) did not exit within \(timeout) s: killed (SIGKILL); its stderr ends:\n\(stderr.suffix(4000))",
                         sourceLocation: sourceLocation)
        }
        finished = (status ?? 128 + SIGKILL, peak)
        return finished!
    }

    /// True while the process has not exited (once it has, reaps it and keeps its status for ``wait(timeout:sourceLocation:)``).
    public var isRunning: Bool {
        if finished != nil { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid {
            finished = (Shell.exitStatus(status), 0)
            return false
        }
        return true
    }

    /// For `defer`: SIGKILL and reap the process if a test left it running (also when stopped).
    public func killIfRunning() {
        if isRunning {
            send(SIGKILL)
            wait()
        }
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
    /// Starts `cdc ARGS...` (any subcommand) in the background, its stderr kept in the workspace
    /// directory, with `environment` added to the test process's (e.g. `NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    public func start(_ arguments: [String], environment: [String: String] = [:]) throws -> RunningCDC {
        let path = directory + "/\(arguments.first ?? "cdc")-\(UInt32.random(in: 0...UInt32.max)).stderr"
        let pid = try Shell.spawn(Self.executable, arguments, environment: environment, stdout: "/dev/null", stderr: path)
        return RunningCDC(pid: pid, stderrPath: path)
    }

    /// Starts `cdc run --config cdc.toml --no-project ARGS...` in the background.
    public func startRun(_ arguments: [String] = [], environment: [String: String] = [:]) throws -> RunningCDC {
        try start(["run", "--config", configPath, "--no-project"] + arguments, environment: environment)
    }
}
