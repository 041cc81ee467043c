"""The comparison sweep: variants x seeds as ordinary continual runs, resumable and shardable.

A *job* is one variant (:class:`dmole_lab.analysis.compare.Variant`) at one seed. A sweep runs the
jobs of its shard that are not finished yet (a finished run is not even reloaded, so a sweep
restarts in seconds), then tabulates every finished run of the whole sweep
(:func:`dmole_lab.analysis.compare.write_tables`). ``dmole-lab compare`` and the notebooks both
call :func:`sweep`.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from tqdm.auto import tqdm

from dmole_lab.analysis.compare import Variant, jobs, write_tables
from dmole_lab.config import RunConfig, apply_overrides, flatten, to_dict
from dmole_lab.methods import check_method
from dmole_lab.store import RunFolderError, RunStore

from .continual import check_run, run


@dataclass
class SweepResult:
    """What a sweep left: finished and missing jobs, failures, and the tables it wrote."""

    done: list[tuple[Variant, int, RunStore]] = field(default_factory=list)
    missing: list[tuple[Variant, int]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)
    table: pd.DataFrame | None = None


def job_config(cfg: RunConfig, variant: Variant, seed: int) -> RunConfig:
    """The config of one job: ``cfg`` with the variant's method and overrides at ``seed``."""
    return apply_overrides(cfg, {**variant.overrides, "method": variant.method, "seed": seed})


def finished(cfg: RunConfig) -> RunStore | None:
    """The store of ``cfg``'s run if it is complete, else None."""
    store = RunStore.of(cfg)
    ok = store.manifest_path.exists() and store.manifest().get("status") == "complete"
    return store if ok else None


def sweep(cfg: RunConfig, variants: list[Variant], seeds: list[int], out: Path,
          shard: tuple[int, int] = (1, 1), table_only: bool = False, progress: bool = True,
          on_finish: Callable[[RunStore], object] | None = None) -> SweepResult:
    """Run this shard's unfinished jobs of ``variants`` x ``seeds``, then write the comparison
    tables of every finished job under ``out``.

    Every variant's method and every job's config are checked before the first run starts
    (:func:`dmole_lab.engine.continual.check_run`: nothing is written if one is bad). One
    failing job is recorded in ``failed`` (its traceback printed) and the sweep goes on: a
    broken job must not cost the rest of a long sweep. ``on_finish(store)`` is called after each
    run this call trained (e.g. to draw its report).
    """
    for v in variants:
        check_method(v.method)
    configs = {(v.name, s): job_config(cfg, v, s) for v in variants for s in seeds}
    result = SweepResult()
    mine = [] if table_only else jobs(variants, seeds, shard)
    for variant, seed in mine:  # the cheap checks of every job to run, before the first
        job = configs[(variant.name, seed)]
        if not finished(job):
            check_run(job)
    for variant, seed in tqdm(mine, desc=f"compare shard {shard[0]}/{shard[1]}",
                              disable=not progress):
        job = configs[(variant.name, seed)]
        if finished(job):
            continue
        try:
            store = run(job, progress=progress)
        except RunFolderError as e:  # another process runs this job: not a crash
            print(f"skipped {variant.name} seed {seed}: {e}", file=sys.stderr, flush=True)
            result.failed.append(f"{variant.name} (seed {seed})")
            continue
        except Exception:
            traceback.print_exc()
            result.failed.append(f"{variant.name} (seed {seed})")
            continue
        if on_finish is not None:
            on_finish(store)
        print(f"finished {variant.name} seed {seed}: {store.root}", flush=True)
    return _tabulate(result, variants, seeds, lambda v, s: finished(configs[(v.name, s)]), out)


