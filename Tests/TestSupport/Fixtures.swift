/// Source rows of the surgical-robotics schema (schemas/source/001_tables.sql) as INSERT statements
/// (facilities, surgeons, robots, procedures, telemetry, outcomes).
public enum Fixture {
    public static func facility(_ id: String, _ name: String, city: String = "Boston", state: String = "MA",
                                type: String = "Academic Medical Center", beds: Int = 300) -> String {
        "INSERT INTO facilities VALUES ('\(id)', '\(name)', '\(city)', '\(state)', 'US', '\(type)', \(beds))"
    }

    /// A facility named "Facility ID" with 100 beds, for tests that only need some row.
    public static func facility(_ id: String) -> String {
        facility(id, "Facility \(id)", type: "Academic", beds: 100)
    }

    public static func surgeon(_ id: String, _ name: String, specialization: String = "Urology", years: Int = 12,
                               level: String = "Expert") -> String {
        "INSERT INTO surgeons VALUES ('\(id)', '\(name)', '\(specialization)', \(years), '\(level)')"
    }

    public static func robot(_ id: String, facility: String?, model: String = "da Vinci Xi", software: String = "4.0.0",
                             status: String = "active") -> String {
        """
        INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, manufacturer, facility_id, install_date,
                                     software_version, hardware_revision, status, last_maintenance_date,
                                     total_procedures_count, total_operating_hours)
        VALUES ('\(id)', 'SN-\(id)', '\(model)', 'Intuitive Surgical', \(facility.map { "'\($0)'" } ?? "NULL"), '2024-01-15',
                '\(software)', 'Rev E', '\(status)', '2025-06-01', 0, 0)
        """
    }

    public static func procedure(_ id: String, robot: String?, surgeon: String?, facility: String,
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

    public static func telemetry(_ id: Int, procedure: String, at timestamp: String) -> String {
        """
        INSERT INTO procedure_telemetry (telemetry_id, procedure_id, sample_timestamp, arm_position_x, arm_position_y,
                                         arm_position_z, force_feedback, tool_type, tool_active, system_temperature,
                                         motor_current, network_latency_ms, video_fps)
        VALUES (\(id), '\(procedure)', '\(timestamp)', 12.5, -3.25, 140.0, 2.1, 'Large Needle Driver', true, 38.5,
                1.2, 4, 60)
        """
    }

    public static func outcome(_ procedure: String, success: String = "Successful") -> String {
        "INSERT INTO procedure_outcomes VALUES ('\(procedure)', '\(success)', 120, 'None', 2, 9.1, false)"
    }
}
