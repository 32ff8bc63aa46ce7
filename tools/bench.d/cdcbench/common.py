"""What every part of tools/bench shares: the throwaway cluster, the cdc binary, timed processes, and
reading cdc's state through cdc's own commands (never through the log's file format)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, asdict
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[3]
PGBIN = Path(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"))


class BenchError(Exception):
    """A failure the run cannot go on from: printed as one line, exit 1."""


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def tool(name: str) -> str:
    """A PostgreSQL client program: PGBIN's, else the one on PATH."""
    path = PGBIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise BenchError(f"{name} not found (set PGBIN, or apt-get install postgresql-client-15)")
    return found


@dataclass
class Timed:
    """One process run to its end: wall clock, CPU (getrusage of the child) and peak memory, read from
    /proc while it runs (ru_maxrss would include the forking Python's own memory from before the exec):
    max_rss_mib is the kernel's VmHWM (resident pages of every kind: a process that maps its data, as
    LMDB does, counts the pages it has read), max_anon_mib the highest RssAnon seen (its own heap and
    stacks, what it allocated)."""
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float | None
    max_anon_mib: float | None
    rc: int

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _watch_peak(pid: int, done: threading.Event, peak: list[int]) -> None:
    status = Path(f"/proc/{pid}/status")
    while not done.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
                elif line.startswith("RssAnon:"):
                    peak[1] = max(peak[1], int(line.split()[1]))
        except (OSError, ValueError):
            return
        done.wait(0.02)


def timed(cmd: list[str], *, stdout=None, stderr=None, env: dict | None = None, check: bool = True,
          what: str | None = None) -> Timed:
    """Runs `cmd` to its end and measures it."""
    started = time.monotonic()
    process = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)
    done, peak = threading.Event(), [0, 0]
    watcher = threading.Thread(target=_watch_peak, args=(process.pid, done, peak), daemon=True)
    watcher.start()
    try:
        # WNOWAIT: the process stays a zombie, its /proc entry readable, until the watcher's last look.
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        done.set()
        watcher.join()
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        done.set()
        process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    result = Timed(time.monotonic() - started, usage.ru_utime, usage.ru_stime, peak[0] / 1024 if peak[0] else None,
                   peak[1] / 1024 if peak[1] else None, process.returncode)
    if check and result.rc != 0:
        raise BenchError(f"{what or cmd[0]} exited with status {result.rc}")
    return result


def peak_rss(runs: list[dict]) -> int | None:
    """The highest max_rss_mib of some timed runs (as dicts), MiB; None when none was seen."""
    seen = [x["max_rss_mib"] for x in runs if x["max_rss_mib"] is not None]
    return round(max(seen)) if seen else None


