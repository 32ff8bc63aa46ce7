/// Session settings applied to every connection cdc opens (source and warehouse), so that values have
/// one text form whether they come from the snapshot's COPY, from pgoutput or back from the warehouse:
/// ISO dates, UTC, exact floats, hex bytea.
public enum SessionSettings {
    public static let gucs: [(String, String)] = [
        ("datestyle", "ISO, YMD"),
        ("timezone", "UTC"),
        ("intervalstyle", "postgres"),
        ("extra_float_digits", "3"),
        ("bytea_output", "hex"),
        ("client_encoding", "UTF8"),
    ]

    /// The libpq `options` value that sets them at connection start.
    public static var options: String {
        gucs.map { "-c \($0.0)=\($0.1.replacingSpaces())" }.joined(separator: " ")
    }

    /// Keywords added to the operator's conninfo for a replication connection.
    public static func replicationOverrides(applicationName: String = "cdc") -> [String: String] {
        ["replication": "database", "options": options, "fallback_application_name": applicationName]
    }

    /// Keywords added to the operator's conninfo for an ordinary connection; `connectTimeout` (seconds)
    /// bounds the connection attempt for callers that must not hang on an unreachable server.
    public static func sqlOverrides(applicationName: String = "cdc", connectTimeout: Int? = nil) -> [String: String] {
        var keywords = ["options": options, "fallback_application_name": applicationName]
        if let connectTimeout { keywords["connect_timeout"] = String(connectTimeout) }
        return keywords
    }
}

extension String {
    /// libpq's `options` splits on spaces; a backslash escapes one.
    func replacingSpaces() -> String {
        var out = ""
        for c in self { if c == " " { out += "\\ " } else { out.append(c) } }
        return out
    }
}
