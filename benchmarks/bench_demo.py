"""Time the main job (`make demo`), optionally against an earlier version of the code, and check
that the stream still shows what it is for.

Usage: python benchmarks/bench_demo.py [--preset tiny] [--methods dmole,seq-lora] [--jobs 2]
                                       [--against REV] [--rounds N] [overrides...]

Runs ``dmole-lab run --preset P --methods M --jobs J`` (the `make demo` command) in a fresh
runs folder and reports its wall time, where each run's time went (set-up, training, probes,
router fits, evaluation, wrap-up; read from the run's manifest and scores) and the qualitative
results the stream must show: how many tasks each run learned in its own stage (a[i, i] at
least ``--learned-margin`` points above the zero-shot b_i), BWT and, for D-MoLE, the router's
accuracy. ``--against REV`` also runs the code of git revision REV (a temporary worktree) with
the same command, alternating which goes first in each of ``--rounds`` rounds, and reports the
ratio of the two wall times (median of the per-round ratios: this machine drifts, so only
times measured side by side compare). Writes benchmarks/results/bench_demo.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dmole_lab.analysis.metrics import learned_in_own_stage, matrix_from_scores, summary
from dmole_lab.config import PROJECT_ROOT, build_config, parse_cli_overrides
from dmole_lab.store import RunStore

PHASES = ("setup_seconds", "train_seconds", "probe_seconds", "router_seconds", "end_seconds")


def run_breakdown(root: Path, learned_margin: float) -> dict:
    """Where one finished run's time went, and its qualitative results."""
    store = RunStore(root)
    m = store.manifest()
    stages = m["stages"]
    tasks = list(m["tasks"]) if "tasks" in m else None
    scores = store.table("scores")
    sm = store.summary("score_matrix")
    tasks = tasks or list(dict.fromkeys(sm["eval_task"]))
    A = matrix_from_scores(sm[sm["eval_task"].isin(tasks)], tasks)
    seconds = {p.removesuffix("_seconds"): round(sum(s.get(p, 0.0) for s in stages.values()), 3)
               for p in PHASES}
    seconds["eval"] = round(float(scores["seconds"].sum()), 3)
    routers = [s["router_accuracy"] for s in stages.values() if "router_accuracy" in s]
    return {
        "seconds": seconds,
        "metrics": {k: round(v, 2) for k, v in summary(A).items()},
        "learned_in_own_stage": learned_in_own_stage(A, learned_margin),
        "tasks": len(tasks),
        "router_accuracy_min": round(min(routers), 3) if routers else None,
        "per_task": {t: {"zero_shot": round(A[0, i], 1), "just_learned": round(A[i + 1, i], 1),
                         "final": round(A[-1, i], 1)} for i, t in enumerate(tasks)},
    }


def run_once(code: Path, preset: str, methods: str, jobs: int, overrides: list[str],
             learned_margin: float) -> dict:
    """One timed run of the demo command with the code in ``code``, in a fresh runs folder."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dmole_lab", "run", "--quiet", "--preset", preset,
               "--methods", methods, "--jobs", str(jobs), *overrides,
               f"--runs_dir={tmp}"]  # last: a fresh folder whatever the overrides say
        env = {**os.environ, "PYTHONPATH": str(code)}
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=code, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        runs = {}
        for manifest in sorted(Path(tmp).glob("*/manifest.json")):
            info = json.loads(manifest.read_text())
            runs[info["method"]] = run_breakdown(manifest.parent, learned_margin)
    return {"wall_seconds": round(wall, 1), "runs": runs}


@contextlib.contextmanager
def code_variants(against: str | None):
    """The code to time, by name: this checkout as "current" and, with ``against``, a checkout
    of that git revision first (a temporary git worktree, its tiny checkpoint included,
    removed on exit)."""
    if not against:
        yield {"current": PROJECT_ROOT}
        return
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(PROJECT_ROOT), "worktree", "add", "--detach",
                        "--quiet", str(where), against], check=True)
        try:
            yield {against: where, "current": PROJECT_ROOT}
        finally:
            subprocess.run(["git", "-C", str(PROJECT_ROOT), "worktree", "remove", "--force",
                            str(where)], check=False)


def round_order(variants: dict, r: int) -> list[str]:
    """The variants in the order round ``r`` runs them: reversed every other round, so that
    neither always runs first on a machine that warms up or slows down."""
    return list(variants) if r % 2 == 0 else list(reversed(variants))


def main(argv=None) -> int:
    """Time the demo command (and the one at ``--against``) and report."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--methods", default="dmole,seq-lora")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--against", default=None, metavar="REV",
                   help="also time the code of this git revision, side by side")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--learned-margin", type=float, default=10.0,
                   help="a task is learned in its own stage when a[i, i] - b_i >= this")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "bench_demo.json"))
    args, rest = p.parse_known_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    build_config(args.preset, parse_cli_overrides(rest))  # bad overrides fail here, not later
    with code_variants(args.against) as variants:
        results: dict[str, list[dict]] = {name: [] for name in variants}
        for r in range(args.rounds):
            for name in round_order(variants, r):
                res = run_once(variants[name], args.preset, args.methods, args.jobs, rest,
                               args.learned_margin)
                results[name].append(res)
                print(f"round {r + 1} {name}: {res['wall_seconds']} s", flush=True)
    out = {"preset": args.preset, "methods": args.methods, "jobs": args.jobs, "overrides": rest,
           "machine": platform.machine(), "cpus": os.cpu_count(), "rounds": args.rounds,
           "learned_margin": args.learned_margin,
           "variants": {name: {"wall_seconds": [r["wall_seconds"] for r in res],
                               "last": res[-1]["runs"]} for name, res in results.items()}}
    if args.against:
        ratios = [b["wall_seconds"] / a["wall_seconds"]
                  for a, b in zip(results["current"], results[args.against])]
        out["before_over_after"] = round(statistics.median(ratios), 3)
        out["per_round_ratios"] = [round(x, 3) for x in ratios]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    for name, res in results.items():
        print(f"\n{name}: wall {np.median([r['wall_seconds'] for r in res]):.1f} s "
              f"(median of {len(res)})")
        for method, info in res[-1]["runs"].items():
            print(f"  {method}: {info['seconds']} | learned {info['learned_in_own_stage']}/"
                  f"{info['tasks']} | BWT {info['metrics']['BWT']} | AVG "
                  f"{info['metrics']['AVG']} | router min {info['router_accuracy_min']}")
    if args.against:
        print(f"\nbefore / after: {out['before_over_after']} (per round {out['per_round_ratios']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
