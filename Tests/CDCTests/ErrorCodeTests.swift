import Capture
import EventLog
import Foundation
import PGClient
import Projection
import Testing
import TestSupport

/// SQLSTATEs as a type, and the codes that retry-or-stop decisions and the health endpoints use
/// (no server needed).
@Suite(.timeLimit(.minutes(15))) struct ErrorCodeTests {
    @Test func sqlStateParsesFiveDigitsOrCapitalLetters() throws {
        let state = try #require(SQLState(rawValue: "42P01"))
        #expect(state == .undefinedTable)
        #expect(state.rawValue == "42P01" && state.description == "42P01" && "\(state)" == "42P01")
        #expect(state.class == .syntaxErrorOrAccessRuleViolation && state.class.rawValue == "42")
        for bad in ["", "4201", "42P011", "42p01", "42 01", "4é201"] {
            #expect(SQLState(rawValue: bad) == nil, "\(bad) is not a SQLSTATE")
        }
        #expect(SQLState.Class(rawValue: "08") == .connectionException)
        #expect(SQLState.Class(rawValue: "8") == nil && SQLState.Class(rawValue: "08a") == nil)
        #expect(Set<SQLState>(["55006", "55006", "57P03"]).count == 2)
    }

    @Test func namedCodesBelongToTheirClasses() {
        let expected: [(SQLState, SQLState.Class)] = [
            (.connectionFailure, .connectionException), (.protocolViolation, .connectionException),
            (.invalidPassword, .invalidAuthorization), (.invalidAuthorizationSpecification, .invalidAuthorization),
            (.tooManyConnections, .insufficientResources), (.diskFull, .insufficientResources),
            (.objectInUse, .objectNotInPrerequisiteState), (.objectNotInPrerequisiteState, .objectNotInPrerequisiteState),
            (.adminShutdown, .operatorIntervention), (.crashShutdown, .operatorIntervention),
            (.cannotConnectNow, .operatorIntervention), (.queryCanceled, .operatorIntervention),
            (.undefinedTable, .syntaxErrorOrAccessRuleViolation), (.insufficientPrivilege, .syntaxErrorOrAccessRuleViolation),
            (.undefinedObject, .syntaxErrorOrAccessRuleViolation), (.duplicateObject, .syntaxErrorOrAccessRuleViolation),
            (.invalidSchemaName, .invalidSchemaName), (.invalidCatalogName, .invalidCatalogName),
            (.serializationFailure, .transactionRollback), (.deadlockDetected, .transactionRollback),
            (.uniqueViolation, .integrityConstraintViolation), (.notNullViolation, .integrityConstraintViolation),
            (.ioError, .systemError),
        ]
        for (state, stateClass) in expected {
            #expect(state.class == stateClass, "\(state) is in class \(stateClass)")
        }
        #expect(SQLState.objectInUse.rawValue == "55006" && SQLState.cannotConnectNow.rawValue == "57P03")
        #expect(SQLState.invalidPassword.rawValue == "28P01" && SQLState.invalidAuthorizationSpecification.rawValue == "28000")
        #expect(SQLState.tooManyConnections.rawValue == "53300" && SQLState.adminShutdown.rawValue == "57P01")
    }

    static func server(_ code: SQLState) -> PGError {
        PGError(call: "SELECT", sqlState: code, message: "m")
    }

    @Test func connectionLossIsDecidedBySQLState() {
        let lost: [SQLState] = [.adminShutdown, .crashShutdown, .cannotConnectNow, .objectInUse, .tooManyConnections,
                                .connectionFailure, .connectionDoesNotExist, .protocolViolation, "08001"]
        for code in lost {
            #expect(Self.server(code).isConnectionLoss, "\(code) is a connection loss")
        }
        let notLost: [SQLState] = [.undefinedTable, .invalidPassword, .invalidAuthorizationSpecification, .queryCanceled,
                                   .databaseDropped, .diskFull, .outOfMemory, .objectNotInPrerequisiteState,
                                   .serializationFailure, .uniqueViolation, .insufficientPrivilege, .undefinedObject]
        for code in notLost {
            #expect(!Self.server(code).isConnectionLoss, "\(code) is not a connection loss")
        }
        // Without a SQLSTATE (libpq's client side, or a reply out of step) it always is.
        let refused = PGError(call: "connect", message: "connection to server at \"127.0.0.1\", port 1 failed: Connection refused")
        #expect(refused.kind == .connection && refused.sqlState == nil && refused.isConnectionLoss)
        #expect(PGError(call: "COPY", kind: .protocol, message: "server did not start COPY OUT").isConnectionLoss)
        #expect(Self.server(.uniqueViolation).kind == .server)
    }

    @Test func authenticationFailureIsClass28() {
        #expect(Self.server(.invalidPassword).isAuthenticationFailure)
        #expect(Self.server(.invalidAuthorizationSpecification).isAuthenticationFailure)
        #expect(!Self.server(.insufficientPrivilege).isAuthenticationFailure)
        #expect(!Self.server(.adminShutdown).isAuthenticationFailure)
        // A server error is judged by its code alone, whatever its text says.
        #expect(!PGError(call: "SELECT", sqlState: .undefinedTable, message: "password authentication failed").isAuthenticationFailure)
        // libpq reports a failed connection without a SQLSTATE: there, and only there, its text decides.
        let wrongPassword = PGError(call: "connect", message: "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"cdc\"")
        #expect(wrongPassword.isAuthenticationFailure && wrongPassword.isConnectionLoss)
        #expect(PGError(call: "connect", message: "fe_sendauth: no password supplied").isAuthenticationFailure)
        #expect(PGError(call: "connect", message: "FATAL:  no pg_hba.conf entry for host \"10.0.0.1\"").isAuthenticationFailure)
        #expect(!PGError(call: "connect", message: "Connection refused").isAuthenticationFailure)
        #expect(!PGError(call: "COPY", kind: .protocol, message: "password authentication failed").isAuthenticationFailure)
    }

    @Test func descriptionIsOneLineWithDetailAndHint() {
        let error = PGError(call: "INSERT", sqlState: .uniqueViolation, message: "duplicate key value violates unique constraint \"t_pkey\"",
                            detail: "Key (id)=(1)\nalready exists.", hint: "Use another key.")
        #expect(error.description == "INSERT: duplicate key value violates unique constraint \"t_pkey\" (SQLSTATE 23505); detail: Key (id)=(1) already exists.; hint: Use another key.")
        #expect(error.messageAndHint == "duplicate key value violates unique constraint \"t_pkey\" (hint: Use another key.)")
        let plain = PGError(call: "connect", message: "could not connect:\n  Connection refused\n")
        #expect(plain.description == "connect: could not connect: Connection refused")
        #expect(plain.messageAndHint == plain.message)
    }

    @Test func moduleCodesAreStableSnakeCase() {
        let raw = CaptureError.Code.allCases.map(\.rawValue) + WarehouseError.Code.allCases.map(\.rawValue)
            + EventLogError.Code.allCases.map(\.rawValue)
        for code in raw {
            #expect(!code.isEmpty && code.allSatisfy { $0 == "_" || ("a"..."z").contains($0) }, "\(code) is snake_case")
        }
        #expect(Set(CaptureError.Code.allCases.map(\.rawValue)).count == CaptureError.Code.allCases.count)
        #expect(CaptureError.Code.slotMissing.rawValue == "slot_missing")
        #expect(CaptureError.Code.connectionLost.rawValue == "connection_lost")
        #expect(CaptureError.Code.logNotInitialised.rawValue == "log_not_initialised")
        #expect(WarehouseError.Code.warehouseUnreachable.rawValue == "warehouse_unreachable")
        #expect(EventLogError.Code.writerLocked.rawValue == "writer_locked")
    }

    @Test func captureErrorKeepsItsWordingAndCause() {
        let cause = PGError(call: "PQconsumeInput", message: "server closed the connection unexpectedly")
        let lost = CaptureError(.connectionLost, cause.message, underlying: cause)
        #expect(lost.description == "connection lost: server closed the connection unexpectedly")
        #expect((lost.underlying as? PGError)?.call == "PQconsumeInput" && lost.sqlState == nil)
        #expect(CaptureError(.protocolViolation, "message truncated").description == "replication protocol error: message truncated")
        #expect(CaptureError(.slotMissing, "replication slot \"s\" does not exist").description == "replication slot \"s\" does not exist")
    }

    @Test func warehouseTransienceFollowsTheCode() {
        let transient: Set<WarehouseError.Code> = [.warehouseUnreachable, .checkpointMoved]
        for code in WarehouseError.Code.allCases {
            #expect(WarehouseError(code, "m").isTransient == transient.contains(code), "\(code)")
        }
        let ddl = WarehouseError(.ddlFailed, "DDL file f failed", underlying: PGError(call: "CREATE TABLE", sqlState: .syntaxError, message: "syntax error"))
        #expect(ddl.sqlState == .syntaxError && !ddl.isTransient)
    }

    @Test func eventLogErrorsCarryTheFailingCall() throws {
        let directory = try TemporaryDirectory.make(prefix: "errcodes")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let missing = directory + "/nothing"
        do {
            _ = try EventLogWriter(path: missing, create: false)
            Issue.record("opened a log that does not exist")
        } catch let error as EventLogError {
            #expect(error.code == .noLog && error.description.hasPrefix("no event log at \(missing)"))
        }
        let writer = try EventLogWriter(path: directory + "/log")
        do {
            _ = try EventLogWriter(path: directory + "/log")
            Issue.record("a second writer got the lock")
        } catch let error as EventLogError {
            #expect(error.code == .writerLocked, "\(error)")
            #expect(error.call == "flock(\(directory)/log/writer.lock)" && error.returnCode == EWOULDBLOCK)
            #expect(error.description.contains("another cdc process (pid \(getpid()))"))
        }
        withExtendedLifetime(writer) {}
    }
}

