"""Continual-learning metrics as pure functions of the score matrix (docs/method.md section 4).

``A`` has shape (T + 1, T): ``A[t, i]`` is the score on task i after stage t (1-based stages),
and row 0 is the zero-shot row b_i. Task index i is 0-based in code: column i holds task i+1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

BWT_DIVISORS = ("T-1", "T")
FORGETTING_MODES = ("first", "max")


def _check(A) -> np.ndarray:
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or A.shape[0] != A.shape[1] + 1:
        raise ValueError(
            f"score matrix must have shape (T+1, T) with a zero-shot row, got {A.shape}")
    return A


def last(A) -> float:
    """Last = (1/T) sum_i a[T, i]."""
    A = _check(A)
    return float(A[-1].mean())


def avg(A) -> float:
    """AVG = (1/T) sum_t (1/t) sum_{i<=t} a[t, i]: mean accuracy on seen tasks, over stages."""
    A = _check(A)
    T = A.shape[1]
    return float(np.mean([A[t, :t].mean() for t in range(1, T + 1)]))


def bwt(A, divisor: str = "T-1") -> float:
    """BWT = (1/(T-1)) sum_{i<T} (a[T, i] - a[i, i]); divisor "T" gives CoIN's convention."""
    A = _check(A)
    if divisor not in BWT_DIVISORS:
        raise ValueError(f"unknown BWT divisor {divisor!r}; allowed: {', '.join(BWT_DIVISORS)}")
    T = A.shape[1]
    if T < 2:
        return float("nan")
    total = sum(A[T, i] - A[i + 1, i] for i in range(T - 1))
    return float(total / (T - 1 if divisor == "T-1" else T))


def forgetting(A, mode: str = "first") -> float:
    """Mean over i<T of (a[i, i] - a[T, i]) ("first", Avalanche) or of
    (max_{1<=l<T} a[l, i] - a[T, i]) ("max", Chaudhry et al.)."""
    A = _check(A)
    if mode not in FORGETTING_MODES:
        allowed = ", ".join(FORGETTING_MODES)
        raise ValueError(f"unknown forgetting mode {mode!r}; allowed: {allowed}")
    T = A.shape[1]
    if T < 2:
        return float("nan")
    if mode == "first":
        vals = [A[i + 1, i] - A[T, i] for i in range(T - 1)]
    else:
        vals = [A[1:T, i].max() - A[T, i] for i in range(T - 1)]
    return float(np.mean(vals))


def fwt(A) -> float:
    """FWT = (1/(T-1)) sum_{i>=2} (a[i-1, i] - b_i): what earlier stages give an unseen task."""
    A = _check(A)
    T = A.shape[1]
    if T < 2:
        return float("nan")
    return float(np.mean([A[i, i] - A[0, i] for i in range(1, T)]))


def mft(A) -> float:
    """MFT = (1/T) sum_i a[i, i]: mean score on each task right after learning it."""
    A = _check(A)
    T = A.shape[1]
    return float(np.mean([A[i + 1, i] for i in range(T)]))


def learned_in_own_stage(A, margin: float = 10.0) -> int:
    """How many tasks scored at least ``margin`` points above zero-shot right after their own
    stage: a[i, i] - b_i >= margin. Not a metric of the paper: the plainest check that a
    continual run learned what it was shown (benchmarks/README.md, ``bench_demo.py``)."""
    A = _check(A)
    return int(sum(A[i + 1, i] - A[0, i] >= margin for i in range(A.shape[1])))


def summary(A, bwt_divisor: str = "T-1", forgetting_mode: str = "first") -> dict[str, float]:
    """Every metric of one matrix under the chosen conventions."""
    return {
        "AVG": avg(A), "Last": last(A), "BWT": bwt(A, bwt_divisor),
        "Forgetting": forgetting(A, forgetting_mode), "FWT": fwt(A), "MFT": mft(A),
    }


def matrix_from_scores(scores: pd.DataFrame, tasks: list[str]) -> np.ndarray:
    """The (T+1, T) matrix from a tidy table with columns stage, eval_task, value."""
    piv = scores.pivot_table(index="stage", columns="eval_task", values="value", aggfunc="mean")
    T = len(tasks)
    missing = [s for s in range(T + 1) if s not in piv.index]
    if missing:
        raise ValueError(f"score table lacks stage(s) {missing}")
    return piv.loc[list(range(T + 1)), list(tasks)].to_numpy(dtype=float)
