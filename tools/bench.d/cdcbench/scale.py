"""scale: capture, `cdc log verify` and `cdc replay` as the log grows (100 k, 1 M and 10 M events by default):
seconds per million events and peak RSS at each size. The cost per event should stay flat, and memory
bounded by the current dimension rows, not by the log.

One source database (schema + seed) and one log. For each size, the source first grows by the missing
events, in transactions of 1,000 row changes made by a server-side procedure (900 telemetry inserts,
80 procedure updates, 20 surgeon updates — the warehouse's dimensions change, so SCD2 history grows;
no new dimension rows): a million events take seconds to make, where the OLTP workload would take
minutes. Then, timed, each after a CHECKPOINT:
  capture  `cdc run --no-project --endpos` of the new events (per million: of those new events)
  verify   `cdc log verify` of the whole log
  replay   `cdc replay --schema scale_N` of the whole log (dropped afterwards); also
           the WAL it wrote and the checkpoints it requested (WAL past max_wal_size: pg_stat_bgwriter, or
           pg_stat_checkpointer from PostgreSQL 17), PostgreSQL's costs that grow with a replay's length"""

from __future__ import annotations

import time

from .common import Workspace, say, timed

GROW = """
CREATE PROCEDURE bench_grow(transactions int) LANGUAGE plpgsql AS $$
DECLARE
    procedures text[] := ARRAY(SELECT procedure_id FROM surgical_procedures ORDER BY procedure_id);
    surgeons_ text[] := ARRAY(SELECT surgeon_id FROM surgeons ORDER BY surgeon_id);
    n int := cardinality(procedures);
    m int := cardinality(surgeons_);
    k bigint := (SELECT coalesce(max(telemetry_id), 0) FROM procedure_telemetry);
BEGIN
    FOR i IN 1..transactions LOOP
        INSERT INTO procedure_telemetry (procedure_id, sample_timestamp, arm_position_x, arm_position_y, arm_position_z,
                                         arm_rotation_x, arm_rotation_y, arm_rotation_z, force_feedback, tool_type,
                                         tool_active, camera_zoom, lighting_level, system_temperature, motor_current,
                                         network_latency_ms, video_fps)
        SELECT procedures[1 + (k + g) % n], timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => k + g),
               round((random() * 500 - 250)::numeric, 4), round((random() * 500 - 250)::numeric, 4),
               round((random() * 300 - 50)::numeric, 4), round((random() * 360 - 180)::numeric, 4),
               round((random() * 180 - 90)::numeric, 4), round((random() * 360 - 180)::numeric, 4),
               round((power(random(), 2) * 14 + 0.2)::numeric, 4),
               (ARRAY['Monopolar Curved Scissors','Maryland Bipolar Forceps','Large Needle Driver','Cadiere Forceps'])[1 + g % 4],
               random() < 0.7, round((1 + random() * 9)::numeric, 2), 60 + g % 41,
               round((36.5 + random() * 6)::numeric, 2), round((0.8 + random() * 2.4)::numeric, 4), 2 + g % 28, 60
        FROM generate_series(1, 900) AS g;
        k := k + 900;
        UPDATE surgical_procedures SET duration_minutes = coalesce(duration_minutes, 60) % 400 + 1
        WHERE procedure_id = ANY (ARRAY(SELECT procedures[1 + (i * 80 + j) % n] FROM generate_series(0, 79) AS j));
        UPDATE surgeons SET years_experience = coalesce(years_experience, 0) % 40 + 1
        WHERE surgeon_id = ANY (ARRAY(SELECT surgeons_[1 + (i * 20 + j) % m] FROM generate_series(0, 19) AS j));
        COMMIT;
    END LOOP;
END $$"""


