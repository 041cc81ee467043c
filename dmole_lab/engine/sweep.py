"""The comparison sweep: variants x seeds as ordinary continual runs, resumable and shardable.

A *job* is one variant (:class:`dmole_lab.analysis.compare.Variant`) at one seed. A sweep runs the
jobs of its shard that are not finished yet (a finished run is not even reloaded, so a sweep
restarts in seconds), then tabulates every finished run of the whole sweep
(:func:`dmole_lab.analysis.compare.write_tables`). ``dmole-lab compare`` and the notebooks both
call :func:`sweep`.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
from tqdm.auto import tqdm

from dmole_lab.analysis.compare import Variant, jobs, write_tables
from dmole_lab.config import RunConfig, apply_overrides
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
    for variant, seed in jobs(variants, seeds):
        store = finished(configs[(variant.name, seed)])
        if store is None:
            result.missing.append((variant, seed))
        else:
            result.done.append((variant, seed, store))
    if result.done:
        result.paths, result.table = write_tables(result.done, out,
                                                  order=[v.name for v in variants])
    return result


__all__ = ["SweepResult", "finished", "job_config", "sweep"]
