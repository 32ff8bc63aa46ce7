/// Names of PostgreSQL's built-in types by OID. Built-in OIDs are fixed across clusters and versions,
/// so the log can name them without asking the source; user-defined types (OID >= 16384) are named by
/// pgoutput's Type messages (`Y`) or, for the snapshot, by the catalog.
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
}
