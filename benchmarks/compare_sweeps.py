"""Two shipped comparisons of the same variants side by side: what a change of the preset did.

Usage: python benchmarks/compare_sweeps.py BEFORE AFTER [--before-dir DIR | --before-rev REV]
                                           [--after-dir DIR] [--learned-margin 10] [--json PATH]

BEFORE and AFTER name comparisons as ``bench_compare.py --ship`` writes them (``results/NAME``
with scores.parquet and runs.parquet; each side may come from another results folder, and the
before side from an earlier git revision of this repository: ``--before-rev REV`` reads
``results/BEFORE`` as committed there). For
every variant in both it prints AVG, Last, BWT and MFT (means over seeds), the tasks learned in
their own stage (a[i, i] - b_i >= the margin), the lowest router accuracy, and the mean training
seconds with their ratio after / before. Then the qualitative results the embedded default must
keep (issue-level checks of benchmarks/README.md): sequential LoRA learns every task in its own
stage and forgets, and D-MoLE's BWT is 0 with its router right.

Training seconds compare only as far as the two sweeps ran under the same load (both with two
shards side by side on the same machine, say); the script cannot know, so it reports them and
the ratio, and leaves the reading to the person who made both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from dmole_lab.analysis.compare import markdown, sweep_changes
from dmole_lab.viz.results import RESULTS_DIR, committed_comparison, open_comparison


def qualitative(table, tasks: int, side: str = "after") -> dict[str, bool]:
    """The embedded default's qualitative results, checked on one ``side`` of
    :func:`~dmole_lab.analysis.compare.sweep_changes`; ``tasks``: the stream's length."""
    checks = {}
    if "seq-lora" in table.index:
        row = table.loc["seq-lora"]
        checks[f"seq-lora learns each of the {tasks} tasks in its own stage, at every seed"] = (
            bool(row[("learned", side)] == tasks))
        checks["seq-lora forgets (BWT < -10)"] = bool(row[("BWT", side)] < -10)
    if "dmole" in table.index:
        row = table.loc["dmole"]
        checks["D-MoLE's BWT is 0"] = bool(abs(row[("BWT", side)]) < 1e-9)
        checks["D-MoLE's router is right after the last stage, at every seed"] = bool(
            row[("router_accuracy", side)] == 1.0)
    return checks


def shown(folder: str) -> str:
    """``folder`` relative to the repository when it lies inside it (for the JSON record)."""
    path = Path(folder).resolve()
    root = RESULTS_DIR.parent.resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def arrows(table) -> pd.DataFrame:
    """One "before -> after" cell per column of :func:`sweep_changes`, for reading."""
    digits = {"training_seconds": 0, "seeds": 0, "router_accuracy": 2}
    cols = dict.fromkeys(c for c, _ in table.columns if c != "time_ratio")
    out = pd.DataFrame({c: [f"{b:.{digits.get(c, 1)}f} -> {a:.{digits.get(c, 1)}f}"
                            for b, a in zip(table[(c, "before")], table[(c, "after")])]
                        for c in cols}, index=table.index)
    out["time ratio"] = table[("time_ratio", "")].map("{:.2f}".format)
    return out


def main(argv=None) -> int:
    """Print the side-by-side table and the checks; write them as JSON."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--before-dir", default=str(RESULTS_DIR))
    p.add_argument("--before-rev", default=None,
                   help="read results/BEFORE as committed at this git revision")
    p.add_argument("--after-dir", default=str(RESULTS_DIR))
    p.add_argument("--learned-margin", type=float, default=10.0)
    p.add_argument("--json", default=str(Path(__file__).with_name("results")
                                         / "compare_sweeps.json"))
    args = p.parse_args(argv)
    if args.before_rev:
        try:
            before = committed_comparison(args.before, args.before_rev)
        except (LookupError, FileNotFoundError) as e:
            raise SystemExit(f"cannot read results/{args.before} at revision "
                             f"{args.before_rev!r}: {e}") from None
    else:
        before = open_comparison(args.before, Path(args.before_dir))
    after = open_comparison(args.after, Path(args.after_dir))
    table = sweep_changes(before, after, args.learned_margin)
    print(markdown(arrows(table)))
    total = {side: float(table[("training_seconds", side)].mul(
        table[("seeds", side)]).sum()) for side in ("before", "after")}
    print(f"\ntraining seconds summed over every run: {total['before']:.0f} before, "
          f"{total['after']:.0f} after (ratio {total['after'] / total['before']:.2f})")
    tasks = int(after[1]["tasks"].str.split(",").str.len().max())
    checks = {side: qualitative(table, tasks, side) for side in ("before", "after")}
    for name in checks["after"]:
        print(f"{name}: before {'holds' if checks['before'][name] else 'FAILS'}, "
              f"after {'holds' if checks['after'][name] else 'FAILS'}")
    where = f"{args.before_rev}:results" if args.before_rev else shown(args.before_dir)
    out = {"before": f"{where}/{args.before}", "after": f"{shown(args.after_dir)}/{args.after}",
           "learned_margin": args.learned_margin, "training_seconds_total": total,
           "checks": checks,
           "variants": {v: {f"{c} {s}".strip(): (None if r != r else r)
                            for (c, s), r in row.items()} for v, row in table.iterrows()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
