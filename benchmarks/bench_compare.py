"""The reproduction table: every method x 3 seeds on the embedded default, timed end to end.

Usage: python benchmarks/bench_compare.py [--preset tiny] [--seeds 0,1,2] [--shards 2]
                                          [--methods a,b] [--ship compare-tiny] [overrides...]

Starts ``--shards`` processes of ``dmole-lab compare --shard i/n`` side by side (each with
cores / shards torch threads) over the same runs folder, waits for all, then writes the table of
every finished run (``dmole-lab compare --table-only``). Finished runs are reused, so an
interrupted benchmark resumes where it stopped. Reports the wall time of the whole comparison
and writes benchmarks/results/compare.json; ``--ship NAME`` copies the tables to
``results/NAME`` for the notebooks, with the light part of every finished run (manifest, score
matrix, metrics); ``--resume-from NAME`` first copies those runs into ``runs_dir``, so a sweep
continued on a fresh clone only trains what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from dmole_lab.config import build_config, parse_cli_overrides, resolve_path
from dmole_lab.viz.results import RESULTS_DIR, ship_comparison, unpack_runs


def main(argv=None) -> int:
    """Run the shards, then tabulate, time and optionally ship."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--methods", default=None, help="default: every peer and ablation")
    p.add_argument("--ship", default=None, help="copy the tables to results/NAME")
    p.add_argument("--resume-from", default=None,
                   help="start from the finished runs shipped in results/NAME")
    p.add_argument("--results-dir", default=str(RESULTS_DIR),
                   help="where --ship and --resume-from find results/NAME")
    p.add_argument("--table-only", action="store_true",
                   help="train nothing: tabulate (and ship) the finished runs")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "compare.json"))
    args, rest = p.parse_known_args(argv)
    if args.shards < 1:
        raise SystemExit(f"--shards must be >= 1, got {args.shards}")
    cfg = build_config(args.preset, parse_cli_overrides(rest))  # bad overrides fail here
    runs_dir = resolve_path(cfg.runs_dir)
    out = runs_dir / f"compare-{args.preset}"
    if args.resume_from:
        taken = unpack_runs(args.resume_from, runs_dir, Path(args.results_dir))
        print(f"{len(taken)} finished runs taken from {args.results_dir}/{args.resume_from}")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "dmole_lab", "compare", "--quiet", "--preset", args.preset,
            "--seeds", args.seeds, "--out", str(out), *rest]
    if args.methods:
        base += ["--methods", args.methods]
    threads = max(1, (os.cpu_count() or 1) // args.shards)
    start = time.perf_counter()
    procs = []
    for i in range(1, 0 if args.table_only else args.shards + 1):
        log = open(logs / f"shard-{i}.log", "w")
        procs.append((subprocess.Popen([*base, "--shard", f"{i}/{args.shards}", "--threads",
                                        str(threads)], stdout=log, stderr=subprocess.STDOUT),
                      log))
    codes = [proc.wait() for proc, _ in procs]
    for _, log in procs:
        log.close()
    wall = time.perf_counter() - start
    if any(codes):
        print(f"shard exit codes {codes}; see {logs}", file=sys.stderr)
        return 1
    subprocess.run([*base, "--table-only"], check=not args.table_only)
    table = pd.read_parquet(out / "table.parquet").set_index("variant")
    runs = pd.read_parquet(out / "runs.parquet")
    result = {"preset": args.preset, "seeds": args.seeds, "shards": args.shards,
              "threads_per_shard": threads, "runs": len(runs),
              "wall_seconds": None if args.table_only else round(wall, 1),
              "sum_of_training_seconds": round(float(runs.training_seconds.sum()), 1),
              "table": (out / "table.md").read_text()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    if args.ship:
        dest = ship_comparison(out, args.ship, [runs_dir / r for r in runs["run"]],
                               Path(args.results_dir))
        print(f"shipped to {dest}")
    print(f"{len(runs)} runs finished; this call took {wall / 60:.1f} min wall ({args.shards} "
          f"shards x {threads} threads); table rows: {len(table)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
