"""replay: `cdc replay` rebuilding the warehouse from the log, against two references in the same run —
the seeds' daily batch (a full reload from the source tables) and the physical limit: the time
PostgreSQL needs to COPY the same final warehouse rows into empty tables and build the same indexes
at the end.

A log of at least --events records is built first (tools/workload at full speed, then `cdc run
--no-project --endpos`, in rounds). Then, --reps times each, alternating the order, every run after a
CHECKPOINT, autovacuum off:
  replay    `cdc replay --schema replay_r` into a new schema (dropped between runs); events/s = log head /
            wall seconds (every record is replayed)
  reload    the seeds' batch (Step Functions: 1. dimensions, 2. procedure facts, 3. telemetry facts; each
            extracts from the source as CSV, COPYs it into unlogged staging tables in the warehouse
            database, then in one transaction TRUNCATEs the warehouse table and INSERT ... SELECTs from
            staging, joining the dimensions for the keys)
  physical  every table of replay_1 (its final rows, written to files beforehand, untimed) COPYed in
            text format through one connection into tables made LIKE it without indexes, then its
            indexes (primary keys and unique ones included, as plain CREATE [UNIQUE] INDEX) built: what
            pg_restore does, and the reference of the issue's goal
  physical_binary  the same in COPY's binary format (what cdc's writer sends): the server does not
            parse the values' text, so this is the lower of the two limits
Checks, not timed: replay_1 and the reload against the source (current dimension rows, every fact row,
the facts' keys resolved to business keys, as order-independent hashes); every replay identical to the
first, row for row, surrogate keys included."""

from __future__ import annotations

import statistics
import time

from .common import BenchError, ROOT, Workspace, peak_rss, say, timed

DIGEST_TABLES = ["dim_facilities", "dim_surgeons", "dim_robots", "fact_procedures", "fact_procedure_telemetry"]

SOURCE_DIGEST = """
SELECT 'dim_facilities', count(*), coalesce(sum(hashtextextended(concat_ws('|', facility_id, facility_name, city, state, country, facility_type, bed_count), 0)::numeric), 0) FROM facilities
UNION ALL
SELECT 'dim_surgeons', count(*), coalesce(sum(hashtextextended(concat_ws('|', surgeon_id, surgeon_name, specialization, years_experience, certification_level), 0)::numeric), 0) FROM surgeons
UNION ALL
SELECT 'dim_robots', count(*), coalesce(sum(hashtextextended(concat_ws('|', robot_id, robot_serial_number, robot_model, manufacturer, coalesce(facility_id, '-'), install_date, software_version, hardware_revision, status, last_maintenance_date, total_procedures_count, total_operating_hours), 0)::numeric), 0) FROM surgical_robots
UNION ALL
SELECT 'fact_procedures', count(*), coalesce(sum(hashtextextended(concat_ws('|', p.procedure_id, p.robot_id, p.surgeon_id, p.facility_id,
        to_char(p.start_time AT TIME ZONE 'UTC', 'YYYYMMDD')::int, to_char(p.start_time AT TIME ZONE 'UTC', 'HH24MI')::int * 100,
        to_char(p.end_time AT TIME ZONE 'UTC', 'YYYYMMDD')::int, to_char(p.end_time AT TIME ZONE 'UTC', 'HH24MI')::int * 100,
        p.procedure_type, p.procedure_category, p.patient_id, p.patient_age, p.patient_gender, p.duration_minutes, p.complexity_score,
        o.success_status, o.blood_loss_ml, o.complication_level, o.hospital_stay_days, o.patient_satisfaction_score, o.readmission_30day, p.status), 0)::numeric), 0)
  FROM surgical_procedures p LEFT JOIN procedure_outcomes o USING (procedure_id)
UNION ALL
SELECT 'fact_procedure_telemetry', count(*), coalesce(sum(hashtextextended(concat_ws('|', t.telemetry_id, t.procedure_id, t.procedure_id,
        to_char(t.sample_timestamp AT TIME ZONE 'UTC', 'HH24MI')::int * 100, t.sample_timestamp,
        t.arm_position_x, t.arm_position_y, t.arm_position_z, t.arm_rotation_x, t.arm_rotation_y, t.arm_rotation_z, t.force_feedback,
        t.tool_type, t.tool_active, t.camera_zoom, t.lighting_level, t.system_temperature, t.motor_current, t.network_latency_ms, t.video_fps), 0)::numeric), 0)
  FROM procedure_telemetry t"""