class Sandbox:
    """A throwaway PostgreSQL cluster made by tools/pg-sandbox (fsync on, wal_level=logical)."""

    def __init__(self, directory: Path):
        self.directory = directory
        out = subprocess.run([str(ROOT / "tools/pg-sandbox"), "start", str(directory)], capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError(f"tools/pg-sandbox start {directory} failed: {out.stderr.strip().splitlines()[-1:]}")
        self.env: dict[str, str] = {}
        for line in (directory / "env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key:
                self.env[key.strip()] = value.strip().strip("'\"")
        self.version = self.query("postgres", "SHOW server_version")[0][0]
        if self.query("postgres", "SHOW fsync")[0][0] != "on":
            raise BenchError("the sandbox runs with fsync off: the figures would mean nothing")

    def conninfo(self, database: str) -> str:
        e = self.env
        return f"host={e['PGHOST']} port={e['PGPORT']} dbname={database} user={e['PGUSER']} passfile={e['PGPASSFILE']}"

    def process_env(self, database: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        if database:
            env["PGDATABASE"] = database
        return env

    def connect(self, database: str) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(database), autocommit=True)

    def execute(self, database: str, *statements: str) -> None:
        with self.connect(database) as connection:
            for statement in statements:
                connection.execute(statement)

    def query(self, database: str, statement: str) -> list[tuple]:
        with self.connect(database) as connection:
            return connection.execute(statement).fetchall()

    def psql(self, database: str, *args: str) -> None:
        """psql with ON_ERROR_STOP (for SQL files and multi-statement scripts)."""
        env = self.process_env()
        env["PGOPTIONS"] = "-c client_min_messages=warning"
        out = subprocess.run([tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database, *args],
                             env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError(f"psql in {database} failed: {out.stderr.strip()[-300:]}")

    def psql_file(self, database: str, path: Path) -> None:
        self.psql(database, "-f", str(path))

    def make_source(self, database: str) -> None:
        """A source database: schemas/source/*.sql and tools/seed.sql."""
        self.execute("postgres", f"CREATE DATABASE {database}")
        for path in sorted((ROOT / "schemas/source").glob("*.sql")):
            self.psql_file(database, path)
        self.psql_file(database, ROOT / "tools/seed.sql")

    def autovacuum(self, on: bool) -> None:
        self.execute("postgres", "ALTER SYSTEM RESET autovacuum" if on else "ALTER SYSTEM SET autovacuum = off",
                     "SELECT pg_reload_conf()")

    def destroy(self) -> None:
        subprocess.run([str(ROOT / "tools/pg-sandbox"), "destroy", str(self.directory)], capture_output=True)


def build_cdc() -> Path:
    """`swift build -c release --product cdc` (waiting while another SwiftPM holds the build folder)."""
    say("building cdc (swift build -c release --product cdc)")
    for attempt in range(30):
        out = subprocess.run(["swift", "build", "-c", "release", "--product", "cdc"], cwd=ROOT,
                             capture_output=True, text=True)
        if out.returncode == 0:
            break
        if "another instance of SwiftPM" in out.stdout + out.stderr and attempt < 29:
            say("another SwiftPM instance uses the build folder; retrying in 20 s")
            time.sleep(20)
            continue
        raise BenchError("swift build failed:\n" + (out.stdout + out.stderr)[-2000:])
    path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()
    return Path(path) / "cdc"


class Workspace:
    """The run's work directory, its own copy of the cdc binary and its cluster; removed at the end
    unless `keep`. Background processes started through it are stopped first."""

    def __init__(self, cdc: Path, directory: Path | None, keep: bool):
        self.keep = keep
        if directory:
            directory.mkdir(parents=True, exist_ok=True)
            if any(directory.iterdir()):
                raise BenchError(f"--dir {directory} exists and is not empty")
            self.directory = directory.resolve()
        else:
            self.directory = Path(tempfile.mkdtemp(prefix="cdc-bench."))
        os.chmod(self.directory, 0o755)  # the cluster runs as `postgres` when we are root
        (self.directory / "bin").mkdir()
        self.cdc_path = self.directory / "bin/cdc"
        shutil.copy2(cdc, self.cdc_path)  # another build must not swap the binary mid-run
        self.background: list[subprocess.Popen] = []
        say(f"starting a PostgreSQL sandbox in {self.directory}/pg (fsync on)")
        self.pg = Sandbox(self.directory / "pg")

    def path(self, name: str) -> Path:
        return self.directory / name

    def close(self) -> None:
        for process in self.background:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if self.keep:
            say(f"kept {self.directory} (remove with: tools/pg-sandbox destroy {self.directory}/pg && rm -rf {self.directory})")
        else:
            self.pg.destroy()
            shutil.rmtree(self.directory, ignore_errors=True)

    def write_config(self, name: str, database: str, *, log: str, slot: str | None = None,
                     publication: str | None = None, warehouse: str | None = None, warehouse_url: str | None = None,
                     mapping: Path | None = None, extra: str = "") -> Path:
        """cdc.toml for source database `database` of the workspace's cluster; the warehouse is database
        `warehouse` of that cluster, or `warehouse_url`, with `mapping` (default: the PostgreSQL one)."""
        path = self.path(f"{name}.toml")
        text = (f'[source]\nurl = "{self.pg.conninfo(database)}"\nslot = "{slot or name}"\n'
                f'publication = "{publication or name}"\n')
        text += f'[log]\npath = "{self.path(log)}"\n'
        url = warehouse_url or (self.pg.conninfo(warehouse) if warehouse else None)
        if url:
            mapping = mapping or ROOT / "schemas/projections/surgical-robotics.toml"
            text += f'[warehouse]\nurl = "{url}"\nmapping = "{mapping}"\n'
        path.write_text(text + extra)
        return path

    def cdc(self, args: list[str], *, stderr_to: Path | None = None, what: str | None = None) -> str:
        """Runs cdc to its end and returns its stdout; a failure is a BenchError with its last error line."""
        err = open(stderr_to, "a") if stderr_to else subprocess.PIPE
        try:
            out = subprocess.run([str(self.cdc_path)] + args, stdout=subprocess.PIPE, stderr=err, text=True)
        finally:
            if stderr_to:
                err.close()
        if out.returncode != 0:
            detail = out.stderr.strip().splitlines()[-1:] if out.stderr else [f"see {stderr_to}"]
            raise BenchError(f"{what or 'cdc ' + args[0]} failed (status {out.returncode}): {' '.join(detail)}")
        return out.stdout

    def log_stats(self, log: str) -> dict:
        """`cdc log stats --format json`: head, counts per table and op, transactions, sizes."""
        return json.loads(self.cdc(["log", "stats", "--log", str(self.path(log)), "--format", "json"]))


def row_changes(before: dict, after: dict) -> dict:
    """Row changes between two `cdc log stats`: per op, and the transactions that hold them."""
    ops: dict[str, int] = {}
    for table, counts in after["by_table"].items():
        for op, n in counts.items():
            ops[op] = ops.get(op, 0) + n - before["by_table"].get(table, {}).get(op, 0)
    ops = {op: n for op, n in ops.items() if n}
    rows = sum(n for op, n in ops.items() if op in ("insert", "update", "delete", "truncate"))
    return {"ops": ops, "row_changes": rows, "transactions": after["transactions"] - before["transactions"]}


def machine() -> dict:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    git = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_mib": memory, "kernel": platform.release(),
            "python": platform.python_version(), "commit": git.stdout.strip() or "unknown",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": os.getloadavg()}
