import Foundation
import Testing
import TestSupport

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