def warehouse_digest(s: str) -> str:
    """The business view of warehouse schema `s`, comparable with SOURCE_DIGEST."""
    return f"""
SELECT 'dim_facilities', count(*), coalesce(sum(hashtextextended(concat_ws('|', facility_id, facility_name, city, state, country, facility_type, bed_count), 0)::numeric), 0)
  FROM {s}.dim_facilities WHERE is_current AND facility_key >= 0
UNION ALL
SELECT 'dim_surgeons', count(*), coalesce(sum(hashtextextended(concat_ws('|', surgeon_id, surgeon_name, specialization, years_experience, certification_level), 0)::numeric), 0)
  FROM {s}.dim_surgeons WHERE is_current AND surgeon_key >= 0
UNION ALL
SELECT 'dim_robots', count(*), coalesce(sum(hashtextextended(concat_ws('|', r.robot_id, r.robot_serial_number, r.robot_model, r.manufacturer, coalesce(f.facility_id, '-'), r.install_date, r.software_version, r.hardware_revision, r.status, r.last_maintenance_date, r.total_procedures_count, r.total_operating_hours), 0)::numeric), 0)
  FROM {s}.dim_robots r LEFT JOIN {s}.dim_facilities f ON f.facility_key = r.facility_key WHERE r.is_current AND r.robot_key >= 0
UNION ALL
SELECT 'fact_procedures', count(*), coalesce(sum(hashtextextended(concat_ws('|', p.procedure_id, r.robot_id, s.surgeon_id, f.facility_id,
        p.start_date_key, p.start_time_key, p.end_date_key, p.end_time_key,
        p.procedure_type, p.procedure_category, p.patient_id, p.patient_age, p.patient_gender, p.duration_minutes, p.complexity_score,
        p.success_status, p.blood_loss_ml, p.complication_level, p.hospital_stay_days, p.patient_satisfaction_score, p.readmission_30day, p.status), 0)::numeric), 0)
  FROM {s}.fact_procedures p
  LEFT JOIN {s}.dim_robots r ON r.robot_key = p.robot_key
  LEFT JOIN {s}.dim_surgeons s ON s.surgeon_key = p.surgeon_key
  LEFT JOIN {s}.dim_facilities f ON f.facility_key = p.facility_key
UNION ALL
SELECT 'fact_procedure_telemetry', count(*), coalesce(sum(hashtextextended(concat_ws('|', t.telemetry_id, t.procedure_id, p.procedure_id,
        t.timestamp_key, t.sample_timestamp,
        t.arm_position_x, t.arm_position_y, t.arm_position_z, t.arm_rotation_x, t.arm_rotation_y, t.arm_rotation_z, t.force_feedback,
        t.tool_type, t.tool_active, t.camera_zoom, t.lighting_level, t.system_temperature, t.motor_current, t.network_latency_ms, t.video_fps), 0)::numeric), 0)
  FROM {s}.fact_procedure_telemetry t LEFT JOIN {s}.fact_procedures p ON p.procedure_key = t.procedure_key"""


def full_digest(s: str) -> str:
    """Whole rows of schema `s` (surrogate keys, history, times, LSNs): for "identical, row for row"."""
    return "\nUNION ALL\n".join(f"SELECT '{t}', count(*), coalesce(sum(hashtextextended(x::text, 0)::numeric), 0) FROM {s}.{t} x"
                                for t in DIGEST_TABLES)


