import Foundation
import Testing
import TestSupport

/// Source rows of the surgical-robotics schema (schemas/source/001_tables.sql) for the projection tests,
/// as INSERT statements.
enum Fixture {
    static func facility(_ id: String, _ name: String, city: String = "Boston", state: String = "MA",
                         type: String = "Academic Medical Center", beds: Int = 300) -> String {
        "INSERT INTO facilities VALUES ('\(id)', '\(name)', '\(city)', '\(state)', 'US', '\(type)', \(beds))"
    }

    static func surgeon(_ id: String, _ name: String, specialization: String = "Urology", years: Int = 12,
                        level: String = "Expert") -> String {
        "INSERT INTO surgeons VALUES ('\(id)', '\(name)', '\(specialization)', \(years), '\(level)')"
    }

    static func robot(_ id: String, facility: String?, model: String = "da Vinci Xi", software: String = "4.0.0",
                      status: String = "active") -> String {
        """
        INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, manufacturer, facility_id, install_date,
                                     software_version, hardware_revision, status, last_maintenance_date,
                                     total_procedures_count, total_operating_hours)
        VALUES ('\(id)', 'SN-\(id)', '\(model)', 'Intuitive Surgical', \(facility.map { "'\($0)'" } ?? "NULL"), '2024-01-15',
                '\(software)', 'Rev E', '\(status)', '2025-06-01', 0, 0)
        """
    }

    static func procedure(_ id: String, robot: String?, surgeon: String?, facility: String,
                          start: String = "2026-03-14 10:00:00+00", end: String? = nil, status: String = "in_progress") -> String {
        func literal(_ value: String?) -> String { value.map { "'\($0)'" } ?? "NULL" }
        return """
            INSERT INTO surgical_procedures (procedure_id, robot_id, surgeon_id, facility_id, procedure_type,
                                             procedure_category, patient_id, patient_age, patient_gender, start_time,
                                             end_time, duration_minutes, complexity_score, status)
            VALUES ('\(id)', \(literal(robot)), \(literal(surgeon)), '\(facility)', 'Cholecystectomy', 'General',
                    'PT-\(id)', 54, 'F', '\(start)', \(literal(end)), \(end == nil ? "NULL" : "95"), 3.5, '\(status)')
            """
    }

    static func telemetry(_ id: Int, procedure: String, at timestamp: String) -> String {
        """
        INSERT INTO procedure_telemetry (telemetry_id, procedure_id, sample_timestamp, arm_position_x, arm_position_y,
                                         arm_position_z, force_feedback, tool_type, tool_active, system_temperature,
                                         motor_current, network_latency_ms, video_fps)
        VALUES (\(id), '\(procedure)', '\(timestamp)', 12.5, -3.25, 140.0, 2.1, 'Large Needle Driver', true, 38.5,
                1.2, 4, 60)
        """
    }

    static func outcome(_ procedure: String, success: String = "Successful") -> String {
        "INSERT INTO procedure_outcomes VALUES ('\(procedure)', '\(success)', 120, 'None', 2, 9.1, false)"
    }
}

extension WarehouseWorkspace {
    static let surrogateKeys = ["dim_facilities": "facility_key", "dim_surgeons": "surgeon_key", "dim_robots": "robot_key",
                                "dim_customers": "customer_key", "dim_products": "product_key"]
    static let businessKeys = ["dim_facilities": "facility_id", "dim_surgeons": "surgeon_id", "dim_robots": "robot_id",
                               "dim_customers": "customer_id", "dim_products": "product_id"]

    /// Every row (version) of business key `id` in dimension `table` of the live schema, in surrogate key
    /// order (= log order), with `valid_from_utc` / `valid_to_utc` rendered like the export's commit times.
    func versions(_ table: String, _ id: String) throws -> [WarehouseRow] {
        let key = Self.surrogateKeys[table]!, businessKey = Self.businessKeys[table]!
        return try dwRecords("""
            SELECT d.*, \(Self.rfc3339("d.valid_from")) AS valid_from_utc, \(Self.rfc3339("d.valid_to")) AS valid_to_utc
            FROM \(schema).\(table) d WHERE d.\(businessKey)::text = '\(id)' ORDER BY d.\(key)
            """)
    }

    /// The current version of business key `id` (nil when there is none).
    func current(_ table: String, _ id: String) throws -> WarehouseRow? {
        try versions(table, id).filter { $0["is_current"] == "t" }.first
    }

    /// The fact row of `id` in `table` (grain column `grain`), with created_at/updated_at rendered like the
    /// export's commit times (`created_at_utc`, `updated_at_utc`).
    func fact(_ id: String, table: String = "fact_procedures", grain: String = "procedure_id") throws -> WarehouseRow? {
        let rows = try dwRecords("""
            SELECT f.*, \(Self.rfc3339("f.created_at")) AS created_at_utc, \(Self.rfc3339("f.updated_at")) AS updated_at_utc
            FROM \(schema).\(table) f WHERE f.\(grain)::text = '\(id)'
            """)
        return rows.first
    }

    /// Number of rows of `table` in the live schema matching `condition`.
    func count(_ table: String, where condition: String = "true") throws -> Int {
        Int(try dwValue("SELECT count(*) FROM \(schema).\(table) WHERE \(condition)") ?? "") ?? -1
    }
}

/// The UTC date (YYYY-MM-DD) of an RFC 3339 UTC commit time from the export.
func utcDate(_ time: String?) -> String? { time.map { String($0.prefix(10)) } }
