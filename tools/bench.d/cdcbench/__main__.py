"""tools/bench [capture|freshness|replay|scale|all] [--quick] ... — see tools/README.md "bench"."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from . import capture, citus, freshness, replay, report, scale
from .common import ROOT, BenchError, Workspace, build_cdc, machine, say

PARTS = {"capture": capture, "citus": citus, "freshness": freshness, "replay": replay, "scale": scale}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/bench",
        description="cdc's benchmarks, each against a reference measured in the same run; writes "
                    "OUT/report.md, OUT/results.json and PNG charts.")
    parser.add_argument("part", nargs="?", default="all", choices=sorted(PARTS) + ["all"],
                        help="what to measure (default: all of them; citus only where Citus is installed)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a run of a few minutes")
    parser.add_argument("--cdc", type=Path, help="this cdc binary (default: swift build -c release --product cdc)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-report", help="report directory (default: bench-report/)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new one under $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and the running cluster")
    parser.add_argument("--reps", type=int, help="repetitions of each timed comparison (default 3, --quick 1)")
    parser.add_argument("--changes", type=int, help="capture: row changes of the small-transaction backlog (default 200,000; --quick 20,000)")
    parser.add_argument("--huge-rows", type=int, help="capture: rows of the huge transaction (default 1,000,000; --quick 100,000)")
    parser.add_argument("--duration", type=int, help="freshness: seconds of load at each rate (default 30, --quick 10)")
    parser.add_argument("--events", type=int, help="replay: records of the log replayed (default 1,000,000; --quick 100,000)")
    parser.add_argument("--sizes", help="scale: comma-separated log sizes in events (default 100000,1000000,10000000; --quick 50000,200000)")
    parser.add_argument("--poll-ms", type=int, default=5, help="freshness: warehouse poll interval (default 5)")
    args = parser.parse_args(argv)
    for name in ("reps", "changes", "huge_rows", "duration", "poll_ms", "events"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    reps = args.reps or (1 if args.quick else 3)
    try:
        sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else ([50_000, 200_000] if args.quick else [100_000, 1_000_000, 10_000_000])
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if any(x <= 0 for x in sizes) or sizes != sorted(sizes):
        parser.error("--sizes must be positive and increasing")
    parts = sorted(PARTS) if args.part == "all" else [args.part]

    cdc = args.cdc.resolve() if args.cdc else build_cdc()
    if not cdc.is_file():
        raise BenchError(f"no cdc binary at {cdc}")
    ws = Workspace(cdc, args.dir, args.keep)
    results: dict = {"command": "tools/bench " + " ".join(shlex.quote(a) for a in argv), "machine": machine(),
                     "postgres": ws.pg.version, "quick": args.quick}
    try:
        if "capture" in parts:
            results["capture"] = capture.run(
                ws, changes=args.changes or (20_000 if args.quick else 200_000),
                huge_rows=args.huge_rows or (100_000 if args.quick else 1_000_000), reps=reps)
        if "freshness" in parts:
            results["freshness"] = freshness.run(
                ws, rates=[200, 1000, None], duration_s=args.duration or (10 if args.quick else 30), poll_ms=args.poll_ms)
        if "replay" in parts:
            results["replay"] = replay.run(ws, events=args.events or (100_000 if args.quick else 1_000_000), reps=reps)
        if "scale" in parts:
            results["scale"] = scale.run(ws, sizes=sizes)
        if "citus" in parts:
            results["citus"] = citus.run(ws, duration_s=args.duration or (10 if args.quick else 30), poll_ms=args.poll_ms, reps=reps)
    finally:
        ws.close()
    path = report.write(args.out, results)
    say(f"report: {path}")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"bench: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
