import EventLog
import Foundation
import Testing
import TestSupport

/// The actor rule of ``TransactionActor`` and ``TransactionTracker`` on a log written by EventLogWriter: a
/// transaction's actor is its first `cdc.actor` message before its first row, never the one before it,
/// and `--actor NAME` matches the db_user (the login) or the app_user, not the current_user.
@Suite(.timeLimit(.minutes(15))) struct TransactionActorTests {
    static func actorMessage(_ lsn: LSN, _ xid: UInt32, _ json: String) -> Record {
        Record(header: RecordHeader(op: .message, flags: .transactional, lsn: lsn, xid: xid, commitTime: 0, relationSeq: 0),
               body: .message(prefix: TransactionActor.prefix, content: Array(json.utf8)))
    }

    static func insert(_ lsn: LSN, _ xid: UInt32, _ id: Int) -> Record {
        Record(header: RecordHeader(op: .insert, lsn: lsn, xid: xid, commitTime: 0, relationSeq: 1),
               body: .row(old: .none, before: nil, after: [.text(Array(String(id).utf8))]))
    }

    static let relation = RelationDefinition(oid: 16384, namespace: "public", name: "t", replicaIdentity: UInt8(ascii: "d"), columns: [
        .init(name: "id", typeOID: 23, typeModifier: -1, isKey: true, typeName: "int4"),
    ])

    /// Four transactions: alice's (message, two rows), one without a message (a relation record first,
    /// then a row), one whose message comes after its first row (not its actor), and bob's. Returns the
    /// log and, for each row seq, the app_user or db_user of the actor it must be given (nil: none).
    static func writeLog(_ directory: String) throws -> (log: EventLog, expected: [UInt64: String?]) {
        let writer = try EventLogWriter(path: directory + "/log")
        var expected: [UInt64: String?] = [:]
        func transaction(_ xid: UInt32, _ body: (LSN) -> Void) {
            let lsn = LSN(UInt64(0x1000 + Int(xid) * 16))
            body(lsn)
            writer.endTransaction(commitLSN: lsn, commitTime: 0, resume: LSN(lsn.value + 1))
        }
        transaction(1) { lsn in
            writer.append(Record(header: RecordHeader(op: .relation, lsn: lsn, xid: 1, commitTime: 0, relationSeq: 0), body: .relation(Self.relation)))
            writer.append(Self.actorMessage(lsn, 1, #"{"db_user":"app_login","current_user":"billing_role","application_name":"billing","app_user":"alice"}"#))
            expected[writer.append(Self.insert(lsn, 1, 1))] = "alice"
            expected[writer.append(Self.insert(lsn, 1, 2))] = "alice"
        }
        transaction(2) { lsn in
            writer.append(Record(header: RecordHeader(op: .relation, lsn: lsn, xid: 2, commitTime: 0, relationSeq: 0), body: .relation(Self.relation)))
            expected[writer.append(Self.insert(lsn, 2, 3))] = .some(nil)
        }
        transaction(3) { lsn in
            expected[writer.append(Self.insert(lsn, 3, 4))] = .some(nil)
            writer.append(Self.actorMessage(lsn, 3, #"{"db_user":"mallory","app_user":"mallory"}"#))
            expected[writer.append(Self.insert(lsn, 3, 5))] = .some(nil)
        }
        transaction(4) { lsn in
            writer.append(Self.actorMessage(lsn, 4, #"{"db_user":"bob","current_user":"bob"}"#))
            expected[writer.append(Self.insert(lsn, 4, 6))] = "bob"
        }
        try writer.flush()
        return (writer.log, expected)
    }

    static func records(_ log: EventLog) throws -> [(seq: UInt64, record: Record)] {
        var records: [(UInt64, Record)] = []
        try log.scan { seq, bytes in
            records.append((seq, try RecordCodec.decode(bytes)))
            return true
        }
        return records
    }

    static func who(_ actor: TransactionActor?) -> String? { actor?.appUser ?? actor?.dbUser }

    @Test func eachTransactionHasOnlyItsOwnActorFromAnyStartingPoint() throws {
        let directory = try TemporaryDirectory.make(prefix: "actor")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (log, expected) = try Self.writeLog(directory)
        let records = try Self.records(log)
        #expect(records.count == 11)
        // Read from the start, every record shown.
        var tracker = TransactionTracker(log: log)
        for (seq, record) in records {
            let actor = try tracker.actor(seq: seq, record: record)
            if let want = expected[seq] { #expect(Self.who(actor) == want, "row seq \(seq)") }
        }
        // Shown from each row on (a reader starting there), and shown only the rows (a filter).
        for start in expected.keys.sorted() {
            var fromHere = TransactionTracker(log: log)
            for (seq, record) in records where seq >= start {
                let actor = try fromHere.actor(seq: seq, record: record)
                if let want = expected[seq] { #expect(Self.who(actor) == want, "from seq \(start), row seq \(seq)") }
            }
        }
        var rowsOnly = TransactionTracker(log: log)
        for (seq, record) in records where expected[seq] != nil {
            #expect(Self.who(try rowsOnly.actor(seq: seq, record: record)) == expected[seq]!, "rows only, seq \(seq)")
        }
        // The log's own lookup follows the same rule.
        #expect(Self.who(try log.actor(ofTransactionAt: LSN(0x1000 + 16))) == "alice")
        #expect(try log.actor(ofTransactionAt: LSN(0x1000 + 32)) == nil)
        #expect(try log.actor(ofTransactionAt: LSN(0x1000 + 48)) == nil, "a message after the first row is not the actor")
        #expect(Self.who(try log.actor(ofTransactionAt: LSN(0x1000 + 64))) == "bob")
    }

    @Test func actorNameMatchesTheLoginOrTheAppUserNotTheRole() {
        let actor = TransactionActor(dbUser: "app_login", currentUser: "billing_role", applicationName: "billing",
                                     clientAddr: nil, backendPID: 7, appUser: "alice")
        #expect(actor.matches("app_login"))
        #expect(actor.matches("alice"))
        #expect(!actor.matches("billing_role"), "SET ROLE does not make the role the actor")
        #expect(!actor.matches("billing"))
        let noAppUser = TransactionActor(dbUser: "postgres", currentUser: "postgres", applicationName: nil, clientAddr: nil, backendPID: nil, appUser: nil)
        #expect(noAppUser.matches("postgres") && !noAppUser.matches(""))
    }
}
