"""Time the main job and check the stream is fit for studying forgetting.

Usage: python benchmarks/bench_demo.py [--preset tiny] [overrides...]
Runs the preset once in a fresh runs folder and prints: the wall time of the whole run (model
load, data, every stage, every evaluation, summaries) with its break-down, and per task the
zero-shot score b_i, the score right after learning it a[i, i] and at the end a[T, i], plus
BWT. Writes the same to benchmarks/results/bench_demo.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from dmole_lab.analysis.metrics import matrix_from_scores, summary
from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.engine.continual import run


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
        sm = store.summary("score_matrix")
    tasks = list(cfg.stream.tasks)
    A = matrix_from_scores(sm[sm["eval_task"].isin(tasks)], tasks)
    per_task = {t: {"zero_shot": round(A[0, i], 1), "just_learned": round(A[i + 1, i], 1),
                    "final": round(A[-1, i], 1)} for i, t in enumerate(tasks)}
    train_s = sum(s.get("train_seconds", 0.0) for s in stages.values())
    eval_s = float(scores["seconds"].sum())
    result = {
        "preset": args.preset, "overrides": overrides, "machine": platform.machine(),
        "total_seconds": round(total, 1), "train_seconds": round(train_s, 1),
        "eval_seconds": round(eval_s, 1),
        "other_seconds": round(total - train_s - eval_s, 1),
        "metrics": {k: round(v, 2) for k, v in summary(A).items()},
        "per_task": per_task,
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
