import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A Prometheus text exposition (what `GET /metrics` returns), parsed.
public struct MetricsText: Sendable {
    public struct Sample: Sendable, CustomStringConvertible {
        public let name: String
        public let labels: [String: String]
        public let value: Double
        public var description: String {
            name + (labels.isEmpty ? "" : "{" + labels.keys.sorted().map { "\($0)=\"\(labels[$0]!)\"" }.joined(separator: ",") + "}") + " \(value)"
        }
    }

    public let samples: [Sample]
    /// `# TYPE name type` lines: metric family name → type.
    public let types: [String: String]
    /// `# HELP name text` lines: metric family name → text.
    public let help: [String: String]
    /// Lines that are neither comments, blank nor parseable samples.
    public let malformed: [String]

    public init(_ text: String) {
        var samples: [Sample] = []
        var types: [String: String] = [:]
        var help: [String: String] = [:]
        var malformed: [String] = []
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            if line.hasPrefix("#") {
                let words = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: true).map(String.init)
                if words.count >= 3, words[1] == "TYPE" { types[words[2]] = words.count > 3 ? words[3] : "" }
                if words.count >= 3, words[1] == "HELP" { help[words[2]] = words.count > 3 ? words[3] : "" }
                continue
            }
            if let sample = Self.parse(line) { samples.append(sample) } else { malformed.append(line) }
        }
        self.samples = samples
        self.types = types
        self.help = help
        self.malformed = malformed
    }

    /// `name{a="x",b="y"} 1.5 [timestamp]`.
    static func parse(_ line: String) -> Sample? {
        let chars = Array(line)
        var i = 0
        var name = ""
        while i < chars.count, chars[i] != "{", chars[i] != " ", chars[i] != "\t" { name.append(chars[i]); i += 1 }
        guard !name.isEmpty else { return nil }
        var labels: [String: String] = [:]
        if i < chars.count, chars[i] == "{" {
            i += 1
            while true {
                while i < chars.count, chars[i] == " " || chars[i] == "," { i += 1 }
                guard i < chars.count else { return nil }
                if chars[i] == "}" { i += 1; break }
                var key = ""
                while i < chars.count, chars[i] != "=" { key.append(chars[i]); i += 1 }
                guard i + 1 < chars.count, chars[i + 1] == "\"" else { return nil }
                i += 2
                var value = ""
                while i < chars.count, chars[i] != "\"" {
                    if chars[i] == "\\", i + 1 < chars.count {
                        i += 1
                        value.append(chars[i] == "n" ? "\n" : chars[i])
                    } else {
                        value.append(chars[i])
                    }
                    i += 1
                }
                guard i < chars.count else { return nil }
                i += 1
                labels[key.trimmingCharacters(in: .whitespaces)] = value
            }
        }
        let rest = String(chars[i...]).split(separator: " ", omittingEmptySubsequences: true)
        guard let first = rest.first, let value = number(String(first)) else { return nil }
        return Sample(name: name, labels: labels, value: value)
    }

    static func number(_ text: String) -> Double? {
        switch text {
        case "+Inf", "Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default: return Double(text)
        }
    }

    /// Samples of `name` whose labels include `labels`.
    public func samples(_ name: String, _ labels: [String: String] = [:]) -> [Sample] {
        samples.filter { sample in sample.name == name && labels.allSatisfy { key, value in sample.labels[key] == value } }
    }

    /// The value of the one sample of `name` with exactly `labels`; nil when there is none.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}

/// `promtool check metrics`, the linter Prometheus ships for exposition text.
public enum Promtool {
    public static let executable = "/usr/bin/promtool"

    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: executable) }

    /// Runs `promtool check metrics` with `text` on its standard input.
    public static func checkMetrics(_ text: String) throws -> Shell.Result {
        guard isAvailable else { throw TestFailure("\(executable) is missing: run tools/install-deps (Debian package prometheus)") }
        let path = NSTemporaryDirectory() + "cdc-promtool-\(UUID().uuidString).txt"
        defer { unlink(path) }
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return try Shell.run(executable, ["check", "metrics"], stdin: path)
    }
}

/// A real Prometheus server on loopback that scrapes one target every second, for tests that query what
/// it collected through its HTTP API. Its TSDB and log live in a temporary directory.
public final class PrometheusServer: @unchecked Sendable {
    public static let executable = "/usr/bin/prometheus"

    public let directory: String
    /// Its HTTP port on 127.0.0.1.
    public let port: Int
    public let target: String
    private let pid: pid_t
    private var stopped = false

    public var url: String { "http://127.0.0.1:\(port)" }
    /// Prometheus's own log (stderr).
    public var log: String { (try? String(contentsOfFile: directory + "/prometheus.log", encoding: .utf8)) ?? "" }

