import EventLog
import Foundation
import Testing
import TestSupport

/// A log written by a newer cdc (a higher format version in meta) is refused with a clear message by
/// every command, and nothing is written to it.
@Suite(.timeLimit(.minutes(5))) struct FormatVersionTests {
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
        // What a future cdc would have stamped: format 2.
        do {
            let environment = try LMDBEnvironment(path: path, readOnly: false)
            let meta = try environment.openDatabase("meta", create: false)
            try environment.withTransaction(readOnly: false) { txn in
                try txn.put(meta, key: Array("format".utf8), value: [0, 0, 0, 2])
            }
        }
        let before = try Data(contentsOf: URL(fileURLWithPath: path + "/data.mdb"))

        #expect(throws: EventLogError.self) { _ = try EventLogWriter(path: path) }
        for args in [["log", "stats"], ["log", "export", "--format", "jsonl"], ["log", "verify"], ["log", "digest"],
                     ["log", "tail"], ["log", "history", "t", "1"]] {
            let result = try Shell.run(CDCWorkspace.executable, args + ["--log", path])
            #expect(result.status == 1, "\(args)")
            #expect(result.stderr == "cdc: error: the log at \(path) has format version 2, newer than this cdc's 1: upgrade cdc\n",
                    "\(args): \(result.stderr)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path + "/data.mdb")) == before, "nothing was written")
    }
}