/// What a real server's errors look like once libpq's fields are read.
@Suite(.timeLimit(.minutes(15))) struct ServerErrorFieldTests {
    static func withDatabase(_ body: (PGConnection, String) throws -> Void) throws {
        let server = PostgresServer.shared
        let database = try server.createDatabase("errfields", schema: false)
        defer { _ = try? server.execute("DROP DATABASE IF EXISTS \(database) WITH (FORCE)") }
        try body(try server.connect(database: database), database)
    }

    static func failure(_ body: () throws -> Void) -> PGError? {
        do {
            try body()
        } catch let error as PGError {
            return error
        } catch {
            Issue.record("not a PGError: \(error)")
        }
        return nil
    }

    @Test func uniqueViolationNamesTheKeyTableAndConstraint() throws {
        try Self.withDatabase { connection, _ in
            try connection.execute("CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL)")
            try connection.execute("INSERT INTO t VALUES (1, 'a')")
            let error = try #require(Self.failure { try connection.query("INSERT INTO t VALUES ($1, 'b')", ["1"]) })
            #expect(error.kind == .server && error.call == "INSERT")
            #expect(error.sqlState == .uniqueViolation && error.sqlState?.class == .integrityConstraintViolation)
            #expect(error.message == "duplicate key value violates unique constraint \"t_pkey\"")
            #expect(error.detail == "Key (id)=(1) already exists.")
            #expect(error.schemaName == "public" && error.tableName == "t" && error.constraintName == "t_pkey")
            #expect(error.severity == "ERROR" && error.hint == nil)
            #expect(error.description == "INSERT: duplicate key value violates unique constraint \"t_pkey\" (SQLSTATE 23505); detail: Key (id)=(1) already exists.")
            #expect(!error.isConnectionLoss && !error.isAuthenticationFailure)

            let null = try #require(Self.failure { try connection.execute("INSERT INTO t VALUES (2, NULL)") })
            #expect(null.sqlState == .notNullViolation && null.tableName == "t" && null.columnName == "name")
            #expect(null.detail?.hasPrefix("Failing row contains (2, null)") == true, "\(null)")
            // The connection is still usable after a server error.
            #expect(try connection.execute("SELECT count(*) FROM t").value(0, 0) == "1")
        }
    }

    @Test func missingTableAndFunctionGiveClass42WithPositionAndHint() throws {
        try Self.withDatabase { connection, _ in
            let table = try #require(Self.failure { try connection.execute("SELECT * FROM no_such_table") })
            #expect(table.sqlState == .undefinedTable && table.sqlState?.class == .syntaxErrorOrAccessRuleViolation)
            #expect(table.message == "relation \"no_such_table\" does not exist" && table.position == 15)
            #expect(table.description == "SELECT: relation \"no_such_table\" does not exist (SQLSTATE 42P01)")

            let function = try #require(Self.failure { try connection.execute("SELECT no_such_function(1)") })
            #expect(function.sqlState == .undefinedFunction && function.sqlState?.class == .syntaxErrorOrAccessRuleViolation)
            let hint = try #require(function.hint)
            #expect(hint.contains("No function matches the given name and argument types"))
            #expect(function.messageAndHint == "\(function.message) (hint: \(hint))")
            #expect(function.description.hasSuffix("(SQLSTATE 42883); hint: \(hint)"))

            let schema = try #require(Self.failure { try connection.execute("CREATE TABLE no_such_schema.t (id int)") })
            #expect(schema.sqlState == .invalidSchemaName && schema.sqlState?.class == .invalidSchemaName)
        }
    }

    @Test func terminatedSessionIsAConnectionLoss() throws {
        try Self.withDatabase { connection, database in
            let pid = try #require(connection.execute("SELECT pg_backend_pid()").value(0, 0))
            try PostgresServer.shared.execute("SELECT pg_terminate_backend(\(pid))")
            Thread.sleep(forTimeInterval: 0.2)
            let error = try #require(Self.failure { try connection.execute("SELECT 1") })
            // The server's FATAL (57P01) when libpq read it before the socket closed, else libpq's own.
            #expect(error.sqlState == .adminShutdown || (error.sqlState == nil && error.kind == .connection), "\(error)")
            #expect(error.isConnectionLoss && !error.isAuthenticationFailure, "\(error)")
        }
    }

    @Test func failedConnectionsHaveNoSQLStateButAreClassified() throws {
        let server = PostgresServer.shared
        let refused = try #require(Self.failure {
            _ = try PGConnection(conninfo: "host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=5")
        })
        #expect(refused.kind == .connection && refused.sqlState == nil && refused.call == "connect")
        #expect(refused.isConnectionLoss && !refused.isAuthenticationFailure)

        let role = "errcodes_\(UInt32.random(in: 0...UInt32.max))"
        // Throwaway credentials made up for this test: the role's password and a different one to try.
        let (right, wrong) = (UUID().uuidString, UUID().uuidString)
        try server.execute("CREATE ROLE \(role) WITH LOGIN REPLICATION PASSWORD '\(right)'")
        defer { _ = try? server.execute("DROP ROLE IF EXISTS \(role)") }
        let url = "host=127.0.0.1 port=\(server.port) dbname=postgres user=\(role) password=\(wrong)"
        let refusedLogin = try #require(Self.failure { _ = try PGConnection(conninfo: url) })
        #expect(refusedLogin.kind == .connection && refusedLogin.sqlState == nil && refusedLogin.isAuthenticationFailure, "\(refusedLogin)")
        #expect(!refusedLogin.message.contains(wrong))

        // Capture and the warehouse turn them into coded errors that keep the PGError.
        do {
            _ = try SourceInitializer.connect(url)
            Issue.record("connected with a wrong password")
        } catch let error as CaptureError {
            #expect(error.code == .authenticationFailed && (error.underlying as? PGError)?.isAuthenticationFailure == true)
            #expect(error.description.hasPrefix("cannot connect to the source: "))
        }
        do {
            _ = try SourceInitializer.connect("host=127.0.0.1 port=1 dbname=postgres user=postgres connect_timeout=5")
            Issue.record("connected to port 1")
        } catch let error as CaptureError {
            #expect(error.code == .sourceUnreachable && error.underlying is PGError)
        }
        let clock = try #require(WarehouseClock(timeZone: "UTC"))
        do {
            _ = try WarehouseTarget(url: url, schema: "dw", clock: clock).connect()
            Issue.record("connected with a wrong password")
        } catch let error as WarehouseError {
            #expect(error.code == .warehouseAuthenticationFailed && !error.isTransient)
        }
        do {
            _ = try WarehouseTarget(url: "host=127.0.0.1 port=1 dbname=postgres connect_timeout=5", schema: "dw", clock: clock).connect()
            Issue.record("connected to port 1")
        } catch let error as WarehouseError {
            #expect(error.code == .warehouseUnreachable && error.isTransient)
            #expect(error.description.hasPrefix("cannot connect to the warehouse ([warehouse] url): "))
        }
    }
}
