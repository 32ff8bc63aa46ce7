import Foundation
import EventLog
import PGClient
@testable import Projection
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The warehouse on Citus (distributed PostgreSQL): a coordinator and two workers on loopback
/// (``CitusCluster``), the shipped mapping schemas/projections/surgical-robotics-citus.toml. Runs only
/// where Citus 12 is installed into this machine's PostgreSQL 15 (it is in no package registry: see
/// README.md, "Citus"); skipped otherwise. The source is the plain test server; only the warehouse
/// is distributed.
@Suite(.enabled(if: CitusCluster.available, "Citus is not installed in this PostgreSQL 15 (citus.so not found): skipped"),
       .timeLimit(.minutes(20)))
struct CitusTests {
    static let citusMapping = PostgresServer.repositoryRoot + "/schemas/projections/surgical-robotics-citus.toml"
    static let views = ["vw_daily_procedure_volume", "vw_facility_performance", "vw_outcomes_by_demographics",
                        "vw_outcomes_by_robot_model", "vw_procedure_outcomes", "vw_procedures_by_time_of_day",
                        "vw_robot_utilization", "vw_robot_utilization_monthly", "vw_surgeon_performance",
                        "vw_surgeon_procedure_categories", "vw_telemetry_system_health",
                        "vw_facility_latest", "vw_surgeon_latest", "vw_robot_latest"]

    /// A seeded source and a `cdc init`ed warehouse on the Citus cluster.
    static func seeded(_ name: String) throws -> WarehouseWorkspace {
        try ProjectionOperationsTests.seeded(name, mapping: citusMapping) { try CitusCluster.shared.createDatabase($0) }
    }

    /// The warehouse's tables as Citus distributes them: table → (method, distribution column, colocation id).
    static func distribution(_ ws: WarehouseWorkspace, schema: String) throws -> [String: (method: String, column: String?, colocation: String)] {
        var tables: [String: (String, String?, String)] = [:]
        for row in try ws.dw("""
            SELECT c.relname, p.partmethod, column_to_column_name(p.logicalrelid, p.partkey), p.colocationid::text
            FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = '\(schema)'
            """) {
            tables[row[0]!] = (row[1]!, row[2], row[3]!)
        }
        return tables
    }

    /// Every view's answer, as sorted text rows.
    static func answers(_ connection: PGConnection, schema: String) throws -> [String: [String]] {
        var answers: [String: [String]] = [:]
        for view in views {
            answers[view] = try connection.execute("SELECT v::text FROM \(schema).\(view) v").rows.map { $0[0] ?? "" }.sorted()
        }
        return answers
    }

    /// Changes to telemetry rows: three move to another procedure (their procedure_key, the facts'
    /// distribution column, changes: the row moves to another shard, deleted and inserted again) and
    /// three change in place (an UPDATE, which may not set procedure_key), then 600 telemetry rows and
    /// 600 surgeons in one transaction each (UPDATEs through the staging table). Returns the first six
    /// telemetry ids.
    static func telemetryChanges(_ ws: WarehouseWorkspace) throws -> [String] {
        let ids = try ws.sql("SELECT telemetry_id::text FROM procedure_telemetry ORDER BY telemetry_id DESC LIMIT 6").map { $0[0]! }
        try #require(ids.count == 6)
        try ws.change("""
            UPDATE procedure_telemetry SET procedure_id = (SELECT min(procedure_id) FROM surgical_procedures)
            WHERE telemetry_id IN (\(ids[0..<3].joined(separator: ", ")))
            """)
        try ws.change("UPDATE procedure_telemetry SET tool_type = 'cdc-moved-test' WHERE telemetry_id IN (\(ids[3..<6].joined(separator: ", ")))")
        // More rows than an UPDATE takes as parameter arrays go through the staging table.
        try ws.change("""
            UPDATE procedure_telemetry SET tool_type = 'cdc-bulk-test'
            WHERE telemetry_id IN (SELECT telemetry_id FROM procedure_telemetry ORDER BY telemetry_id LIMIT 600)
            """)
        return ids
    }

