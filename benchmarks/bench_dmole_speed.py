"""What D-MoLE's extra machinery costs: probing share and training time against sequential LoRA.

Usage: python benchmarks/bench_dmole_speed.py [--preset tiny] [--repeats 1] [overrides...]

Runs the preset's whole stream with ``--method=dmole`` and ``--method=seq-lora`` alternately
(``--repeats`` pairs, in fresh run folders, so drift of the machine hits both alike) and
reads the per-stage timings the runner records:

- training time of a method = sum over stages of set-up (``begin_task``: for D-MoLE the probe,
  the allocation, the router features and autoencoder) + the training loop + wrap-up
  (``end_task``: saving, for sequential LoRA the merge). Evaluation is not training and is
  left out for both.
- ``probe_share``: D-MoLE's zero-cost probing time over its training time (paper: ~1.45%).
- ``wall_ratio``: D-MoLE's training time over sequential LoRA's (paper: 12.40 h / 13.15 h).

Each pair gives one ratio; the median over pairs is reported, with every pair's ratio and a
noise-robust one: each method timed as the sum over stages of its fastest repeat of the stage
(``wall_ratio_stage_minima``; with one pair it equals the pair's ratio). Writes
benchmarks/results/dmole_speed.json.

``--reuse SEEDS`` (e.g. ``0,1,2``) instead reads the pairs of finished runs of those seeds under
the preset's ``runs_dir`` (running any that is missing there), such as the D-MoLE and
sequential-LoRA runs of ``dmole-lab compare``, which ran side by side in one sweep.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.engine.continual import run

METHODS = ("dmole", "seq-lora")
PARTS = ("setup_seconds", "train_seconds", "end_seconds")


def stage_timings(stages: dict) -> dict[str, float]:
    """Sums over a run's stages (manifest ``stages``, stage 0 excluded) of each timing field."""
    rows = [s for k, s in stages.items() if int(k) >= 1]
    keys = PARTS + ("probe_seconds", "router_seconds")
    out = {k: float(sum(s.get(k, 0.0) for s in rows)) for k in keys}
    out["training_seconds"] = sum(out[k] for k in PARTS)
    return out


def per_stage_training(stages: dict) -> list[float]:
    """Training seconds (set-up + loop + wrap-up) of each stage >= 1, in stage order."""
    rows = sorted((int(k), s) for k, s in stages.items() if int(k) >= 1)
    return [sum(s.get(k, 0.0) for k in PARTS) for _, s in rows]


def stage_minima_ratio(runs: list[dict]) -> float:
    """D-MoLE over sequential LoRA, each timed as the sum over stages of the fastest repeat of
    that stage: a machine that slows down for a while inflates one repeat's stages, not the
    minimum (the same reasoning as ``timeit``'s best-of-n)."""
    def best(method):
        return sum(min(stage) for stage in zip(*(p[method + "_stages"] for p in runs)))
    return best("dmole") / best("seq-lora")


def main(argv=None) -> int:
    """Run the pairs and report the two ratios."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--repeats", type=int, default=1, help="dmole / seq-lora pairs")
    p.add_argument("--json", default=str(Path(__file__).with_name("results")
                                          / "dmole_speed.json"))
    p.add_argument("--reuse", default=None,
                   help="comma-separated seeds: read finished runs under runs_dir instead")
    args, rest = p.parse_known_args(argv)
    overrides = parse_cli_overrides(rest)
    runs = []
    pairs = ([{"seed": int(s)} for s in args.reuse.split(",")] if args.reuse
             else [{} for _ in range(args.repeats)])
    for r, extra in enumerate(pairs):
        pair = {}
        for method in METHODS:
            with tempfile.TemporaryDirectory() as tmp:
                where = {} if args.reuse else {"runs_dir": tmp}
                cfg = build_config(args.preset, {**overrides, **extra, **where,
                                                 "method": method})
                store = run(cfg, progress=False)
                pair[method] = stage_timings(store.manifest()["stages"])
                pair[method + "_stages"] = per_stage_training(store.manifest()["stages"])
            print(f"pair {r} {method}: " + ", ".join(
                f"{k} {v:.1f}" for k, v in pair[method].items()), flush=True)
        runs.append(pair)
    probe_share = [p["dmole"]["probe_seconds"] / p["dmole"]["training_seconds"] for p in runs]
    ratio = [p["dmole"]["training_seconds"] / p["seq-lora"]["training_seconds"] for p in runs]
    result = {
        "preset": args.preset, "repeats": len(runs), "reused_seeds": args.reuse,
        "runs": runs,
        "probe_share_pct": round(100 * statistics.median(probe_share), 2),
        "wall_ratio_dmole_over_seq_lora": round(statistics.median(ratio), 3),
        "wall_ratio_per_pair": [round(x, 3) for x in ratio],
        "wall_ratio_stage_minima": round(stage_minima_ratio(runs), 3),
        "targets": {"probe_share_pct": 1.0, "wall_ratio_dmole_over_seq_lora": 0.8},
        "paper": {"probe_share_pct": 1.45, "wall_ratio_dmole_over_seq_lora": 0.94},
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
