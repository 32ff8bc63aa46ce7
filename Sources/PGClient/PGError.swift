import CLibPQ

/// A five-character SQLSTATE error code sent by the server (`42P01`), with its class (`42`).
///
/// cdc decides what to retry by these codes, never by message text: messages are localised by the
/// server (`lc_messages`) and change between versions; SQLSTATEs do not. The constants name the
/// codes cdc looks at; any other code the server sends is kept as it is.
/// See https://www.postgresql.org/docs/current/errcodes-appendix.html.
public struct SQLState: RawRepresentable, Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The five characters, digits and upper-case ASCII letters.
    public let rawValue: String

    /// Nil unless `rawValue` is five digits or upper-case ASCII letters.
    public init?(rawValue: String) {
        guard Self.isValid(rawValue, length: 5) else { return nil }
        self.rawValue = rawValue
    }

    /// For constants in code: the literal must be a valid SQLSTATE.
    public init(stringLiteral value: String) {
        precondition(Self.isValid(value, length: 5), "not a SQLSTATE: \(value)")
        rawValue = value
    }

    /// The class: the first two characters (`08` connection exception, `42` syntax error or access
    /// rule violation, ...).
    public var `class`: Class { Class(unchecked: String(rawValue.prefix(2))) }

    public var description: String { rawValue }

    static func isValid(_ text: String, length: Int) -> Bool {
        text.utf8.count == length && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) }
    }

    /// The first two characters of a SQLSTATE: what kind of error it is.
    public struct Class: RawRepresentable, Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
        /// The two characters.
        public let rawValue: String

        public init?(rawValue: String) {
            guard SQLState.isValid(rawValue, length: 2) else { return nil }
            self.rawValue = rawValue
        }

        public init(stringLiteral value: String) {
            precondition(SQLState.isValid(value, length: 2), "not a SQLSTATE class: \(value)")
            rawValue = value
        }

        init(unchecked rawValue: String) { self.rawValue = rawValue }

        public var description: String { rawValue }

        /// 00
        public static let successfulCompletion: Class = "00"
        /// 01
        public static let warning: Class = "01"
        /// 08: the connection broke or could not be made.
        public static let connectionException: Class = "08"
        /// 0A
        public static let featureNotSupported: Class = "0A"
        /// 22: a value the server could not take (bad input syntax, out of range, ...).
        public static let dataException: Class = "22"
        /// 23: a NOT NULL, foreign key, unique or check constraint refused a row.
        public static let integrityConstraintViolation: Class = "23"
        /// 25
        public static let invalidTransactionState: Class = "25"
        /// 28: authentication failed (wrong password, no such role, pg_hba.conf refuses).
        public static let invalidAuthorization: Class = "28"
        /// 3D: no such database.
        public static let invalidCatalogName: Class = "3D"
        /// 3F: no such schema.
        public static let invalidSchemaName: Class = "3F"
        /// 40: serialization failure or deadlock: the transaction may succeed when run again.
        public static let transactionRollback: Class = "40"
        /// 42: syntax errors, missing tables or columns, missing privileges.
        public static let syntaxErrorOrAccessRuleViolation: Class = "42"
        /// 53: out of disk, memory or connections.
        public static let insufficientResources: Class = "53"
        /// 54
        public static let programLimitExceeded: Class = "54"
        /// 55: the object is not in a state that allows the command (in use, locked, ...).
        public static let objectNotInPrerequisiteState: Class = "55"
        /// 57: the server or an administrator interrupted the session (shutdown, cancel, ...).
        public static let operatorIntervention: Class = "57"
        /// 58: errors outside PostgreSQL (I/O errors).
        public static let systemError: Class = "58"
        /// F0
        public static let configFileError: Class = "F0"
        /// P0
        public static let plpgsqlError: Class = "P0"
        /// XX: internal errors (corrupted data, ...).
        public static let internalError: Class = "XX"
    }

    // Connection exceptions (class 08).
    public static let connectionException: SQLState = "08000"
    public static let connectionDoesNotExist: SQLState = "08003"
    public static let connectionFailure: SQLState = "08006"
    public static let protocolViolation: SQLState = "08P01"

    // Data and integrity (classes 22 and 23).
    public static let invalidTextRepresentation: SQLState = "22P02"
    public static let notNullViolation: SQLState = "23502"
    public static let foreignKeyViolation: SQLState = "23503"
    public static let uniqueViolation: SQLState = "23505"
    public static let checkViolation: SQLState = "23514"

    // Authentication (class 28).
    /// 28000: the role may not connect (no such role, pg_hba.conf, no REPLICATION for a walsender).
    public static let invalidAuthorizationSpecification: SQLState = "28000"
    /// 28P01: wrong password.
    public static let invalidPassword: SQLState = "28P01"

    // Catalog and schema names (classes 3D and 3F).
    public static let invalidCatalogName: SQLState = "3D000"
    public static let invalidSchemaName: SQLState = "3F000"

    // Transaction rollback (class 40).
    public static let serializationFailure: SQLState = "40001"
    public static let deadlockDetected: SQLState = "40P01"

    // Syntax and access rules (class 42).
    public static let syntaxError: SQLState = "42601"
    public static let insufficientPrivilege: SQLState = "42501"
    public static let undefinedColumn: SQLState = "42703"
    public static let undefinedFunction: SQLState = "42883"
    public static let undefinedTable: SQLState = "42P01"
    /// 42704: e.g. START_REPLICATION of a slot that does not exist.
    public static let undefinedObject: SQLState = "42704"
    /// 42710: e.g. CREATE_REPLICATION_SLOT of a slot that exists.
    public static let duplicateObject: SQLState = "42710"

    // Insufficient resources (class 53).
    public static let diskFull: SQLState = "53100"
    public static let outOfMemory: SQLState = "53200"
    /// 53300: max_connections (or max_wal_senders) reached.
    public static let tooManyConnections: SQLState = "53300"

    // Object not in prerequisite state (class 55).
    /// 55000: e.g. a replication slot that cannot be used (invalidated, wal_level too low).
    public static let objectNotInPrerequisiteState: SQLState = "55000"
    /// 55006: e.g. the replication slot is still active for another walsender.
    public static let objectInUse: SQLState = "55006"
    public static let lockNotAvailable: SQLState = "55P03"

    // Operator intervention (class 57).
    public static let queryCanceled: SQLState = "57014"
    /// 57P01: the server is shutting down (fast or smart), or pg_terminate_backend.
    public static let adminShutdown: SQLState = "57P01"
    /// 57P02: another backend crashed; the server restarts.
    public static let crashShutdown: SQLState = "57P02"
    /// 57P03: the server is starting up or in recovery and does not take connections yet.
    public static let cannotConnectNow: SQLState = "57P03"
    public static let databaseDropped: SQLState = "57P04"

    // System errors (class 58).
    public static let ioError: SQLState = "58030"
}