    /// Writes prometheus.yml scraping `target` (`HOST:PORT`, path /metrics) every second, starts
    /// Prometheus on a free loopback port and waits up to `timeout` seconds for `/-/ready`.
    public static func start(scraping target: String, timeout: Double = 60) throws -> PrometheusServer {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TestFailure("\(executable) is missing: run tools/install-deps (Debian package prometheus)")
        }
        let directory = try TemporaryDirectory.make(prefix: "prometheus")
        let config = """
            global:
              scrape_interval: 1s
              scrape_timeout: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: cdc
                metrics_path: /metrics
                static_configs:
                  - targets: ['\(target)']

            """
        try config.write(toFile: directory + "/prometheus.yml", atomically: true, encoding: .utf8)
        let port = try LoopbackPort.free()
        let pid = try Shell.spawn(executable, [
            "--config.file=\(directory)/prometheus.yml",
            "--storage.tsdb.path=\(directory)/data",
            "--web.listen-address=127.0.0.1:\(port)",
            "--log.level=warn",
        ], stdout: directory + "/prometheus.log", stderr: directory + "/prometheus.log")
        let server = PrometheusServer(directory: directory, port: port, target: target, pid: pid)
        let ready = HTTP.poll(server.url + "/-/ready", timeout: timeout) { $0.status == 200 || !server.isRunning }
        guard ready.status == 200 else {
            let log = server.log
            server.stop()
            throw TestFailure("prometheus did not become ready on \(server.url): \(ready); log:\n\(log)")
        }
        return server
    }

    init(directory: String, port: Int, target: String, pid: pid_t) {
        self.directory = directory
        self.port = port
        self.target = target
        self.pid = pid
    }

    /// True while the server process has not exited.
    public var isRunning: Bool {
        if stopped { return false }
        var status: Int32 = 0
        return waitpid(pid, &status, WNOHANG) == 0
    }

    /// One series of an instant query's result.
    public struct Series: Sendable, CustomStringConvertible {
        public let labels: [String: String]
        public let value: Double
        public var description: String { "\(labels) \(value)" }
    }

    /// `GET /api/v1/query?query=EXPRESSION`: the instant vector (or scalar) it returns.
    public func query(_ expression: String) throws -> [Series] {
        let response = HTTP.get(url + "/api/v1/query?query=" + HTTP.queryEncoded(expression))
        guard response.status == 200, let json = response.json, json["status"] as? String == "success",
              let data = json["data"] as? [String: Any] else {
            throw TestFailure("prometheus query \(expression) failed: \(response)")
        }
        func number(_ pair: Any?) -> Double? {
            guard let pair = pair as? [Any], pair.count == 2, let text = pair[1] as? String else { return nil }
            return MetricsText.number(text)
        }
        switch data["resultType"] as? String {
        case "vector":
            return (data["result"] as? [[String: Any]] ?? []).compactMap { item in
                guard let value = number(item["value"]) else { return nil }
                return Series(labels: item["metric"] as? [String: String] ?? [:], value: value)
            }
        case "scalar":
            return number(data["result"]).map { [Series(labels: [:], value: $0)] } ?? []
        default:
            throw TestFailure("prometheus query \(expression): unexpected result \(response.body.prefix(300))")
        }
    }

    /// The value of the query's first series, or nil when it returned none.
    public func value(_ expression: String) throws -> Double? { try query(expression).first?.value }

    /// Queries `expression` every 0.5 s until its first series' value satisfies `accept` or `timeout`
    /// seconds pass; returns the last value seen (nil when the query never returned a series).
    @discardableResult
    public func waitForValue(_ expression: String, timeout: Double = 60, _ accept: (Double) -> Bool) throws -> Double? {
        let deadline = Date().addingTimeInterval(timeout)
        var last: Double?
        repeat {
            if let value = try value(expression) {
                last = value
                if accept(value) { return value }
            }
            usleep(500_000)
        } while Date() < deadline
        return last
    }

    /// The scrape targets' health (`up`, `down`, `unknown`) and last errors, for failure messages.
    public func targets() -> String {
        let response = HTTP.get(url + "/api/v1/targets")
        guard let data = response.json?["data"] as? [String: Any], let active = data["activeTargets"] as? [[String: Any]] else {
            return "\(response)"
        }
        return active.map { "\($0["scrapeUrl"] ?? "?"): \($0["health"] ?? "?") \($0["lastError"] ?? "")" }.joined(separator: "; ")
    }

    /// SIGTERM, then waits up to 10 s (SIGKILL after that), and removes the directory. Idempotent.
    public func stop() {
        guard !stopped else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline {
                kill(pid, SIGKILL)
                _ = waitpid(pid, &status, 0)
                break
            }
            usleep(50_000)
        }
        stopped = true
        if ProcessInfo.processInfo.environment["CDC_TEST_KEEP"] == nil {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}