RELOAD_SETUP = """
CREATE SCHEMA reload_stage;
CREATE UNLOGGED TABLE reload_stage.facilities (facility_id text, facility_name text, city text, state text, country text,
    facility_type text, bed_count int);
CREATE UNLOGGED TABLE reload_stage.surgeons (surgeon_id text, surgeon_name text, specialization text, years_experience int,
    certification_level text);
CREATE UNLOGGED TABLE reload_stage.robots (robot_id text, robot_serial_number text, robot_model text, manufacturer text,
    facility_id text, install_date date, software_version text, hardware_revision text, status text,
    last_maintenance_date date, total_procedures_count int, total_operating_hours numeric(10,2));
CREATE UNLOGGED TABLE reload_stage.procedures (procedure_id text, robot_id text, surgeon_id text, facility_id text,
    procedure_type text, procedure_category text, patient_id text, patient_age smallint, patient_gender text,
    start_time timestamptz, end_time timestamptz, duration_minutes int, complexity_score numeric(3,1), status text,
    success_status text, blood_loss_ml int, complication_level text, hospital_stay_days int,
    patient_satisfaction_score numeric(3,1), readmission_30day boolean);
CREATE UNLOGGED TABLE reload_stage.telemetry (telemetry_id bigint, procedure_id text, sample_timestamp timestamptz,
    arm_position_x numeric(10,4), arm_position_y numeric(10,4), arm_position_z numeric(10,4),
    arm_rotation_x numeric(10,4), arm_rotation_y numeric(10,4), arm_rotation_z numeric(10,4),
    force_feedback numeric(10,4), tool_type text, tool_active boolean, camera_zoom numeric(5,2), lighting_level int,
    system_temperature numeric(5,2), motor_current numeric(8,4), network_latency_ms int, video_fps int);
CREATE UNLOGGED TABLE reload_stage.unknown_facilities AS SELECT * FROM reload.dim_facilities WHERE facility_key < 0;
CREATE UNLOGGED TABLE reload_stage.unknown_surgeons AS SELECT * FROM reload.dim_surgeons WHERE surgeon_key < 0;
CREATE UNLOGGED TABLE reload_stage.unknown_robots AS SELECT * FROM reload.dim_robots WHERE robot_key < 0;"""

EXTRACTS = {
    "facilities": "SELECT facility_id, facility_name, city, state, country, facility_type, bed_count FROM facilities",
    "surgeons": "SELECT surgeon_id, surgeon_name, specialization, years_experience, certification_level FROM surgeons",
    "robots": """SELECT robot_id, robot_serial_number, robot_model, manufacturer, facility_id, install_date, software_version,
                        hardware_revision, status, last_maintenance_date, total_procedures_count, total_operating_hours
                 FROM surgical_robots""",
    "procedures": """SELECT p.procedure_id, p.robot_id, p.surgeon_id, p.facility_id, p.procedure_type, p.procedure_category,
                            p.patient_id, p.patient_age, p.patient_gender, p.start_time, p.end_time, p.duration_minutes,
                            p.complexity_score, p.status, o.success_status, o.blood_loss_ml, o.complication_level,
                            o.hospital_stay_days, o.patient_satisfaction_score, o.readmission_30day
                     FROM surgical_procedures p LEFT JOIN procedure_outcomes o USING (procedure_id)""",
    "telemetry": """SELECT telemetry_id, procedure_id, sample_timestamp, arm_position_x, arm_position_y, arm_position_z,
                           arm_rotation_x, arm_rotation_y, arm_rotation_z, force_feedback, tool_type, tool_active,
                           camera_zoom, lighting_level, system_temperature, motor_current, network_latency_ms, video_fps
                    FROM procedure_telemetry""",
}