    /// 600 surgeons inserted, projected (`projected` waits for or runs the projection), then their
    /// type-1 column updated in one transaction: an UPDATE of a reference table through the staging
    /// table (Citus cannot join a reference table with a temporary table directly).
    static func bulkDimensionUpdate(_ ws: WarehouseWorkspace, projected: () throws -> Void) throws {
        try ws.change("""
            INSERT INTO surgeons (surgeon_id, surgeon_name, specialization, years_experience, certification_level)
            SELECT 'SRG-BULK-' || g, 'Bulk Surgeon ' || g, 'Urology', 5, 'Basic' FROM generate_series(1, 600) g
            """)
        try projected()
        try ws.change("UPDATE surgeons SET years_experience = years_experience + 1 WHERE surgeon_id LIKE 'SRG-BULK-%'")
    }

    /// The telemetry rows `ids` in the warehouse are the source's: each joined (by procedure_key, the
    /// distribution column) to the fact of its current procedure, with its current tool_type.
    static func expectTelemetryFollowsTheSource(_ ws: WarehouseWorkspace, _ ids: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let list = ids.joined(separator: ", ")
        let source = try ws.sql("SELECT telemetry_id::text, procedure_id, tool_type FROM procedure_telemetry WHERE telemetry_id IN (\(list)) ORDER BY 1")
        let warehouse = try ws.dw("""
            SELECT t.telemetry_id::text, p.procedure_id, t.tool_type FROM \(ws.schema).fact_procedure_telemetry t
            JOIN \(ws.schema).fact_procedures p USING (procedure_key) WHERE t.telemetry_id IN (\(list)) ORDER BY 1
            """)
        #expect(source.count >= 4, "the changed telemetry rows are still there", sourceLocation: sourceLocation)
        #expect(warehouse == source, "moved and updated telemetry rows follow the source", sourceLocation: sourceLocation)
    }

    @Test func initCreatesReferenceDimensionsAndFactsDistributedAndColocatedByProcedureKey() throws {
        let ws = try Self.seeded("ct_init")
        defer { ws.tearDown() }
        let tables = try Self.distribution(ws, schema: "dw")
        for table in ["dim_date", "dim_time", "dim_facilities", "dim_surgeons", "dim_robots"] {
            #expect(tables[table]?.method == "n", "\(table) is a reference table: \(String(describing: tables[table]))")
        }
        let procedures = try #require(tables["fact_procedures"]), telemetry = try #require(tables["fact_procedure_telemetry"])
        #expect(procedures.method == "h" && procedures.column == "procedure_key")
        #expect(telemetry.method == "h" && telemetry.column == "procedure_key")
        #expect(procedures.colocation == telemetry.colocation, "the facts are colocated")
        let shards = try ws.dwValue("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = 'dw.fact_procedures'::regclass")
        #expect(shards == String(CitusCluster.shardCount))
        // The facts' rows are on the workers, not on the coordinator.
        let placements = try ws.dwValue("""
            SELECT count(DISTINCT p.groupid) FROM pg_dist_placement p JOIN pg_dist_shard s USING (shardid)
            WHERE s.logicalrelid = 'dw.fact_procedure_telemetry'::regclass AND p.groupid <> 0
            """)
        #expect(placements == "2")
        try ws.run()
        #expect(try ws.count("fact_procedures") == Int(try ws.sql("SELECT count(*) FROM surgical_procedures")[0][0] ?? ""))
        #expect(try ws.count("fact_procedure_telemetry") == Int(try ws.sql("SELECT count(*) FROM procedure_telemetry")[0][0] ?? ""))
    }

