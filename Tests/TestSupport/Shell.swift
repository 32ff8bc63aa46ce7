import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// Runs programs and captures their output.
///
/// Uses posix_spawn and waitpid rather than Foundation's Process, whose waitUntilExit was seen never
/// returning here for a script that starts a daemon (pg_ctl). Output goes through files, not pipes:
/// a daemon the program starts keeps inherited descriptors open.
public enum Shell {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String

        public init(status: Int32, stdout: String, stderr: String) {
            self.status = status
            self.stdout = stdout
            self.stderr = stderr
        }
    }

    /// How long `run` lets a program take unless told otherwise: generous, so that only a hang reaches it.
    public static let defaultTimeout: Double = 300

    /// Runs `executable` with `arguments` to completion, its standard input read from the file `stdin`
    /// (default /dev/null). A program still running after `timeout` seconds is killed (SIGKILL, with
    /// its process group) and `run` throws a ``TestFailure`` naming the command and the timeout.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           stdin: String = "/dev/null", timeout: Double = defaultTimeout) throws -> Result {
        let base = NSTemporaryDirectory() + "cdc-shell-\(UUID().uuidString)"
        defer {
            unlink(base + ".out")
            unlink(base + ".err")
        }
        let pid = try spawn(executable, arguments, environment: environment, stdin: stdin,
                            stdout: base + ".out", stderr: base + ".err", processGroup: true)
        let stdout = { (try? String(contentsOfFile: base + ".out", encoding: .utf8)) ?? "" }
        let stderr = { (try? String(contentsOfFile: base + ".err", encoding: .utf8)) ?? "" }
        guard let status = reap(pid, timeout: timeout, killGroup: true) else {
            throw TestFailure("`\(([executable] + arguments).joined(separator: " "))` did not finish within \(timeout) s and was killed; "
                              + "stderr: \(stderr())\(stdout().isEmpty ? "" : "\nstdout: \(stdout())")")
        }
        return Result(status: status, stdout: stdout(), stderr: stderr())
    }

    /// Starts `executable` in the background with stdout and stderr appended to the given files and
    /// stdin read from `stdin`. `environment` is added to (and overrides) the test process's own.
    /// With `processGroup`, the program leads a process group of its own (so that it can be killed
    /// together with what it starts).
    public static func spawn(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                             stdin: String = "/dev/null", stdout: String, stderr: String,
                             processGroup: Bool = false) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdin, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        if processGroup {
            posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        let env = ProcessInfo.processInfo.environment.merging(environment ?? [:]) { $1 }.map { "\($0.key)=\($0.value)" }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let code = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard code == 0 else { throw TestFailure("cannot start \(executable): \(String(cString: strerror(code)))") }
        return pid
    }

    /// Waits for `pid` up to `timeout` seconds and returns its exit status (see ``exitStatus(_:)``).
    /// A process still running then is killed (SIGKILL) and reaped, an issue is recorded, and the
    /// status returned is 128 + SIGKILL.
    @discardableResult
    public static func wait(_ pid: pid_t, timeout: Double = defaultTimeout,
                            sourceLocation: SourceLocation = #_sourceLocation) -> Int32 {
        if let status = reap(pid, timeout: timeout) { return status }
        Issue.record("process \(pid) did not exit within \(timeout) s: killed (SIGKILL)", sourceLocation: sourceLocation)
        return 128 + SIGKILL
    }

    /// Reaps `pid`, waiting up to `timeout` seconds; then kills it (SIGKILL; its process group with
    /// `killGroup`), reaps it and returns nil. `poll` runs on each round (every 20 ms) while it runs.
    static func reap(_ pid: pid_t, timeout: Double, killGroup: Bool = false, poll: () -> Void = {}) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        var raw: Int32 = 0
        while true {
            poll()
            let r = waitpid(pid, &raw, WNOHANG)
            if r == pid { return exitStatus(raw) }
            if r == -1 && errno != EINTR { return exitStatus(raw) }  // not our child (already reaped)
            if Date() >= deadline { break }
            usleep(20_000)
        }
        kill(killGroup ? -pid : pid, SIGKILL)
        while waitpid(pid, &raw, 0) == -1 && errno == EINTR {}
        return nil
    }

    /// Whether `pid` is still running, without reaping it: false once it has exited (a zombie
    /// waiting for its parent) or is gone.
    public static func isRunning(_ pid: pid_t) -> Bool {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        return stat.range(of: ") ", options: .backwards).map { !stat[$0.upperBound...].hasPrefix("Z") } ?? false
    }

    /// A `waitpid` status as a shell shows it: the exit code, or 128 + the signal that killed the process.
    public static func exitStatus(_ raw: Int32) -> Int32 {
        raw & 0x7F == 0 ? (raw >> 8) & 0xFF : 128 + (raw & 0x7F)
    }
}