RELOAD_DIMS = """
SET search_path TO reload;
TRUNCATE dim_facilities, dim_surgeons, dim_robots;
INSERT INTO dim_facilities SELECT * FROM reload_stage.unknown_facilities;
INSERT INTO dim_surgeons SELECT * FROM reload_stage.unknown_surgeons;
INSERT INTO dim_robots SELECT * FROM reload_stage.unknown_robots;
INSERT INTO dim_facilities (facility_key, facility_id, facility_name, city, state, country, facility_type, bed_count,
                            effective_date, expiration_date, is_current, valid_from, valid_to, change_type, record_hash,
                            source_lsn, is_inferred)
SELECT row_number() OVER (ORDER BY facility_id), facility_id, facility_name, city, state, country, facility_type, bed_count,
       (now() AT TIME ZONE 'UTC')::date, NULL, true, now(), NULL, 'INSERT',
       md5(concat_ws('|', facility_name, city, state, country, facility_type)), NULL, false
FROM reload_stage.facilities;
INSERT INTO dim_surgeons (surgeon_key, surgeon_id, surgeon_name, specialization, years_experience, certification_level,
                          effective_date, expiration_date, is_current, valid_from, valid_to, change_type, record_hash,
                          source_lsn, is_inferred)
SELECT row_number() OVER (ORDER BY surgeon_id), surgeon_id, surgeon_name, specialization, years_experience, certification_level,
       (now() AT TIME ZONE 'UTC')::date, NULL, true, now(), NULL, 'INSERT',
       md5(concat_ws('|', surgeon_name, specialization, certification_level)), NULL, false
FROM reload_stage.surgeons;
INSERT INTO dim_robots (robot_key, robot_id, robot_serial_number, robot_model, manufacturer, facility_key, install_date,
                        software_version, hardware_revision, status, last_maintenance_date, total_procedures_count,
                        total_operating_hours, effective_date, expiration_date, is_current, valid_from, valid_to,
                        change_type, record_hash, source_lsn, is_inferred)
SELECT row_number() OVER (ORDER BY r.robot_id), r.robot_id, r.robot_serial_number, r.robot_model, r.manufacturer,
       coalesce(f.facility_key, -1), r.install_date, r.software_version, r.hardware_revision, r.status,
       r.last_maintenance_date, r.total_procedures_count, r.total_operating_hours,
       (now() AT TIME ZONE 'UTC')::date, NULL, true, now(), NULL, 'INSERT',
       md5(concat_ws('|', r.robot_model, r.manufacturer, r.facility_id, r.software_version, r.hardware_revision, r.status)), NULL, false
FROM reload_stage.robots r LEFT JOIN dim_facilities f ON f.facility_id = r.facility_id AND f.is_current"""

RELOAD_PROCEDURES = """
SET search_path TO reload;
TRUNCATE fact_procedures;
INSERT INTO fact_procedures (procedure_key, procedure_id, robot_key, surgeon_key, facility_key, start_date_key,
                             start_time_key, end_date_key, end_time_key, procedure_type, procedure_category, patient_id,
                             patient_age, patient_gender, duration_minutes, complexity_score, success_status,
                             blood_loss_ml, complication_level, hospital_stay_days, patient_satisfaction_score,
                             readmission_30day, status, source_lsn, created_at, updated_at)
SELECT row_number() OVER (ORDER BY p.procedure_id), p.procedure_id,
       coalesce(r.robot_key, -1), coalesce(s.surgeon_key, -1), coalesce(f.facility_key, -1),
       to_char(p.start_time AT TIME ZONE 'UTC', 'YYYYMMDD')::int, to_char(p.start_time AT TIME ZONE 'UTC', 'HH24MI')::int * 100,
       to_char(p.end_time AT TIME ZONE 'UTC', 'YYYYMMDD')::int, to_char(p.end_time AT TIME ZONE 'UTC', 'HH24MI')::int * 100,
       p.procedure_type, p.procedure_category, p.patient_id, p.patient_age, p.patient_gender, p.duration_minutes,
       p.complexity_score, p.success_status, p.blood_loss_ml, p.complication_level, p.hospital_stay_days,
       p.patient_satisfaction_score, p.readmission_30day, p.status, '0/0', now(), NULL
FROM reload_stage.procedures p
LEFT JOIN dim_robots r ON r.robot_id = p.robot_id AND r.is_current
LEFT JOIN dim_surgeons s ON s.surgeon_id = p.surgeon_id AND s.is_current
LEFT JOIN dim_facilities f ON f.facility_id = p.facility_id AND f.is_current"""

