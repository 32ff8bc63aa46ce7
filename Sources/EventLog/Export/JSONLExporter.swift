/// Renders records as the export format: one JSON object per line (see schemas/event-log.md).
///
/// Column values: NULL is `null`; int2/int4/int8/oid are JSON numbers; float4/float8 are numbers
/// (strings for NaN and ±Infinity); bool is `true`/`false`; every other type, numeric included, is a
/// JSON string holding PostgreSQL's text output (numeric stays exact, json/jsonb/arrays keep their text).
/// An unchanged TOASTed value, which PostgreSQL did not send, is the object `{"unchanged_toast":true}`:
/// no column value is ever rendered as an object, so the marker cannot be mistaken for data or null.
public struct JSONLExporter {
    let log: EventLog

    public init(log: EventLog) { self.log = log }

    /// The relation definition recorded at `seq` (from the log's ``RelationCatalog``).
    public mutating func relation(_ seq: UInt64) throws -> RelationDefinition? {
        try log.relationDefinition(seq)
    }

    /// Appends one line (with its newline) for record `seq`; a row or truncate record of a transaction
    /// with an actor (``TransactionActor``) gets an `actor` object, and of a replicated transaction the
    /// name of its `origin`.
    public mutating func render(seq: UInt64, record: Record, context: TransactionContext = .init(), into w: inout JSONWriter) throws {
        let h = record.header
        if case .relation(let definition) = record.body { log.relationCatalog.remember(definition, at: seq) }
        Self.renderHeader(seq: seq, h, into: &w)
        w.raw(",\"table\":")
        let definition: RelationDefinition?
        switch record.body {
        case .relation(let d): definition = d
        case .message, .origin: definition = nil
        default: definition = try relation(h.relationSeq)
        }
        if let definition { w.string(definition.qualifiedName) } else { w.raw("null") }
        w.raw(",\"op\":\""); w.raw(h.op.name); w.raw("\"")
        switch record.body {
        case .row(let old, let before, let after):
            guard let definition else {
                throw EventLogError(.corrupt, "record \(seq) refers to relation record \(h.relationSeq), which is missing")
            }
            w.raw(",\"before\":")
            if let before { Self.row(before, definition, &w) } else { w.raw("null") }
            w.raw(",\"after\":")
            if let after { Self.row(after, definition, &w) } else { w.raw("null") }
            if old != .none { w.raw(old == .key ? ",\"before_kind\":\"key\"" : ",\"before_kind\":\"row\"") }
            w.raw(",\"relation_seq\":"); w.number(h.relationSeq)
        case .truncate:
            w.raw(",\"before\":null,\"after\":null,\"cascade\":")
            w.raw(h.flags.contains(.cascade) ? "true" : "false")
            w.raw(",\"restart_identity\":")
            w.raw(h.flags.contains(.restartIdentity) ? "true" : "false")
            w.raw(",\"relation_seq\":"); w.number(h.relationSeq)
        case .message(let prefix, let content):
            w.raw(",\"before\":null,\"after\":null,\"transactional\":")
            w.raw(h.flags.contains(.transactional) ? "true" : "false")
            w.raw(",\"prefix\":"); w.string(prefix)
            if let text = String(validating: content, as: UTF8.self) {
                w.raw(",\"content\":"); w.string(text); w.raw(",\"content_encoding\":\"utf8\"")
            } else {
                w.raw(",\"content\":"); w.string(base64(content)); w.raw(",\"content_encoding\":\"base64\"")
            }
        case .relation(let d):
            w.raw(",\"before\":null,\"after\":null,\"relation\":{\"oid\":"); w.number(d.oid)
            w.raw(",\"replica_identity\":"); w.string(String(UnicodeScalar(d.replicaIdentity)))
            w.raw(",\"columns\":[")
            for (i, c) in d.columns.enumerated() {
                if i > 0 { w.raw(",") }
                w.raw("{\"name\":"); w.string(c.name)
                w.raw(",\"type\":"); w.string(c.typeName)
                w.raw(",\"type_oid\":"); w.number(c.typeOID)
                w.raw(",\"typmod\":"); w.number(c.typeModifier)
                w.raw(",\"key\":"); w.raw(c.isKey ? "true" : "false"); w.raw("}")
            }
            w.raw("]}")
        case .origin(let name, let lsn):
            w.raw(",\"before\":null,\"after\":null,\"origin\":"); w.string(name)
            w.raw(",\"origin_lsn\":\""); w.raw(lsn.description); w.raw("\"")
        }
        if let origin = context.origin, record.isChange {
            w.raw(",\"origin\":"); w.string(origin)
        }
        if let actor = context.actor, record.isChange {
            w.raw(",\"actor\":{")
            for (i, (key, value)) in actor.values.enumerated() {
                if i > 0 { w.raw(",") }
                w.string(key); w.raw(":")
                if let value { key == "backend_pid" ? w.raw(value) : w.string(value) } else { w.raw("null") }
            }
            w.raw("}")
        }
        w.raw("}\n")
    }

    /// Opens an event's object with the fields every event has: `{"seq":…,"lsn":…,"xid":…,"commit_time":…`.
    public static func renderHeader(seq: UInt64, _ h: RecordHeader, into w: inout JSONWriter) {
        w.raw("{\"seq\":"); w.number(seq)
        w.raw(",\"lsn\":\""); w.raw(h.lsn.description)
        w.raw("\",\"xid\":")
        if let xid = h.xid { w.number(xid) } else { w.raw("null") }
        w.raw(",\"commit_time\":")
        if let time = h.commitTime { w.raw("\""); w.raw(rfc3339(microseconds: time)); w.raw("\"") } else { w.raw("null") }
    }

    static func row(_ values: [Datum], _ relation: RelationDefinition, _ w: inout JSONWriter) {
        w.raw("{")
        for (i, value) in values.enumerated() {
            if i > 0 { w.raw(",") }
            let column = i < relation.columns.count ? relation.columns[i] : nil
            w.string(column?.name ?? "column_\(i + 1)")
            w.raw(":")
            switch value {
            case .null: w.raw("null")
            case .unchangedToast: w.raw("{\"unchanged_toast\":true}")
            case .text(let bytes): scalar(bytes, typeOID: column?.typeOID ?? 25, &w)
            }
        }
        w.raw("}")
    }

    static func scalar(_ text: [UInt8], typeOID: UInt32, _ w: inout JSONWriter) {
        switch typeOID {
        case 20, 21, 23, 26:
            w.raw(text)
        case 700, 701:
            if let first = text.first, first == 0x2D || (0x30...0x39).contains(first), !text.contains(0x49) {
                w.raw(text)  // finite (not NaN, not -Infinity)
            } else {
                w.string(text)
            }
        case 16:
            w.raw(text == [0x74] ? "true" : "false")
        default:
            w.string(text)
        }
    }
}

/// Standard base64 with padding.
func base64(_ bytes: [UInt8]) -> String {
    let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    var out: [UInt8] = []
    var i = 0
    while i + 2 < bytes.count {
        let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
        out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)], table[Int(n & 63)]]
        i += 3
    }
    if i < bytes.count {
        var n = UInt32(bytes[i]) << 16
        if i + 1 < bytes.count { n |= UInt32(bytes[i + 1]) << 8 }
        out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)]]
        out.append(i + 1 < bytes.count ? table[Int(n >> 6 & 63)] : 0x3D)
        out.append(0x3D)
    }
    return String(decoding: out, as: UTF8.self)
}
