"""freshness: source commit → row visible in dw.fact_procedures while `cdc run` captures and projects live,
at several commit rates driven by pgbench (tools/workload, the project's OLTP mix).

Source database `src` (schema + seed), warehouse database `wh`, one `cdc init` and one `cdc run` for every
rate. Per rate: a sampler thread polls `SELECT procedure_key, procedure_id FROM dw.fact_procedures WHERE
procedure_key > last` every --poll-ms and notes when each procedure_id first appears, while
`tools/workload --rate R` (or no rate: the source's maximum) runs for the phase's duration; then the bench
waits until `cdc status --json` shows the projection at the log's head. Every source transaction that
inserted a surgical_procedures row in the phase is taken from `cdc log export`: freshness = (end of the
first poll that returned its last row) − (its commit_time). The row became visible between the previous
poll's start and that moment, so the figures are upper bounds within one poll interval (lower bounds are
kept too). Source, warehouse and sampler share this machine's clock."""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import subprocess
import threading
import time

from pathlib import Path

from .common import BenchError, ROOT, Sandbox, Workspace, say, timed


def commit_ns(text: str) -> int:
    date, _, frac = text.rstrip("Z").partition(".")
    dt = datetime.datetime.strptime(date, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 10**9 + int((frac + "000000000")[:9])


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[max(0, min(len(values) - 1, math.ceil(q * len(values)) - 1))]  # nearest rank


class Sampler(threading.Thread):
    """Polls the warehouse for new fact_procedures rows; seen[procedure_id] = (previous poll's start, this
    poll's end), wall clock ns. Each poll reads the keys above the highest one seen a second ago, not
    above the highest seen: on Citus a batch becomes visible worker by worker (two-phase commit), so a
    poll can see a key of one worker before lower keys of the other."""

    def __init__(self, warehouse: Warehouse, last_key: int, interval_s: float):
        super().__init__(daemon=True)
        self.connection = warehouse.sandbox.connect(warehouse.database)
        self.last_key, self.interval_s = last_key, interval_s
        self.seen: dict[str, tuple[int, int]] = {}
        self.gaps: list[int] = []
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            previous = time.time_ns()
            due = time.monotonic()
            floor, highest = self.last_key, [(time.monotonic(), self.last_key)]  # (when, highest key seen then)
            while not self.stop.is_set():
                start = time.time_ns()
                while len(highest) > 1 and highest[1][0] < time.monotonic() - 1.0:
                    highest.pop(0)
                floor = highest[0][1]
                rows = self.connection.execute(
                    "SELECT procedure_key, procedure_id FROM dw.fact_procedures WHERE procedure_key > %s ORDER BY procedure_key",
                    (floor,)).fetchall()
                end = time.time_ns()
                for key, procedure in rows:
                    self.seen.setdefault(procedure, (previous, end))
                    self.last_key = max(self.last_key, key)
                highest.append((time.monotonic(), self.last_key))
                self.gaps.append(start - previous)
                previous = start
                due += self.interval_s
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    due = time.monotonic()
        except Exception as error:  # noqa: BLE001 - reported by the caller
            self.error = error
        finally:
            self.connection.close()


def status(ws: Workspace, config) -> dict:
    out = subprocess.run([str(ws.cdc_path), "status", "--config", str(config), "--json"], capture_output=True, text=True)
    if out.returncode not in (0, 1) or not out.stdout.strip():
        raise BenchError(f"cdc status failed (status {out.returncode}): {out.stderr.strip()[-200:]}")
    return json.loads(out.stdout)


def wait_projected(ws: Workspace, config, end_lsn: str | None, timeout_s: float, err_path) -> float:
    """Seconds until the log has everything up to `end_lsn` and the warehouse is at the log's head."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        s = status(ws, config)
        log, projection = s.get("log") or {}, s.get("projection") or {}
        caught_up = log and projection and projection.get("last_seq", -1) >= log.get("head_seq", 0)
        if caught_up and (end_lsn is None or lsn(log["resume_lsn"]) >= lsn(end_lsn)):
            return time.monotonic() - started
        time.sleep(0.1)
    raise BenchError(f"the warehouse did not reach the log's head within {timeout_s:.0f} s (see {err_path})")


def lsn(text: str) -> int:
    hi, lo = text.split("/")
    return int(hi, 16) << 32 | int(lo, 16)


@dataclasses.dataclass
class Warehouse:
    """Where the freshness run projects: a database of a sandbox (made by the caller, or database `wh` of the
    workspace's cluster, created and dropped by the run), with a mapping."""
    sandbox: Sandbox
    database: str
    mapping: Path
    name: str = "fresh"


def run(ws: Workspace, *, rates: list[int | None], duration_s: int, poll_ms: int,
        warehouse: Warehouse | None = None, keep: bool = False) -> dict:
    """Freshness at each rate; with `keep`, the source, log and warehouse stay for the caller (who drops them)."""
    pg = ws.pg
    own = warehouse is None
    warehouse = warehouse or Warehouse(pg, "wh", ROOT / "schemas/projections/surgical-robotics.toml")
    name = warehouse.name
    say(f"freshness ({name}): rates {', '.join(str(r) if r else 'max' for r in rates)} tx/s, {duration_s} s each, "
        f"dw.fact_procedures polled every {poll_ms} ms")
    pg.make_source("src")
    if own:
        pg.execute("postgres", "CREATE DATABASE wh")
    config = ws.write_config(f"cdc-{name}", "src", log=f"log-{name}", slot=f"cdc_{name}", publication=f"cdc_{name}",
                             warehouse_url=warehouse.sandbox.conninfo(warehouse.database), mapping=warehouse.mapping)
    err_path = ws.path(f"cdc-{name}.err")
    ws.cdc(["init", "--config", str(config)], stderr_to=err_path, what="cdc init")
    err = open(err_path, "a")
    process = subprocess.Popen([str(ws.cdc_path), "run", "--config", str(config)], stderr=err)
    ws.background.append(process)
    initial = wait_projected(ws, config, None, 300, err_path)
    say(f"  snapshot projected {initial:.1f} s after cdc run started")
    phases = []
    for rate in rates:
        if process.poll() is not None:
            raise BenchError(f"cdc run exited with status {process.returncode} (see {err_path})")
        phases.append(phase(ws, config, rate, duration_s, poll_ms, warehouse))
    process.terminate()
    process.wait(timeout=60)
    err.close()
    if process.returncode != 0:
        raise BenchError(f"cdc run exited with status {process.returncode} at SIGTERM (see {err_path})")
    result = {"duration_s": duration_s, "poll_ms": poll_ms, "snapshot_projection_s": round(initial, 2), "phases": phases}
    if keep:
        result["config"] = str(config)
        return result
    if own:
        pg.execute("postgres", "DROP DATABASE wh")
    drop_source(ws, name)
    return result


def drop_source(ws: Workspace, name: str) -> None:
    ws.pg.execute("src", f"SELECT pg_drop_replication_slot('cdc_{name}')")
    ws.pg.execute("postgres", "DROP DATABASE src")


def phase(ws: Workspace, config, rate: int | None, duration_s: int, poll_ms: int, warehouse: Warehouse) -> dict:
    pg = ws.pg
    label = f"{rate} tx/s" if rate else "max rate"
    head_before = status(ws, config)["log"]["head_seq"]
    last_key = warehouse.sandbox.query(warehouse.database, "SELECT coalesce(max(procedure_key), 0) FROM dw.fact_procedures")[0][0]
    sampler = Sampler(warehouse, last_key, poll_ms / 1000)
    sampler.start()
    time.sleep(0.5)
    clients = 4 if rate else 8
    args = [str(ROOT / "tools/workload"), "--clients", str(clients), "--duration", str(duration_s)]
    if rate:
        args += ["--rate", str(rate)]
    started_ns = time.time_ns()
    workload_out = ws.path(f"workload-{rate or 'max'}.txt")
    with open(workload_out, "w") as out:
        timed(args, stdout=out, stderr=out, env=pg.process_env("src"), what="tools/workload")
    tps = next((float(line.split()[2]) for line in workload_out.read_text().splitlines() if line.startswith("tps = ")), None)
    end = pg.query("src", "SELECT pg_current_wal_lsn()::text")[0][0]
    catch_up = wait_projected(ws, config, end, 120, ws.path(f"cdc-{warehouse.name}.err"))
    time.sleep(0.2)
    sampler.stop.set()
    sampler.join()
    if sampler.error:
        raise BenchError(f"the warehouse sampler failed: {sampler.error}")
    head_after = status(ws, config)["log"]["head_seq"]

    export = ws.cdc(["log", "export", "--log", str(ws.path(f"log-{warehouse.name}")), "--format", "jsonl", "--from", str(head_before + 1),
                     "--to", str(head_after), "--table", "public.surgical_procedures", "--op", "insert,delete"])
    transactions: dict[tuple, list] = {}
    deleted = set()
    for line in export.splitlines():
        e = json.loads(line)
        if e["op"] == "delete":
            deleted.add(e["before"]["procedure_id"])
        elif e["xid"] is not None:
            transactions.setdefault((e["lsn"], e["xid"]), [commit_ns(e["commit_time"]), []])[1].append(e["after"]["procedure_id"])
    samples, unseen = [], 0  # (commit ns, upper ms, lower ms)
    for commit, procedures in transactions.values():
        hits = [sampler.seen[p] for p in procedures if p in sampler.seen]
        unseen += sum(1 for p in procedures if p not in sampler.seen and p not in deleted)
        if hits:
            samples.append((commit, (max(h[1] for h in hits) - commit) / 1e6, (max(h[0] for h in hits) - commit) / 1e6))
    if not samples:
        raise BenchError(f"freshness at {label}: no procedure insert was seen in the warehouse")
    upper = sorted(s[1] for s in samples)
    lower = sorted(s[2] for s in samples)
    gaps = sorted(sampler.gaps[1:])
    r1 = lambda v: None if v is None else round(v, 1)
    result = {
        "rate": rate, "clients": clients, "workload_tps": tps, "transactions_with_procedure_inserts": len(transactions),
        "measured": len(samples), "rows_never_seen": unseen, "catch_up_after_workload_s": round(catch_up, 2),
        "log_records": head_after - head_before,
        "freshness_ms": {"p50": r1(percentile(upper, .5)), "p90": r1(percentile(upper, .9)), "p99": r1(percentile(upper, .99)),
                         "max": r1(upper[-1]), "mean": r1(sum(upper) / len(upper))},
        "freshness_ms_lower_bound": {"p50": r1(percentile(lower, .5)), "p99": r1(percentile(lower, .99)), "max": r1(lower[-1])},
        "poll_gap_ms": {"p50": r1(percentile(gaps, .5) / 1e6 if gaps else None), "p99": r1(percentile(gaps, .99) / 1e6 if gaps else None)},
        "series": [[round((c - started_ns) / 1e9, 3), round(u, 2)] for c, u, _ in sorted(samples)],
    }
    say(f"  {label}: source {tps} tx/s, freshness p50 {result['freshness_ms']['p50']} ms, p99 {result['freshness_ms']['p99']} ms,"
        f" max {result['freshness_ms']['max']} ms ({len(samples)} transactions; {unseen} rows never seen)")
    return result
