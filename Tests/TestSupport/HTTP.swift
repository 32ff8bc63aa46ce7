import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One HTTP response (or the failure to get one).
public struct HTTPResponse: Sendable, CustomStringConvertible {
    /// The status code; 0 when no response came (connection refused, timeout).
    public let status: Int
    /// Header fields by lower-cased name (the last one when repeated).
    public let headers: [String: String]
    public let body: String
    /// curl's complaint when there was no response.
    public let error: String

    /// The value of header `name` (any case).
    public func header(_ name: String) -> String? { headers[name.lowercased()] }

    /// The body parsed as a JSON object, or nil.
    public var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
    }

    public var description: String {
        status == 0 ? "no response (\(error))" : "HTTP \(status) \(body.prefix(600))"
    }
}

/// HTTP requests to loopback servers, through curl (never through a proxy).
public enum HTTP {
    public static let curl: String = {
        for path in ["/usr/bin/curl", "/bin/curl", "/usr/local/bin/curl"] where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return "/usr/bin/curl"
    }()

    /// Sends `method` (GET, HEAD, POST, ...) to `url` and returns the response; status 0 when none came
    /// within `timeout` seconds.
    public static func request(_ url: String, method: String = "GET", timeout: Double = 10) -> HTTPResponse {
        let base = NSTemporaryDirectory() + "cdc-http-\(UUID().uuidString)"
        defer {
            unlink(base + ".headers")
            unlink(base + ".body")
        }
        var arguments = ["-s", "-S", "-g", "--noproxy", "*", "--max-time", String(timeout),
                         "-D", base + ".headers", "-o", base + ".body", "-w", "%{http_code}"]
        switch method {
        case "GET": break
        case "HEAD": arguments.append("--head")
        default: arguments += ["-X", method]
        }
        arguments.append(url)
        guard let result = try? Shell.run(curl, arguments) else {
            return HTTPResponse(status: 0, headers: [:], body: "", error: "cannot run \(curl)")
        }
        let status = Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        let headerText = (try? String(contentsOfFile: base + ".headers", encoding: .utf8)) ?? ""
        // The last response's block (after any interim 1xx ones).
        let block = headerText.components(separatedBy: "\r\n\r\n").last { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty } ?? ""
        var headers: [String: String] = [:]
        for line in block.components(separatedBy: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()] =
                line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let body = (try? String(contentsOfFile: base + ".body", encoding: .utf8)) ?? ""
        return HTTPResponse(status: status, headers: headers, body: body,
                            error: result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// GET `url`.
    public static func get(_ url: String, timeout: Double = 10) -> HTTPResponse {
        request(url, method: "GET", timeout: timeout)
    }

    /// GETs `url` every 0.2 s until `done` accepts the response or `timeout` seconds pass; returns the
    /// last response.
    @discardableResult
    public static func poll(_ url: String, timeout: Double = 60, until done: (HTTPResponse) -> Bool) -> HTTPResponse {
        let deadline = Date().addingTimeInterval(timeout)
        var response = get(url)
        while !done(response) && Date() < deadline {
            usleep(200_000)
            response = get(url)
        }
        return response
    }

    /// `text` percent-encoded for a URL query value.
    public static func queryEncoded(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

/// TCP ports on the loopback interface.
public enum LoopbackPort {
    /// A port on 127.0.0.1 that was free a moment ago (bound with port 0, read back, closed).
    public static func free() throws -> Int {
        let listener = try LoopbackListener(listen: false)
        defer { listener.close() }
        return listener.port
    }
}

/// A TCP socket bound (and listening, unless asked not to) on 127.0.0.1, e.g. to hold a port in use.
public final class LoopbackListener: @unchecked Sendable {
    public let port: Int
    private var fd: Int32

    /// Binds 127.0.0.1:`port` (0: any free port) and listens unless `listen` is false.
    public init(port: Int = 0, listen: Bool = true) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound, !listen || Glibc.listen(fd, 16) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw TestFailure("cannot bind 127.0.0.1:\(port): \(message)")
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Closes the socket (idempotent).
    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    deinit { close() }
}
