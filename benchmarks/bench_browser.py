"""How long a student waits after moving a control, measured in a real browser.

Usage: python benchmarks/bench_browser.py [--notebooks 01,02,03,04] [--repeats 10]
                                          [--pause-ms 300] [--smoke] [--against REV]
                                          [--rounds N]

Starts JupyterLab on 127.0.0.1, opens each notebook in headless Chromium (the system's
``chromium``, driven by Playwright), runs all its cells as a student would (reading the runs
shipped in ``results/``; ``--smoke`` runs them in CI's smoke mode instead), then changes every
control of every explorer ``--repeats`` times (next option, one slider step, another toggle),
``--pause-ms`` apart. Each change is timed in the page, from the input event to the moment what
the explorer shows (figure, notes, tables) has changed (:mod:`dmole_lab.viz.browser`).
Reports per explorer the median, 95th percentile and largest latency in ms, and writes
benchmarks/results/browser.json. ``--against REV`` measures the notebooks and library of git
revision REV too (a temporary worktree; the same harness), in alternating ``--rounds``, and
writes both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

from dmole_lab.config import PROJECT_ROOT
from dmole_lab.viz import browser

NOTEBOOKS = sorted(p.name for p in (PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def measure(server, page, names: list[str], repeats: int, pause_ms: int) -> dict:
    """Run each notebook in ``names`` and time every change of every explorer's controls:
    (notebook, explorer) -> latencies in ms (-1: no change seen)."""
    times: dict = {}
    for name in names:
        seconds = browser.open_notebook(page, server, f"notebooks/{name}")
        errors = browser.error_outputs(page)
        counts = browser.explorer_controls(page)
        print(f"{name}: ran in {seconds:.1f} s, {len(errors)} errors, explorers {counts}",
              flush=True)
        for e, n_controls in enumerate(counts):
            got = times.setdefault((name, e), [])
            for _ in range(repeats):
                for c in range(n_controls):
                    got.append(browser.change_control(page, e, c))
                    browser.settle(page, pause_ms)
    return times


def summarise(times: dict) -> list[dict]:
    """Per explorer: changes, misses, median, 95th percentile and largest latency (ms)."""
    rows = []
    for (name, e), got in times.items():
        ok = [t for t in got if t >= 0]
        rows.append({"notebook": name, "explorer": e, "changes": len(got),
                     "missed": len(got) - len(ok),
                     "median_ms": round(float(np.median(ok)), 1) if ok else None,
                     "p95_ms": round(float(np.percentile(ok, 95)), 1) if ok else None,
                     "max_ms": round(max(ok), 1) if ok else None})
    return rows


def main(argv=None) -> int:
    """Run the notebooks in Chromium and time every explorer's updates."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_demo import code_variants, round_order

    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebooks", default=None, help="comma-separated prefixes (default: all)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--pause-ms", type=int, default=300)
    p.add_argument("--smoke", action="store_true", help="run the notebooks in smoke mode")
    p.add_argument("--against", default=None, metavar="REV",
                   help="also measure the code of this git revision, side by side")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "browser.json"))
    args = p.parse_args(argv)
    if args.repeats < 1 or args.rounds < 1:
        raise SystemExit(f"--repeats and --rounds must be >= 1, got {args.repeats}, "
                         f"{args.rounds}")
    wanted = args.notebooks.split(",") if args.notebooks else None
    names = [n for n in NOTEBOOKS if wanted is None or any(n.startswith(w) for w in wanted)]
    if not names:
        raise SystemExit(f"no notebook matches {args.notebooks!r}; have {NOTEBOOKS}")
    smoke = {"DMOLE_SMOKE": "1" if args.smoke else "0"}
    times: dict[str, dict] = {}
    with code_variants(args.against) as variants, browser.chromium() as page:
        for r in range(args.rounds):
            for variant in round_order(variants, r):
                code = variants[variant]
                print(f"round {r + 1}: {variant}", flush=True)
                # the kernels import the library of the variant's checkout
                with browser.lab_server({**smoke, "PYTHONPATH": str(code)},
                                        notebooks=code / "notebooks") as server:
                    got = measure(server, page, names, args.repeats, args.pause_ms)
                for key, values in got.items():
                    times.setdefault(variant, {}).setdefault(key, []).extend(values)
    out = {"machine": platform.machine(), "cpus": os.cpu_count(), "smoke": args.smoke,
           "repeats": args.repeats, "rounds": args.rounds, "pause_ms": args.pause_ms,
           "chromium": browser.chromium_path(), "explorers": summarise(times["current"])}
    if args.against:
        out["against"] = {"revision": args.against,
                          "explorers": summarise(times[args.against])}
    for label, rows in [("current", out["explorers"])] + (
            [(args.against, out["against"]["explorers"])] if args.against else []):
        print(f"\n{label}:")
        for row in rows:
            print(f"  {row['notebook']} explorer {row['explorer']}: median {row['median_ms']} "
                  f"ms, p95 {row['p95_ms']} ms, max {row['max_ms']} ms, missed {row['missed']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
