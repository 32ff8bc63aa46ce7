import CLibPQ

/// An error reported by libpq or by the server, with the failing call, the server's SQLSTATE
/// (when the server sent one) and its message, flattened to one line.
///
/// The message never contains the connection string: libpq's own messages name the host and user,
/// never the password.
public struct PGError: Error, CustomStringConvertible, Sendable {
    /// The libpq call or the SQL command that failed, e.g. `"PQconnectdbParams"` or `"START_REPLICATION"`.
    public var call: String
    /// The five-character SQLSTATE sent by the server, if any (`nil` for client-side and connection errors).
    public var sqlState: String?
    /// The server's or libpq's message, on one line.
    public var message: String

    public init(call: String, sqlState: String? = nil, message: String) {
        self.call = call
        self.sqlState = sqlState
        self.message = PGError.oneLine(message)
    }

    public var description: String {
        if let sqlState { return "\(call): \(message) (SQLSTATE \(sqlState))" }
        return "\(call): \(message)"
    }

    /// True when the failure is about the connection itself (network, server shutdown, walsender
    /// terminated) rather than about what was asked: retrying later may succeed.
    public var isConnectionLoss: Bool {
        guard let sqlState else { return true }
        // Class 08 connection exceptions; 57P01..57P03 admin/crash shutdown, cannot connect now;
        // 55006 object in use (the slot is still held by a walsender that is going away).
        return sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03", "55006", "53300"].contains(sqlState)
    }

    /// True for authentication and authorisation failures (wrong password, missing role, no REPLICATION).
    public var isAuthenticationFailure: Bool {
        if let sqlState { return sqlState == "28P01" || sqlState == "28000" }
        return message.contains("password authentication failed") || message.contains("no password supplied")
            || message.contains("no pg_hba.conf entry")
    }

    static func oneLine(_ text: String) -> String {
        var parts: [Substring] = []
        for line in text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }) {
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if !trimmed.isEmpty { parts.append(trimmed) }
        }
        return parts.joined(separator: " ")
    }
}
