"""capture: how fast `cdc run --no-project --endpos` drains a replication backlog against pg_recvlogical
draining the same backlog from its own pgoutput slot, and the log's bytes per change against pgoutput's.

One source database (schema + seed, publication FOR ALL TABLES). Per repetition r a cdc log (`cdc init`,
slot cdc_r) and a pgoutput slot pgr_r, all made before any change, so that every drain of a shape starts
at the same LSN. With nothing reading, two backlogs are made in turn, each followed by CHECKPOINT and
endpos = pg_current_wal_lsn():
  small  tools/workload --transactions ceil(N/6) --clients 8 (pgbench with the project's OLTP mix,
         about 6.7 row changes per transaction)
  huge   one transaction of --huge-rows INSERTs into procedure_telemetry
then both drains are timed, alternating which goes first. Row changes are counted exactly from
`cdc log stats` before and after (every repetition's log must have grown by the same records). Log bytes
per change: growth of data.mdb (and of the records alone) / row changes; pgoutput bytes per change:
pg_recvlogical's output file / row changes (its messages incl. BEGIN/COMMIT/RELATION, and a newline
after each). pg_recvlogical fsyncs every 10 s and at exit (its default); cdc commits every flush durably.
Autovacuum is off while drains are timed."""

from __future__ import annotations

import statistics

from .common import BenchError, ROOT, Workspace, peak_rss, row_changes, say, timed, tool

HUGE_INSERT = """
WITH p AS (SELECT procedure_id, (row_number() OVER (ORDER BY procedure_id) - 1)::int AS i FROM surgical_procedures)
INSERT INTO procedure_telemetry (procedure_id, sample_timestamp, arm_position_x, arm_position_y, arm_position_z,
                                 arm_rotation_x, arm_rotation_y, arm_rotation_z, force_feedback, tool_type,
                                 tool_active, camera_zoom, lighting_level, system_temperature, motor_current,
                                 network_latency_ms, video_fps)
SELECT p.procedure_id,
       timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => g),
       round((random() * 500 - 250)::numeric, 4), round((random() * 500 - 250)::numeric, 4),
       round((random() * 300 - 50)::numeric, 4), round((random() * 360 - 180)::numeric, 4),
       round((random() * 180 - 90)::numeric, 4), round((random() * 360 - 180)::numeric, 4),
       round((power(random(), 2) * 14 + 0.2)::numeric, 4),
       (ARRAY['Monopolar Curved Scissors','Maryland Bipolar Forceps','Large Needle Driver','Cadiere Forceps',
              'Vessel Sealer Extend','Permanent Cautery Hook','SureForm 45 Stapler','Medium-Large Clip Applier'])[1 + g % 8],
       random() < 0.7, round((1 + random() * 9)::numeric, 2), 60 + g % 41,
       round((36.5 + random() * 6)::numeric, 2), round((0.8 + random() * 2.4)::numeric, 4),
       2 + g % 28, 60
FROM generate_series(1, {rows}) AS g
JOIN p ON p.i = g % (SELECT count(*)::int FROM surgical_procedures)
"""


def run(ws: Workspace, *, changes: int, huge_rows: int, reps: int, clients: int = 8) -> dict:
    pg = ws.pg
    database = "bench"
    say(f"capture: {reps} repetitions; small = about {changes:,} row changes, huge = one transaction of {huge_rows:,} inserts")
    pg.autovacuum(False)
    pg.make_source(database)
    pg.execute(database, "CREATE PUBLICATION bench FOR ALL TABLES")
    for r in range(1, reps + 1):
        config = ws.write_config(f"cdc-{r}", database, log=f"log-{r}", slot=f"cdc_{r}", publication="bench")
        ws.cdc(["init", "--config", str(config)], stderr_to=ws.path(f"cdc-{r}.err"), what="cdc init")
        timed([tool("pg_recvlogical"), "-d", pg.conninfo(database), "--slot", f"pgr_{r}", "--create-slot", "-P", "pgoutput"],
              env=pg.process_env(), what="pg_recvlogical --create-slot")

    transactions = (changes + 5) // 6
    say(f"  the small-transaction backlog: tools/workload --transactions {transactions:,} --clients {clients}")
    with open(ws.path("workload-small.txt"), "w") as out:
        timed([str(ROOT / "tools/workload"), "--transactions", str(transactions), "--clients", str(clients)],
              stdout=out, stderr=out, env=pg.process_env(database), what="tools/workload")
    shapes = [drain(ws, "small", reps)]

    say(f"  the huge transaction: {huge_rows:,} INSERTs into procedure_telemetry")
    with pg.connect(database) as connection:
        connection.execute(HUGE_INSERT.replace("{rows}", str(int(huge_rows))))
    shapes.append(drain(ws, "huge", reps))

    for r in range(1, reps + 1):
        pg.execute(database, f"SELECT pg_drop_replication_slot('cdc_{r}')", f"SELECT pg_drop_replication_slot('pgr_{r}')")
    pg.execute("postgres", f"DROP DATABASE {database}")
    pg.autovacuum(True)
    return {"reps": reps, "clients": clients, "shapes": shapes}


