"""The run store: one folder per run, manifest first, tidy parquet tables, safetensors weights.

Layout::

    runs/<method>-<config hash>/
        manifest.json            config, seed, versions, commit, status of every stage
        stages/<t>/scores.parquet       stage, eval_task, metric, value (tidy)
        stages/<t>/predictions.parquet  raw predictions, for re-scoring
        stages/<t>/train_log.parquet    step, loss, lr
        stages/<t>/dynamics.parquet     step, tower, quantity, value (per-step recorders)
        stages/<t>/state.safetensors    what the method needs to rebuild the model
        tables/*.parquet, figures/*.png  summaries written when the run completes

Every file is written to a temporary name (``.<name>.<random>.tmp``) and renamed into place, so
an interrupted write never leaves a half file under a real name; a stage counts as done only
once the manifest says so, and the manifest is written last. A process that works in a run
folder holds an OS lock on its ``.lock`` file (:meth:`RunStore.locked`): a second process on the
same folder is refused, and a killed holder releases it with its last file descriptor. The
holder removes the temporary files an earlier, killed process left behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from dmole_lab.config import PROJECT_ROOT, RunConfig, config_hash, resolve_path, to_dict

try:  # POSIX; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

DEFAULT_EXCLUDE = ("runs_dir", "pretrain")
#: Config sections read by one method only: they name that method's runs and no other's.
METHOD_SECTIONS = {"dmole": "dmole", "lwf": "lwf", "ewc": "ewc", "o-lora": "olora",
                   "moelora": "moelora", "mole": "mole", "mola": "mola",
                   "branchlora": "branch"}
#: Every method's section, for a run or cache that reads none of them.
METHOD_SECTION_NAMES = tuple(sorted(set(METHOD_SECTIONS.values())))


def run_exclude(cfg: RunConfig) -> tuple[str, ...]:
    """Sections that do not change a continual run of ``cfg.method`` (kept out of its hash)."""
    return DEFAULT_EXCLUDE + tuple(s for m, s in METHOD_SECTIONS.items() if m != cfg.method)


VERSIONED = ("dmole_lab", "torch", "transformers", "peft", "accelerate", "numpy", "pandas")
#: The lock file inside a run folder (its content: holder pid, host and start time).
LOCK_NAME = ".lock"


class RunFolderError(RuntimeError):
    """A run folder cannot be used: another process holds it, or it belongs to another config."""


def is_temp_file(path: Path) -> bool:
    """True for a temporary file of :func:`_atomic_write` (``.<name>.<random>.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, default=str)))


