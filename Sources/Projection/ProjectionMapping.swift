import EventLog
import Foundation
import TOMLKit

/// A problem with a projection mapping, naming the file, the table and the key.
public struct MappingError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// How source tables become warehouse tables: the declarative contents of a mapping file
/// (schemas/projections/*.toml). A dataset is a mapping file plus its DDL; no code.
public struct ProjectionMapping: Sendable, Equatable {
    /// A warehouse key column found by looking a business key up in a dimension (the version current
    /// at the source commit) or in a fact (its surrogate key).
    public struct Lookup: Sendable, Equatable {
        public enum Target: Sendable, Equatable {
            case dimension(String)
            case fact(String)
        }
        /// The warehouse column it fills.
        public var column: String
        public var target: Target
        /// Source columns holding the target's business key (its grain, for a fact), in order.
        public var sourceColumns: [String]

        public init(column: String, target: Target, sourceColumns: [String]) {
            self.column = column
            self.target = target
            self.sourceColumns = sourceColumns
        }
    }

    /// An SCD Type 2 dimension.
    public struct Dimension: Sendable, Equatable {
        public var table: String
        /// `schema.table` in the source.
        public var source: String
        public var surrogateKey: String
        public var businessKey: [String]
        /// Columns whose change opens a version.
        public var type2: [String]
        /// Columns updated in place on the current version.
        public var type1: [String]
        /// Key columns filled by lookups; type 2 (a change opens a version).
        public var lookups: [Lookup]
        /// Warehouse column → source column, for columns named differently.
        public var rename: [String: String]

        /// The source column feeding warehouse column `column`.
        public func sourceColumn(_ column: String) -> String { rename[column] ?? column }
    }

    /// A later source table that completes a fact's row (an accumulating snapshot milestone).
    public struct FactUpdate: Sendable, Equatable {
        public var source: String
        /// Fact grain column → source column.
        public var match: [String: String]
        public var columns: [String]
        public var rename: [String: String]
        /// What a delete of the source row does to the fact's columns: `clear` sets them NULL.
        public var onDelete: String
    }

    /// A fact table.
    public struct Fact: Sendable, Equatable {
        public var table: String
        public var source: String
        public var surrogateKey: String?
        /// The source key columns identifying a fact row (same names in the warehouse).
        public var grain: [String]
        public var columns: [String]
        public var rename: [String: String]
        /// Date-key column → source timestamp column (YYYYMMDD in the warehouse time zone).
        public var dates: [String: String]
        /// Time-key column → source timestamp column (HHMM00).
        public var times: [String: String]
        public var lookups: [Lookup]
        public var updatedBy: [FactUpdate]
        /// A fact whose deletion also deletes this fact's rows that point at it.
        public var deletedWith: String?

        public func sourceColumn(_ column: String) -> String { rename[column] ?? column }

        /// The lookup of the `deleted_with` fact: its column holds the parent row's surrogate key
        /// (nil without `deleted_with`, or when no lookup names that fact, which the projector refuses).
        public var parentLookup: Lookup? {
            deletedWith.flatMap { parent in lookups.first { $0.target == .fact(parent) } }
        }
    }

    public var name: String
    public var schemaVersion: Int
    /// DDL files, absolute paths (resolved against the mapping file's directory).
    public var ddl: [String]
    public var dimensions: [Dimension]
    public var facts: [Fact]
    /// The mapping file's path.
    public var path: String
    /// The warehouse engine its DDL is written for (`engine`, default `postgresql`).
    public var engine: WarehouseEngine = .postgresql

    /// Columns every dimension has besides its mapped ones.
    public static let dimensionColumns = ["effective_date", "expiration_date", "is_current", "valid_from", "valid_to",
                                          "change_type", "record_hash", "source_lsn", "is_inferred"]
    /// Columns every fact has besides its mapped ones.
    public static let factColumns = ["source_lsn", "created_at", "updated_at"]

