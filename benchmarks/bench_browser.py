"""How long a student waits after moving a control, measured in a real browser.

Usage: python benchmarks/bench_browser.py [--notebooks 01,02,03,04] [--repeats 10]
                                          [--pause-ms 300] [--smoke]

Starts JupyterLab on 127.0.0.1, opens each notebook in headless Chromium (the system's
``chromium``, driven by Playwright), runs all its cells as a student would (reading the runs
shipped in ``results/``; ``--smoke`` runs them in CI's smoke mode instead), then changes every
control of every explorer ``--repeats`` times (next option, one slider step, another toggle),
``--pause-ms`` apart. Each change is timed in the page, from the input event to the moment what
the explorer shows (figure, notes, tables) has changed (:mod:`dmole_lab.viz.browser`).
Reports per explorer the median, 95th percentile and largest latency in ms, and writes
benchmarks/results/browser.json.
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


def main(argv=None) -> int:
    """Run the notebooks in Chromium and time every explorer's updates."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notebooks", default=None, help="comma-separated prefixes (default: all)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--pause-ms", type=int, default=300)
    p.add_argument("--smoke", action="store_true", help="run the notebooks in smoke mode")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "browser.json"))
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    wanted = args.notebooks.split(",") if args.notebooks else None
    names = [n for n in NOTEBOOKS if wanted is None or any(n.startswith(w) for w in wanted)]
    if not names:
        raise SystemExit(f"no notebook matches {args.notebooks!r}; have {NOTEBOOKS}")
    env = {"DMOLE_SMOKE": "1" if args.smoke else "0"}
    rows = []
    with browser.lab_server(env) as server, browser.chromium() as page:
        for name in names:
            seconds = browser.open_notebook(page, server, f"notebooks/{name}")
            errors = browser.error_outputs(page)
            counts = browser.explorer_controls(page)
            print(f"{name}: ran in {seconds:.1f} s, {len(errors)} errors, explorers {counts}",
                  flush=True)
            for e, n_controls in enumerate(counts):
                times = []
                for _ in range(args.repeats):
                    for c in range(n_controls):
                        times.append(browser.change_control(page, e, c))
                        browser.settle(page, args.pause_ms)
                ok = [t for t in times if t >= 0]
                rows.append({"notebook": name, "explorer": e, "controls": n_controls,
                             "changes": len(times), "missed": len(times) - len(ok),
                             "median_ms": round(float(np.median(ok)), 1) if ok else None,
                             "p95_ms": round(float(np.percentile(ok, 95)), 1) if ok else None,
                             "max_ms": round(max(ok), 1) if ok else None})
                print(f"  explorer {e}: {rows[-1]}", flush=True)
    out = {"machine": platform.machine(), "cpus": os.cpu_count(), "smoke": args.smoke,
           "repeats": args.repeats, "pause_ms": args.pause_ms, "chromium": browser.chromium_path(),
           "explorers": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
