import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Log lines for journald: under systemd (`$JOURNAL_STREAM` names cdc's stderr) each line starts with
/// its syslog priority (`<3>` error, `<4>` warning, `<6>` info, ...), which journald strips and keeps as
/// the entry's level, so `journalctl -p warning -u cdc` works. No timestamp: the journal has its own.
struct JournalLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    private static let lock = Mutex<Void>(())

    init(level: Logger.Level) { logLevel = level }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// True when stderr is the stream `$JOURNAL_STREAM` (`device:inode`) names, as sd_journal_stream_fd
    /// documents: a redirected stderr under systemd keeps the plain format.
    static func stderrIsJournal(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let value = environment["JOURNAL_STREAM"] else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(STDERR_FILENO, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    func log(event: LogEvent) {
        var line = "<\(Self.priority(event.level))>\(event.level): \(event.message)"
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        line = line.replacingOccurrences(of: "\n", with: " ") + "\n"
        let bytes = Array(line.utf8)
        Self.lock.withLock { _ in
            _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
    }
}
