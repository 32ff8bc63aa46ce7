import PGClient

/// Why capture stopped, in words an operator can act on.
public enum CaptureError: Error, CustomStringConvertible {
    /// The server sent something the pgoutput decoder does not understand.
    case protocolViolation(String)
    /// A condition the operator must fix (wrong source, missing slot, ...). The message says how.
    case fatal(String)
    /// The connection was lost; capture reconnects.
    case connectionLost(String)

    public var description: String {
        switch self {
        case .protocolViolation(let what): "replication protocol error: \(what)"
        case .fatal(let message): message
        case .connectionLost(let why): "connection lost: \(why)"
        }
    }
}
