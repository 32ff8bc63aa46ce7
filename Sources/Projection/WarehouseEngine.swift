import Foundation
import PGClient

/// The warehouse engine a mapping is written for (its `engine` key): which DDL it ships, what `cdc init`
/// checks, and which ``WarehouseWriter`` writes its batches.
public enum WarehouseEngine: String, Sendable, Equatable, CaseIterable {
    /// PostgreSQL (the default); also any PostgreSQL with Citus installed, whose tables then stay local
    /// to the coordinator.
    case postgresql
    /// Citus: the mapping's DDL distributes its tables; `cdc init` requires the citus extension and at
    /// least one active worker node.
    case citus

    /// The writer of this engine's dialect. Citus runs PostgreSQL's SQL unchanged.
    func writer(connection: PGConnection, schema: String, projection: String) -> any WarehouseWriter {
        switch self {
        case .postgresql, .citus: PostgresWriter(connection: connection, schema: schema, projection: projection)
        }
    }
}

/// What cdc reads of a Citus warehouse: whether the extension is there, its workers, and how the
/// tables of a schema are distributed.
public enum Citus {
    /// The citus extension's version in the connected database; nil when it is not installed there.
    public static func version(_ connection: PGConnection) throws -> String? {
        let result = try connection.query("SELECT extversion FROM pg_extension WHERE extname = 'citus'")
        return result.rowCount > 0 ? result.value(0, 0) : nil
    }

    /// The session settings cdc's own warehouse sessions need on Citus: every statement of a batch
    /// that touches a distributed table opens connections to the workers (up to
    /// `citus.max_adaptive_executor_pool_size` per worker), and with Citus's default of caching one per
    /// worker, each micro-batch opened them again (freshness at 200 tx/s fell from ~20 ms to ~2 s).
    /// cdc caches as many as one statement may open. Set on connect when the extension is present.
    static func configureSession(_ connection: PGConnection) throws {
        guard try version(connection) != nil else { return }
        try connection.execute("SELECT set_config('citus.max_cached_conns_per_worker', current_setting('citus.max_adaptive_executor_pool_size'), false)")
    }

    /// Refuses a warehouse that cannot hold a Citus mapping: no citus extension, or no active worker.
    static func check(_ connection: PGConnection, mapping: ProjectionMapping) throws {
        guard try version(connection) != nil else {
            throw WarehouseError(.engineMismatch, "mapping \(mapping.path) is for Citus (engine = \"citus\") but the warehouse database has no citus extension: run CREATE EXTENSION citus in it (with citus in shared_preload_libraries), or use a PostgreSQL mapping such as schemas/projections/surgical-robotics.toml")
        }
        let workers = try connection.query("SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND noderole = 'primary' AND isactive")
        guard let count = Int(workers.value(0, 0) ?? "0"), count > 0 else {
            throw WarehouseError(.engineMismatch, "mapping \(mapping.path) is for Citus but the warehouse's Citus cluster has no active worker node: add one with SELECT citus_add_node('host', port) on the coordinator")
        }
    }

    /// The distribution column of each hash-distributed table of `schema` (empty without Citus).
    static func distributionColumns(_ connection: PGConnection, schema: String) throws -> [String: String] {
        guard try version(connection) != nil else { return [:] }
        let result = try connection.query("""
            SELECT c.relname, column_to_column_name(p.logicalrelid, p.partkey)
            FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = $1 AND p.partmethod = 'h'
            """, [schema])
        var columns: [String: String] = [:]
        for r in 0..<result.rowCount {
            if let table = result.value(r, 0), let column = result.value(r, 1) { columns[table] = column }
        }
        return columns
    }
}
