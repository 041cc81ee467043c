"""Stored results shipped with the project, so notebooks open with real numbers and no training.

``results/<name>/`` holds the light part of a run folder: manifest.json, tables/*.parquet and
figures/*.png (no predictions, no weights). :func:`ship` copies a finished run there;
:func:`open_run` prefers a run of the same name recomputed locally under ``runs/``.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from dmole_lab.config import PROJECT_ROOT
from dmole_lab.store import RunStore

RESULTS_DIR = PROJECT_ROOT / "results"
RUNS_DIR = PROJECT_ROOT / "runs"


def available() -> list[str]:
    """Names of the shipped runs."""
    return sorted(p.name for p in RESULTS_DIR.iterdir() if (p / "manifest.json").is_file())


def open_run(name: str, results_dir: Path | None = None) -> RunStore:
    """The shipped run ``name`` (clear error naming the available ones)."""
    root = Path(results_dir or RESULTS_DIR) / name
    if not (root / "manifest.json").is_file():
        have = available() if results_dir is None else []
        raise FileNotFoundError(f"no stored run {name!r} in {root.parent}; available: {have}")
    return RunStore(root)


def ship(store: RunStore, name: str, results_dir: Path | None = None) -> Path:
    """Copy a run's manifest, tables and figures to ``results/<name>`` (replacing it)."""
    dest = Path(results_dir or RESULTS_DIR) / name
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(store.manifest_path, dest / "manifest.json")
    for sub in ("tables", "figures"):
        if (store.root / sub).is_dir():
            shutil.copytree(store.root / sub, dest / sub)
    return dest


