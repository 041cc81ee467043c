"""Several continual runs at once, one worker process each, with one progress bar of stages.

On a small CPU one process with two torch threads barely beats one thread (the tiny model's
matrices are too small to split), so two single-threaded processes side by side finish two runs
sooner than running them one after the other (benchmarks/bench_parallel.py). Every worker is an
ordinary resumable run: interrupt the parent and run the same command again.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
from pathlib import Path

from tqdm.auto import tqdm

from dmole_lab.config import RunConfig
from dmole_lab.data.stream import stream_tasks
from dmole_lab.store import RunStore


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """Torch threads each of ``jobs`` workers gets so that together they fill the CPUs (>= 1)."""
    return max(1, (cpus or os.cpu_count() or 1) // jobs)


def _work(cfg: RunConfig, threads: int) -> str:
    """Worker: one run with ``threads`` torch threads, no progress bars; its folder."""
    import torch

    from .continual import run

    torch.set_num_threads(threads)
    return str(run(cfg, progress=False).root)


def _stages_done(cfgs: list[RunConfig]) -> int:
    """Finished stages (zero-shot included) over the run folders of ``cfgs`` that exist."""
    done = 0
    for cfg in cfgs:
        store = RunStore.of(cfg)
        if store.manifest_path.exists():
            try:
                done += len(store.manifest()["stages"])
            except (ValueError, KeyError):  # being written right now: count it next time
                pass
    return done


def run_parallel(cfgs: list[RunConfig], jobs: int, progress: bool = True,
                 threads: int = 0, poll_seconds: float = 1.0) -> list[RunStore]:
    """Run every config of ``cfgs`` in ``jobs`` worker processes; their stores, in order.

    ``threads`` torch threads per worker (0: :func:`threads_per_job`). Every config is checked
    (:func:`dmole_lab.engine.continual.check_run`) before the first worker starts. Workers start
    with ``spawn`` (a forked torch runtime can deadlock in its thread pools). The first failing
    run raises its error here once the others have finished.
    """
    from .continual import check_run

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    for cfg in cfgs:  # every run's cheap checks before the first worker starts
        check_run(cfg)
    jobs = min(jobs, len(cfgs))
    threads = threads or threads_per_job(jobs)
    total = sum(len(stream_tasks(c.stream)) + 1 for c in cfgs)
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool, \
            tqdm(total=total, desc=f"{len(cfgs)} runs in {jobs} processes", unit="stage",
                 disable=not progress) as bar:
        futures = [pool.submit(_work, cfg, threads) for cfg in cfgs]
        pending = set(futures)
        while pending:
            _, pending = cf.wait(pending, timeout=poll_seconds)
            bar.update(_stages_done(cfgs) - bar.n)
        roots = [f.result() for f in futures]  # re-raises a worker's error
    return [RunStore(Path(r)) for r in roots]


__all__ = ["run_parallel", "threads_per_job"]