RELOAD_TELEMETRY = """
SET search_path TO reload;
TRUNCATE fact_procedure_telemetry;
INSERT INTO fact_procedure_telemetry (telemetry_key, telemetry_id, procedure_key, procedure_id, timestamp_key,
                                      sample_timestamp, arm_position_x, arm_position_y, arm_position_z, arm_rotation_x,
                                      arm_rotation_y, arm_rotation_z, force_feedback, tool_type, tool_active, camera_zoom,
                                      lighting_level, system_temperature, motor_current, network_latency_ms, video_fps,
                                      source_lsn, created_at, updated_at)
SELECT row_number() OVER (ORDER BY t.telemetry_id), t.telemetry_id, coalesce(p.procedure_key, -1), t.procedure_id,
       to_char(t.sample_timestamp AT TIME ZONE 'UTC', 'HH24MI')::int * 100, t.sample_timestamp,
       t.arm_position_x, t.arm_position_y, t.arm_position_z, t.arm_rotation_x, t.arm_rotation_y, t.arm_rotation_z,
       t.force_feedback, t.tool_type, t.tool_active, t.camera_zoom, t.lighting_level, t.system_temperature,
       t.motor_current, t.network_latency_ms, t.video_fps, '0/0', now(), NULL
FROM reload_stage.telemetry t LEFT JOIN fact_procedures p ON p.procedure_id = t.procedure_id"""


def build_log(ws: Workspace, config, source: str, log: str, events: int, clients: int = 8) -> dict:
    """Grows the log to at least `events` records: tools/workload at full speed, then `cdc run --no-project
    --endpos`, in rounds (about 6.5 records per workload transaction)."""
    pg = ws.pg
    started = time.monotonic()
    head, transactions = ws.log_stats(log)["head"], 0
    for round_ in range(1, 11):
        if head >= events:
            break
        tx = (events - head) * 10 // 65 + clients
        say(f"  round {round_}: log head {head:,}; tools/workload --transactions {tx:,} --clients {clients}")
        with open(ws.path(f"build-{log}-{round_}.txt"), "w") as out:
            timed([str(ROOT / "tools/workload"), "--transactions", str(tx), "--clients", str(clients)],
                  stdout=out, stderr=out, env=pg.process_env(source), what="tools/workload")
        transactions += tx
        end = pg.query(source, "SELECT pg_current_wal_lsn()::text")[0][0]
        with open(ws.path(f"{log}.err"), "a") as err:
            timed([str(ws.cdc_path), "run", "--config", str(config), "--no-project", "--endpos", end], stderr=err,
                  what="cdc run --no-project")
        head = ws.log_stats(log)["head"]
    else:
        raise BenchError(f"the log still has only {head:,} records after 10 rounds of workload")
    return {"records": head, "build_s": round(time.monotonic() - started, 1), "workload_transactions": transactions}


def digest(ws: Workspace, database: str, sql: str) -> dict:
    return {t: [int(c), str(h)] for t, c, h in ws.pg.query(database, sql)}


def compare(a: dict, b: dict) -> dict:
    differences = [{"table": t, "a_rows": a.get(t, [None])[0], "b_rows": b.get(t, [None])[0]}
                   for t in sorted(set(a) | set(b)) if a.get(t) != b.get(t)]
    return {"equal": not differences, "differences": differences}


def reload_batch(ws: Workspace) -> dict:
    """The seeds' batch, step by step; returns the wall seconds of each step."""
    pg, steps, started = ws.pg, {}, time.monotonic()

    def extract(table: str) -> None:
        with pg.connect("bsrc") as source, pg.connect("bwh") as warehouse:
            warehouse.execute(f"TRUNCATE reload_stage.{table}")
            with source.cursor().copy(f"COPY ({EXTRACTS[table]}) TO STDOUT WITH (FORMAT csv)") as out, \
                    warehouse.cursor().copy(f"COPY reload_stage.{table} FROM STDIN WITH (FORMAT csv)") as into:
                for block in out:
                    into.write(block)

    def transaction(sql: str) -> None:
        with pg.connect("bwh") as warehouse:
            with warehouse.transaction():
                for statement in sql.split(";"):
                    if statement.strip():
                        warehouse.execute(statement)

    for table in ("facilities", "surgeons", "robots"):
        extract(table)
    transaction(RELOAD_DIMS)
    steps["dimensions"] = time.monotonic() - started
    extract("procedures")
    transaction(RELOAD_PROCEDURES)
    steps["procedures"] = time.monotonic() - started - steps["dimensions"]
    extract("telemetry")
    transaction(RELOAD_TELEMETRY)
    steps["telemetry"] = time.monotonic() - started - steps["dimensions"] - steps["procedures"]
    return {"wall_s": round(time.monotonic() - started, 4), "steps_s": {k: round(v, 2) for k, v in steps.items()}}


