"""Stored results shipped with the project, so notebooks open with real numbers and no training.

``results/<name>/`` holds the light part of a run folder: manifest.json, tables/*.parquet and
figures/*.png (no predictions, no weights). :func:`ship` copies a finished run there;
:func:`open_run` prefers a run of the same name recomputed locally under ``runs/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .config import PROJECT_ROOT
from .store import RunStore

RESULTS_DIR = PROJECT_ROOT / "results"


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