def _lookup(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return a == b


def find_runs(settings: dict[str, object],
              folders: tuple[Path, ...] = (RESULTS_DIR, RUNS_DIR)) -> list[RunStore]:
    """Complete runs (shipped, then local) whose config has every dotted key of ``settings``
    (e.g. ``{"method": "dmole", "dmole.budget": 0.5}``) at that value."""
    found = []
    for folder in folders:
        for path in sorted(Path(folder).glob("*/manifest.json")) if Path(folder).is_dir() else ():
            m = json.loads(path.read_text())
            if m.get("status") == "complete" and all(
                    _same(_lookup(m.get("config", {}), k), v) for k, v in settings.items()):
                found.append(RunStore(path.parent))
    return found


def run_command(preset: str, settings: dict[str, object]) -> str:
    """The ``dmole-lab run`` command line that produces a run with ``settings``."""
    args = " ".join(f"--{k}={v}" for k, v in settings.items())
    return f"dmole-lab run --preset {preset} {args}".strip()


def open_or_run(name: str, method: str, recompute: bool = False, preset: str = "tiny",
                overrides: dict | None = None) -> RunStore:
    """The shipped run ``name``; or, with ``recompute``, a run of ``method`` on ``preset`` with
    ``overrides`` (resumed if it exists), as ``dmole-lab run`` would make it."""
    if not recompute:
        return open_run(name)
    from dmole_lab.config import build_config
    from dmole_lab.engine.continual import run

    from .report import write_figures

    store = run(build_config(preset, {**(overrides or {}), "method": method}))
    write_figures(store)
    return store


COMPARISON_FILES = ("scores.parquet", "runs.parquet", "table.parquet", "table.md")


#: What a comparison keeps of each finished run: enough to tabulate it and to skip it when the
#: sweep resumes elsewhere (no predictions, no weights).
LIGHT_RUN_FILES = ("manifest.json", "tables/score_matrix.parquet", "tables/metrics.parquet")


def ship_comparison(folder: Path, name: str, runs: list[Path] = (),
                    results_dir: Path | None = None) -> Path:
    """Copy the tables ``dmole-lab compare`` wrote in ``folder`` to ``results/<name>``, and the
    light part of each finished run folder in ``runs`` to ``results/<name>/runs/``.

    Run folders shipped earlier that are not in ``runs`` are removed, so the shipped runs are
    those of the shipped tables (a changed default gives a method new runs; a resumed sweep
    must not pick up the old ones as finished).
    """
    dest = Path(results_dir or RESULTS_DIR) / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in COMPARISON_FILES:
        shutil.copy2(Path(folder) / f, dest / f)
    keep = {Path(r).name for r in runs}
    for old in sorted((dest / "runs").iterdir()) if (dest / "runs").is_dir() else ():
        if old.name not in keep:
            shutil.rmtree(old)
    for run in runs:
        for f in LIGHT_RUN_FILES:
            (dest / "runs" / Path(run).name / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(run) / f, dest / "runs" / Path(run).name / f)
    return dest


def unpack_runs(name: str, runs_dir: Path, results_dir: Path | None = None) -> list[Path]:
    """Copy the light run folders shipped with comparison ``name`` into ``runs_dir`` (those not
    there yet), so that a sweep resumed on a fresh clone skips them; returns what it copied."""
    src = Path(results_dir or RESULTS_DIR) / name / "runs"
    copied = []
    for run in sorted(src.iterdir()) if src.is_dir() else ():
        if not (Path(runs_dir) / run.name).exists():
            shutil.copytree(run, Path(runs_dir) / run.name)
            copied.append(Path(runs_dir) / run.name)
    return copied


def open_comparison(name: str, results_dir: Path | None = None):
    """(scores, runs) of a shipped comparison (see :mod:`dmole_lab.analysis.compare`)."""
    import pandas as pd

    root = Path(results_dir or RESULTS_DIR) / name
    if not (root / "scores.parquet").is_file():
        raise FileNotFoundError(f"no stored comparison {name!r} in {root.parent}")
    return pd.read_parquet(root / "scores.parquet"), pd.read_parquet(root / "runs.parquet")


def committed_comparison(name: str, rev: str):
    """(scores, runs) of comparison ``name`` as committed at git revision ``rev`` of this
    repository (``results/<name>``), e.g. the comparison a reshipped one replaced.

    Raises :class:`LookupError` if the clone does not have ``rev`` (a shallow clone), and
    :class:`FileNotFoundError` if ``rev`` has no such comparison."""
    import io
    import subprocess
    import tarfile
    import tempfile

    def git(*args):
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True)

    if git("cat-file", "-e", f"{rev}^{{commit}}").returncode:
        raise LookupError(f"revision {rev!r} is not in this clone of {PROJECT_ROOT.name}")
    got = git("archive", rev, f"results/{name}")
    if got.returncode:
        raise FileNotFoundError(f"no results/{name} at revision {rev!r}: "
                                f"{got.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(got.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        return open_comparison(name, Path(tmp) / "results")


def open_or_compare(name: str, recompute: bool = False, preset: str = "tiny",
                    overrides: dict | None = None, methods: str | None = None,
                    seeds: str = "0,1,2"):
    """The shipped comparison ``name``; or, with ``recompute``, the sweep of ``methods`` (default:
    every peer and ablation, as ``dmole-lab compare``) x ``seeds`` on ``preset`` with
    ``overrides`` (finished runs reused)."""
    if not recompute:
        return open_comparison(name)
    import tempfile

    from dmole_lab.analysis.compare import parse_seeds, parse_variants
    from dmole_lab.config import build_config
    from dmole_lab.engine.sweep import sweep

    from .report import write_figures

    cfg = build_config(preset, overrides)
    variants = parse_variants(methods)
    out = Path(tempfile.mkdtemp(prefix="compare-"))
    result = sweep(cfg, variants, parse_seeds(seeds), out, progress=False,
                   on_finish=write_figures)
    if result.failed or result.missing:
        raise RuntimeError(f"comparison of {[v.name for v in variants]} on {preset} did not "
                           f"finish: failed "
                           f"{result.failed}, missing {[(v.name, s) for v, s in result.missing]}")
    return open_comparison(out.name, out.parent)