    /// Reads and checks the mapping file at `path` (structure and internal references only; see
    /// ``check(relations:)`` and ``check(warehouseColumns:)`` for the source and the warehouse).
    public static func load(path: String) throws -> ProjectionMapping {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw MappingError("cannot read mapping \(path): \(FileManager.default.fileExists(atPath: path) ? "permission denied or not UTF-8" : "no such file") — set [warehouse] mapping to a projection mapping such as schemas/projections/surgical-robotics.toml")
        }
        return try parse(text, path: path)
    }

    /// Parses mapping text; `path` names the file in errors and anchors relative DDL paths.
    public static func parse(_ text: String, path: String) throws -> ProjectionMapping {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw MappingError("mapping \(path) is not valid TOML at line \(error.source.begin.line): \(error.description)")
        }
        let base = (path as NSString).deletingLastPathComponent
        let r = Reader(path: path, table: root, prefix: "")
        try r.only(["name", "schema_version", "engine", "ddl", "dimensions", "facts"])
        let name = try r.string("name")
        let version = try r.int("schema_version")
        let ddl = try r.strings("ddl").map { $0.hasPrefix("/") ? $0 : (base as NSString).appendingPathComponent($0) }
        var dimensions: [Dimension] = []
        for (table, d) in try r.tables("dimensions") {
            try d.only(["source", "surrogate_key", "business_key", "type2", "type1", "lookups", "rename"])
            dimensions.append(Dimension(
                table: table, source: try d.qualifiedSource(), surrogateKey: try d.string("surrogate_key"),
                businessKey: try d.strings("business_key"), type2: try d.optionalStrings("type2") ?? [],
                type1: try d.optionalStrings("type1") ?? [], lookups: try d.lookups(), rename: try d.stringMap("rename")))
        }
        var facts: [Fact] = []
        for (table, f) in try r.tables("facts") {
            try f.only(["source", "surrogate_key", "grain", "columns", "rename", "dates", "times", "lookups", "updated_by", "deleted_with"])
            var updates: [FactUpdate] = []
            for u in try f.tableArray("updated_by") {
                try u.only(["source", "match", "columns", "rename", "on_delete"])
                let onDelete = try u.optionalString("on_delete") ?? "clear"
                guard onDelete == "clear" || onDelete == "keep" else {
                    throw MappingError("mapping \(path): \(u.prefix).on_delete must be \"clear\" or \"keep\"")
                }
                updates.append(FactUpdate(source: try u.qualifiedSource(), match: try u.stringMap("match"),
                                          columns: try u.strings("columns"), rename: try u.stringMap("rename"), onDelete: onDelete))
            }
            facts.append(Fact(
                table: table, source: try f.qualifiedSource(), surrogateKey: try f.optionalString("surrogate_key"),
                grain: try f.strings("grain"), columns: try f.optionalStrings("columns") ?? [], rename: try f.stringMap("rename"),
                dates: try f.stringMap("dates"), times: try f.stringMap("times"), lookups: try f.lookups(),
                updatedBy: updates, deletedWith: try f.optionalString("deleted_with")))
        }
        let engineName = try r.optionalString("engine") ?? WarehouseEngine.postgresql.rawValue
        guard let engine = WarehouseEngine(rawValue: engineName) else {
            throw MappingError("mapping \(path): engine must be one of \(WarehouseEngine.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", ")), not \"\(engineName)\"")
        }
        let mapping = ProjectionMapping(name: name, schemaVersion: version, ddl: ddl, dimensions: dimensions, facts: facts, path: path, engine: engine)
        try mapping.checkReferences()
        return mapping
    }

    /// Lookups name known tables; no column is mapped twice; deleted_with names a fact.
    func checkReferences() throws {
        let dimensionNames = Set(dimensions.map(\.table))
        let factNames = Set(facts.map(\.table))
        func checkLookups(_ lookups: [Lookup], _ owner: String) throws {
            for lookup in lookups {
                switch lookup.target {
                case .dimension(let target) where !dimensionNames.contains(target):
                    throw MappingError("mapping \(path): \(owner).lookups.\(lookup.column) names dimension \(target), which the mapping does not define (dimensions: \(dimensionNames.sorted().joined(separator: ", ")))")
                case .fact(let target) where !factNames.contains(target):
                    throw MappingError("mapping \(path): \(owner).lookups.\(lookup.column) names fact \(target), which the mapping does not define")
                default: break
                }
            }
        }
        func checkDistinct(_ columns: [String], _ owner: String) throws {
            var seen = Set<String>()
            for column in columns where !seen.insert(column).inserted {
                throw MappingError("mapping \(path): \(owner) maps warehouse column \(column) twice")
            }
        }
        for d in dimensions {
            try checkLookups(d.lookups, "dimensions.\(d.table)")
            try checkDistinct([d.surrogateKey] + d.businessKey + d.type2 + d.type1 + d.lookups.map(\.column), "dimensions.\(d.table)")
            guard !d.businessKey.isEmpty else { throw MappingError("mapping \(path): dimensions.\(d.table).business_key is empty") }
        }
        for f in facts {
            try checkLookups(f.lookups, "facts.\(f.table)")
            try checkDistinct((f.surrogateKey.map { [$0] } ?? []) + f.grain + f.columns + Array(f.dates.keys) + Array(f.times.keys)
                              + f.lookups.map(\.column) + f.updatedBy.flatMap(\.columns), "facts.\(f.table)")
            if let parent = f.deletedWith, !factNames.contains(parent) {
                throw MappingError("mapping \(path): facts.\(f.table).deleted_with names \(parent), which is not a fact of the mapping")
            }
            guard !f.grain.isEmpty else { throw MappingError("mapping \(path): facts.\(f.table).grain is empty") }
        }
    }

    /// Every source table and column the mapping reads, `schema.table` → columns.
    public var sourceColumns: [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        for d in dimensions {
            result[d.source, default: []].formUnion((d.businessKey + d.type2 + d.type1).map(d.sourceColumn))
            result[d.source, default: []].formUnion(d.lookups.flatMap(\.sourceColumns))
        }
        for f in facts {
            result[f.source, default: []].formUnion((f.grain + f.columns).map(f.sourceColumn))
            result[f.source, default: []].formUnion(Array(f.dates.values) + Array(f.times.values) + f.lookups.flatMap(\.sourceColumns))
            for u in f.updatedBy {
                result[u.source, default: []].formUnion(u.columns.map { u.rename[$0] ?? $0 } + Array(u.match.values))
            }
        }
        return result
    }

    /// Every warehouse table and the columns the projector writes, table → columns.
    public var warehouseColumns: [String: Set<String>] {
        var result: [String: Set<String>] = [:]
        for d in dimensions {
            result[d.table] = Set([d.surrogateKey] + d.businessKey + d.type2 + d.type1 + d.lookups.map(\.column) + Self.dimensionColumns)
        }
        for f in facts {
            result[f.table] = Set((f.surrogateKey.map { [$0] } ?? []) + f.grain + f.columns + Array(f.dates.keys) + Array(f.times.keys)
                                  + f.lookups.map(\.column) + f.updatedBy.flatMap(\.columns) + Self.factColumns)
        }
        return result
    }

    /// Checks the source side against the tables the log describes (`schema.table` → column names):
    /// throws naming the first missing table or column.
    public func check(relations: [String: Set<String>], in place: String = "the log") throws {
        for (table, columns) in sourceColumns.sorted(by: { $0.key < $1.key }) {
            guard let present = relations[table] else {
                let known = relations.keys.sorted()
                throw MappingError("mapping \(path) reads source table \(table), which is not in \(place) (its tables: \(known.prefix(12).joined(separator: ", "))\(known.count > 12 ? ", ..." : "")): publish it and run `cdc init`, or fix the mapping")
            }
            if let missing = columns.subtracting(present).sorted().first {
                throw MappingError("mapping \(path) reads column \(missing) of \(table), which the source table does not have (it has: \(present.sorted().joined(separator: ", ")))")
            }
        }
    }

    /// Checks the warehouse side against the tables the warehouse schema has (table → column names).
    public func check(warehouseColumns present: [String: Set<String>], schema: String) throws {
        for (table, columns) in warehouseColumns.sorted(by: { $0.key < $1.key }) {
            guard let have = present[table] else {
                throw MappingError("mapping \(path) writes \(schema).\(table), which the warehouse does not have: its DDL (\(ddl.map { ($0 as NSString).lastPathComponent }.joined(separator: ", "))) must create it")
            }
            if let missing = columns.subtracting(have).sorted().first {
                throw MappingError("mapping \(path) writes column \(missing) of \(schema).\(table), which the warehouse table does not have")
            }
        }
    }
}

