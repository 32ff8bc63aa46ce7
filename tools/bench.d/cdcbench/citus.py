"""citus: the warehouse on Citus (a coordinator and two workers on loopback, 4 shards) against plain
PostgreSQL, in the same run: freshness at 200 tx/s (commit → visible in dw.fact_procedures, measured as by
the freshness part) with the PostgreSQL mapping into the workspace's cluster and with
surgical-robotics-citus.toml into the Citus coordinator; then `cdc replay` of the Citus run's log into a
new schema of each warehouse (median of the repetitions), and a row-for-row check that the two replays
hold the same rows. Needs Citus 12 installed into this PostgreSQL (README.md, "Citus"): without it the
part says so and measures nothing."""

from __future__ import annotations

import statistics
import subprocess
from pathlib import Path

from . import freshness
from .common import BenchError, ROOT, Sandbox, Workspace, say, timed, tool

TABLES = ["dim_facilities", "dim_surgeons", "dim_robots", "fact_procedures", "fact_procedure_telemetry"]
SHARDS = 4


def available() -> bool:
    out = subprocess.run([tool("pg_config"), "--pkglibdir"], capture_output=True, text=True)
    return out.returncode == 0 and (Path(out.stdout.strip()) / "citus.so").exists()


class Cluster:
    """Three sandboxes with citus preloaded; database `wh` on each, the coordinator's metadata naming the
    nodes by their unix socket directories (trust there: no password travels between nodes)."""

    def __init__(self, ws: Workspace):
        self.nodes: list[Sandbox] = []
        for name in ("coordinator", "worker1", "worker2"):
            node = Sandbox(ws.path(f"citus-{name}"))
            self.nodes.append(node)
            node.execute("postgres", "ALTER SYSTEM SET shared_preload_libraries = 'citus'")
            out = subprocess.run([str(ROOT / "tools/pg-sandbox"), "restart", str(node.directory)], capture_output=True, text=True)
            if out.returncode != 0:
                raise BenchError(f"tools/pg-sandbox restart {node.directory} failed: {out.stderr.strip()[-300:]}")
        self.coordinator = self.nodes[0]
        self.coordinator.execute("postgres", f"ALTER SYSTEM SET citus.shard_count = {SHARDS}", "SELECT pg_reload_conf()")
        for node in self.nodes:
            node.execute("postgres", "CREATE DATABASE wh")
            node.execute("wh", "CREATE EXTENSION citus")
        c = self.coordinator
        c.execute("wh", f"SELECT citus_set_coordinator_host('{c.directory}', {c.env['PGPORT']})")
        for worker in self.nodes[1:]:
            c.execute("wh", f"SELECT citus_add_node('{worker.directory}', {worker.env['PGPORT']})")
        self.version = c.query("wh", "SELECT extversion FROM pg_extension WHERE extname = 'citus'")[0][0]

    def destroy(self) -> None:
        for node in self.nodes:
            node.destroy()


def replay(ws: Workspace, config: Path, url: str, mapping: Path, schema: str) -> dict:
    """`cdc replay --schema SCHEMA` of the config's log into the warehouse at `url`."""
    text = config.read_text()
    start = text.index("[warehouse]")
    replay_config = ws.path(f"{config.stem}-replay-{schema}.toml")
    replay_config.write_text(text[:start] + f'[warehouse]\nurl = "{url}"\nmapping = "{mapping}"\n')
    return timed([str(ws.cdc_path), "replay", "--config", str(replay_config), "--schema", schema],
                 stdout=subprocess.DEVNULL, stderr=open(ws.path(f"replay-{schema}.err"), "a"), what="cdc replay").as_dict()


def run(ws: Workspace, *, duration_s: int, poll_ms: int, reps: int, rate: int = 200) -> dict:
    if not available():
        say("citus: Citus is not installed in this PostgreSQL (no citus.so in pg_config --pkglibdir): skipped")
        return {"skipped": "Citus is not installed in this PostgreSQL"}
    say(f"citus: starting a coordinator and two workers ({SHARDS} shards)")
    cluster = Cluster(ws)
    try:
        ws.pg.execute("postgres", "CREATE DATABASE wh_plain")
        plain = freshness.run(ws, rates=[rate], duration_s=duration_s, poll_ms=poll_ms,
                              warehouse=freshness.Warehouse(ws.pg, "wh_plain", ROOT / "schemas/projections/surgical-robotics.toml", "plain"))
        citus_mapping = ROOT / "schemas/projections/surgical-robotics-citus.toml"
        on_citus = freshness.run(ws, rates=[rate], duration_s=duration_s, poll_ms=poll_ms,
                                 warehouse=freshness.Warehouse(cluster.coordinator, "wh", citus_mapping, "citus"), keep=True)
        config = Path(on_citus["config"])
        log = ws.log_stats("log-citus")
        say(f"  replaying the Citus run's log ({log['head']:,} records) into each warehouse, {reps} times")
        runs = {"postgresql": [], "citus": []}
        targets = {"postgresql": (ws.pg.conninfo("wh_plain"), ROOT / "schemas/projections/surgical-robotics.toml", ws.pg, "wh_plain"),
                   "citus": (cluster.coordinator.conninfo("wh"), citus_mapping, cluster.coordinator, "wh")}
        for i in range(reps):
            for engine, (url, mapping, sandbox, database) in targets.items():
                schema = f"replay_{i}"
                runs[engine].append(replay(ws, config, url, mapping, schema))
                if i < reps - 1:
                    sandbox.execute(database, f"DROP SCHEMA {schema} CASCADE")
        last = f"replay_{reps - 1}"
        different = []
        for table in TABLES:
            a = sorted(r[0] for r in ws.pg.query("wh_plain", f"SELECT t::text FROM {last}.{table} t"))
            b = sorted(r[0] for r in cluster.coordinator.query("wh", f"SELECT t::text FROM {last}.{table} t"))
            if a != b:
                different.append(f"{table}: {len(a)} rows on PostgreSQL, {len(b)} on Citus")
        if different:
            raise BenchError("the replays into PostgreSQL and Citus differ: " + "; ".join(different))
        freshness.drop_source(ws, "citus")
        ws.pg.execute("postgres", "DROP DATABASE wh_plain")
        replay_s = {engine: statistics.median(r["wall_s"] for r in rs) for engine, rs in runs.items()}
        p = plain["phases"][0]["freshness_ms"], on_citus["phases"][0]["freshness_ms"]
        result = {
            "citus_version": cluster.version, "shards": SHARDS, "workers": 2, "rate": rate, "reps": reps,
            "freshness": {"postgresql": plain, "citus": {k: v for k, v in on_citus.items() if k != "config"}},
            "freshness_ratio": {q: round(p[1][q] / p[0][q], 2) if p[0][q] else None for q in ("p50", "p99", "max")},
            "replay": {"records": log["head"], "postgresql": runs["postgresql"], "citus": runs["citus"],
                       "median_s": {k: round(v, 2) for k, v in replay_s.items()},
                       "ratio_citus_over_postgresql": round(replay_s["citus"] / replay_s["postgresql"], 2)},
            "replays_identical": True,
        }
        say(f"  freshness p50/p99: PostgreSQL {p[0]['p50']}/{p[0]['p99']} ms, Citus {p[1]['p50']}/{p[1]['p99']} ms "
            f"(ratio {result['freshness_ratio']['p50']}/{result['freshness_ratio']['p99']}); replay "
            f"{replay_s['postgresql']:.2f} s vs {replay_s['citus']:.2f} s (ratio {result['replay']['ratio_citus_over_postgresql']})")
        return result
    finally:
        cluster.destroy()

