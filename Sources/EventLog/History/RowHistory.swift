/// Every change to one row, oldest first: what `cdc log history TABLE KEY...` prints.
public struct RowHistory {
    /// The table's latest relation definition (its key columns name the row).
    public var relation: RelationDefinition
    /// The events, in log order: rows whose old or new key is the row's, and the table's truncates
    /// from the row's first event on.
    public var events: [(seq: UInt64, record: Record)] = []
    /// Records 1...indexedThrough were looked up in the index; nil when there is no index.
    public var indexedThrough: UInt64?
    /// Events found through the index.
    public var fromIndex = 0
    /// Records read one by one after the index's end (up to the head).
    public var scanned = 0
}

extension EventLog {
    /// The latest relation definition of the table named `name` (`schema.table`, or a table name
    /// found in exactly one schema).
    public func latestRelation(named name: String) throws -> RelationDefinition {
        var matches: [RelationDefinition] = []
        var all: [String] = []
        for (_, seq) in try relationIndex() {
            guard let definition = try relationDefinition(seq) else { continue }
            all.append(definition.qualifiedName)
            if definition.qualifiedName == name || (!name.contains(".") && definition.name == name) {
                matches.append(definition)
            }
        }
        guard !matches.isEmpty else {
            throw EventLogError(.unknownTable, "no table named \(name) in the log (its tables: \(all.sorted().joined(separator: ", ")))")
        }
        guard matches.count == 1 else {
            throw EventLogError(.ambiguousTable, "\(name) names several tables (\(matches.map(\.qualifiedName).sorted().joined(separator: ", "))): give schema.table")
        }
        return matches[0]
    }

    /// The history of the row of `table` whose key columns hold `key` (text, as PostgreSQL prints
    /// them), served from `index` up to its end and by reading the records after it.
    public func history(table: String, key: [String], index: HistoryIndex?) throws -> RowHistory {
        let relation = try latestRelation(named: table)
        let keyColumns = relation.keyColumnIndices
        guard !keyColumns.isEmpty else {
            throw EventLogError(.noKey, "\(relation.qualifiedName) has no replica identity key in the log: its rows cannot be told apart")
        }
        let names = keyColumns.map { relation.columns[$0].name }
        guard key.count == keyColumns.count else {
            throw EventLogError(.wrongKey, "\(relation.qualifiedName) is keyed by (\(names.joined(separator: ", "))): give \(keyColumns.count) value\(keyColumns.count == 1 ? "" : "s") in that order, not \(key.count)")
        }
        let tableName = relation.qualifiedName
        let target = HistoryKey.part(values: key.map { Array($0.utf8) })
        var history = RowHistory(relation: relation)
        let head = try position().head

        // Which relation records describe this table, and its key columns in each version.
        var relationKeys: [UInt64: [Int]?] = [:]
        func keyColumnsOf(_ relationSeq: UInt64) throws -> [Int]? {
            if let known = relationKeys[relationSeq] { return known }
            var value: [Int]?
            if let definition = try relationDefinition(relationSeq), definition.qualifiedName == tableName {
                value = definition.keyColumnIndices
            }
            relationKeys[relationSeq] = value
            return value
        }
        // Keeps record `seq` when it is a change of this row (exact: the index's 8-byte keys may
        // collide), with the keys it touches (for an update, the new key first).
        var found: [(seq: UInt64, record: Record, keys: [[UInt8]])] = []
        func consider(_ seq: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
            var r = ByteReader(bytes)
            let header = try RecordCodec.decodeHeader(&r)
            guard header.op.isChange, let columns = try keyColumnsOf(header.relationSeq) else { return }
            let keys = try HistoryKey.parts(record: bytes, keyColumns: columns)
            if keys.contains(where: { $0 == target || $0 == HistoryKey.truncateMarker }) {
                found.append((seq, try RecordCodec.decode(bytes), keys))
            }
        }

        var seqs: [UInt64] = []
        var start: UInt64 = 1
        if let index {
            let through = min(try index.indexedThrough(), head)
            history.indexedThrough = through
            let rowSeqs = try index.seqs(HistoryKey.assemble(table: Array(tableName.utf8), part: target))
            let truncates = try index.seqs(HistoryKey.truncates(table: tableName))
            seqs = Array(Set(rowSeqs + truncates).filter { $0 <= through }).sorted()
            start = through + 1
        }
        for seq in seqs {
            try environment.withTransaction(readOnly: true) { txn in
                if let bytes = try txn.get(events, key: keyBytes(seq)) { try consider(seq, bytes) }
            }
        }
        if start <= head {
            try scan(from: start, to: head) { seq, bytes in
                history.scanned += 1
                try consider(seq, bytes)
                return true
            }
        }
        // A truncate belongs to the row's history when the row existed then.
        var alive = false
        for (seq, record, keys) in found {
            switch record.header.op {
            case .truncate:
                if alive { history.events.append((seq, record)); alive = false }
                continue
            case .delete:
                alive = false
            case .update:
                alive = keys.first == target  // unless the update moved the row to another key
            default:
                alive = true
            }
            history.events.append((seq, record))
        }
        if let through = history.indexedThrough { history.fromIndex = history.events.filter { $0.seq <= through }.count }
        return history
    }
}