def run(ws: Workspace, *, sizes: list[int]) -> dict:
    pg = ws.pg
    say(f"scale: capture, verify and replay at {', '.join(f'{s:,}' for s in sizes)} events")
    pg.make_source("ssrc")
    pg.execute("postgres", "CREATE DATABASE swh")
    pg.execute("ssrc", GROW)
    config = ws.write_config("cdc-scale", "ssrc", log="log-scale", slot="cdc_scale", publication="cdc_scale", warehouse="swh")
    ws.cdc(["init", "--config", str(config)], stderr_to=ws.path("log-scale.err"), what="cdc init")
    pg.autovacuum(False)
    # Checkpoints requested by WAL volume: pg_stat_checkpointer from PostgreSQL 17, pg_stat_bgwriter before.
    version = int(pg.query("swh", "SHOW server_version_num")[0][0])
    requested = ("SELECT num_requested FROM pg_stat_checkpointer" if version >= 170000
                 else "SELECT checkpoints_req FROM pg_stat_bgwriter")
    points = []
    for size in sizes:
        head = ws.log_stats("log-scale")["head"]
        if size > head:
            transactions = -(-(size - head) // 1000)
            say(f"  growing the source by {transactions * 1000:,} row changes ({transactions:,} transactions)")
            started = time.monotonic()
            pg.execute("ssrc", f"CALL bench_grow({transactions})")
            grow_s = time.monotonic() - started
        else:
            grow_s = 0.0
        end = pg.query("ssrc", "SELECT pg_current_wal_lsn()::text")[0][0]
        pg.execute("ssrc", "CHECKPOINT")
        with open(ws.path("log-scale.err"), "a") as err:
            capture = timed([str(ws.cdc_path), "run", "--config", str(config), "--no-project", "--endpos", end],
                            stderr=err, what="cdc run --no-project")
        stats = ws.log_stats("log-scale")
        new = stats["head"] - head
        pg.execute("swh", "CHECKPOINT")
        with open(ws.path("verify.out"), "a") as out:
            verify = timed([str(ws.cdc_path), "log", "verify", "--log", str(ws.path("log-scale"))], stdout=out, stderr=out,
                           what="cdc log verify")
        schema = f"scale_{len(points) + 1}"
        # The WAL the replay writes and the checkpoints it sets off (max_wal_size): PostgreSQL's costs
        # that grow with the replay's length, not with the log's size per event. (The CHECKPOINT before
        # verify is the replay's too: verify writes nothing to the cluster.)
        wal0, checkpoints0 = pg.query("swh", f"SELECT pg_current_wal_lsn()::text, ({requested})")[0]
        with open(ws.path("replay-scale.err"), "a") as err:
            replay = timed([str(ws.cdc_path), "replay", "--config", str(config), "--schema", schema], stdout=err, stderr=err,
                           what="cdc replay")
        wal_bytes, checkpoints = pg.query("swh", f"""SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal0}')::bigint,
                                                 ({requested}) - {checkpoints0}""")[0]
        dimension_rows = pg.query("swh", f"""SELECT (SELECT count(*) FROM {schema}.dim_facilities) + (SELECT count(*) FROM {schema}.dim_surgeons)
                                              + (SELECT count(*) FROM {schema}.dim_robots)""")[0][0]
        pg.execute("swh", f"DROP SCHEMA {schema} CASCADE")
        million = stats["head"] / 1e6
        point = {
            "events": stats["head"], "new_events": new, "grow_s": round(grow_s, 1), "log_bytes": stats["size"]["data_mdb_bytes"],
            "dimension_rows": dimension_rows,
            "capture": {**capture.as_dict(), "s_per_million": round(capture.wall_s / (new / 1e6), 2) if new else None},
            "verify": {**verify.as_dict(), "s_per_million": round(verify.wall_s / million, 2)},
            "replay": {**replay.as_dict(), "s_per_million": round(replay.wall_s / million, 2),
                       "wal_bytes": int(wal_bytes), "checkpoints_requested": int(checkpoints)},
        }
        points.append(point)
        say(f"  {stats['head']:,} events: capture {point['capture']['s_per_million']} s/M (of {new:,} new),"
            f" verify {point['verify']['s_per_million']} s/M, replay {point['replay']['s_per_million']} s/M;"
            f" peak RSS capture {capture.max_rss_mib or 0:.0f}, verify {verify.max_rss_mib or 0:.0f},"
            f" replay {replay.max_rss_mib or 0:.0f} MiB; the replay wrote {int(wal_bytes) / 2**20:,.0f} MiB of WAL,"
            f" {int(checkpoints)} checkpoint(s) requested during it")
    pg.autovacuum(True)
    if not ws.keep:
        pg.execute("ssrc", "SELECT pg_drop_replication_slot('cdc_scale')")
        pg.execute("postgres", "DROP DATABASE swh", "DROP DATABASE ssrc")
    return {"points": points}