def physical_setup(ws: Workspace, schema: str) -> dict:
    """Writes every table of `schema` to files (text and binary COPY) and notes its index definitions: the
    input of the physical-limit loads, prepared outside the timing."""
    pg = ws.pg
    tables = [t for (t,) in pg.query("bwh", f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}' ORDER BY tablename")]
    indexes = pg.query("bwh", f"SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = '{schema}' ORDER BY tablename, indexname")
    rows = 0
    with pg.connect("bwh") as connection:
        for table in tables:
            for suffix, options in (("copy", ""), ("bin", " (FORMAT binary)")):
                with open(ws.path(f"physical-{table}.{suffix}"), "wb") as out, \
                        connection.cursor().copy(f"COPY {schema}.{table} TO STDOUT{options}") as copy:
                    for block in copy:
                        out.write(block)
            rows += connection.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0]
    return {"schema": schema, "tables": tables, "indexes": [(t, d) for t, d in indexes], "rows": rows}


def physical_load(ws: Workspace, setup: dict, target: str, binary: bool = False) -> dict:
    """COPY the files (text, or `binary`) into empty tables LIKE the replayed ones, then build the same indexes."""
    pg, source = ws.pg, setup["schema"]
    with pg.connect("bwh") as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {target} CASCADE")
        connection.execute(f"CREATE SCHEMA {target}")
        for table in setup["tables"]:
            connection.execute(f"CREATE TABLE {target}.{table} (LIKE {source}.{table} INCLUDING DEFAULTS)")
        connection.execute("CHECKPOINT")
        started = time.monotonic()
        for table in setup["tables"]:
            with open(ws.path(f"physical-{table}.{'bin' if binary else 'copy'}"), "rb") as data, \
                    connection.cursor().copy(f"COPY {target}.{table} FROM STDIN{' (FORMAT binary)' if binary else ''}") as copy:
                while block := data.read(1 << 20):
                    copy.write(block)
        loaded = time.monotonic() - started
        for _, definition in setup["indexes"]:
            connection.execute(definition.replace(f" ON {source}.", f" ON {target}.", 1))
        total = time.monotonic() - started
        connection.execute(f"DROP SCHEMA {target} CASCADE")
    return {"wall_s": round(total, 4), "copy_s": round(loaded, 3), "indexes_s": round(total - loaded, 3)}


