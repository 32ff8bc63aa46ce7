"""bench-report/: results.json (everything measured), report.md (the figures) and the PNG charts,
rendered offline with matplotlib's Agg backend."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def write(out: Path, results: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, separators=(",", ":")) + "\n")  # one line: the series are long
    m = results["machine"]
    lines = [
        "# cdc benchmarks",
        "",
        f"Run {m['date']}, commit `{m['commit']}`, {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_mib']:,} MiB,",
        f"Linux {m['kernel']}, PostgreSQL {results.get('postgres', '?')} (fsync on), load average at start "
        f"{' '.join(f'{x:.2f}' for x in m['load_average'])}. Command: `{results['command']}`.",
        "Every comparison is against its reference measured in the same run on the same machine: read the",
        "ratios, not the absolute times (these machines are shared).",
        "",
    ]
    if "capture" in results:
        lines += capture_section(out, results["capture"])
    if "freshness" in results:
        lines += freshness_section(out, results["freshness"])
    if "replay" in results:
        lines += replay_section(out, results["replay"])
    if "scale" in results:
        lines += scale_section(out, results["scale"])
    if "citus" in results:
        lines += citus_section(results["citus"])
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def capture_section(out: Path, c: dict) -> list[str]:
    lines = [
        "## Capture: draining a backlog, cdc against pg_recvlogical",
        "",
        "`cdc run --no-project --endpos` and `pg_recvlogical --start --endpos` (pgoutput protocol 1, its default",
        f"fsync every 10 s and at exit) drain the same backlog from their own slots; median of {c['reps']}",
        "alternating runs. cdc writes every change durably (LMDB commit with fdatasync) into the hashed log.",
        "",
        "| backlog | row changes | transactions | cdc s | pg_recvlogical s | cdc / pg_recvlogical | cdc rows/s "
        "| cdc CPU s | pg_recvlogical CPU s | cdc peak RSS MiB | pg_recvlogical peak RSS MiB | log B/change (data.mdb) | log B/change (records) | pgoutput B/change |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in c["shapes"]:
        lines.append(
            f"| {s['shape']} | {s['row_changes']:,} | {s['transactions']:,} | {s['cdc']['median_s']:.2f} "
            f"| {s['pg_recvlogical']['median_s']:.2f} | **{s['ratio_cdc_over_pgr']:.2f}** | {s['cdc']['rows_per_s']:,} "
            f"| {s['cdc']['median_cpu_s']:.2f} | {s['pg_recvlogical']['median_cpu_s']:.2f} | {fmt(s['cdc']['peak_rss_mib'])} | {fmt(s['pg_recvlogical']['peak_rss_mib'])} "
            f"| {fmt(s['log_file_bytes_per_change'])} | {fmt(s['log_record_bytes_per_change'])} "
            f"| {fmt(s['pgoutput_bytes_per_change'])} |")
    lines += ["", "![capture](capture.png)", ""]
    figure, axes = plt.subplots(1, len(c["shapes"]), figsize=(4 * len(c["shapes"]), 3.2), squeeze=False)
    for ax, s in zip(axes[0], c["shapes"]):
        bars_with_runs(ax, ["cdc", "pg_recvlogical"], [s["cdc"], s["pg_recvlogical"]], ["#3b6ea5", "#999999"])
        ax.set_title(f"{s['shape']}: {s['row_changes']:,} row changes", fontsize=9)
        ax.set_ylabel("seconds to drain (median, dots: runs)", fontsize=8)
        ax.tick_params(labelsize=8)
    save(figure, out / "capture.png")
    return lines


def freshness_section(out: Path, f: dict) -> list[str]:
    lines = [
        "## Freshness: source commit to visible in dw.fact_procedures",
        "",
        "`cdc run` (capture and projection) live; pgbench (tools/workload, the OLTP mix) commits at each rate for",
        f"{f['duration_s']} s; the warehouse is polled every {f['poll_ms']} ms (the figures are upper bounds within one",
        "poll; every source transaction that inserted a procedure is measured).",
        "",
        "| rate | source tx/s | transactions measured | p50 ms | p90 ms | p99 ms | max ms | mean ms | lower bound p99 ms | catch-up after load s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in f["phases"]:
        m, lb = p["freshness_ms"], p["freshness_ms_lower_bound"]
        lines.append(f"| {label(p)} | {fmt(p['workload_tps'])} | {p['measured']:,} | {fmt(m['p50'], '.1f')} | {fmt(m['p90'], '.1f')} "
                     f"| **{fmt(m['p99'], '.1f')}** | {fmt(m['max'], '.1f')} | {fmt(m['mean'], '.1f')} | {fmt(lb['p99'], '.1f')} "
                     f"| {p['catch_up_after_workload_s']:.2f} |")
    lines += ["", "![freshness over time](freshness-time.png)", "", "![freshness distribution](freshness-cdf.png)", ""]
    figure, axes = plt.subplots(len(f["phases"]), 1, figsize=(8, 2.2 * len(f["phases"])), squeeze=False, sharex=True)
    for ax, p in zip(axes[:, 0], f["phases"]):
        xs, ys = zip(*p["series"]) if p["series"] else ([], [])
        ax.plot(xs, ys, ".", markersize=2, color="#3b6ea5")
        ax.set_yscale("log")
        ax.set_ylabel("ms", fontsize=8)
        ax.set_title(f"{label(p)} ({fmt(p['workload_tps'])} tx/s): commit to visible, per transaction", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("seconds into the phase (source commit time)", fontsize=8)
    save(figure, out / "freshness-time.png")
    figure, ax = plt.subplots(figsize=(6, 3.5))
    for p in f["phases"]:
        ys = sorted(y for _, y in p["series"])
        ax.plot(ys, [(i + 1) / len(ys) for i in range(len(ys))], label=f"{label(p)} ({fmt(p['workload_tps'])} tx/s)")
    ax.set_xscale("log")
    ax.set_xlabel("commit to visible in dw.fact_procedures, ms", fontsize=8)
    ax.set_ylabel("fraction of transactions", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    save(figure, out / "freshness-cdf.png")
    return lines


def replay_section(out: Path, r: dict) -> list[str]:
    log, c = r["log"], r["checks"]
    lines = [
        "## Replay: rebuilding the warehouse from the log",
        "",
        f"A log of {log['records']:,} records ({log['transactions']:,} transactions; built by pgbench with the OLTP mix and",
        "`cdc run --no-project`), rebuilt into a new schema by `cdc replay`, against the seeds' daily batch (full reload",
        "from the source tables through CSV staging) and against the physical limit (the final rows of the replayed",
        "schema COPYed into empty tables, the same indexes built at the end; in text format as pg_restore does, the",
        "issue's reference, and in binary format, which cdc's writer uses, the lower limit). Median of "
        f"{len(r['replay']['runs'])} alternating runs, each after a CHECKPOINT.",
        "",
        "| | seconds | rows or events | per second | replay / this |",
        "|---|---:|---:|---:|---:|",
        f"| `cdc replay` | {r['replay']['median_s']:.2f} | {log['records']:,} events | {r['replay']['events_per_s']:,} events/s | 1.00 |",
        f"| seeds' full reload | {r['reload']['median_s']:.2f} | {r['reload']['rows']:,} rows | "
        f"{round(r['reload']['rows'] / r['reload']['median_s']):,} rows/s | **{r['ratio_replay_over_reload']:.2f}** |",
        f"| physical limit (COPY + {r['physical']['indexes']} indexes) | {r['physical']['median_s']:.2f} | {r['physical']['rows']:,} rows "
        f"| {round(r['physical']['rows'] / r['physical']['median_s']):,} rows/s | **{r['ratio_replay_over_physical']:.2f}** |",
        f"| physical limit, binary COPY | {r['physical_binary']['median_s']:.2f} | {r['physical']['rows']:,} rows "
        f"| {round(r['physical']['rows'] / r['physical_binary']['median_s']):,} rows/s | **{r['ratio_replay_over_physical_binary']:.2f}** |",
        "",
        f"Peak RSS of `cdc replay`: {fmt(r['replay']['peak_rss_mib'])} MiB. Checks: replay = source "
        f"{yes(c['replay_vs_source']['equal'])}, reload = source {yes(c['reload_vs_source']['equal'])}, every replay identical "
        f"row for row {yes(c['replays_identical'])}.",
        "",
        "![replay](replay.png)",
        "",
    ]
    figure, ax = plt.subplots(figsize=(6, 2.6))
    bars_with_runs(ax, ["cdc replay", "seeds' reload", "physical limit", "physical, binary"],
                   [r["replay"], r["reload"], r["physical"], r["physical_binary"]],
                   ["#3b6ea5", "#999999", "#555555", "#333333"], horizontal=True)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds for a log of {log['records']:,} records (median, dots: runs)", fontsize=8)
    ax.tick_params(labelsize=8)
    save(figure, out / "replay.png")
    return lines


def scale_section(out: Path, s: dict) -> list[str]:
    lines = [
        "## Scale: cost per event as the log grows",
        "",
        "The source grows in transactions of 1,000 row changes (telemetry inserts, procedure and surgeon updates);",
        "at each size: `cdc run --no-project --endpos` of the new events, `cdc log verify` and `cdc replay` of the whole log.",
        "",
        "Memory per process: peak RSS (all resident pages, including the log's pages LMDB maps and reads) / peak",
        "anonymous RSS (what the process allocated itself), MiB.",
        "",
        "Replay WAL: what the replay wrote, MiB per million events; checkpoints: those its WAL requested",
        "(PostgreSQL's `max_wal_size`, 1 GB by default), each followed by full-page writes.",
        "",
        "| events | log MiB | dimension rows | capture s/M | capture memory | verify s/M | verify memory | replay s/M | replay memory | replay WAL MiB/M | checkpoints during replay |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in s["points"]:
        r = p["replay"]
        wal = fmt(r["wal_bytes"] / 2**20 / (p["events"] / 1e6), ".0f")
        lines.append(f"| {p['events']:,} | {p['log_bytes'] / 2**20:,.0f} | {p['dimension_rows']:,} | {fmt(p['capture']['s_per_million'], '.1f')} "
                     f"| {memory(p['capture'])} | {fmt(p['verify']['s_per_million'], '.1f')} | {memory(p['verify'])} "
                     f"| {fmt(r['s_per_million'], '.1f')} | {memory(r)} | {wal} | {r['checkpoints_requested']} |")
    lines += ["", "![cost per event](scale.png)", ""]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    xs = [p["events"] for p in s["points"]]
    for key, color in (("capture", "#3b6ea5"), ("verify", "#6aa84f"), ("replay", "#cc4125")):
        left.plot(xs, [p[key]["s_per_million"] for p in s["points"]], "o-", color=color, label=key)
        right.plot(xs, [p[key]["max_anon_mib"] for p in s["points"]], "o-", color=color, label=key)
    for ax, title in ((left, "seconds per million events"), (right, "peak anonymous RSS, MiB")):
        ax.set_xscale("log")
        ax.set_xlabel("log size, events", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    left.legend(fontsize=8)
    save(figure, out / "scale.png")
    return lines


def memory(t: dict) -> str:
    return f"{fmt(t['max_rss_mib'])} / {fmt(t['max_anon_mib'])}"


def yes(flag: bool) -> str:
    return "yes" if flag else "**NO**"


def label(phase: dict) -> str:
    return f"{phase['rate']} tx/s" if phase["rate"] else "source maximum"


def bars_with_runs(ax, names: list[str], measured: list[dict], colors: list[str], horizontal: bool = False) -> None:
    """One bar per measurement at its median_s, a dot per run (wall_s) on it."""
    medians = [m["median_s"] for m in measured]
    (ax.barh if horizontal else ax.bar)(names, medians, color=colors)
    for i, m in enumerate(measured):
        walls = [run["wall_s"] for run in m["runs"]]
        position = [i] * len(walls)
        ax.plot(*((walls, position) if horizontal else (position, walls)), "k.", markersize=4)


def save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def fmt(value, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def citus_section(c: dict) -> list[str]:
    lines = ["## Citus: the warehouse distributed, against plain PostgreSQL", ""]
    if "skipped" in c:
        return lines + [f"Skipped: {c['skipped']} (README.md, \"Citus\").", ""]
    pg, ci = c["freshness"]["postgresql"]["phases"][0], c["freshness"]["citus"]["phases"][0]
    lines += [
        f"Citus {c['citus_version']}, a coordinator and {c['workers']} workers on this machine, {c['shards']} shards; the same",
        f"source workload at {c['rate']} tx/s projected by `cdc run` into plain PostgreSQL (surgical-robotics.toml) and",
        "into Citus (surgical-robotics-citus.toml), one after the other; then the Citus run's log replayed into a new",
        f"schema of each (median of {c['reps']}), the two replays checked row for row (identical).",
        "",
        "| warehouse | source tx/s | transactions measured | p50 ms | p99 ms | max ms | replay s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| PostgreSQL | {fmt(pg['workload_tps'])} | {pg['measured']:,} | {fmt(pg['freshness_ms']['p50'], '.1f')} | {fmt(pg['freshness_ms']['p99'], '.1f')} "
        f"| {fmt(pg['freshness_ms']['max'], '.1f')} | {c['replay']['median_s']['postgresql']:.2f} |",
        f"| Citus | {fmt(ci['workload_tps'])} | {ci['measured']:,} | {fmt(ci['freshness_ms']['p50'], '.1f')} | {fmt(ci['freshness_ms']['p99'], '.1f')} "
        f"| {fmt(ci['freshness_ms']['max'], '.1f')} | {c['replay']['median_s']['citus']:.2f} |",
        f"| **Citus / PostgreSQL** | | | **{fmt(c['freshness_ratio']['p50'], '.2f')}** | **{fmt(c['freshness_ratio']['p99'], '.2f')}** "
        f"| {fmt(c['freshness_ratio']['max'], '.2f')} | **{c['replay']['ratio_citus_over_postgresql']:.2f}** |",
        "",
        f"Replayed log: {c['replay']['records']:,} records.",
        "",
    ]
    return lines
