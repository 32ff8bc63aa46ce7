import Foundation
import TOMLKit
import EventLog
import Capture
import Projection

/// A configuration problem, naming the file and the key.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The contents of `cdc.toml`.
///
///     [source]
///     url = "host=... port=... dbname=... user=..."   # libpq conninfo or URI; password from PGPASSFILE/PGPASSWORD
///     slot = "cdc"
///     publication = "cdc"
///     tables = ["public.facilities", ...]           # optional: the new publication's tables (default: all)
///     max_retained_wal = "4GB"                        # optional: alarm above this much WAL held by the slot
///     origins = "any"                                 # optional: "none" skips transactions replicated from elsewhere
///     streaming = true                                # optional: stream in-progress transactions (PostgreSQL 14+)
///     backfill_chunk_size = 5000                      # optional: rows per chunk of a backfill (tables added later)
///     [log]
///     path = "/var/lib/cdc/log"
///     [warehouse]                                     # optional: used by the projectors
///     url = "..."
///     schema = "dw"
///     timezone = "UTC"
///     mapping = "schemas/projections/surgical-robotics.toml"   # relative to this file's directory
///     [metrics]                                       # optional: serves /metrics, /healthz, /readyz
///     listen = "127.0.0.1:9187"
///     max_projection_lag = "60s"                      # /readyz fails when the warehouse is further behind
///     [privacy]                                       # optional: protect columns before they reach the log
///     key_file = "/etc/cdc/privacy.key"               # HMAC key (>= 32 bytes, chmod 600); needed by hash
///     hash = ["public.surgical_procedures.patient_id"] # keyed HMAC-SHA-256, 64 hex digits (text columns)
///     redact = ["public.procedure_outcomes.notes"]    # written as NULL
///     [audit]                                         # optional
///     actor = true                                    # record who made each transaction (a trigger per table)
///
/// Every key is checked: a missing required key, a value of the wrong type, or a key cdc does not know
/// is an error naming the key. Values are never echoed in errors (the url may hold a password).
public struct Config: Sendable {
    public struct Source: Sendable {
        /// libpq connection string; secret: never logged.
        public var url: String
        public var slot: String
        public var publication: String
        public var tables: [String]?
        /// Above this many bytes of WAL retained by the slot: a warning, a `status` problem, /readyz 503.
        public var maxRetainedWAL: UInt64 = 4 << 30
        /// Which transactions to capture by replication origin (`origins`).
        public var origins: OriginFilter = .any
        /// `streaming`: stream in-progress transactions (pgoutput protocol 2) on servers that can (14+).
        public var streaming = true
        /// Rows per chunk of an automatic backfill (a table that joined the publication later).
        public var backfillChunkSize = 5000
    }

    public struct Log: Sendable {
        public var path: String
    }

    public struct Warehouse: Sendable {
        /// libpq connection string of the warehouse database; secret: never logged.
        public var url: String
        public var schema: String
        /// IANA zone of date/time keys and effective/expiration dates.
        public var timezone: String
        /// The projection mapping file (absolute: resolved against the config file's directory).
        public var mapping: String
    }

    /// `[metrics]`: the HTTP endpoint of `cdc run` (served only when the section is present).
    public struct Metrics: Sendable {
        /// HOST:PORT (`[::1]:9187` for IPv6).
        public var listen: String = "127.0.0.1:9187"
        /// /readyz fails when projection lags more than this many seconds.
        public var maxProjectionLag: Double = 60
        public init() {}

        /// `listen` split into host and port, the host without IPv6 brackets; nil when malformed.
        public static func split(_ listen: String) -> (host: String, port: Int)? {
            guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
                  (0...65535).contains(port) else { return nil }
            var host = String(listen[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            else if host.contains(":") { return nil }
            guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }) else { return nil }
            return (host, port)
        }
    }

    public struct Privacy: Sendable {
        /// Path of the HMAC key file (the key itself is never held in the config).
        public var keyFile: String?
        /// `schema.table.column` → method.
        public var columns: [String: PrivacyPolicy.Method]
    }

