"""Time the main job: sequential LoRA over the 9-task stream on the embedded default.

Usage: python benchmarks/bench_demo.py [--preset tiny] [overrides...]
Prints the wall time of the whole run (model load, data, 9 stages, 10 evaluations, summaries)
and a break-down per stage, and writes them to benchmarks/results/bench_demo.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.continual import run


def main(argv=None) -> int:
    """Run the preset once in a fresh runs folder and report its timings."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="tiny")
    args, rest = p.parse_known_args(argv)
    overrides = parse_cli_overrides(rest)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(args.preset, {**overrides, "runs_dir": tmp})
        t0 = time.perf_counter()
        store = run(cfg, progress=False)
        total = time.perf_counter() - t0
        stages = store.manifest()["stages"]
        scores = store.table("scores")
    train_s = sum(s.get("train_seconds", 0.0) for s in stages.values())
    eval_s = float(scores["seconds"].sum())
    result = {
        "preset": args.preset, "overrides": overrides, "machine": platform.machine(),
        "total_seconds": round(total, 1), "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "other_seconds": round(total - train_s - eval_s, 1),
        "per_stage_train_seconds": {k: round(v.get("train_seconds", 0.0), 1)
                                    for k, v in stages.items()},
    }
    out = Path(__file__).with_name("results")
    out.mkdir(exist_ok=True)
    (out / "bench_demo.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