def write_table(path: Path, df: pd.DataFrame) -> None:
    """Atomically write a DataFrame as parquet."""
    _atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_tensors(path: Path, tensors: dict, metadata_: dict[str, str] | None = None) -> None:
    """Atomically write a dict of tensors as safetensors."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata_))


def read_tensors(path: Path) -> dict:
    """Load a safetensors file onto the CPU."""
    from safetensors.torch import load_file

    return load_file(str(path))


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """The project's current commit (with "+dirty" if it has uncommitted changes), or "unknown"."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=PROJECT_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class RunStore:
    """Read and write one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -------------------------------------------------------------- creation and manifest
    @staticmethod
    def run_name(cfg: RunConfig, kind: str | None = None,
                 exclude: tuple[str, ...] | None = None) -> str:
        """Folder name of a run: its kind (default: the method) and config hash (seed included)."""
        exclude = run_exclude(cfg) if exclude is None else exclude
        return f"{kind or cfg.method}-{config_hash(cfg, exclude)}"

    @classmethod
    def of(cls, cfg: RunConfig, kind: str | None = None,
           exclude: tuple[str, ...] | None = None) -> "RunStore":
        """The run folder of ``cfg`` under its ``runs_dir`` (nothing is read or written)."""
        return cls(resolve_path(cfg.runs_dir) / cls.run_name(cfg, kind, exclude))

    @classmethod
    def for_config(cls, cfg: RunConfig, runs_dir: Path, kind: str | None = None,
                   exclude: tuple[str, ...] | None = None) -> "RunStore":
        """Open the run folder of ``cfg`` under ``runs_dir``, writing its manifest if new.

        ``kind`` names runs that are not a method's continual run (``"probe"``); ``exclude``
        lists the config sections that do not affect such a run, so they stay out of its hash.
        The runners call :meth:`start` instead, inside :meth:`locked`.
        """
        exclude = run_exclude(cfg) if exclude is None else exclude
        store = cls(Path(runs_dir) / cls.run_name(cfg, kind, exclude))
        return store.start(cfg, kind, exclude)

    def start(self, cfg: RunConfig, kind: str | None = None,
              exclude: tuple[str, ...] | None = None, tasks: list[str] | None = None,
              data: dict | None = None) -> "RunStore":
        """Write the manifest of ``cfg`` if this folder has none (the run starts), else check
        that the folder belongs to ``cfg`` (the run resumes); returns this store.

        ``tasks``: the stream's task names (default ``cfg.stream.tasks``; a stream file names
        its own). ``data``: a fingerprint of the stream's data files (``stream_data`` in the
        manifest); a resume on other data raises :class:`RunFolderError`."""
        exclude = run_exclude(cfg) if exclude is None else exclude
        digest = config_hash(cfg, exclude)
        if self.manifest_path.exists():
            manifest = self.manifest()
            if manifest["config_hash"] != digest:
                raise RunFolderError(f"run folder {self.root} belongs to another config "
                                     f"(hash {manifest['config_hash']}, not {digest}); "
                                     "remove or rename it")
            stored = manifest.get("stream_data")
            if data is not None and stored is not None and stored["digest"] != data["digest"]:
                raise RunFolderError(f"the data of stream file {data['file']} changed since "
                                     f"run {self.root.name} began (fingerprint "
                                     f"{stored['digest']}, now {data['digest']}); a resumed "
                                     "run would mix two datasets: restore the files or remove "
                                     "the run folder")
        else:
            write_json(self.manifest_path, {
                "name": self.root.name,
                "kind": kind or "continual",
                "config": to_dict(cfg),
                "config_hash": digest,
                "method": kind or cfg.method,
                "seed": cfg.seed,
                "tasks": list(cfg.stream.tasks if tasks is None else tasks),
                **({"stream_data": data} if data is not None else {}),
                "versions": package_versions(),
                "commit": git_commit(),
                "created": _dt.datetime.now().isoformat(timespec="seconds"),
                "stages": {},
                "status": "running",
            })
        return self

    # ------------------------------------------------------------------------- locking
    @property
    def lock_path(self) -> Path:
        """The lock file a working process holds (``.lock`` in the run folder)."""
        return self.root / LOCK_NAME

    def lock_holder(self) -> str:
        """What the lock file says about its holder ("pid 123 on host since ..."), or "".

        A holder writes this right after it takes the lock, so a reader may briefly see it
        empty; the reader retries for a moment."""
        for _ in range(50):
            try:
                text = self.lock_path.read_text().strip()
            except OSError:
                text = ""
            if text:
                return text
            time.sleep(0.01)
        return ""

    @contextmanager
    def locked(self) -> Iterator["RunStore"]:
        """Hold this run folder for the ``with`` block (an OS lock, ``fcntl.flock``).

        Creates the folder if needed. Raises :class:`RunFolderError` naming the folder and the
        holder's pid if another process holds it. The lock is released when the block ends or
        when the process dies, kill -9 included (the kernel drops it with the file descriptor).
        Once held, temporary files a killed writer left behind are removed. If the block fails
        before the run wrote its manifest, the folders this call created are removed again, so
        a run that never started leaves nothing behind."""
        created = self.root
        while not created.parent.exists():
            created = created.parent
        created = None if self.root.exists() else created
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = self.lock_holder() or "pid unknown"
                    raise RunFolderError(
                        f"run folder {self.root} is in use by another process ({holder}); "
                        "wait for it to finish (or stop it), then run the same command again "
                        "to resume") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                         f"{_dt.datetime.now().isoformat(timespec='seconds')}\n".encode())
            self.remove_temp_files()
            try:
                yield self
            except BaseException:
                if created is not None and not self.manifest_path.exists():
                    shutil.rmtree(created, ignore_errors=True)
                raise
        finally:
            os.close(fd)  # releases the lock

    def remove_temp_files(self) -> list[Path]:
        """Delete the temporary files of interrupted writes (call only while holding the lock:
        another writer's file in flight would look the same); returns what was removed."""
        removed = []
        for path in sorted(self.root.rglob(".*.tmp")):
            if path.is_file() and is_temp_file(path):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    @property
    def manifest_path(self) -> Path:
        """The run's ``manifest.json``."""
        return self.root / "manifest.json"

    def manifest(self) -> dict:
        """The manifest as a dict; clear error if the folder is not a run."""
        if not self.manifest_path.is_file():
            raise FileNotFoundError(f"{self.root} is not a run folder (no manifest.json)")
        return json.loads(self.manifest_path.read_text())

    def update_manifest(self, **fields) -> None:
        """Atomically merge top-level ``fields`` into the manifest."""
        m = self.manifest()
        m.update(fields)
        write_json(self.manifest_path, m)

    # -------------------------------------------------------------------------- stages
    def stage_dir(self, stage: int) -> Path:
        """The folder of one stage's files."""
        return self.root / "stages" / f"{stage:02d}"

    def stage_done(self, stage: int) -> bool:
        """True once every file of ``stage`` was written and the manifest marked it done."""
        return self.manifest()["stages"].get(str(stage), {}).get("status") == "done"

    def finish_stage(self, stage: int, tables: dict[str, pd.DataFrame],
                     state: dict | None = None, info: dict | None = None) -> None:
        """Write a stage's tables and state, then mark it done in the manifest (last)."""
        d = self.stage_dir(stage)
        for name, df in tables.items():
            write_table(d / f"{name}.parquet", df)
        if state:
            write_tensors(d / "state.safetensors", state)
        m = self.manifest()
        m["stages"][str(stage)] = {"status": "done", **(info or {})}
        write_json(self.manifest_path, m)

    def stage_state(self, stage: int) -> dict:
        """The tensors a method saved at ``stage`` (empty if it saved none)."""
        path = self.stage_dir(stage) / "state.safetensors"
        return read_tensors(path) if path.exists() else {}

    def stage_table(self, stage: int, name: str) -> pd.DataFrame:
        """One table of one stage."""
        return pd.read_parquet(self.stage_dir(stage) / f"{name}.parquet")

    def table(self, name: str) -> pd.DataFrame:
        """A stage table concatenated over every finished stage (e.g. "scores")."""
        parts = []
        for s in sorted(self.manifest()["stages"], key=int):
            path = self.stage_dir(int(s)) / f"{name}.parquet"
            if self.stage_done(int(s)) and path.exists():
                parts.append(pd.read_parquet(path))
        if not parts:
            raise FileNotFoundError(
                f"run {self.root.name} has no finished stage with a {name} table")
        return pd.concat(parts, ignore_index=True)

    # ------------------------------------------------------------------------ summaries
    def write_summary(self, name: str, df: pd.DataFrame) -> Path:
        """Write a run-level table to ``tables/<name>.parquet``."""
        path = self.root / "tables" / f"{name}.parquet"
        write_table(path, df)
        return path

    def summary(self, name: str) -> pd.DataFrame:
        """Read a run-level table."""
        return pd.read_parquet(self.root / "tables" / f"{name}.parquet")

    def figure_path(self, name: str) -> Path:
        """Where a figure of this run goes (folder created)."""
        path = self.root / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