    public var source: Source
    public var log: Log
    public var warehouse: Warehouse?
    /// Nil without a `[metrics]` section: no HTTP endpoint.
    public var metrics: Metrics?
    public var privacy: Privacy?
    /// `[audit] actor`: install the actor trigger (schemas/audit/actor.sql) on the published
    /// tables, at `cdc init` and for tables that join the publication while `cdc run` runs.
    public var auditActor = false

    /// The default location, used when `--config` is not given.
    public static let defaultPath = "/etc/cdc/cdc.toml"

    /// Reads and validates the file at `path`.
    public static func load(path: String) throws -> Config {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw ConfigError("cannot read config \(path): it is a directory — pass --config PATH to a cdc.toml file")
        }
        guard let handle = FileHandle(forReadingAtPath: path), let data = try? handle.readToEnd() ?? Data() else {
            let reason = !FileManager.default.fileExists(atPath: path) ? "no such file"
                : access(path, R_OK) != 0 ? "permission denied (EACCES)" : "read failed"
            throw ConfigError("cannot read config \(path): \(reason) — pass --config PATH to a cdc.toml")
        }
        try? handle.close()
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigError("config \(path) is not UTF-8 text")
        }
        if let nul = text.utf8.firstIndex(of: 0) {
            // TOML forbids NUL, and the parser would take it for the end of the file.
            let line = text.utf8[..<nul].reduce(1) { $0 + ($1 == 0x0A ? 1 : 0) }
            throw ConfigError("config \(path) holds a NUL byte at line \(line): remove it (TOML text cannot contain NUL)")
        }
        return try parse(text, path: path)
    }

    /// Parses and validates TOML text; `path` only names the file in errors.
    public static func parse(_ text: String, path: String = "cdc.toml") throws -> Config {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError("config \(path) is not valid TOML at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)")
        }
        let reader = TableReader(path: path, table: table, prefix: "")
        try reader.onlyKeys(["source", "log", "warehouse", "metrics", "privacy", "audit"])

        let source = try reader.section("source")
        try source.onlyKeys(["url", "slot", "publication", "tables", "max_retained_wal", "origins", "streaming", "backfill_chunk_size"])
        var src = Source(url: try source.string("url"), slot: try source.identifier("slot"),
                         publication: try source.identifier("publication"), tables: try source.stringArray("tables"))
        if let limit = try source.optionalBytes("max_retained_wal") { src.maxRetainedWAL = limit }
        if let streaming = try source.optionalBool("streaming") { src.streaming = streaming }
        if let origins = try source.optionalString("origins") {
            guard let filter = OriginFilter(rawValue: origins) else {
                throw ConfigError("config \(path): source.origins must be \"any\" (capture every transaction) or \"none\" (skip transactions that logical replication applied from another node)")
            }
            src.origins = filter
        }
        if let value = source.table["backfill_chunk_size"] {
            guard let n = value.int, n >= 1, n <= 1_000_000 else {
                throw ConfigError("config \(path): source.backfill_chunk_size must be an integer from 1 to 1000000")
            }
            src.backfillChunkSize = n
        }

        let log = try reader.section("log")
        try log.onlyKeys(["path"])
        let logConfig = Log(path: try log.string("path"))

        var warehouse: Warehouse?
        if let w = try reader.optionalSection("warehouse") {
            try w.onlyKeys(["url", "schema", "timezone", "mapping"])
            let url = try w.string("url")
            let schema = try w.optionalIdentifier("schema") ?? "dw"
            let timezone = try w.optionalString("timezone") ?? "UTC"
            guard WarehouseClock(timeZone: timezone) != nil else {
                throw ConfigError("config \(path): warehouse.timezone \"\(timezone)\" is not a time zone: use an IANA name such as \"UTC\" or \"Europe/Paris\"")
            }
            guard let mapping = try w.optionalString("mapping") else {
                throw ConfigError("config \(path): missing key warehouse.mapping (the projection mapping, e.g. \"schemas/projections/surgical-robotics.toml\")")
            }
            let base = (path as NSString).deletingLastPathComponent
            warehouse = Warehouse(url: url, schema: schema, timezone: timezone,
                                  mapping: mapping.hasPrefix("/") || base.isEmpty ? mapping : (base as NSString).appendingPathComponent(mapping))
        }
        var metrics: Metrics?
        if let m = try reader.optionalSection("metrics") {
            try m.onlyKeys(["listen", "max_projection_lag"])
            var section = Metrics()
            if let listen = try m.optionalString("listen") {
                guard Metrics.split(listen) != nil else {
                    throw ConfigError("config \(path): metrics.listen must be HOST:PORT with a port from 0 to 65535, e.g. \"127.0.0.1:9187\" or \"[::1]:9187\"")
                }
                section.listen = listen
            }
            if let lag = try m.optionalSeconds("max_projection_lag") { section.maxProjectionLag = lag }
            metrics = section
        }
        var privacy: Privacy?
        if let p = try reader.optionalSection("privacy") {
            try p.onlyKeys(["key_file", "hash", "redact"])
            var columns: [String: PrivacyPolicy.Method] = [:]
            for (key, method) in [("hash", PrivacyPolicy.Method.hash), ("redact", .redact)] {
                for column in try p.stringArray(key) ?? [] {
                    let parts = column.split(separator: ".", omittingEmptySubsequences: false)
                    guard parts.count == 3, parts.allSatisfy({ !$0.isEmpty }) else {
                        throw ConfigError("config \(path): privacy.\(key) entry \"\(column)\" must name a column as schema.table.column, e.g. \"public.surgical_procedures.patient_id\"")
                    }
                    if let other = columns[column], other != method {
                        throw ConfigError("config \(path): column \(column) is listed in both privacy.hash and privacy.redact: keep one")
                    }
                    columns[column] = method
                }
            }
            let keyFile = try p.optionalString("key_file")
            if keyFile == nil, columns.values.contains(.hash) {
                throw ConfigError("config \(path): privacy.hash needs privacy.key_file (a file of at least 32 random bytes, e.g. head -c 32 /dev/urandom > /etc/cdc/privacy.key; chmod 600 it)")
            }
            privacy = Privacy(keyFile: keyFile, columns: columns)
        }
        var config = Config(source: src, log: logConfig, warehouse: warehouse, metrics: metrics, privacy: privacy)
        if let a = try reader.optionalSection("audit") {
            try a.onlyKeys(["actor"])
            config.auditActor = try a.optionalBool("actor") ?? false
        }
        return config
    }
}

