import PGClient

/// Why capture (or `cdc init`) stopped: a stable ``Code`` for programs (health endpoints, `status`,
/// alerts, retry decisions), a message an operator can act on, and the error that caused it.
public struct CaptureError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, as a stable identifier: `rawValue` is the snake_case form reported by the
    /// health endpoints and `status` (e.g. `slot_missing`). Never renamed once released.
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// The source cannot be reached (connection refused, DNS, server down) or the stream could
        /// not be started.
        case sourceUnreachable = "source_unreachable"
        /// The source refused the credentials (wrong password, no such role, pg_hba.conf).
        case authenticationFailed = "authentication_failed"
        /// The source answered a command with an error that retrying will not cure; the underlying
        /// ``PGError`` has its SQLSTATE.
        case sourceError = "source_error"
        /// The source is not set up for logical replication (wal_level, slots, senders, REPLICATION),
        /// or [source] url does not name a database.
        case sourceMisconfigured = "source_misconfigured"
        /// The source answered a replication command with something cdc cannot use.
        case unexpectedReply = "unexpected_reply"
        /// The log belongs to another source (system identifier, database, slot or publication).
        case sourceMismatch = "source_mismatch"
        /// The publication does not exist and cdc could not create it.
        case publicationFailed = "publication_failed"
        /// The publication disappeared from the source (dropped while cdc ran or since).
        case publicationMissing = "publication_missing"
        /// The log's replication slot is gone from the source.
        case slotMissing = "slot_missing"
        /// A slot of that name exists but this log has no snapshot from it.
        case slotExists = "slot_exists"
        /// The slot was invalidated (wal_status = lost).
        case slotInvalidated = "slot_invalidated"
        /// The slot is not a logical pgoutput slot.
        case slotNotLogical = "slot_not_logical"
        /// The slot was confirmed past the end of the log (the log was restored from an old copy).
        case logBehindSlot = "log_behind_slot"
        /// The log has not been through `cdc init`.
        case logNotInitialised = "log_not_initialised"
        /// The log contradicts itself (run `cdc log verify`).
        case logCorrupt = "log_corrupt"
        /// The server sent something the pgoutput decoder does not understand.
        case protocolViolation = "protocol_violation"
        /// The connection was lost while streaming; capture reconnects.
        case connectionLost = "connection_lost"
        /// [privacy] hashes columns but names no key_file.
        case privacyKeyMissing = "privacy_key_missing"
        /// The key_file cannot be read.
        case privacyKeyUnreadable = "privacy_key_unreadable"
        /// The key_file is readable by other users.
        case privacyKeyInsecure = "privacy_key_insecure"
        /// The key_file is shorter than the minimum.
        case privacyKeyTooShort = "privacy_key_too_short"
        /// [privacy] asks for a method a column cannot take (hash on a non-text column, redact on a key).
        case privacyPolicyInvalid = "privacy_policy_invalid"
        /// [privacy] names a column the source does not have.
        case privacyColumnMissing = "privacy_column_missing"
        /// `[audit] actor = true` but the actor trigger cannot be installed (the role does not own the tables).
        case auditInstallFailed = "audit_install_failed"
        /// Anything else.
        case other
    }

    public var code: Code
    /// What happened, for the operator. For ``Code/protocolViolation`` and ``Code/connectionLost``
    /// ``description`` puts `replication protocol error: ` or `connection lost: ` before it.
    public var message: String
    /// The error that caused this one, e.g. the ``PGError`` with the server's SQLSTATE.
    public var underlying: (any Error)?

    public init(_ code: Code, _ message: String, underlying: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    /// The server sent something the pgoutput decoder does not understand.
    static func protocolViolation(_ what: String) -> CaptureError {
        CaptureError(.protocolViolation, what)
    }

    /// The underlying error's SQLSTATE, when the source sent one.
    public var sqlState: SQLState? { (underlying as? PGError)?.sqlState }

    public var description: String {
        switch code {
        case .protocolViolation: "replication protocol error: \(message)"
        case .connectionLost: "connection lost: \(message)"
        default: message
        }
    }
}

extension CaptureError {
    /// Capture stops on `error` from the source: ``CaptureStream/explain(_:options:)``'s message, coded
    /// ``Code/authenticationFailed``, ``Code/sourceUnreachable`` (no SQLSTATE: libpq could not reach
    /// the server or lost it) or ``Code/sourceError`` (the server refused with a SQLSTATE).
    init(source error: PGError, options: CaptureOptions) {
        let code: Code
        if error.sqlState == .undefinedObject, error.message.contains("publication \"") {
            self.init(.publicationMissing, Self.missingPublicationMessage(publication: options.publication, slot: options.slot), underlying: error)
            return
        }
        if error.isAuthenticationFailure {
            code = .authenticationFailed
        } else if error.sqlState == nil {
            code = .sourceUnreachable
        } else {
            code = .sourceError
        }
        self.init(code, CaptureStream.explain(error, options: options), underlying: error)
    }
}

extension CaptureError {
    /// What a publication missing from the source (dropped while cdc ran, or before it started) means
    /// and how to recover. pgoutput decodes each change with the catalog of its time, so the changes
    /// committed while the publication was missing can never be streamed through this slot.
    public static func missingPublicationMessage(publication: String, slot: String) -> String {
        "publication \"\(publication)\" does not exist on the source (SQLSTATE 42704; dropped?): the log is intact up to its position; "
            + "re-create it (CREATE PUBLICATION \"\(publication)\" FOR ALL TABLES, or FOR TABLE with the tables it had) and start cdc run again; "
            + "if it stops with this error again, changes were committed while the publication was missing and PostgreSQL cannot decode them: "
            + "drop the slot (SELECT pg_drop_replication_slot('\(slot)')), move the log aside and run `cdc init`"
    }

    /// What an invalidated slot (wal_status = lost) means and how to recover; said by `cdc run`, which
    /// stops, and by `cdc status` and /readyz.
    public static func invalidatedSlotMessage(_ slot: String) -> String {
        "replication slot \"\(slot)\" is invalidated (wal_status = lost, max_slot_wal_keep_size exceeded): the WAL it needed is gone; drop it with SELECT pg_drop_replication_slot('\(slot)'), move the log aside and run `cdc init`"
    }
}