/// An error reported by libpq or by the server: the failing call, what kind of failure it is, the
/// server's SQLSTATE (when it sent one) and its message, with the server's other diagnostic fields
/// (detail, hint, the schema, table, column and constraint concerned) kept apart.
///
/// Every text field is one line. The message never contains the connection string: libpq's own
/// messages name the host and user, never the password. `detail` may quote values (a duplicate key,
/// a failing row): it is shown with the error, as psql does.
public struct PGError: Error, CustomStringConvertible, Sendable {
    /// Where the failure came from.
    public enum Kind: String, Sendable, Hashable {
        /// Client side: libpq could not connect, lost the connection, or refused the request before
        /// a server answered (bad connection string, out of memory). There is no SQLSTATE: libpq
        /// exposes none for connection failures, so `message` is libpq's text.
        case connection
        /// The server answered with an error: `sqlState` is set.
        case server
        /// The server answered, but not as the protocol step expected (a command that should have
        /// started COPY did not; a reply libpq could not parse).
        case `protocol`
    }

    /// The libpq call or the SQL command that failed, e.g. `"PQconnectdbParams"` or `"START_REPLICATION"`.
    public var call: String
    public var kind: Kind
    /// The SQLSTATE sent by the server; nil for connection and protocol failures.
    public var sqlState: SQLState?
    /// The server's primary message (or libpq's), on one line.
    public var message: String
    /// The server's severity, not localised: `ERROR`, `FATAL` or `PANIC`.
    public var severity: String?
    /// The server's detail (PG_DIAG_MESSAGE_DETAIL), e.g. `Key (id)=(1) already exists.`
    public var detail: String?
    /// The server's hint (PG_DIAG_MESSAGE_HINT): what to do about it.
    public var hint: String?
    /// Where in the statement the error is (PG_DIAG_STATEMENT_POSITION), 1-based, in characters.
    public var position: Int?
    /// The call stack of functions and statements the error happened in (PG_DIAG_CONTEXT).
    public var context: String?
    /// The schema, table, column, data type and constraint the error is about, when the server names
    /// them (PG_DIAG_SCHEMA_NAME, ..._TABLE_NAME, ..._COLUMN_NAME, ..._DATATYPE_NAME, ..._CONSTRAINT_NAME).
    public var schemaName: String?
    public var tableName: String?
    public var columnName: String?
    public var dataTypeName: String?
    public var constraintName: String?