/// Typed, key-naming access to one TOML table.
struct TableReader {
    let path: String
    let table: TOMLTable
    let prefix: String

    func name(_ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }

    func onlyKeys(_ allowed: Set<String>) throws {
        for key in table.keys.sorted() where !allowed.contains(key) {
            let section = prefix.isEmpty ? "at the top level" : "in [\(prefix)]"
            throw ConfigError("config \(path): unknown key \(name(key)) \(section) (known: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    func section(_ key: String) throws -> TableReader {
        guard let value = try optionalSection(key) else {
            throw ConfigError("config \(path): missing section [\(name(key))]")
        }
        return value
    }

    func optionalSection(_ key: String) throws -> TableReader? {
        guard let value = table[key] else { return nil }
        guard let sub = value.table else { throw ConfigError("config \(path): \(name(key)) must be a [\(name(key))] section") }
        return TableReader(path: path, table: sub, prefix: name(key))
    }

    func optionalBool(_ key: String) throws -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else { throw ConfigError("config \(path): \(name(key)) must be true or false") }
        return bool
    }

    func optionalString(_ key: String) throws -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string else { throw ConfigError("config \(path): \(name(key)) must be a string") }
        guard !string.isEmpty else { throw ConfigError("config \(path): \(name(key)) must not be empty") }
        return string
    }

    func string(_ key: String) throws -> String {
        guard let value = try optionalString(key) else { throw ConfigError("config \(path): missing key \(name(key))") }
        return value
    }

