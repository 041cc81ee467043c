"""D-MoLE against sequential LoRA over seeds: AVG, Last, BWT, router accuracy, parameters.

Usage: python benchmarks/bench_seeds.py [--preset tiny] [--seeds 0,1,2]
                                        [--variants dmole,dmole+dmole.routing=sample,seq-lora]
                                        [overrides...]

A variant is a method name, optionally followed by ``+key=value`` overrides (e.g.
``dmole+dmole.routing=sample`` for per-sample routing at inference). Every variant x seed is a
normal run under ``runs_dir`` (``runs/`` by default), so finished runs are reused and an
interrupted benchmark resumes. Reports per variant the mean +- std over seeds of AVG, Last,
BWT (divisor T-1) and MFT (docs/method.md section 4), the router accuracy after the last stage
(D-MoLE), the mean trainable parameters per task, and the training time (set-up + training
loop + wrap-up, summed over stages). Writes benchmarks/results/seeds.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from dmole_lab.analysis.compare import mean_std, parse_variant, run_row
from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.engine.continual import run


def main(argv=None) -> int:
    """Run (or reuse) every variant x seed and print the mean +- std table."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="dmole,dmole+dmole.routing=sample,seq-lora")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "seeds.json"))
    args, rest = p.parse_known_args(argv)
    overrides = parse_cli_overrides(rest)
    rows = []
    for spec in args.variants.split(","):
        variant = parse_variant(spec)
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = build_config(args.preset, {**overrides, **variant.overrides,
                                             "method": variant.method,
                                             "seed": seed})
            store = run(cfg, progress=False)
            rows.append({"variant": spec, **run_row(store)})
            print(rows[-1], flush=True)
    table = mean_std(pd.DataFrame(rows), by="variant")
    result = {"preset": args.preset, "seeds": args.seeds, "runs": rows,
              "table": table.to_dict(orient="index")}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