    /// - Parameter kind: defaults to `.server` when there is a SQLSTATE, else `.connection`.
    public init(call: String, kind: Kind? = nil, sqlState: SQLState? = nil, message: String,
                severity: String? = nil, detail: String? = nil, hint: String? = nil, position: Int? = nil,
                context: String? = nil, schemaName: String? = nil, tableName: String? = nil,
                columnName: String? = nil, dataTypeName: String? = nil, constraintName: String? = nil) {
        self.call = call
        self.kind = kind ?? (sqlState == nil ? .connection : .server)
        self.sqlState = sqlState
        self.message = PGError.oneLine(message)
        self.severity = severity
        self.detail = detail.map(PGError.oneLine)
        self.hint = hint.map(PGError.oneLine)
        self.position = position
        self.context = context.map(PGError.oneLine)
        self.schemaName = schemaName
        self.tableName = tableName
        self.columnName = columnName
        self.dataTypeName = dataTypeName
        self.constraintName = constraintName
    }

    /// `call: message (SQLSTATE xxxxx)`, then `; detail: ...` and `; hint: ...` when the server sent them.
    public var description: String {
        var text = "\(call): \(message)"
        if let sqlState { text += " (SQLSTATE \(sqlState))" }
        if let detail, !detail.isEmpty { text += "; detail: \(detail)" }
        if let hint, !hint.isEmpty { text += "; hint: \(hint)" }
        return text
    }

    /// The message followed by the server's hint, `message (hint: ...)`, for errors that quote the
    /// server's words inside a sentence of their own.
    public var messageAndHint: String {
        guard let hint, !hint.isEmpty else { return message }
        return "\(message) (hint: \(hint))"
    }

    /// True when the failure is about the connection itself (network, server shutdown, walsender
    /// terminated) rather than about what was asked: retrying later may succeed.
    public var isConnectionLoss: Bool {
        switch kind {
        case .connection:
            // libpq gives no SQLSTATE for a connection that failed or broke: every such failure counts.
            return true
        case .protocol:
            // A server that answers out of step leaves the session unusable: start a new one.
            return true
        case .server:
            guard let sqlState else { return true }
            switch sqlState {
            // Shut down (fast, immediate or by pg_terminate_backend), crashed, or not accepting yet.
            case .adminShutdown, .crashShutdown, .cannotConnectNow: return true
            // The slot is still held by a walsender that is going away.
            case .objectInUse: return true
            // Every connection slot is taken; one frees up when another client leaves.
            case .tooManyConnections: return true
            default: return sqlState.class == .connectionException
            }
        }
    }

    /// True for authentication and authorisation failures (wrong password, missing role, no REPLICATION).
    public var isAuthenticationFailure: Bool {
        switch kind {
        case .server:
            return sqlState?.class == .invalidAuthorization
        case .connection:
            // A failed connection has no SQLSTATE in libpq (PQconnectdbParams reports only text), so
            // here, and only here, the decision reads libpq's and the server's (English) message.
            // The role refused at connection time: also when REPLICATION or LOGIN was revoked while
            // cdc ran (a reconnect must stop and say so, not retry forever).
            return message.contains("password authentication failed") || message.contains("no password supplied")
                || message.contains("no pg_hba.conf entry") || message.contains("must be superuser or replication role")
                || message.contains("is not permitted to log in") || message.contains("permission denied for database")
        case .protocol:
            return false
        }
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
