import PGClient

/// Names of PostgreSQL's built-in types by OID. Built-in OIDs are fixed across clusters and versions,
/// so the log can name them without asking the source; user-defined types (OID >= 16384) are named
/// `schema.name` as the catalog (`pg_type`) names that OID: by the snapshot's catalog query, and in the
/// stream by ``TypeNameResolver`` (not by pgoutput's Type message, which names a domain's base type).
public enum TypeNames {
    /// The first OID assigned to user-defined objects.
    public static let firstNormalOID: UInt32 = 16384

    static let builtin: [UInt32: String] = [
        16: "bool", 17: "bytea", 18: "char", 19: "name", 20: "int8", 21: "int2", 22: "int2vector", 23: "int4",
        24: "regproc", 25: "text", 26: "oid", 27: "tid", 28: "xid", 29: "cid", 30: "oidvector", 114: "json",
        142: "xml", 194: "pg_node_tree", 600: "point", 601: "lseg", 602: "path", 603: "box", 604: "polygon",
        628: "line", 650: "cidr", 700: "float4", 701: "float8", 718: "circle", 774: "macaddr8", 790: "money",
        829: "macaddr", 869: "inet", 1033: "aclitem", 1042: "bpchar", 1043: "varchar", 1082: "date",
        1083: "time", 1114: "timestamp", 1184: "timestamptz", 1186: "interval", 1266: "timetz", 1560: "bit",
        1562: "varbit", 1700: "numeric", 1790: "refcursor", 2202: "regprocedure", 2203: "regoper",
        2204: "regoperator", 2205: "regclass", 2206: "regtype", 2950: "uuid", 3220: "pg_lsn",
        3614: "tsvector", 3615: "tsquery", 3802: "jsonb", 3904: "int4range", 3906: "numrange",
        3908: "tsrange", 3910: "tstzrange", 3912: "daterange", 3926: "int8range", 4072: "jsonpath",
        4451: "int4multirange", 4532: "nummultirange", 4533: "tsmultirange", 4534: "tstzmultirange",
        4535: "datemultirange", 4536: "int8multirange", 5038: "pg_snapshot", 5069: "xid8",
        // arrays
        1000: "_bool", 1001: "_bytea", 1002: "_char", 1003: "_name", 1005: "_int2", 1007: "_int4",
        1009: "_text", 1014: "_bpchar", 1015: "_varchar", 1016: "_int8", 1017: "_point", 1021: "_float4",
        1022: "_float8", 1028: "_oid", 1040: "_macaddr", 1041: "_inet", 651: "_cidr", 1115: "_timestamp",
        1182: "_date", 1183: "_time", 1185: "_timestamptz", 1187: "_interval", 1231: "_numeric",
        1270: "_timetz", 1561: "_bit", 1563: "_varbit", 199: "_json", 143: "_xml", 2951: "_uuid",
        3807: "_jsonb", 3221: "_pg_lsn", 791: "_money", 3643: "_tsvector", 3905: "_int4range",
        3907: "_numrange", 3909: "_tsrange", 3911: "_tstzrange", 3913: "_daterange", 3927: "_int8range",
    ]

    /// The name of a built-in type, or `oid:N` when this table does not know it.
    public static func builtinName(_ oid: UInt32) -> String {
        builtin[oid] ?? "oid:\(oid)"
    }

    /// The log's name of a type the catalog names `namespace.typname`: built-ins by the table above,
    /// user types `schema.name`. The one rule for the snapshot and the stream.
    public static func name(_ oid: UInt32, namespace: String, typname: String) -> String {
        oid < firstNormalOID ? builtinName(oid) : namespace + "." + typname
    }

    /// The catalog query naming user types: one row (oid, schema, name) per OID in `$1` (an `oid[]`).
    static let catalogQuery = """
        SELECT t.oid::int8, n.nspname, t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.oid = ANY ($1::oid[])
        """
}

/// Names the user-defined types of the stream's columns as the snapshot does (``TypeNames/name``).
///
/// pgoutput's Type message is no help: for a domain it carries the domain's OID with the namespace and
/// name of its base type (`logicalrep_write_typ` uses `getBaseType`), so a domain column would get
/// another name than in the snapshot and an unchanged table a second relation version. The replication
/// connection is in COPY BOTH mode and cannot query, so this opens an ordinary connection when the first
/// user type appears and asks `pg_type`, once per OID; one resolver lives for one streaming session.
///
/// A failed lookup throws the ``PGError``: a source that went away is a connection loss like the
/// replication connection's own. A type the catalog no longer has (dropped after the change was made;
/// its column is gone too by now) is named `oid:N`, as unknown built-ins are.
public final class TypeNameResolver {
    private let conninfo: String
    private var connection: PGConnection?
    private var names: [UInt32: String] = [:]

    public init(conninfo: String) {
        self.conninfo = conninfo
    }

    /// Looks up every user type among `oids` not yet known, in one query.
    public func resolve(_ oids: some Sequence<UInt32>) throws {
        let missing = Set(oids.filter { $0 >= TypeNames.firstNormalOID && names[$0] == nil })
        guard !missing.isEmpty else { return }
        let connection = try self.connection ?? PGConnection(conninfo: conninfo, overrides: SessionSettings.sqlOverrides())
        self.connection = connection
        let result: PGResult
        do {
            result = try connection.query(TypeNames.catalogQuery, ["{" + missing.map(String.init).joined(separator: ",") + "}"])
        } catch {
            self.connection = nil  // a broken connection is not reused
            throw error
        }
        for oid in missing { names[oid] = "oid:\(oid)" }
        for r in 0..<result.rowCount {
            guard let oid = UInt32(result.value(r, 0) ?? "") else { continue }
            names[oid] = TypeNames.name(oid, namespace: result.value(r, 1) ?? "", typname: result.value(r, 2) ?? "")
        }
    }

    /// Closes the connection (the names stay known).
    public func close() {
        connection = nil
    }

    /// The log's name of a type: built-ins from the table, user types as resolved.
    public func name(_ oid: UInt32) -> String {
        oid < TypeNames.firstNormalOID ? TypeNames.builtinName(oid) : names[oid] ?? "oid:\(oid)"
    }
}
