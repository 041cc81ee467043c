"""Why D-MoLE learns less in its own stage: every switch of dmole_lab.analysis.plasticity x seeds.

Usage: python benchmarks/bench_plasticity.py [--preset tiny] [--seeds 0,1,2] [--shards 2]
                                             [overrides...]

Runs the switches (capacity, training-time routing, learning rate, vision floor, v1 with and
without the routing mismatch, and the default and sequential LoRA they are read against) as one
comparison through bench_compare.py, starting from the runs shipped in results/compare-<preset>
(the default, v1 and sequential LoRA are not retrained), and ships it as
results/plasticity-<preset> (notebook 05). Prints each switch's paired effect on MFT, AVG and
Last against the default. Writes benchmarks/results/plasticity.json.
"""

from __future__ import annotations

import argparse
import json
import runpy
from pathlib import Path

from dmole_lab.analysis.compare import run_metrics
from dmole_lab.analysis.plasticity import labelled, paired_effects, switch_methods
from dmole_lab.viz.results import RESULTS_DIR, open_comparison

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    """Run the comparison of the switches, ship it and print the paired effects."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--shards", default="2")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--json", default=str(HERE / "results" / "plasticity.json"))
    args, rest = p.parse_known_args(argv)
    name = f"plasticity-{args.preset}"
    compare = ["--preset", args.preset, "--seeds", args.seeds, "--shards", args.shards,
               "--methods", switch_methods(), "--ship", name, "--json", args.json,
               "--results-dir", args.results_dir, *rest]
    if (Path(args.results_dir) / f"compare-{args.preset}" / "runs").is_dir():
        compare += ["--resume-from", f"compare-{args.preset}"]
    code = runpy.run_path(str(HERE / "bench_compare.py"))["main"](compare)
    if code:
        return code
    scores, runs = open_comparison(name, Path(args.results_dir))
    effects = paired_effects(labelled(run_metrics(scores, runs)))
    print(effects.round(2).to_string(index=False))
    result = json.loads(Path(args.json).read_text())
    result["paired_effects_vs_default"] = {
        f"{r.variant}/{r.metric}": f"{r.effect:+.1f} +- {r.se:.1f} ({r.ahead}/{r.seeds} ahead)"
        for r in effects.itertuples()}
    Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
