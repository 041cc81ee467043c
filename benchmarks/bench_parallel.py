"""Two methods one after the other (one process, all cores) against side by side (one process
each, cores / 2 threads), timed in alternation.

Usage: python benchmarks/bench_parallel.py [--methods dmole,seq-lora] [--rounds 2]
                                           [--preset tiny] [overrides...]

Each round makes fresh runs of ``--methods`` twice on the same (shortened, by default) stream:
``run_parallel(jobs=1)`` in this process with torch's default threads, and
``run_parallel(jobs=len(methods))`` in worker processes; which goes first alternates between
rounds so drift of the machine hits both alike. Wall time covers everything a user waits for
(workers' start-up and model loading included). Reports per round and as the median the ratio
side-by-side / one-after-the-other, and writes benchmarks/results/parallel.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.engine.continual import run
from dmole_lab.engine.parallel import run_parallel, threads_per_job

#: A shortened stream (three tasks, 40 steps each) so a round takes minutes on two cores; any
#: of these can be overridden on the command line (e.g. --train.max_steps=0 for the full job).
SHORT = {"stream.tasks": "caption,grounding,ocr", "train.max_steps": 40}


def _timed(cfgs, parallel: bool) -> float:
    start = time.perf_counter()
    if parallel:
        run_parallel(cfgs, jobs=len(cfgs), progress=False)
    else:
        for cfg in cfgs:
            run(cfg, progress=False)
    return time.perf_counter() - start


def main(argv=None) -> int:
    """Alternate the two ways over ``--rounds``; print and store the ratio."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--methods", default="dmole,seq-lora")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "parallel.json"))
    args, rest = p.parse_known_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    overrides = {**SHORT, **parse_cli_overrides(rest)}
    base = build_config(args.preset, overrides)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    scratch = Path(tempfile.mkdtemp(prefix="bench_parallel-"))
    rounds = []
    try:
        for r in range(args.rounds):
            times = {}
            for parallel in ((False, True) if r % 2 == 0 else (True, False)):
                runs_dir = scratch / f"round{r}-{'parallel' if parallel else 'serial'}"
                cfgs = [replace(base, method=m, runs_dir=str(runs_dir)) for m in methods]
                times["parallel" if parallel else "serial"] = _timed(cfgs, parallel)
                shutil.rmtree(runs_dir)
            rounds.append({**{k: round(v, 3) for k, v in times.items()},
                           "ratio": round(times["parallel"] / times["serial"], 3)})
            print(f"round {r}: one after the other {times['serial']:.1f} s, side by side "
                  f"{times['parallel']:.1f} s, ratio {rounds[-1]['ratio']:.3f}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"preset": args.preset, "methods": methods, "overrides": overrides,
              "cpus": os.cpu_count(), "serial_threads": torch.get_num_threads(),
              "parallel_threads_per_job": threads_per_job(len(methods)), "rounds": rounds,
              "median_ratio": round(statistics.median(x["ratio"] for x in rounds), 3)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(f"side by side / one after the other: median {result['median_ratio']:.3f} over "
          f"{len(rounds)} rounds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
