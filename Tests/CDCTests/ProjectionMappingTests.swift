import EventLog
import Foundation
import Projection
import Testing
import TestSupport

/// Projection mappings: the shipped ones fit their source (through a real log) and their DDL (through a
/// real warehouse schema); a mapping that names a missing table or column is refused, naming it.
@Suite(.timeLimit(.minutes(15))) struct ProjectionMappingTests {
    static let surgical = PostgresServer.repositoryRoot + "/schemas/projections/surgical-robotics.toml"
    static let ecommerce = PostgresServer.repositoryRoot + "/schemas/models/ecommerce/mapping.toml"

    /// `schema.table` → column names, from the latest relation records of a log.
    static func relations(_ logPath: String) throws -> [String: Set<String>] {
        let log = try EventLog.openForReading(path: logPath)
        var result: [String: Set<String>] = [:]
        for (_, seq) in try log.relationIndex() {
            if case .relation(let definition)? = try log.record(seq)?.body {
                result[definition.qualifiedName] = Set(definition.columns.map(\.name))
            }
        }
        return result
    }

    /// Runs a mapping's DDL into a fresh schema of `ws`'s database and returns its tables' columns.
    static func warehouse(_ ws: CDCWorkspace, _ mapping: ProjectionMapping, schema: String) throws -> [String: Set<String>] {
        try ws.sql("CREATE SCHEMA \(schema)")
        for file in mapping.ddl {
            let ddl = try String(contentsOfFile: file, encoding: .utf8)
            try ws.sql("SET search_path TO \(schema); " + ddl)
        }
        var result: [String: Set<String>] = [:]
        for row in try ws.sql("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = '\(schema)'") {
            result[row[0]!, default: []].insert(row[1]!)
        }
        return result
    }

    @Test func theSurgicalMappingSaysWhatTheIssueSays() throws {
        let mapping = try ProjectionMapping.load(path: Self.surgical)
        #expect(mapping.dimensions.map(\.table) == ["dim_facilities", "dim_robots", "dim_surgeons"])
        #expect(mapping.facts.map(\.table) == ["fact_procedure_telemetry", "fact_procedures"])
        let facilities = try #require(mapping.dimensions.first { $0.table == "dim_facilities" })
        #expect(facilities.type2 == ["facility_name", "city", "state", "country", "facility_type"] && facilities.type1 == ["bed_count"])
        let robots = try #require(mapping.dimensions.first { $0.table == "dim_robots" })
        #expect(Set(robots.type2) == ["robot_model", "manufacturer", "software_version", "hardware_revision", "status"])
        #expect(robots.lookups == [.init(column: "facility_key", target: .dimension("dim_facilities"), sourceColumns: ["facility_id"])])
        #expect(Set(robots.type1) == ["robot_serial_number", "install_date", "last_maintenance_date", "total_procedures_count", "total_operating_hours"])
        let surgeons = try #require(mapping.dimensions.first { $0.table == "dim_surgeons" })
        #expect(surgeons.type2 == ["surgeon_name", "specialization", "certification_level"] && surgeons.type1 == ["years_experience"])
        let procedures = try #require(mapping.facts.first { $0.table == "fact_procedures" })
        #expect(procedures.updatedBy.map(\.source) == ["public.procedure_outcomes"])
        #expect(mapping.facts.first { $0.table == "fact_procedure_telemetry" }?.deletedWith == "fact_procedures")
    }

    @Test(arguments: [surgical, ecommerce])
    func aShippedMappingFitsItsSourceAndItsDDL(_ path: String) throws {
        let mapping = try ProjectionMapping.load(path: path)
        let ecommerce = mapping.name == "ecommerce"
        let ws = try CDCWorkspace("mapping_\(mapping.name.replacingOccurrences(of: "-", with: "_"))", schema: !ecommerce)
        defer { ws.tearDown() }
        if ecommerce {
            try ws.sql(try String(contentsOfFile: PostgresServer.repositoryRoot + "/schemas/models/ecommerce/source.sql", encoding: .utf8))
        }
        try ws.initialize()
        try mapping.check(relations: try Self.relations(ws.logPath))
        try mapping.check(warehouseColumns: try Self.warehouse(ws, mapping, schema: "dw"), schema: "dw")
    }

    @Test func aMappingThatNamesWhatDoesNotExistIsRefusedNamingIt() throws {
        let ws = try CDCWorkspace("mapping_bad")
        defer { ws.tearDown() }
        try ws.initialize()
        let relations = try Self.relations(ws.logPath)
        let good = try String(contentsOfFile: Self.surgical, encoding: .utf8)
        func mapping(_ text: String) throws -> ProjectionMapping {
            try ProjectionMapping.parse(text, path: Self.surgical)
        }
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch { return "\(error)" }
        }

        let wrongColumn = good.replacingOccurrences(of: #"type1 = ["bed_count"]"#, with: #"type1 = ["beds"]"#)
        #expect(message { try mapping(wrongColumn).check(relations: relations) }.contains("column beds of public.facilities"))
        let wrongTable = good.replacingOccurrences(of: #"source = "public.surgeons""#, with: #"source = "public.doctors""#)
        #expect(message { try mapping(wrongTable).check(relations: relations) }.contains("source table public.doctors, which is not in the log"))
        let wrongLookup = good.replacingOccurrences(of: #"{ dimension = "dim_facilities", source_columns = ["facility_id"] } }"#,
                                                    with: #"{ dimension = "dim_sites", source_columns = ["facility_id"] } }"#)
        #expect(message { _ = try mapping(wrongLookup) }.contains("names dimension dim_sites, which the mapping does not define"))
        let unknownKey = good.replacingOccurrences(of: "business_key = [\"surgeon_id\"]", with: "business_key = [\"surgeon_id\"]\ntype3 = [\"x\"]")
        #expect(message { _ = try mapping(unknownKey) }.contains("unknown key dimensions.dim_surgeons.type3"))
        let twice = good.replacingOccurrences(of: #"type1 = ["bed_count"]"#, with: #"type1 = ["bed_count", "city"]"#)
        #expect(message { _ = try mapping(twice) }.contains("maps warehouse column city twice"))

        // The warehouse side: a DDL without a column the mapping writes.
        let m = try mapping(good)
        var columns = try Self.warehouse(ws, m, schema: "dw")
        columns["dim_robots"]?.remove("is_inferred")
        #expect(message { try m.check(warehouseColumns: columns, schema: "dw") }.contains("column is_inferred of dw.dim_robots"))
        columns["dim_robots"]?.insert("is_inferred")
        columns["fact_procedures"] = nil
        #expect(message { try m.check(warehouseColumns: columns, schema: "dw") }.contains("dw.fact_procedures, which the warehouse does not have"))
    }
}
