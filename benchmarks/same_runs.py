"""Check that two run folders (or two parents of run folders) hold the same results.

For every run present in both, every stage's score table (values, not wall times) and raw
predictions must be equal (exactly, by default). Used to show that a change of code leaves
results unchanged, e.g.::

    python -m dmole_lab run --preset tiny --methods dmole,seq-lora --jobs 2 --runs_dir=/tmp/new
    python benchmarks/same_runs.py /tmp/old /tmp/new

Exit status 0 if every shared run matches, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def run_folders(path: Path) -> dict[str, Path]:
    """Run name -> folder: ``path`` itself if it is a run, else its run sub-folders."""
    if (path / "manifest.json").is_file():
        return {path.name: path}
    return {p.parent.name: p.parent for p in sorted(path.glob("*/manifest.json"))}


def compare_run(a: Path, b: Path, tol: float = 0.0) -> list[str]:
    """Differences between two run folders' stage tables (scores and predictions)."""
    problems = []
    stages_a = sorted(p.name for p in (a / "stages").iterdir())
    stages_b = sorted(p.name for p in (b / "stages").iterdir())
    if stages_a != stages_b:
        problems.append(f"stages differ: {stages_a} vs {stages_b}")
    for stage in sorted(set(stages_a) & set(stages_b)):
        for table in ("scores", "predictions"):
            fa, fb = (r / "stages" / stage / f"{table}.parquet" for r in (a, b))
            if not (fa.exists() and fb.exists()):
                continue
            # wall times are not results; nor are bookkeeping columns a newer version adds
            # (scores' "main"): the columns both tables have are compared
            da, db = (pd.read_parquet(f).filter(regex="^(?!.*seconds)") for f in (fa, fb))
            shared = [c for c in da.columns if c in db.columns]
            da, db = da[shared], db[shared]
            try:
                pd.testing.assert_frame_equal(da, db, check_exact=tol == 0, atol=tol or None,
                                              rtol=0 if tol else None)
            except AssertionError as e:
                problems.append(f"stage {stage} {table}: {str(e).splitlines()[0]}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Compare the runs shared by two folders; print one line per run."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--tol", type=float, default=0.0, help="absolute tolerance (0 = exact)")
    args = p.parse_args(argv)
    ra, rb = run_folders(args.a), run_folders(args.b)
    shared = sorted(set(ra) & set(rb))
    if not shared:
        print(f"no run in both {args.a} and {args.b}")
        return 1
    ok = True
    for name in shared:
        problems = compare_run(ra[name], rb[name], args.tol)
        n = len(list((ra[name] / "stages").iterdir()))
        print(f"{name}: {'identical' if not problems else 'DIFFERENT'} ({n} stages)")
        for line in problems:
            print(f"  {line}")
        ok &= not problems
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