    /// The oracle-style check: the warehouse projected live into Citus equals its replay on Citus
    /// (also after --swap), and the same log replayed into plain PostgreSQL holds the same rows and
    /// answers every view the same.
    @Test func liveEqualsReplayEqualsPostgreSQLAndTheViewsAnswerTheSame() throws {
        let ws = try Self.seeded("ct_equal")
        defer { ws.tearDown() }
        let live = try ws.startRun()
        #expect(live.waitForLog("streaming"), "\(live.stderr)")
        try ws.workload(["--transactions", "300", "--clients", "2"])
        try ProjectionOperationsTests.historyMakingChanges(ws, round: 1)
        let changed = try Self.telemetryChanges(ws)
        try Self.bulkDimensionUpdate(ws) {
            try poll(what: "the 600 new surgeons in the warehouse", timeout: 120) { try ws.count("dim_surgeons", where: "surgeon_id LIKE 'SRG-BULK-%'") == 600 }
        }
        try ws.workload(["--transactions", "150", "--clients", "2"])
        live.send(SIGTERM)
        #expect(live.wait().status == 0, "\(live.stderr)")
        try ProjectionOperationsTests.historyMakingChanges(ws, round: 2)
        try ws.run()
        try Self.expectTelemetryFollowsTheSource(ws, changed)

        try ws.replay(schema: "rebuilt")
        #expect(try Self.distribution(ws, schema: "rebuilt")["fact_procedure_telemetry"]?.column == "procedure_key", "the replay distributes its tables too")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")

        // The same log into plain PostgreSQL, with the PostgreSQL mapping.
        let plain = try ws.server.createDatabase("ct_plain", schema: false)
        defer { _ = try? ws.server.execute("DROP DATABASE IF EXISTS \(plain) WITH (FORCE)") }
        try ws.writeConfig(url: ws.server.conninfo(database: plain), mapping: WarehouseWorkspace.surgicalMapping)
        try ws.replay(schema: "pg")
        try ws.writeConfig(mapping: Self.citusMapping)
        let onPostgres = try WarehouseWorkspace.dump(try ws.server.connect(database: plain), schema: "pg")
        let onCitus = try ws.dump(schema: "dw")
        #expect(onCitus.rows.keys.sorted() == onPostgres.rows.keys.sorted())
        for (table, rows) in onPostgres.rows {
            #expect(onCitus.rows[table] == rows, "\(table): \(rows.count) rows on PostgreSQL, \(onCitus.rows[table]?.count ?? 0) on Citus")
        }
        // Same columns and types, table for table (on Citus only keys, indexes and placement differ).
        #expect(onCitus.columns == onPostgres.columns)
        let citusAnswers = try Self.answers(try ws.warehouseServer.connect(database: ws.warehouseDatabase), schema: "dw")
        let postgresAnswers = try Self.answers(try ws.server.connect(database: plain), schema: "pg")
        for view in Self.views {
            #expect(citusAnswers[view] == postgresAnswers[view], "\(view) answers the same on Citus and PostgreSQL")
        }
        #expect(postgresAnswers["vw_telemetry_system_health"]?.isEmpty == false && postgresAnswers["vw_robot_utilization"]?.isEmpty == false)

        // --swap, then `cdc run` goes on in the swapped-in schema.
        try ws.replay(schema: "swapped", ["--swap"])
        try ws.workload(["--transactions", "50", "--clients", "2"])
        try ws.run()
        try ws.replay(schema: "after_swap")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "after_swap")
    }

    /// SIGKILL while `cdc run` projects into Citus (open distributed transactions, prepared on the
    /// workers): every restart resumes from the checkpoint to the exact warehouse.
    @Test func killedRunsResumeToTheExactWarehouse() throws {
        let ws = try Self.seeded("ct_kill")
        defer { ws.tearDown() }
        let load = try ws.startWorkload(["--transactions", "600", "--clients", "2"])
        for round in 0..<4 {
            let run = try ws.startRun()
            #expect(run.waitForLog("streaming"), "\(run.stderr)")
            usleep(useconds_t(400_000 + round * 150_000))
            run.send(SIGKILL)
            #expect(run.wait().status == 128 + SIGKILL, "round \(round): \(run.stderr)")
        }
        #expect(Shell.wait(load) == 0)
        let changed = try Self.telemetryChanges(ws)
        try Self.bulkDimensionUpdate(ws) { try ws.run() }
        try ws.run()
        try Self.expectTelemetryFollowsTheSource(ws, changed)
        #expect(try ws.count("dim_surgeons", where: "surgeon_id LIKE 'SRG-BULK-%' AND is_current AND years_experience = 6") == 600)
        try ws.replay(schema: "rebuilt")
        try ProjectionOperationsTests.expectIdentical(ws, "dw", "rebuilt")
        #expect(try ws.count("fact_procedures") == Int(try ws.sql("SELECT count(*) FROM surgical_procedures")[0][0] ?? ""))
        // No distributed transaction is left prepared on the workers once Citus has recovered them.
        try poll(what: "Citus recovers the killed runs' prepared transactions", timeout: 60) {
            _ = try ws.dw("SELECT recover_prepared_transactions()")
            return try CitusCluster.shared.workers.allSatisfy { try $0.execute("SELECT count(*) FROM pg_prepared_xacts")[0][0] == "0" }
        }
    }

    @Test func initRefusesTheCitusMappingWhenTheClusterHasNoWorker() throws {
        let ws = try WarehouseWorkspace("ct_noworker", mapping: Self.citusMapping) { try CitusCluster.shared.createDatabase($0, workers: false) }
        defer { ws.tearDown() }
        let result = try ws.cdc(["init", "--config", ws.configPath])
        #expect(result.status != 0)
        #expect(result.stderr.contains("no active worker node") && result.stderr.contains("citus_add_node"), "\(result.stderr)")
        #expect(try !ws.schemaExists("dw"), "nothing is created")
    }

    /// On Citus the projector reads a fact row from the shard it last saw the row on (a hint kept in
    /// memory), not from every shard; a row that is not where its hint says is still found, and
    /// updated in place rather than inserted a second time.
    @Test func aFactRowAwayFromItsShardHintIsStillFound() throws {
        let ws = try Self.seeded("ct_hint")
        defer { ws.tearDown() }
        let target = WarehouseTarget(url: ws.warehouseURL, schema: "dw", clock: try #require(WarehouseClock(timeZone: "UTC")))
        let projector = try Projector(mapping: try ProjectionMapping.load(path: Self.citusMapping), target: target,
                                      log: try EventLog.openForReading(path: ws.source.logPath))
        _ = try projector.step()
        let procedures = try #require(projector.facts.first { $0.spec.table == "fact_procedures" })
        // A procedure, and the key of one on another shard: its hint is pointed there.
        let shard = "get_shard_id_for_distribution_column('dw.fact_procedures', procedure_key)"
        let pair = try ws.dw("""
            SELECT a.procedure_id, b.procedure_key::text FROM
              (SELECT procedure_id, \(shard) AS s FROM dw.fact_procedures ORDER BY procedure_key LIMIT 1) a,
              LATERAL (SELECT procedure_key, \(shard) AS s FROM dw.fact_procedures) b
            WHERE b.s <> a.s LIMIT 1
            """)
        let id = try #require(pair.first?[0]), elsewhere = try #require(pair.first?[1])
        #expect(procedures.shardHints[[id]] != nil, "the snapshot's rows are hinted")
        procedures.shardHints[[id]] = elsewhere
        try ws.change("UPDATE surgical_procedures SET duration_minutes = 4321 WHERE procedure_id = '\(id)'")
        let capture = try ws.cdc(["run", "--config", ws.configPath, "--endpos", try ws.server.currentLSN(), "--no-project"])
        #expect(capture.status == 0, "\(capture.stderr)")
        let step = try projector.step()
        #expect(step.changes == 1)
        #expect(try ws.dw("SELECT duration_minutes::text FROM dw.fact_procedures WHERE procedure_id = '\(id)'") == [["4321"]])
    }

    /// cdc's sessions cache as many connections per worker as one statement may open (Citus caches
    /// one by default, and every micro-batch opened its connections again).
    @Test func cdcsWarehouseSessionsCacheTheirWorkerConnections() throws {
        let ws = try Self.seeded("ct_session")
        defer { ws.tearDown() }
        let target = WarehouseTarget(url: ws.warehouseURL, schema: "dw", clock: try #require(WarehouseClock(timeZone: "UTC")))
        let connection = try target.connect()
        let settings = try connection.execute("SELECT current_setting('citus.max_cached_conns_per_worker'), current_setting('citus.max_adaptive_executor_pool_size')").rows[0]
        #expect(settings[0] == settings[1] && settings[0] != "1", "\(settings)")
    }
}

/// What runs without Citus (in CI): the Citus mapping is the PostgreSQL mapping's projection, and
/// `cdc init` refuses it on a warehouse without the citus extension.
@Suite struct WarehouseDialectTests {
    @Test func theCitusMappingProjectsExactlyWhatThePostgreSQLMappingProjects() throws {
        let plain = try ProjectionMapping.load(path: WarehouseWorkspace.surgicalMapping)
        let citus = try ProjectionMapping.load(path: CitusTests.citusMapping)
        #expect(citus.engine == .citus && plain.engine == .postgresql)
        #expect(citus.name == plain.name && citus.schemaVersion == plain.schemaVersion)
        #expect(citus.dimensions == plain.dimensions)
        #expect(citus.facts == plain.facts)
        // The same DDL files, and the Citus layout right after the tables (before 002 fills dim_date).
        var expected = plain.ddl
        expected.insert((plain.ddl[0] as NSString).deletingLastPathComponent + "/citus/001_distribute.sql", at: 1)
        #expect(citus.ddl.map { ($0 as NSString).standardizingPath } == expected.map { ($0 as NSString).standardizingPath })
    }

    @Test func anUnknownEngineIsRefusedNamingTheKnownOnes() throws {
        #expect { try ProjectionMapping.parse("name = \"x\"\nschema_version = 1\nengine = \"redshift\"\nddl = []\n", path: "m.toml") } throws: {
            "\($0)".contains("engine must be one of \"postgresql\", \"citus\", not \"redshift\"")
        }
    }

    /// DDL is sent one statement at a time: a failing statement is named by its file and line, and
    /// the statements before it in the same transaction are rolled back with it.
    @Test func aFailingDDLStatementIsNamedByItsLineAndNothingIsLeftBehind() throws {
        let ws = try WarehouseWorkspace("wd_ddl")
        defer { ws.tearDown() }
        try ws.loadSeed()
        let broken = ws.directory + "/broken.sql"
        try "-- a table, then a mistake\nCREATE TABLE extra (a int);\n\nCREATE INDEX ON extra (no_such_column);\n"
            .write(toFile: broken, atomically: true, encoding: .utf8)
        let shipped = try String(contentsOfFile: WarehouseWorkspace.surgicalMapping, encoding: .utf8)
        let base = (WarehouseWorkspace.surgicalMapping as NSString).deletingLastPathComponent
        let mapping = ws.directory + "/mapping.toml"
        let ddl = ["../warehouse/001_tables.sql", "../warehouse/002_dim_date_time.sql"].map { "\"\(base)/\($0)\"" } + ["\"\(broken)\""]
        try shipped.replacing(#/\nddl = \[[^\]]*\]/#, with: "\nddl = [\(ddl.joined(separator: ", "))]")
            .write(toFile: mapping, atomically: true, encoding: .utf8)
        try ws.writeConfig(mapping: mapping)
        let result = try ws.cdc(["init", "--config", ws.configPath])
        #expect(result.status != 0)
        #expect(result.stderr.contains("DDL file \(broken) failed in schema dw at the statement of line 4") && result.stderr.contains("no_such_column"),
                "\(result.stderr)")
        #expect(try !ws.schemaExists("dw"), "the DDL's transaction is rolled back whole")
    }

    @Test func initRefusesTheCitusMappingOnAWarehouseWithoutCitus() throws {
        let ws = try WarehouseWorkspace("cm_nocitus", mapping: CitusTests.citusMapping)
        defer { ws.tearDown() }
        try ws.loadSeed()
        let result = try ws.cdc(["init", "--config", ws.configPath])
        #expect(result.status != 0)
        let line = result.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(line.contains("has no citus extension") && line.contains("CREATE EXTENSION citus") && line.contains("surgical-robotics.toml"), "\(result.stderr)")
        #expect(try !ws.schemaExists("dw"), "nothing is created")
    }
}
