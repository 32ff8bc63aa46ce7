import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

/// A libpq connection, used by one thread at a time.
///
/// libpq calls block: callers run them on a thread they own, never on Swift's cooperative pool.
/// The type is `@unchecked Sendable` so that it can be handed to that thread; it must not be used
/// from two threads at once.
public final class PGConnection: @unchecked Sendable {
    let handle: OpaquePointer

    /// Connects with a libpq connection string (`key=value ...` or a `postgresql://` URI).
    ///
    /// - Parameters:
    ///   - conninfo: the operator's connection string. Passwords come from PGPASSFILE/PGPASSWORD or the
    ///     string itself; they never appear in errors.
    ///   - overrides: keywords added to (or replacing) those of `conninfo`, e.g. `replication=database`.
    public init(conninfo: String, overrides: [String: String] = [:]) throws {
        var keywords: [String] = []
        var values: [String] = []
        var parseError: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &parseError) else {
            let message = parseError.map { String(cString: $0) } ?? "out of memory"
            if let parseError { PQfreemem(parseError) }
            throw PGError(call: "PQconninfoParse", message: "invalid connection string: \(message)")
        }
        defer { PQconninfoFree(options) }
        var option = options
        while let keyword = option.pointee.keyword {
            let key = String(cString: keyword)
            if let value = option.pointee.val, overrides[key] == nil {
                keywords.append(key)
                values.append(String(cString: value))
            }
            option += 1
        }
        for (key, value) in overrides.sorted(by: { $0.key < $1.key }) {
            keywords.append(key)
            values.append(value)
        }
        let connection = withCStringArray(keywords) { k in
            withCStringArray(values) { v in PQconnectdbParams(k, v, 0) }
        }
        guard let connection else {
            throw PGError(call: "PQconnectdbParams", message: "out of memory")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(connection))
            PQfinish(connection)
            throw PGError(call: "connect", message: message)
        }
        handle = connection
        PQsetNoticeProcessor(handle, { _, _ in }, nil)
    }

    deinit { PQfinish(handle) }

    /// Where this connection goes, for logs and errors: host, port, database and user, never the password.
    public var target: String {
        let host = PQhost(handle).map { String(cString: $0) } ?? "?"
        let port = PQport(handle).map { String(cString: $0) } ?? "?"
        let db = PQdb(handle).map { String(cString: $0) } ?? "?"
        let user = PQuser(handle).map { String(cString: $0) } ?? "?"
        return "host=\(host) port=\(port) dbname=\(db) user=\(user)"
    }

    /// The server's version number, e.g. 150018.
    public var serverVersion: Int { Int(PQserverVersion(handle)) }

    /// The last error message libpq recorded on this connection, on one line.
    public var errorMessage: String { PGError.oneLine(String(cString: PQerrorMessage(handle))) }

    /// Runs one or more SQL commands without parameters and returns the last result.
    @discardableResult
    public func execute(_ sql: String) throws -> PGResult {
        try check(PQexec(handle, sql), call: Self.callName(sql))
    }

    /// Runs one SQL command with text parameters ($1, $2, ...); `nil` is NULL.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> PGResult {
        let result = withOptionalCStringArray(parameters) { params in
            PQexecParams(handle, sql, Int32(parameters.count), nil, params, nil, nil, 0)
        }
        return try check(result, call: Self.callName(sql))
    }

    /// Quotes an identifier (a table or schema name) for SQL text.
    public func quoteIdentifier(_ name: String) -> String {
        guard let quoted = PQescapeIdentifier(handle, name, name.utf8.count) else { return PGClient.quoteIdentifier(name) }
        defer { PQfreemem(quoted) }
        return String(cString: quoted)
    }

    /// Quotes a literal for SQL text.
    public func quoteLiteral(_ value: String) -> String {
        guard let quoted = PQescapeLiteral(handle, value, value.utf8.count) else {
            return "'" + value.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "''") + "'"
        }
        defer { PQfreemem(quoted) }
        return String(cString: quoted)
    }

    // MARK: COPY

    /// Runs `COPY ... TO STDOUT` and hands each row (one CopyData message, text format, including its
    /// trailing newline) to `row`. Returns the number of rows.
    @discardableResult
    public func copyOut(_ sql: String, row: (UnsafeRawBufferPointer) throws -> Void) throws -> Int {
        let start = PQexec(handle, sql)
        guard let start, PQresultStatus(start) == PGRES_COPY_OUT else {
            _ = try check(start, call: "COPY")
            throw PGError(call: "COPY", kind: .protocol, message: "server did not start COPY OUT")
        }
        PQclear(start)
        var count = 0
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let length = PQgetCopyData(handle, &buffer, 0)
            if length > 0, let buffer {
                defer { PQfreemem(buffer) }
                try row(UnsafeRawBufferPointer(start: buffer, count: Int(length)))
                count += 1
            } else if length == -1 {
                break
            } else {
                throw PGError(call: "PQgetCopyData", message: errorMessage)
            }
        }
        _ = try check(PQgetResult(handle), call: "COPY")
        while let extra = PQgetResult(handle) { PQclear(extra) }
        return count
    }

    /// Runs `COPY ... FROM STDIN` and sends `data` (text format) in chunks supplied by `produce`,
    /// which returns `nil` when done.
    public func copyIn(_ sql: String, produce: () throws -> [UInt8]?) throws {
        let start = PQexec(handle, sql)
        guard let start, PQresultStatus(start) == PGRES_COPY_IN else {
            _ = try check(start, call: "COPY")
            throw PGError(call: "COPY", kind: .protocol, message: "server did not start COPY IN")
        }
        PQclear(start)
        do {
            while let chunk = try produce() {
                let sent = chunk.withUnsafeBufferPointer { buffer in
                    buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(handle, $0.baseAddress, Int32($0.count)) }
                }
                guard sent == 1 else { throw PGError(call: "PQputCopyData", message: errorMessage) }
            }
        } catch {
            _ = PQputCopyEnd(handle, "aborted by client")
            while let extra = PQgetResult(handle) { PQclear(extra) }
            throw error
        }
        guard PQputCopyEnd(handle, nil) == 1 else { throw PGError(call: "PQputCopyEnd", message: errorMessage) }
        _ = try check(PQgetResult(handle), call: "COPY")
        while let extra = PQgetResult(handle) { PQclear(extra) }
    }

    // MARK: Replication (CopyBoth)

    /// Sends a replication command that enters CopyBoth mode (START_REPLICATION).
    public func startCopyBoth(_ command: String) throws {
        guard let result = PQexec(handle, command) else {
            throw PGError(call: Self.callName(command), message: errorMessage)
        }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_COPY_BOTH else {
            throw Self.error(from: result, call: Self.callName(command), fallback: errorMessage)
        }
    }

    /// What `readCopyData` found.
    public enum CopyData {
        /// A message; the buffer is valid only during the callback.
        case message
        /// Nothing buffered: wait for the socket to become readable.
        case wouldBlock
        /// The server ended the copy; `PGError` holds the reason it gave, if any.
        case ended(PGError?)
    }

    /// Reads one CopyData message without blocking and hands it to `body`.
    public func readCopyData(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> CopyData {
        var buffer: UnsafeMutablePointer<CChar>?
        let length = PQgetCopyData(handle, &buffer, 1)
        if length > 0, let buffer {
            defer { PQfreemem(buffer) }
            try body(UnsafeRawBufferPointer(start: buffer, count: Int(length)))
            return .message
        }
        if length == 0 { return .wouldBlock }
        if length == -1 {
            var failure: PGError?
            while let result = PQgetResult(handle) {
                let status = PQresultStatus(result)
                if status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && failure == nil {
                    failure = Self.error(from: result, call: "replication stream", fallback: errorMessage)
                }
                PQclear(result)
            }
            return .ended(failure)
        }
        throw PGError(call: "PQgetCopyData", message: errorMessage)
    }

    /// Ends a CopyBoth stream the way pg_recvlogical does: sends CopyDone, then reads (and drops) what
    /// the server still sends until it answers with its own CopyDone, so that every message sent before
    /// (a final standby status update above all) has been read by the walsender before the connection
    /// closes. Closing with unread data instead lets the kernel reset the connection, and a walsender
    /// blocked writing to us may then exit without reading the last status message. Gives up quietly
    /// after `timeout` seconds: the caller closes the connection either way.
    /// Returns true when the server ended the stream in time.
    @discardableResult
    public func endCopyBoth(timeout: Double) -> Bool {
        guard PQputCopyEnd(handle, nil) == 1 else { return false }
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        while true {
            var buffer: UnsafeMutablePointer<CChar>?
            let length = PQgetCopyData(handle, &buffer, 1)
            if let buffer { PQfreemem(buffer) }
            if length > 0 { continue }
            if length == -1 {
                while let result = PQgetResult(handle) { PQclear(result) }
                return true
            }
            if length < -1 { return false }
            // Output still queued (a full socket) is pushed as the server drains; then wait for input.
            if PQflush(handle) < 0 { return false }
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            let milliseconds = Int32(min(100, max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000)))
            if waitReadable(milliseconds: milliseconds), PQconsumeInput(handle) != 1 { return false }
        }
    }

    /// Reads whatever the socket has into libpq's buffer. Throws when the connection is lost.
    public func consumeInput() throws {
        guard PQconsumeInput(handle) == 1 else { throw PGError(call: "PQconsumeInput", message: errorMessage) }
    }

    /// Sends one CopyData message to the server and flushes it.
    public func sendCopyData(_ bytes: [UInt8]) throws {
        let sent = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { PQputCopyData(handle, $0.baseAddress, Int32($0.count)) }
        }
        guard sent == 1 else { throw PGError(call: "PQputCopyData", message: errorMessage) }
        guard PQflush(handle) >= 0 else { throw PGError(call: "PQflush", message: errorMessage) }
    }

    /// Waits up to `milliseconds` for the socket to become readable. Returns true when it is.
    public func waitReadable(milliseconds: Int32) -> Bool {
        var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, milliseconds)
        return ready > 0
    }

    // MARK: Helpers

    private func check(_ result: OpaquePointer?, call: String) throws -> PGResult {
        guard let result else { throw PGError(call: call, message: errorMessage) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_COPY_OUT, PGRES_COPY_IN, PGRES_COPY_BOTH:
            return PGResult(handle: result)
        default:
            let error = Self.error(from: result, call: call, fallback: errorMessage)
            PQclear(result)
            throw error
        }
    }

    /// The error `result` reports (see ``PGError/init(result:call:fallback:)``); call before PQclear.
    static func error(from result: OpaquePointer, call: String, fallback: String) -> PGError {
        PGError(result: result, call: call, fallback: fallback)
    }

    /// The first word(s) of a command, to name it in errors without echoing data.
    static func callName(_ sql: String) -> String {
        let words = sql.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).prefix(2)
        let first = words.first.map(String.init)?.uppercased() ?? "SQL"
        if ["CREATE", "DROP", "ALTER", "START_REPLICATION", "SELECT", "COPY"].contains(first), words.count > 1,
           first != "SELECT", first != "COPY", first != "START_REPLICATION" {
            return first + " " + String(words[words.index(after: words.startIndex)]).uppercased()
        }
        return first
    }
}

func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
    defer { pointers.forEach { free($0) } }
    return pointers.map { UnsafePointer($0) }.withUnsafeBufferPointer { body($0.baseAddress!) }
}

func withOptionalCStringArray<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0) } ?? nil }
    defer { pointers.forEach { free($0) } }
    if pointers.isEmpty { return body(nil) }
    return pointers.map { UnsafePointer($0) }.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// A double-quoted SQL identifier (`"a""b"`), for SQL built without a connection at hand.
public func quoteIdentifier(_ name: String) -> String {
    "\"" + name.split(separator: "\"", omittingEmptySubsequences: false).joined(separator: "\"\"") + "\""
}
