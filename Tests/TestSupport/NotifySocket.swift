import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A test's own systemd notification socket: an AF_UNIX datagram socket bound to a path in a temporary
/// directory, passed to `cdc run` as `NOTIFY_SOCKET`. A background thread receives every datagram and
/// records it with the time it arrived, split into its `KEY=VALUE` lines. Call ``close()`` when done
/// (the receiving thread holds the socket until then).
public final class NotifySocket: @unchecked Sendable {
    /// One datagram as received.
    public struct Datagram: Sendable {
        public let received: Date
        /// Its non-empty lines, in order (`READY=1`, `STATUS=streaming ...`).
        public let lines: [String]
    }

    /// One `KEY=VALUE` line of a datagram.
    public struct Line: Sendable, CustomStringConvertible {
        public let received: Date
        /// Index of its datagram in ``datagrams``.
        public let datagram: Int
        public let key: String
        public let value: String
        /// The line as sent.
        public var text: String { "\(key)=\(value)" }
        public var description: String { text }
    }

    /// The socket's path: the value for `NOTIFY_SOCKET`.
    public let path: String
    private let directory: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [Datagram] = []
    private var stopping = false
    private var closed = false
    private let finished = DispatchSemaphore(value: 0)

    public init() throws {
        directory = try TemporaryDirectory.make(prefix: "notify")
        path = directory + "/notify.sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket(AF_UNIX, SOCK_DGRAM): \(String(cString: strerror(errno)))") }
        var address = try Self.address(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw TestFailure("bind \(path): \(message)")
        }
        // Anyone may send (the sandbox's postgres user never does, but a service user might).
        chmod(path, 0o777)
        let thread = Thread { [self] in receiveLoop() }
        thread.name = "NotifySocket"
        thread.start()
    }

    static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let fits = withUnsafeMutableBytes(of: &address.sun_path) { raw -> Bool in
            guard bytes.count < raw.count else { return false }
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
            return true
        }
        guard fits else { throw TestFailure("socket path too long: \(path)") }
        return address
    }

    private func receiveLoop() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            lock.lock()
            let stop = stopping
            lock.unlock()
            if stop { break }
            var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pollfd, 1, 50) > 0 else { continue }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            guard count > 0 else { continue }
            let text = String(decoding: buffer[0..<count], as: UTF8.self)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            lock.lock()
            received.append(Datagram(received: Date(), lines: lines))
            lock.unlock()
        }
        finished.signal()
    }

    /// Stops receiving, closes the socket and removes its directory. Idempotent.
    public func close() {
        lock.lock()
        if closed { lock.unlock(); return }
        closed = true
        stopping = true
        lock.unlock()
        finished.wait()
        Glibc.close(fd)
        unlink(path)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Every datagram received so far, in arrival order.
    public var datagrams: [Datagram] {
        lock.lock()
        defer { lock.unlock() }
        return received
    }

    /// Every line received so far, in arrival order (a line without `=` has an empty value).
    public var lines: [Line] {
        datagrams.enumerated().flatMap { index, datagram in
            datagram.lines.map { line in
                let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return Line(received: datagram.received, datagram: index, key: String(parts[0]),
                            value: parts.count > 1 ? String(parts[1]) : "")
            }
        }
    }

    /// The lines received so far as text, for failure messages.
    public var transcript: String {
        let start = datagrams.first?.received ?? Date()
        return lines.map { String(format: "+%.2fs %@", $0.received.timeIntervalSince(start), $0.text) }.joined(separator: "\n")
    }

    /// Waits up to `timeout` seconds for a line matching `predicate` among those at or after position
    /// `from` in ``lines``; returns the first such line's position, or nil. Gives up early once
    /// `giveUp` returns true (e.g. the sender exited) and no such line came.
    @discardableResult
    public func waitForLine(from: Int = 0, timeout: Double = 60, giveUp: () -> Bool = { false },
                            _ predicate: (Line) -> Bool) -> Int? {
        let deadline = Date().addingTimeInterval(timeout)
        var last = false
        while true {
            let all = lines
            if from < all.count, let index = all[from...].firstIndex(where: predicate) { return index }
            if last || Date() >= deadline { return nil }
            if giveUp() {
                last = true
                usleep(200_000)  // what was sent before may still be on its way to the receiving thread
            } else {
                usleep(20_000)
            }
        }
    }

    /// Waits up to `timeout` seconds for the exact line `text` (e.g. `READY=1`) at or after position `from`.
    @discardableResult
    public func waitFor(_ text: String, from: Int = 0, timeout: Double = 60, giveUp: () -> Bool = { false }) -> Int? {
        waitForLine(from: from, timeout: timeout, giveUp: giveUp) { $0.text == text }
    }

    /// Sends `message` as one datagram to the notification socket at `path` (as sd_notify does).
    public static func send(_ message: String, to path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        var address = try address(path)
        let bytes = Array(message.utf8)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        guard sent == bytes.count else { throw TestFailure("sendto \(path): \(String(cString: strerror(errno)))") }
    }
}
