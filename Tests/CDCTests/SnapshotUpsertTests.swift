import EventLog
import Foundation
import Testing
import TestSupport

/// Snapshot records after `cdc init`'s snapshot (a backfill of a table that joined the publication
/// later, a `cdc snapshot` re-read for repair) fold as upserts: a new key is inserted, a key the
/// warehouse has with other values is a change exactly like an update of that row, an equal row changes
/// nothing (no version, no write). The logs are the real capture's (`cdc init` + `cdc run` on the
/// seeded source), with snapshot chunks appended by EventLogWriter as the backfill writes them: op
/// snapshot, no xid, the commit LSN and time of a watermark transaction captured just before, the
/// relation seq of the table's latest relation record, one log transaction per chunk.
@Suite(.timeLimit(.minutes(15))) struct SnapshotUpsertTests {
    /// The source tables the surgical mapping reads, parents first.
    static let tables = ["public.facilities", "public.surgeons", "public.surgical_robots", "public.surgical_procedures",
                         "public.procedure_outcomes", "public.procedure_telemetry"]

    /// The log's rows as folding it leaves them, and each table's latest relation record.
    struct Images {
        /// Table → key values → the row's image (as the log holds its values).
        var rows: [String: [[String?]: [Datum]]] = [:]
        var relations: [String: (seq: UInt64, definition: RelationDefinition)] = [:]

        /// Folds the log at `path` (snapshot, insert, update, delete, truncate).
        init(log path: String) throws {
            let log = try EventLog.openForReading(path: path)
            var definitions: [UInt64: RelationDefinition] = [:]
            var rows = self.rows, relations = self.relations
            try log.scan { seq, bytes in
                let record = try RecordCodec.decode(bytes)
                if case .relation(let definition) = record.body {
                    definitions[seq] = definition
                    relations[definition.qualifiedName] = (seq, definition)
                    return true
                }
                guard let definition = definitions[record.header.relationSeq] else { return true }
                let table = definition.qualifiedName
                let keyColumns = definition.columns.indices.filter { definition.columns[$0].isKey }
                func key(_ image: [Datum]) -> [String?] { keyColumns.map { image[$0].string } }
                switch record.body {
                case .row(_, let before, let after):
                    // An update's old key (when it has one) names the row it changes; a delete's, the row it removes.
                    let previous = rows[table]?[key(before ?? after ?? [])]
                    if let before { rows[table]?[key(before)] = nil }
                    guard var after else { break }
                    if let previous {
                        for i in after.indices where after[i] == .unchangedToast { after[i] = previous[i] }
                    }
                    rows[table, default: [:]][key(after)] = after
                case .truncate:
                    rows[table] = [:]
                default:
                    break
                }
                return true
            }
            self.rows = rows
            self.relations = relations
        }

        /// The image of `table`'s row with key `key` (one key column), with `changes` (column → text) made.
        func row(_ table: String, _ key: String, _ changes: [String: String?] = [:]) throws -> (table: String, image: [Datum]) {
            var image = try #require(rows[table]?[[key]], "\(table) \(key) is in the log")
            let columns = try #require(relations[table]).definition.columns
            for (name, value) in changes {
                let i = try #require(columns.firstIndex { $0.name == name }, "\(table).\(name)")
                image[i] = value.map { .text(Array($0.utf8)) } ?? .null
            }
            return (table, image)
        }
    }

    /// Commits a watermark transaction (a transactional logical message), captures and projects it,
    /// then appends `rows` as one snapshot chunk at its commit LSN and time, and projects that.
    /// Returns the chunk's commit (LSN text, commit time as the export writes it).
    @discardableResult
    static func appendChunk(_ ws: WarehouseWorkspace, _ rows: [(table: String, image: [Datum])]) throws -> WarehouseWorkspace.Commit {
        let mark = try ws.change("SELECT pg_logical_emit_message(true, 'test.watermark', 'high')")
        try ws.run()
        let images = try Images(log: ws.source.logPath)
        do {
            let writer = try EventLogWriter(path: ws.source.logPath, create: false)
            let lsn = writer.durable.lastCommitLSN, time = writer.durable.lastCommitTime
            try #require(lsn.description == mark.commit.lsn, "the log ends with the watermark: \(lsn) vs \(mark.commit.lsn)")
            for row in rows {
                let relation = try #require(images.relations[row.table])
                writer.append(Record(header: RecordHeader(op: .snapshot, lsn: lsn, xid: nil, commitTime: time, relationSeq: relation.seq),
                                     body: .row(old: .none, before: nil, after: row.image)))
            }
            writer.endTransaction(commitLSN: lsn, commitTime: time, resume: writer.durable.resumeLSN)
            try writer.flush()
        }
        try ws.run()
        return mark.commit
    }

    /// Every warehouse row with the transaction that wrote it (`xmin`), but the checkpoint's: a row
    /// rewritten with the same values shows too.
    static func writtenRows(_ ws: WarehouseWorkspace) throws -> [String: Set<String>] {
        var rows: [String: Set<String>] = [:]
        for table in ["dim_facilities", "dim_surgeons", "dim_robots", "fact_procedures", "fact_procedure_telemetry", "cdc_early_arrivals"] {
            rows[table] = Set(try ws.dw("SELECT xmin::text || ' ' || t::text FROM dw.\(table) t").map { $0[0] ?? "" })
        }
        return rows
    }

    @Test func snapshotRowsFoldAsUpsertsAndReplayEqualsLive() throws {
        let ws = try ProjectionOperationsTests.seeded("su_upsert")
        defer { ws.tearDown() }
        try ws.run()
        let procedures = try ws.sql("SELECT procedure_id FROM procedure_outcomes ORDER BY procedure_id LIMIT 3").map { $0[0]! }
        let (changed, deleted, outcome) = (procedures[0], procedures[1], procedures[2])
        let telemetry = try #require(try ws.sql("SELECT min(telemetry_id)::text FROM procedure_telemetry WHERE procedure_id = '\(deleted)'")[0][0])
        // 70,000 more telemetry rows: the re-read below is a log transaction of over 80,000 records, which
        // `cdc run` (batches of 20,000) folds and writes in chunks.
        try ws.sql("""
            INSERT INTO procedure_telemetry (procedure_id, sample_timestamp, system_temperature, video_fps)
            SELECT procedure_id, start_time + g * interval '1 second', 38.5, 60
            FROM (SELECT procedure_id, start_time FROM surgical_procedures ORDER BY procedure_id LIMIT 2000) p, generate_series(1, 35) g
            """)
        try ws.run()
        // Images of rows that the stream then deletes (a later snapshot brings them back).
        let before = try Images(log: ws.source.logPath)
        try ws.change("INSERT INTO surgeons VALUES ('SRG-8001', 'Gone Surgeon', 'Urology', 3, 'Basic')")
        try ws.change("DELETE FROM surgeons WHERE surgeon_id = 'SRG-8001'")
        try ws.change("UPDATE surgeons SET years_experience = years_experience + 1 WHERE surgeon_id = 'SRG-0004'")
        try ws.change("DELETE FROM surgical_procedures WHERE procedure_id = '\(deleted)'")
        try ws.run()
        let gone = try ws.dwRecords("SELECT surgeon_key::text, change_type FROM dw.dim_surgeons WHERE surgeon_id = 'SRG-8001' ORDER BY surgeon_key + 0")
        try #require(gone.map { $0["change_type"] } == ["INSERT", "DELETE"], "\(gone)")
        try #require(try ws.count("fact_procedures", where: "procedure_id = '\(deleted)'") == 0)

        // 1. A re-read of every table, equal to what the log holds: nothing changes, nothing is written.
        let current = try Images(log: ws.source.logPath)
        var all: [(table: String, image: [Datum])] = []
        for table in Self.tables { for image in current.rows[table, default: [:]].values { all.append((table, image)) } }
        try #require(all.count > 80_000, "\(all.count) records")
        var dump = try ws.dump(schema: "dw")
        dump["cdc_checkpoint"] = nil
        let written = try Self.writtenRows(ws)
        try Self.appendChunk(ws, all)
        var after = try ws.dump(schema: "dw")
        after["cdc_checkpoint"] = nil
        let differences = WarehouseWorkspace.differences(dump, after, names: ("before", "after"))
        #expect(differences.isEmpty, "an equal re-read changed the warehouse:\n\(differences.joined(separator: "\n"))")
        let rewritten = try Self.writtenRows(ws).compactMap { table, rows in
            rows == written[table] ? nil : "\(table): \(rows.subtracting(written[table] ?? []).prefix(2))"
        }
        #expect(rewritten.isEmpty, "an equal re-read rewrote rows: \(rewritten)")
        #expect(try ws.checkpoint().first?["last_seq"] == String(try ReplayClaimsTests.head(ws)), "the checkpoint is at the log's head")

        // 2. A chunk with new keys, changed rows and rows deleted earlier.
        let versions = try ws.dwRecords("SELECT surgeon_id, surgeon_key::text, certification_level FROM dw.dim_surgeons WHERE is_current AND surgeon_id IN ('SRG-0002', 'SRG-0003')")
        let surgeon2 = try #require(versions.first { $0["surgeon_id"] == "SRG-0002" })
        let surgeon3 = try #require(versions.first { $0["surgeon_id"] == "SRG-0003" })
        let certification = surgeon2["certification_level"] == "Master" ? "Basic" : "Master"
        let robot = try #require(try ws.dwRecords("SELECT robot_key::text, facility_key::text FROM dw.dim_robots WHERE robot_id = 'ROB-005' AND is_current").first)
        let facility = try ws.sql("SELECT facility_id FROM surgical_robots WHERE robot_id = 'ROB-005'")[0][0] == "FAC-001" ? "FAC-002" : "FAC-001"
        let procedure = try #require(try ws.dwRecords("SELECT procedure_key::text, status, \(WarehouseWorkspace.rfc3339("created_at")) AS created FROM dw.fact_procedures WHERE procedure_id = '\(changed)'").first)
        let maxProcedure = try #require(try ws.dwValue("SELECT max(procedure_key)::text FROM dw.fact_procedures"))
        let blood = try #require(try ws.dwValue("SELECT blood_loss_ml::text FROM dw.fact_procedures WHERE procedure_id = '\(outcome)'"))
        let commit = try Self.appendChunk(ws, [
            try current.row("public.surgeons", "SRG-0002", ["certification_level": certification]),
            try current.row("public.surgeons", "SRG-0003", ["years_experience": "77"]),
            try current.row("public.surgeons", "SRG-0001", ["surgeon_id": "SRG-9001", "surgeon_name": "New Surgeon"]),
            try before.row("public.surgeons", "SRG-0001", ["surgeon_id": "SRG-8001", "surgeon_name": "Back Again"]),
            try current.row("public.surgical_robots", "ROB-005", ["facility_id": facility]),
            try current.row("public.surgical_procedures", changed, ["status": "cancelled"]),
            try before.row("public.surgical_procedures", deleted, ["surgeon_id": "SRG-9001", "robot_id": "ROB-005"]),
            try before.row("public.procedure_outcomes", deleted),
            try current.row("public.procedure_outcomes", outcome, ["blood_loss_ml": String(Int(blood)! + 100)]),
            try before.row("public.procedure_telemetry", telemetry),
            try current.row("public.procedure_outcomes", outcome, ["procedure_id": "PROC-EARLY"]),
        ])
        let time = WarehouseWorkspace.rfc3339("valid_from"), to = WarehouseWorkspace.rfc3339("valid_to")
        func surgeon(_ id: String) throws -> [WarehouseRow] {
            try ws.dwRecords("SELECT surgeon_key::text, change_type, is_current::text, \(time) AS valid_from, \(to) AS valid_to, source_lsn::text, certification_level, years_experience::text, surgeon_name FROM dw.dim_surgeons WHERE surgeon_id = '\(id)' ORDER BY surgeon_key + 0")
        }
        // A changed type-2 column: the version closes at the snapshot's commit, a new one opens there.
        let two = try surgeon("SRG-0002")
        #expect(two.count >= 2 && two.dropLast().last?["surgeon_key"] == surgeon2["surgeon_key"] && two.dropLast().last?["valid_to"] == commit.time
                    && two.dropLast().last?["is_current"] == "false", "\(two)")
        #expect(two.last?["change_type"] == "UPDATE" && two.last?["valid_from"] == commit.time && two.last?["source_lsn"] == commit.lsn
                    && two.last?["certification_level"] == certification && two.last?["is_current"] == "true", "\(two)")
        // A changed type-1 column: overwritten in the current version.
        let three = try surgeon("SRG-0003").filter { $0["is_current"] == "true" }
        #expect(three.count == 1 && three.first?["surgeon_key"] == surgeon3["surgeon_key"] && three.first?["years_experience"] == "77", "\(three)")
        // A new key, and a key deleted earlier: inserted.
        let new = try surgeon("SRG-9001")
        #expect(new.count == 1 && new.first?["change_type"] == "INSERT" && new.first?["valid_from"] == commit.time && new.first?["source_lsn"] == commit.lsn, "\(new)")
        let back = try surgeon("SRG-8001")
        #expect(back.map { $0["change_type"] } == ["INSERT", "DELETE", "INSERT"] && back.last?["surgeon_name"] == "Back Again"
                    && back.last?["is_current"] == "true" && back.last?["valid_from"] == commit.time, "\(back)")
        // A changed lookup (the robot's facility): a new version pointing at the facility's current version.
        let robots = try ws.dwRecords("SELECT robot_key::text, facility_key::text, is_current::text FROM dw.dim_robots WHERE robot_id = 'ROB-005' ORDER BY robot_key + 0")
        let facilityKey = try ws.dwValue("SELECT facility_key::text FROM dw.dim_facilities WHERE facility_id = '\(facility)' AND is_current")
        #expect(robots.last?["is_current"] == "true" && robots.last?["robot_key"] != robot["robot_key"] && robots.last?["facility_key"] == facilityKey
                    && robots.last?["facility_key"] != robot["facility_key"], "\(robots)")
        // A changed fact row: updated in place, as an update would.
        let facts = try ws.dwRecords("SELECT procedure_key::text, status, \(WarehouseWorkspace.rfc3339("created_at")) AS created, \(WarehouseWorkspace.rfc3339("updated_at")) AS updated, source_lsn::text FROM dw.fact_procedures WHERE procedure_id = '\(changed)'")
        #expect(facts.count == 1 && facts.first?["procedure_key"] == procedure["procedure_key"] && facts.first?["status"] == "cancelled"
                    && facts.first?["created"] == procedure["created"] && facts.first?["updated"] == commit.time && facts.first?["source_lsn"] == commit.lsn, "\(facts)")
        // A fact row deleted earlier: inserted again, its lookups resolved through the dimensions as of
        // the snapshot (the new surgeon, the robot's new version), its outcome and telemetry with it.
        let again = try #require(try ws.dwRecords("SELECT procedure_key::text, surgeon_key::text, robot_key::text, success_status, \(WarehouseWorkspace.rfc3339("created_at")) AS created FROM dw.fact_procedures WHERE procedure_id = '\(deleted)'").first)
        #expect(Int(again["procedure_key"] ?? "") ?? 0 > Int(maxProcedure)! && again["surgeon_key"] == new.first?["surgeon_key"]
                    && again["robot_key"] == robots.last?["robot_key"] && again["success_status"] != nil && again["created"] == commit.time, "\(again)")
        #expect(try ws.dwValue("SELECT procedure_key::text FROM dw.fact_procedure_telemetry WHERE telemetry_id = \(telemetry)") == again["procedure_key"])
        // A changed milestone (the outcome): the fact's columns updated.
        #expect(try ws.dwValue("SELECT blood_loss_ml::text || ' ' || \(WarehouseWorkspace.rfc3339("updated_at")) FROM dw.fact_procedures WHERE procedure_id = '\(outcome)'")
                    == "\(Int(blood)! + 100) \(commit.time)")
        // A milestone of a fact row the warehouse lacks: kept as an early arrival, as an insert would be.
        #expect(try ws.dwValue("SELECT count(*) FROM dw.cdc_early_arrivals WHERE grain = '[\"PROC-EARLY\"]'") == "1")

        // 3. The projector is deterministic over such a log: a replay (other batches) equals live.
        try ws.replay(schema: "rebuilt")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")
    }
}
