"""How long a notebook explorer takes to follow a control: every update of every explorer, timed.

Usage: python benchmarks/bench_widgets.py [--repeats 5] [--results-dir results]
                                          [--explorers sensitivity,dynamics,allocation,comparison,
                                                       layer_scores]

Builds the explorers of the notebooks on the runs shipped in ``results/``, as the notebooks do:
``SensitivityExplorer`` on ``probe-tiny`` and ``DynamicsExplorer`` on ``seq-lora-tiny``
(notebook 01), ``AllocationExplorer`` on ``dmole-tiny`` with the notebook's look-up of stored
runs (02), ``ComparisonExplorer`` on ``compare-tiny`` (04). Then, ``--repeats`` times, sets each
control of each explorer to another value and back, timing each of the two updates (what a user
waits for: the recomputation, the look-ups and the redrawn figure; matplotlib's Agg backend,
no browser). For the allocation explorer the allocation alone (its ``seconds``) is timed too.
Reports per explorer and control the median and the largest update time in ms, the explorer's
median over all its updates and the time to build it, and writes
benchmarks/results/widgets.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from dmole_lab.analysis.profiles import oracle_profiles  # noqa: E402
from dmole_lab.viz import results  # noqa: E402
from dmole_lab.viz.widgets import (  # noqa: E402
    ALL_TASKS,
    AllocationExplorer,
    ComparisonExplorer,
    DynamicsExplorer,
    LayerScoreExplorer,
    SensitivityExplorer,
)

EXPLORERS = ("sensitivity", "dynamics", "allocation", "comparison", "layer_scores")


def _other(options, value):
    """A value of ``options`` (a widget's options: values or (label, value) pairs) that is not
    ``value``."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    return next(v for v in values if v != value)


def _build(name: str, results_dir: Path):
    """(explorer, {control name: (widget, other value)}, source) of one notebook explorer."""
    if name == "sensitivity":
        store = results.open_run("probe-tiny", results_dir)
        table = store.summary("sensitivity")
        tasks = store.manifest()["tasks"]
        ex = SensitivityExplorer(table, tasks, batches=store.manifest()["probe_batches"])
        changes = {"proxy": _other(ex.proxy.options, ex.proxy.value),
                   "batches": _other(ex.batches.options, ex.batches.value),
                   "normalisation": _other(ex.normalisation.options, ex.normalisation.value),
                   "task": tasks[0]}
        return ex, changes, "probe-tiny"
    if name == "dynamics":
        store = results.open_run("seq-lora-tiny", results_dir)
        ex = DynamicsExplorer(store.summary("dynamics"))
        changes = {"quantity": _other(ex.quantity.options, ex.quantity.value),
                   "smooth": 1 if ex.smooth.value != 1 else 5,
                   "task": _other(ex.task.options, ALL_TASKS)}
        return ex, changes, "seq-lora-tiny"
    if name == "allocation":
        store = results.open_run("dmole-tiny", results_dir)
        manifest = store.manifest()
        tasks, cfg = manifest["tasks"], manifest["config"]
        settings = cfg["dmole"]

        def find(chosen):  # as notebook 02 looks up stored runs with these settings
            return results.find_runs({**chosen, "stream.tasks": tasks,
                                      "stream.n_train": cfg["stream"]["n_train"]})

        ex = AllocationExplorer(store.summary("sensitivity"), tasks, r=settings["r"], find=find,
                                fraction=settings["budget"],
                                vision_floor=settings["vision_floor"],
                                curriculum=settings["curriculum"], seed=manifest["seed"])
        changes = {"fraction": 0.25 if ex.fraction.value != 0.25 else 0.5,
                   "vision_floor": 0.0 if ex.vision_floor.value != 0.0 else 0.25,
                   "curriculum": _other(ex.curriculum.options, ex.curriculum.value)}
        return ex, changes, "dmole-tiny"
    if name == "comparison":
        scores, runs = results.open_comparison("compare-tiny", results_dir)
        ex = ComparisonExplorer(scores, runs)
        every = ex.variants.value
        changes = {"variants": tuple(every[:2]),
                   "task": _other(ex.task.options, ex.task.value),
                   "bwt_divisor": _other(ex.bwt_divisor.options, ex.bwt_divisor.value),
                   "forgetting": _other(ex.forgetting.options, ex.forgetting.value)}
        return ex, changes, "compare-tiny"
    if name == "layer_scores":  # as notebook 05 builds it
        store = results.open_run("layer-scores-tiny", results_dir)
        oracle = oracle_profiles(results.open_run("oracle-tiny", results_dir).summary("oracle"),
                                 "gain")
        ex = LayerScoreExplorer(store.summary("scores"), oracle, store.summary("agreement"))
        changes = {"score_name": _other(ex.score_name.options, ex.score_name.value),
                   "task": _other(ex.task.options, ex.task.value)}
        return ex, changes, "layer-scores-tiny"
    raise SystemExit(f"unknown explorer {name!r}; choose from {', '.join(EXPLORERS)}")


def _ms(values: list[float]) -> dict:
    return {"median_ms": round(1000 * statistics.median(values), 2),
            "max_ms": round(1000 * max(values), 2), "updates": len(values)}


def bench(name: str, results_dir: Path, repeats: int) -> dict:
    """Build one explorer, then time every control's updates (there and back) ``repeats``
    times."""
    start = time.perf_counter()
    ex, changes, source = _build(name, results_dir)
    build = time.perf_counter() - start
    times = {control: [] for control in changes}
    computed = []  # AllocationExplorer: the allocation alone
    for _ in range(repeats):
        for control, other in changes.items():
            widget = getattr(ex, control)
            for value in (other, widget.value):  # there and back: two updates
                start = time.perf_counter()
                widget.value = value
                times[control].append(time.perf_counter() - start)
                if isinstance(ex, AllocationExplorer):
                    computed.append(ex.seconds)
    every = [t for ts in times.values() for t in ts]
    out = {"source": source, "build_ms": round(1000 * build, 1), **_ms(every),
           "controls": {c: _ms(ts) for c, ts in times.items()}}
    if computed:
        out["allocation_only"] = _ms(computed)
    return out


def main(argv=None) -> int:
    """Time every explorer's updates; print and store the medians."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5,
                   help="times each control is set to another value and back")
    p.add_argument("--explorers", default=",".join(EXPLORERS))
    p.add_argument("--results-dir", default=None,
                   help="folder of the shipped runs (default: the project's results/)")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "widgets.json"))
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    results_dir = Path(args.results_dir) if args.results_dir else results.RESULTS_DIR
    names = [n.strip() for n in args.explorers.split(",") if n.strip()]
    for n in names:
        if n not in EXPLORERS:
            raise SystemExit(f"unknown explorer {n!r}; choose from {', '.join(EXPLORERS)}")
    result = {"repeats": args.repeats, "backend": matplotlib.get_backend(),
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
              "explorers": {}}
    for n in names:
        # Outside a notebook an explorer's output area prints each figure's repr: swallow it.
        with contextlib.redirect_stdout(io.StringIO()):
            result["explorers"][n] = bench(n, results_dir, args.repeats)
        e = result["explorers"][n]
        print(f"{n}: build {e['build_ms']:.0f} ms; update median {e['median_ms']:.1f} ms, "
              f"max {e['max_ms']:.1f} ms over {e['updates']} updates", flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