/// Typed, key-naming access to one TOML table of a mapping file.
private struct Reader {
    let path: String
    let table: TOMLTable
    let prefix: String

    func name(_ key: String) -> String { prefix.isEmpty ? key : prefix + "." + key }
    func fail(_ key: String, _ what: String) -> MappingError { MappingError("mapping \(path): \(name(key)) \(what)") }

    func only(_ allowed: Set<String>) throws {
        for key in table.keys.sorted() where !allowed.contains(key) {
            throw MappingError("mapping \(path): unknown key \(name(key)) (known here: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    func optionalString(_ key: String) throws -> String? {
        guard let value = table[key] else { return nil }
        guard let s = value.string, !s.isEmpty else { throw fail(key, "must be a non-empty string") }
        return s
    }

    func string(_ key: String) throws -> String {
        guard let s = try optionalString(key) else { throw fail(key, "is missing") }
        return s
    }

    func int(_ key: String) throws -> Int {
        guard let value = table[key] else { throw fail(key, "is missing") }
        guard let i = value.int else { throw fail(key, "must be an integer") }
        return i
    }

    func optionalStrings(_ key: String) throws -> [String]? {
        guard let value = table[key] else { return nil }
        guard let array = value.array else { throw fail(key, "must be an array of strings") }
        return try array.map { element in
            guard let s = element.string, !s.isEmpty else { throw fail(key, "must be an array of non-empty strings") }
            return s
        }
    }

    func strings(_ key: String) throws -> [String] {
        guard let value = try optionalStrings(key) else { throw fail(key, "is missing") }
        return value
    }

    func stringMap(_ key: String) throws -> [String: String] {
        guard let value = table[key] else { return [:] }
        guard let sub = value.table else { throw fail(key, "must be a table of column = \"source column\"") }
        var result: [String: String] = [:]
        for k in sub.keys {
            guard let s = sub[k]?.string, !s.isEmpty else { throw fail(key + "." + k, "must be a non-empty string") }
            result[k] = s
        }
        return result
    }

    func tables(_ key: String) throws -> [(String, Reader)] {
        guard let value = table[key] else { return [] }
        guard let sub = value.table else { throw fail(key, "must be a table of tables") }
        return try sub.keys.sorted().map { k in
            guard let t = sub[k]?.table else { throw fail(key + "." + k, "must be a table") }
            return (k, Reader(path: path, table: t, prefix: name(key) + "." + k))
        }
    }

    func tableArray(_ key: String) throws -> [Reader] {
        guard let value = table[key] else { return [] }
        guard let array = value.array else { throw fail(key, "must be an array of tables ([[\(name(key))]])") }
        return try array.enumerated().map { i, element in
            guard let t = element.table else { throw fail(key, "must be an array of tables") }
            return Reader(path: path, table: t, prefix: name(key) + "[\(i)]")
        }
    }

    /// `source`, as `schema.table` (a bare name means `public`).
    func qualifiedSource() throws -> String {
        let source = try string("source")
        let parts = source.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, parts.allSatisfy({ !$0.isEmpty }) else { throw fail("source", "must be schema.table") }
        return parts.count == 1 ? "public." + source : source
    }

    func lookups() throws -> [ProjectionMapping.Lookup] {
        guard let value = table["lookups"] else { return [] }
        guard let sub = value.table else { throw fail("lookups", "must be a table of column = { dimension = ..., source_columns = [...] }") }
        return try sub.keys.sorted().map { column in
            guard let t = sub[column]?.table else { throw fail("lookups." + column, "must be a table") }
            let r = Reader(path: path, table: t, prefix: name("lookups." + column))
            try r.only(["dimension", "fact", "source_columns"])
            let target: ProjectionMapping.Lookup.Target
            switch (try r.optionalString("dimension"), try r.optionalString("fact")) {
            case (let d?, nil): target = .dimension(d)
            case (nil, let f?): target = .fact(f)
            default: throw fail("lookups." + column, "must name exactly one of dimension or fact")
            }
            return ProjectionMapping.Lookup(column: column, target: target, sourceColumns: try r.strings("source_columns"))
        }
    }
}