def _tabulate(result: SweepResult, variants: list[Variant], seeds: list[int],
              store_of: Callable[[Variant, int], RunStore | None], out: Path) -> SweepResult:
    """Sort every job into ``result.done`` (its finished store) or ``result.missing``, and
    write the comparison tables of the finished ones under ``out``."""
    for variant, seed in jobs(variants, seeds):
        store = store_of(variant, seed)
        if store is None:
            result.missing.append((variant, seed))
        else:
            result.done.append((variant, seed, store))
    if result.done:
        result.paths, result.table = write_tables(result.done, out,
                                                  order=[v.name for v in variants])
    return result


def _code(manifest: dict) -> dict:
    """What must agree across merged runs: the project's commit and the versions of the
    packages that shape results (the Python patch level does not)."""
    return {"commit": manifest.get("commit", "unknown"),
            **{k: v for k, v in manifest.get("versions", {}).items() if k != "python"}}


def _differences(theirs: dict, ours: dict, limit: int = 4) -> list[str]:
    """Dotted keys where two flattened configs differ (``runs_dir`` aside)."""
    keys = sorted((set(theirs) | set(ours)) - {"runs_dir"})
    return [f"{k}={theirs.get(k)!r} (the sweep: {ours.get(k)!r})" for k in keys
            if theirs.get(k) != ours.get(k)][:limit]


def merge(cfg: RunConfig, variants: list[Variant], seeds: list[int], dirs: list[Path],
          out: Path) -> SweepResult:
    """Tabulate the finished runs of a sweep that shards ran on several machines.

    ``dirs`` are the machines' runs folders (copied next to each other). Each job of
    ``variants`` x ``seeds`` is looked up by its run name (its config hash) in every folder.
    Refused with a ValueError listing every problem, before anything is written:

    - a run of one of the sweep's methods and seeds whose config is not the sweep's (its
      differing keys are named; e.g. a shard started with another learning rate);
    - runs made by different code: another commit, or other versions of the packages that
      shape results (torch, transformers, ...).

    A job finished in two folders is taken once (they agree: same config, same code).
    """
    for v in variants:
        check_method(v.method)
    configs = {(v.name, s): job_config(cfg, v, s) for v in variants for s in seeds}
    by_name = {RunStore.run_name(c): key for key, c in configs.items()}
    found: dict[str, RunStore] = {}
    problems: list[str] = []
    codes: dict[str, list[str]] = {}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise FileNotFoundError(f"--merge {d}: no such folder")
        for manifest_path in sorted(d.glob("*/manifest.json")):
            store = RunStore(manifest_path.parent)
            m = store.manifest()
            if m.get("kind", "continual") != "continual":
                continue
            name = store.root.name
            if name not in by_name:
                near = [c for c in configs.values()
                        if c.method == m.get("method") and c.seed == m.get("seed")]
                if near:
                    theirs = flatten(m["config"])
                    diffs = min((_differences(theirs, flatten(to_dict(c))) for c in near),
                                key=len)
                    problems.append(f"{store.root} is a {m['method']} run at seed {m['seed']} "
                                    f"with another config: {', '.join(diffs)}")
                continue
            if m.get("status") != "complete":
                continue
            code = json.dumps(_code(m), sort_keys=True)
            codes.setdefault(code, []).append(str(store.root))
            found.setdefault(name, store)
    if len(codes) > 1:
        kinds = [json.loads(c) for c in codes]
        keys = sorted(k for k in set().union(*kinds) if len({str(x.get(k)) for x in kinds}) > 1)
        problems.append("the runs were made by different code (" + "; ".join(
            f"{', '.join(f'{k}={json.loads(c).get(k)}' for k in keys)}: {runs[0]}"
            + (f" and {len(runs) - 1} more" if len(runs) > 1 else "")
            for c, runs in codes.items()) + ")")
    if problems:
        raise ValueError("cannot merge: " + " | ".join(problems))
    return _tabulate(SweepResult(), variants, seeds,
                     lambda v, s: found.get(RunStore.run_name(configs[(v.name, s)])), out)


__all__ = ["SweepResult", "finished", "job_config", "merge", "sweep"]
