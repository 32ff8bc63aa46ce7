import EventLog
import Foundation
import Synchronization
import Testing
import TestSupport

/// The one relation catalog: relation seq → definition, each relation record decoded once and shared
/// by the log's readers, from any thread.
@Suite(.timeLimit(.minutes(15))) struct RelationCatalogTests {
    static let definition = RelationDefinition(oid: 16384, namespace: "public", name: "t", replicaIdentity: UInt8(ascii: "d"), columns: [
        .init(name: "id", typeOID: 23, typeModifier: -1, isKey: true, typeName: "int4"),
        .init(name: "note", typeOID: 25, typeModifier: -1, isKey: false, typeName: "text"),
    ])

    @Test func loadsEachDefinitionOnceAndKeepsNothingForAMiss() throws {
        let catalog = RelationCatalog()
        let loads = Mutex(0)
        func load(_ seq: UInt64) -> (definition: RelationDefinition, keep: Bool)? {
            loads.withLock { $0 += 1 }
            return seq == 3 || seq == 5 ? (Self.definition, seq == 3) : nil
        }
        #expect(try catalog.definition(3, load: load) == Self.definition)
        #expect(try catalog.definition(3, load: load) == Self.definition)
        #expect(loads.withLock { $0 } == 1)
        #expect(try catalog.definition(4, load: load) == nil)
        #expect(try catalog.definition(4, load: load) == nil)
        #expect(loads.withLock { $0 } == 3)  // a miss is asked again: the record may become visible
        #expect(catalog.count == 1 && catalog.cached(4) == nil)
        #expect(try catalog.definition(5, load: load) == Self.definition)  // found, but not to be kept
        #expect(try catalog.definition(5, load: load) == Self.definition)
        #expect(loads.withLock { $0 } == 5 && catalog.cached(5) == nil)
        catalog.remember(Self.definition, at: 9)
        #expect(try catalog.definition(9, load: load) == Self.definition && loads.withLock { $0 } == 5)
    }

    @Test func aLoadErrorIsThrownAndNothingIsKept() {
        struct Damaged: Error {}
        let catalog = RelationCatalog()
        #expect(throws: Damaged.self) { try catalog.definition(1) { _ in throw Damaged() } }
        #expect(catalog.count == 0)
    }

    @Test func threadsSharingTheCatalogLoadEachDefinitionOnce() throws {
        let catalog = RelationCatalog()
        let loads = Mutex([UInt64: Int]())
        let wrong = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 8) { thread in
            for i in 0..<2000 {
                let seq = UInt64((i * 7 + thread) % 50 + 1)
                let found = try? catalog.definition(seq) { seq in
                    loads.withLock { $0[seq, default: 0] += 1 }
                    var d = Self.definition
                    d.oid = UInt32(seq)
                    return (d, true)
                }
                if found?.oid != UInt32(seq) { wrong.withLock { $0 += 1 } }
            }
        }
        #expect(wrong.withLock { $0 } == 0)
        #expect(loads.withLock { $0 } == Dictionary(uniqueKeysWithValues: (1...50).map { (UInt64($0), 1) }))
    }

    @Test func theLogsCatalogHoldsWhatItsRelationRecordsSay() throws {
        let log = try EventLog.openForReading(path: try GoldenLog.copy())
        var relations: [UInt64: RelationDefinition] = [:]
        var rows: [UInt64] = []
        try log.scan { seq, bytes in
            let record = try RecordCodec.decode(bytes)
            if case .relation(let d) = record.body { relations[seq] = d } else { rows.append(seq) }
            return true
        }
        #expect(!relations.isEmpty && !rows.isEmpty)
        for (seq, definition) in relations {
            #expect(try log.relationDefinition(seq) == definition)
            #expect(log.relationCatalog.cached(seq) == definition)
        }
        for seq in rows.prefix(20) { #expect(try log.relationDefinition(seq) == nil) }
        #expect(try log.relationDefinition(UInt64.max) == nil)
        #expect(log.relationCatalog.count == relations.count)
    }

    /// A relation record past the head (an unfinished transaction's, flushed with a huge transaction's
    /// chunks) is served but not kept: after a restart the writer deletes it and writes that seq again,
    /// and a reader that stayed open (`cdc log tail` over a restarting capture) must see the new record.
    @Test func aDefinitionPastTheHeadIsNotKeptAndAReaderSeesTheSeqWrittenAgain() throws {
        let directory = try TemporaryDirectory.make(prefix: "catalog")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/log"
        var renamed = Self.definition
        renamed.name = "t_renamed"
        func relation(_ d: RelationDefinition, _ lsn: LSN) -> Record {
            Record(header: RecordHeader(op: .relation, lsn: lsn, xid: 5, commitTime: 0, relationSeq: 0), body: .relation(d))
        }
        let reader: EventLog
        do {
            let writer = try EventLogWriter(path: path)
            #expect(writer.append(relation(Self.definition, LSN(0x100))) == 1)
            writer.append(Record(header: RecordHeader(op: .insert, lsn: LSN(0x100), xid: 5, commitTime: 0, relationSeq: 1),
                                 body: .row(old: .none, before: nil, after: [.text(Array("1".utf8)), .null])))
            try writer.flush()  // the transaction is open: record 1 is written past the head 0
            reader = try EventLog.openForReading(path: path)
            #expect(try reader.position().head == 0)
            #expect(try reader.relationDefinition(1) == Self.definition)
            #expect(reader.relationCatalog.cached(1) == nil, "a record past the head is not kept")
        }
        // The capture restarts: the unfinished transaction is deleted and seq 1 is another record.
        let writer = try EventLogWriter(path: path, create: false)
        #expect(writer.append(relation(renamed, LSN(0x200))) == 1)
        writer.endTransaction(commitLSN: LSN(0x200), commitTime: 0, resume: LSN(0x201))
        try writer.flush()
        #expect(try reader.position().head == 1)
        #expect(try reader.relationDefinition(1) == renamed, "the record written again, not the deleted one")
        #expect(reader.relationCatalog.cached(1) == renamed, "at or below the head: kept")
    }
}