    /// A PostgreSQL object name cdc creates: lower-case letters, digits and underscores.
    func optionalIdentifier(_ key: String) throws -> String? {
        guard let value = try optionalString(key) else { return nil }
        guard Config.isName(value) else {
            throw ConfigError("config \(path): \(name(key)) must be a lower-case name of letters, digits and underscores (at most 63), not starting with a digit")
        }
        return value
    }

    func identifier(_ key: String) throws -> String {
        guard let value = try optionalIdentifier(key) else { throw ConfigError("config \(path): missing key \(name(key))") }
        return value
    }

    /// A size: an integer of bytes, or a string such as "4GB", "512MB", "64kB" (1024-based, as
    /// PostgreSQL's memory and WAL settings).
    func optionalBytes(_ key: String) throws -> UInt64? {
        guard let value = table[key] else { return nil }
        if let n = value.int { guard n >= 0 else { throw ConfigError("config \(path): \(name(key)) must not be negative") }; return UInt64(n) }
        guard let text = value.string, let bytes = Self.parseBytes(text) else {
            throw ConfigError("config \(path): \(name(key)) must be a size such as \"4GB\", \"512MB\" or an integer of bytes")
        }
        return bytes
    }

    static func parseBytes(_ text: String) -> UInt64? {
        let units: [(String, UInt64)] = [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10), ("B", 1)]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)
            guard let n = UInt64(number), n <= UInt64.max / factor else { return nil }
            return n * factor
        }
        return UInt64(trimmed)
    }

    /// A duration: a number of seconds, or a string such as "250ms", "60s", "5m", "1h".
    func optionalSeconds(_ key: String) throws -> Double? {
        guard let value = table[key] else { return nil }
        if let n = value.int, n > 0 { return Double(n) }
        if let d = value.double, d > 0 { return d }
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        if let text = value.string?.trimmingCharacters(in: .whitespaces) {
            for (suffix, factor) in units where text.hasSuffix(suffix) {
                if let n = Double(text.dropLast(suffix.count)), n > 0 { return n * factor }
                break
            }
        }
        throw ConfigError("config \(path): \(name(key)) must be a positive duration such as \"60s\", \"5m\" or a number of seconds")
    }

    func stringArray(_ key: String) throws -> [String]? {
        guard let value = table[key] else { return nil }
        guard let array = value.array else { throw ConfigError("config \(path): \(name(key)) must be an array of strings") }
        var result: [String] = []
        for element in array {
            guard let s = element.string, !s.isEmpty else { throw ConfigError("config \(path): \(name(key)) must be an array of non-empty strings") }
            result.append(s)
        }
        return result
    }
}

extension Config.Source: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Never prints the url (it may hold a password).
    public var description: String { "source(slot: \(slot), publication: \(publication), url: <redacted>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["slot": slot, "publication": publication, "url": "<redacted>"]) }
}

extension Config.Warehouse: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "warehouse(schema: \(schema), url: <redacted>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["schema": schema, "url": "<redacted>"]) }

    /// Where projections write, for `schema` (default: this section's).
    public func target(schema: String? = nil) -> WarehouseTarget {
        WarehouseTarget(url: url, schema: schema ?? self.schema, clock: WarehouseClock(timeZone: timezone)!)
    }
}

extension Config {
    /// True for a PostgreSQL object name cdc creates (schema, slot, publication): 1 to 63 lower-case
    /// letters, digits and underscores, not starting with a digit.
    public static func isName(_ value: String) -> Bool {
        guard let first = value.utf8.first, !(first >= 0x30 && first <= 0x39), value.utf8.count <= 63 else { return false }
        return value.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
    }

    /// The column protector [privacy] describes (reading its key file), nil when nothing is protected.
    public func protector() throws -> ColumnProtector? {
        guard let privacy, !privacy.columns.isEmpty else { return nil }
        let key = try privacy.keyFile.map(ColumnProtector.loadKey(path:))
        return try ColumnProtector(columns: privacy.columns, key: key)
    }
}