def drain(ws: Workspace, shape: str, reps: int) -> dict:
    pg = ws.pg
    pg.execute("bench", "CHECKPOINT")
    end = pg.query("bench", "SELECT pg_current_wal_lsn()::text")[0][0]
    wal = pg.query("bench", f"SELECT pg_wal_lsn_diff('{end}', min(confirmed_flush_lsn))::bigint FROM pg_replication_slots")[0][0]
    say(f"  {shape}: endpos {end}, {wal / 2**20:.0f} MiB of WAL to decode")
    before = [ws.log_stats(f"log-{r}") for r in range(1, reps + 1)]
    runs: dict[str, list[dict]] = {"cdc": [], "pg_recvlogical": []}
    output_bytes = []
    for r in range(1, reps + 1):
        order = ["cdc", "pg_recvlogical"] if r % 2 else ["pg_recvlogical", "cdc"]
        for who in order:
            if who == "cdc":
                with open(ws.path(f"cdc-{r}.err"), "a") as err:
                    t = timed([str(ws.cdc_path), "run", "--config", str(ws.path(f"cdc-{r}.toml")), "--no-project",
                               "--endpos", end], stderr=err, what=f"cdc run ({shape}, rep {r})")
            else:
                target = ws.path(f"pgr-{shape}-{r}.bin")
                with open(ws.path(f"pgr-{r}.err"), "a") as err:
                    t = timed([tool("pg_recvlogical"), "-d", pg.conninfo("bench"), "--slot", f"pgr_{r}", "--start",
                               "--endpos", end, "--no-loop", "-o", "proto_version=1", "-o", "publication_names=bench",
                               "-o", "messages=true", "-f", str(target)], stderr=err, env=pg.process_env(),
                              what=f"pg_recvlogical ({shape}, rep {r})")
                output_bytes.append(target.stat().st_size)
                if not ws.keep:
                    target.unlink()
            runs[who].append({"rep": r, **t.as_dict()})
            say(f"  {shape} {who} rep {r}: {t.wall_s:.2f} s, peak RSS {fmt_mib(t.max_rss_mib)}")
    after = [ws.log_stats(f"log-{r}") for r in range(1, reps + 1)]
    counts = row_changes(before[0], after[0])
    grown = {a["head"] - b["head"] for a, b in zip(after, before)}
    if len(grown) != 1:
        raise BenchError(f"the {shape} drains wrote different numbers of records: {sorted(grown)}")
    if len(set(output_bytes)) != 1:
        raise BenchError(f"pg_recvlogical wrote outputs of different sizes for the {shape} backlog: {output_bytes}")
    n = counts["row_changes"]
    median = lambda who, key: statistics.median(x[key] for x in runs[who])
    cdc_s, pgr_s = median("cdc", "wall_s"), median("pg_recvlogical", "wall_s")
    file_growth = statistics.median(a["size"]["data_mdb_bytes"] - b["size"]["data_mdb_bytes"] for a, b in zip(after, before))
    record_growth = after[0]["size"]["record_bytes"] - before[0]["size"]["record_bytes"]
    summary = lambda who, s: {"median_s": round(s, 3), "rows_per_s": round(n / s),
                              "median_cpu_s": round(statistics.median(x["user_s"] + x["sys_s"] for x in runs[who]), 2),
                              "peak_rss_mib": peak_rss(runs[who]), "runs": runs[who]}
    return {"shape": shape, "endpos": end, "wal_bytes": wal, **counts, "records": grown.pop(),
            "cdc": summary("cdc", cdc_s), "pg_recvlogical": summary("pg_recvlogical", pgr_s),
            "ratio_cdc_over_pgr": round(cdc_s / pgr_s, 3),
            "log_file_bytes_per_change": round(file_growth / n, 1) if n else None,
            "log_record_bytes_per_change": round(record_growth / n, 1) if n else None,
            "pgoutput_bytes_per_change": round(output_bytes[0] / n, 1) if n else None}


def fmt_mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MiB"
