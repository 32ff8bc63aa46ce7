import EventLog
import Foundation
import Testing
import TestSupport

/// A log written by a newer cdc (a higher format version in meta) is refused with a clear message by
/// every command, and nothing is written to it.
@Suite(.timeLimit(.minutes(15))) struct FormatVersionTests {
    /// What a future cdc would have stamped in the log's meta: format 2.
    static func stampFormat2(_ path: String) throws {
        let environment = try LMDBEnvironment(path: path, readOnly: false)
        let meta = try environment.openDatabase("meta", create: false)
        try environment.withTransaction(readOnly: false) { txn in
            try txn.put(meta, key: Array("format".utf8), value: [0, 0, 0, 2])
        }
    }

    static func refusal(_ path: String) -> String {
        "cdc: error: the log at \(path) has format version 2, newer than this cdc's 1: upgrade cdc"
    }

    @Test func aLogInANewerFormatIsRefusedAndLeftUntouched() throws {
        let directory = try TemporaryDirectory.make(prefix: "format")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/log"
        do {
            let writer = try EventLogWriter(path: path)
            _ = writer.append(Record(header: RecordHeader(op: .message, flags: .transactional, lsn: LSN(0x100), xid: 7,
                                                          commitTime: 0, relationSeq: 0),
                                     body: .message(prefix: "p", content: Array("x".utf8))))
            writer.endTransaction(commitLSN: LSN(0x100), commitTime: 0, resume: LSN(0x101))
            try writer.flush()
        }
        try Self.stampFormat2(path)
        let before = try Data(contentsOf: URL(fileURLWithPath: path + "/data.mdb"))

        #expect(throws: EventLogError.self) { _ = try EventLogWriter(path: path) }
        for args in [["log", "stats"], ["log", "export", "--format", "jsonl"], ["log", "verify"], ["log", "digest"],
                     ["log", "tail"], ["log", "history", "t", "1"]] {
            let result = try Shell.run(CDCWorkspace.executable, args + ["--log", path])
            #expect(result.status == 1, "\(args)")
            #expect(result.stderr == Self.refusal(path) + "\n",
                    "\(args): \(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path + "/data.mdb")) == before, "nothing was written")
    }

    /// `cdc run` (with and without projection), `cdc init` and `cdc replay` on a log a newer cdc wrote:
    /// one line naming both versions, exit 1, and nothing written: not the log, not the warehouse,
    /// not the slot's position.
    @Test func runInitAndReplayRefuseALogInANewerFormat() throws {
        let ws = try WarehouseWorkspace("format_cmds")
        defer { ws.tearDown() }
        try ws.sql(Fixture.facility("F1", "Mercy"))
        try ws.initialize()
        try ws.run()
        try Self.stampFormat2(ws.source.logPath)
        try ws.sql("UPDATE facilities SET bed_count = 301 WHERE facility_id = 'F1'")
        let endpos = try ws.server.currentLSN()
        func slot() throws -> [[String?]] {
            try ws.server.execute("SELECT confirmed_flush_lsn::text, restart_lsn::text FROM pg_replication_slots WHERE slot_name = '\(ws.source.slot)'")
        }
        let (log, warehouse, position) = (try Data(contentsOf: URL(fileURLWithPath: ws.source.logPath + "/data.mdb")), try ws.dump(schema: "dw"), try slot())

        for args in [["run", "--endpos", endpos], ["run", "--no-project", "--endpos", endpos], ["run"], ["init"], ["replay", "--schema", "dw_new"],
                     ["replay", "--schema", "dw_new", "--swap"]] {
            let result = try ws.cdc(args + ["--config", ws.configPath])
            expectOneLineError(result, naming: [])
            #expect(result.status == 1, "\(args): exit 1, not \(result.status)")
            #expect(result.stderr.split(separator: "\n").last.map(String.init) == Self.refusal(ws.source.logPath), "\(args): \(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: ws.source.logPath + "/data.mdb")) == log, "the log's data file is byte for byte as it was")
        #expect(WarehouseWorkspace.differences(warehouse, try ws.dump(schema: "dw")).isEmpty, "the warehouse is unchanged")
        #expect(!(try ws.schemaExists("dw_new")), "replay created no schema")
        #expect(try slot() == position, "the slot was not advanced")
    }

    /// `cdc init` on a newer-format log of a source never initialised: refused before the publication
    /// and the slot are created.
    @Test func initRefusesANewerFormatLogBeforeTouchingTheSource() throws {
        let ws = try CDCWorkspace("format_init")
        defer { ws.tearDown() }
        _ = try EventLogWriter(path: ws.logPath)  // an empty log (format 1), then stamped 2
        try Self.stampFormat2(ws.logPath)
        let before = try Data(contentsOf: URL(fileURLWithPath: ws.logPath + "/data.mdb"))
        let result = try ws.cdc(["init", "--config", ws.configPath])
        expectOneLineError(result, naming: [])
        #expect(result.status == 1 && result.stderr.split(separator: "\n").last.map(String.init) == Self.refusal(ws.logPath), "\(result.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: ws.logPath + "/data.mdb")) == before)
        #expect(try ws.server.execute("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "0", "no slot")
        #expect(try ws.sql("SELECT count(*) FROM pg_publication WHERE pubname = '\(ws.slot)'")[0][0] == "0", "no publication")
    }
}