def run(ws: Workspace, *, events: int, reps: int) -> dict:
    pg = ws.pg
    say(f"replay: a log of >= {events:,} records, then {reps} x cdc replay, the seeds' reload and the physical limit")
    pg.make_source("bsrc")
    pg.execute("postgres", "CREATE DATABASE bwh")
    config = ws.write_config("cdc-replay", "bsrc", log="log-replay", slot="cdc_replay", publication="cdc_replay", warehouse="bwh")
    ws.cdc(["init", "--config", str(config)], stderr_to=ws.path("log-replay.err"), what="cdc init")
    built = build_log(ws, config, "bsrc", "log-replay", events)
    pg.execute("bsrc", "SELECT pg_drop_replication_slot('cdc_replay')")  # the source stays as it is now
    stats = ws.log_stats("log-replay")
    head = stats["head"]
    say(f"  log built in {built['build_s']} s: {head:,} records")

    pg.autovacuum(False)
    pg.execute("bwh", "CREATE SCHEMA reload")
    pg.psql("bwh", "--single-transaction", "-c", "SET search_path TO reload",
            *[arg for name in ("001_tables.sql", "002_dim_date_time.sql", "003_views.sql")
              for arg in ("-f", str(ROOT / "schemas/warehouse" / name))])
    pg.psql("bwh", "--single-transaction", "-c", RELOAD_SETUP)
    source_digest = digest(ws, "bsrc", SOURCE_DIGEST)

    runs: dict[str, list] = {"replay": [], "reload": [], "physical": [], "physical_binary": []}
    replay_digests, checks, physical = [], {}, None
    for r in range(1, reps + 1):
        order = ["replay", "reload", "physical", "physical_binary"] if r % 2 else ["physical_binary", "physical", "reload", "replay"]
        if physical is None and order[0] != "replay":
            order = ["replay", "reload", "physical", "physical_binary"]
        for what in order:
            pg.execute("bwh", "CHECKPOINT")
            if what == "replay":
                pg.execute("bwh", f"DROP SCHEMA IF EXISTS replay_{r} CASCADE")
                with open(ws.path("replay.err"), "a") as err:
                    t = timed([str(ws.cdc_path), "replay", "--config", str(config), "--schema", f"replay_{r}"],
                              stdout=err, stderr=err, what=f"cdc replay (rep {r})")
                projected = pg.query("bwh", f"SELECT coalesce(max(last_seq), 0) FROM replay_{r}.cdc_checkpoint")[0][0]
                if projected != head:
                    raise BenchError(f"replay_{r} stopped at seq {projected}, the log's head is {head}")
                replay_digests.append(digest(ws, "bwh", full_digest(f"replay_{r}")))
                if r == 1:
                    checks["replay_vs_source"] = compare(source_digest, digest(ws, "bwh", warehouse_digest("replay_1")))
                    physical = physical_setup(ws, "replay_1")
                else:
                    pg.execute("bwh", f"DROP SCHEMA replay_{r} CASCADE")
                entry = {"rep": r, **t.as_dict()}
            elif what == "reload":
                entry = {"rep": r, **reload_batch(ws)}
                if r == 1:
                    checks["reload_vs_source"] = compare(source_digest, digest(ws, "bwh", warehouse_digest("reload")))
            else:
                entry = {"rep": r, **physical_load(ws, physical, f"physical_{r}", binary=what == "physical_binary")}
            runs[what].append(entry)
            say(f"  {what} {r}: {entry['wall_s']:.2f} s")
    pg.autovacuum(True)
    checks["replays_identical"] = all(d == replay_digests[0] for d in replay_digests)
    reload_rows = sum(v[0] for v in digest(ws, "bwh", warehouse_digest("reload")).values())
    median = {k: statistics.median(x["wall_s"] for x in v) for k, v in runs.items()}
    ops: dict[str, int] = {}
    for counts in stats["by_table"].values():
        for op, n in counts.items():
            ops[op] = ops.get(op, 0) + n
    result = {
        "log": {"records": head, "transactions": stats["transactions"], "ops": ops,
                "data_mdb_bytes": stats["size"]["data_mdb_bytes"], **built},
        "replay": {"median_s": round(median["replay"], 3), "events_per_s": round(head / median["replay"]), "runs": runs["replay"],
                   "peak_rss_mib": peak_rss(runs["replay"])},
        "reload": {"median_s": round(median["reload"], 3), "rows": reload_rows, "runs": runs["reload"]},
        "physical": {"median_s": round(median["physical"], 3), "rows": physical["rows"], "tables": len(physical["tables"]),
                     "indexes": len(physical["indexes"]), "runs": runs["physical"]},
        "physical_binary": {"median_s": round(median["physical_binary"], 3), "runs": runs["physical_binary"]},
        "ratio_replay_over_physical": round(median["replay"] / median["physical"], 2),
        "ratio_replay_over_physical_binary": round(median["replay"] / median["physical_binary"], 2),
        "ratio_replay_over_reload": round(median["replay"] / median["reload"], 2),
        "checks": checks,
    }
    if not (checks["replay_vs_source"]["equal"] and checks["reload_vs_source"]["equal"] and checks["replays_identical"]):
        raise BenchError(f"a correctness check failed: {checks}")
    if not ws.keep:
        pg.execute("postgres", "DROP DATABASE bwh", "DROP DATABASE bsrc")
    return result
