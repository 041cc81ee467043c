"""Run folders under concurrency and kill -9: one process per run folder (an OS lock), and a run
killed at random points of training, evaluation and the store's writes resumes to exactly the
scores of an uninterrupted run, never leaving a stage marked done without its files or a half
file under a real name.

The kill test drives the runs from a helper process (this module run as ``python -m
tests.test_interrupt SPEC``): it imports torch and transformers once, then forks one child per
attempt, so a dozen kills cost seconds rather than a dozen interpreter starts. Each child is an
ordinary :func:`dmole_lab.engine.continual.run` of the same config (what ``dmole-lab run``
calls) with one torch thread; the helper reports the kills and what it found after each.
"""

from __future__ import annotations

import json
import mmap
import os
import random
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Seed of the kill schedule (which phases, which store write, which delays).
SCHEDULE_SEED = 7
#: Kills at random delays whatever the run is doing (on top of one per phase and stage).
FREE_KILLS = 2


# =============================================================== the helper process (driver)
def _mark(mm: mmap.mmap, phase: str, stage) -> None:
    """Publish what the child is doing (read by the parent through shared memory)."""
    text = f"{phase}:{stage}".encode()
    mm[:64] = text.ljust(64, b" ")


def _phase(mm: mmap.mmap) -> tuple[str, str]:
    """(phase, stage) the child published last."""
    phase, _, stage = bytes(mm[:64]).decode(errors="replace").strip().partition(":")
    return phase, stage


def _die() -> None:
    """SIGKILL this process (nothing runs after it: no finally, no atexit)."""
    os.kill(os.getpid(), signal.SIGKILL)


def _child(spec: dict, runs_dir: str, target: dict | None, mm: mmap.mmap,
           events_path: str | None) -> None:
    """Body of a forked child: one run of the config, instrumented to publish its phase
    (train / eval / store, with the stage) and, if ``target`` asks for it, to SIGKILL itself
    at one store write: with the temporary file complete but not renamed ("before_rename"),
    cut to half its size ("half": a write killed midway), or right after the rename."""
    import torch

    import dmole_lab.store as store_mod
    from dmole_lab.config import build_config
    from dmole_lab.engine import continual

    torch.set_num_threads(1)
    state = {"stage": -1, "writes": 0}
    events: list = []
    started = time.perf_counter()

    def setup_ends():
        """Record how long the run took to reach its first phase (once)."""
        if not any(e[0] == "setup" for e in events):
            events.append(["setup", -1, time.perf_counter() - started])
    orig_eval, orig_train = continual.evaluate, continual.train_stage
    orig_atomic = store_mod._atomic_write

    def evaluate(*args, **kwargs):
        setup_ends()
        state.update(stage=args[4], writes=0)
        _mark(mm, "eval", args[4])
        start = time.perf_counter()
        try:
            return orig_eval(*args, **kwargs)
        finally:
            events.append(["eval", args[4], time.perf_counter() - start])
            _mark(mm, "other", args[4])

    def train_stage(*args, **kwargs):
        stage = int(kwargs["desc"].split()[1].rstrip(":"))
        setup_ends()
        _mark(mm, "train", stage)
        start = time.perf_counter()
        try:
            return orig_train(*args, **kwargs)
        finally:
            events.append(["train", stage, time.perf_counter() - start])
            _mark(mm, "other", stage)

    def atomic_write(path, write):
        stage, k = state["stage"], state["writes"]
        state["writes"] += 1
        if Path(path).parent.name == "tables" and "final" not in state:
            state["final"] = 0  # the run's tables and last manifest, once every stage is done
        if "final" in state:
            stage, k = "final", state["final"]
            state["final"] += 1
        events.append(["write", stage, k, str(path)])
        before = _phase(mm)
        _mark(mm, "store", stage)
        hit = (target is not None and target["phase"] == "store"
               and target["stage"] == stage and target["write"] == k)
        if hit and target["how"] == "after_rename":
            orig_atomic(path, write)
            _die()
        if hit:
            def killed_write(tmp):
                write(tmp)
                if target["how"] == "half":
                    os.truncate(tmp, os.path.getsize(tmp) // 2)
                _die()

            orig_atomic(path, killed_write)
        orig_atomic(path, write)
        _mark(mm, *before)

    continual.evaluate, continual.train_stage = evaluate, train_stage
    store_mod._atomic_write = atomic_write
    _mark(mm, "setup", -1)
    cfg = build_config(overrides={**spec["overrides"], "runs_dir": runs_dir})
    continual.run(cfg, progress=False)
    if events_path:
        Path(events_path).write_text(json.dumps(events))


def _fork(fn, *args) -> int:
    """Run ``fn(*args)`` in a forked child; exit status 0 if it returns, 1 if it raises."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            fn(*args)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def _check(root: str, expected: dict, out: str) -> None:
    """Body of a checker child: what a reader finds in the run folder ``root``."""
    import pandas as pd
    from safetensors import safe_open

    from dmole_lab.store import is_temp_file

    root_p = Path(root)
    problems, temps, done = [], [], []
    manifest = None
    for path in sorted(root_p.rglob("*")) if root_p.exists() else ():
        if not path.is_file():
            continue
        if is_temp_file(path):
            temps.append(str(path.relative_to(root_p)))
            continue
        try:  # every file under a real name is whole
            if path.suffix == ".json":
                data = json.loads(path.read_text())
                if path.name == "manifest.json" and path.parent == root_p:
                    manifest = data
            elif path.suffix == ".parquet":
                pd.read_parquet(path)
            elif path.suffix == ".safetensors":
                with safe_open(str(path), framework="numpy") as f:
                    for key in f.keys():
                        f.get_tensor(key)
        except Exception as e:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"{path.relative_to(root_p)} does not parse: {e!r}")
    if manifest is not None:
        for stage, info in manifest["stages"].items():
            if info.get("status") != "done":
                continue
            done.append(int(stage))
            have = {p.name for p in (root_p / "stages" / f"{int(stage):02d}").glob("*")
                    if not is_temp_file(p)}
            missing = set(expected[stage]) - have
            if missing:
                problems.append(f"stage {stage} is marked done without {sorted(missing)}")
    Path(out).write_text(json.dumps({"problems": problems, "temp_files": temps,
                                     "done": sorted(done),
                                     "status": manifest and manifest.get("status")}))


def _inspect(root: Path, expected: dict, work: Path) -> dict:
    """Run :func:`_check` in a forked child (the parent never starts pyarrow's threads)."""
    out = work / "check.json"
    pid = _fork(_check, str(root), expected, str(out))
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return {"problems": ["the checker crashed"], "temp_files": [], "done": [], "status": None}
    return json.loads(out.read_text())


def _preload(model_path: str) -> None:
    """Import in the parent what every child would import (torch, transformers' model code),
    without running any torch operation (forking after one could deadlock a child)."""
    import importlib

    import pyarrow.parquet  # noqa: F401

    import dmole_lab.engine.continual  # noqa: F401

    model_type = json.loads((Path(model_path) / "config.json").read_text())["model_type"]
    for name in (f"transformers.models.{model_type}.modeling_{model_type}",
                 f"transformers.models.{model_type}.processing_{model_type}",
                 "transformers.generation.utils"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _attempt(spec, runs_dir, target, mm, events_path=None, timeout=120.0):
    """Fork one run; kill it as ``target`` says. Returns (exit status, phase at the kill)."""
    _mark(mm, "start", -1)
    pid = _fork(_child, spec, runs_dir, target, mm, events_path)
    landed = None
    if target is not None and target["phase"] != "store":
        start = time.monotonic()
        wanted = None if target["phase"] == "free" else (target["phase"], str(target["stage"]))
        while time.monotonic() - start < timeout:
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return "exited early", None
            if wanted is None or _phase(mm) == wanted:
                break
            time.sleep(0.0005)
        time.sleep(target["delay"])
        landed = _phase(mm)
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timed out", landed
        time.sleep(0.002)
    if os.WIFSIGNALED(status):
        if target is not None and target["phase"] == "store":
            landed = ("store", str(target["stage"]))
        return f"signal {os.WTERMSIG(status)}", landed
    return f"exit {os.WEXITSTATUS(status)}", landed


def _schedule(rng: random.Random, n_stages: int) -> list[tuple[str, object]]:
    """The kills in order: one while the manifest is first written, then per stage one in
    each of its phases (shuffled), one in the run's final writes, and FREE_KILLS at random
    delays at random places."""
    plan: list[tuple[str, object]] = [("store", -1)]
    for s in range(n_stages + 1):
        phases = ["eval", "store"] + (["train"] if s else [])
        rng.shuffle(phases)
        plan += [(p, s) for p in phases]
    plan.append(("store", "final"))
    for _ in range(FREE_KILLS):
        plan.insert(rng.randrange(1, len(plan) + 1), ("free", None))
    return plan


def drive(spec: dict) -> dict:
    """Reference run, then the kill schedule on one run folder, then the run to completion."""
    _preload(spec["overrides"]["model.path"])
    from dmole_lab.config import build_config
    from dmole_lab.store import RunStore

    work = Path(spec["work"])
    rng = random.Random(spec["seed"])
    mm = mmap.mmap(-1, 64)  # shared with the forked children
    n_stages = len(build_config(overrides=spec["overrides"]).stream.tasks)

    # 1. the uninterrupted reference, recording its phases' durations and its writes
    events_path = work / "reference-events.json"
    status, _ = _attempt(spec, spec["reference_dir"], None, mm, str(events_path))
    report = {"reference": status, "kills": [], "problems": []}
    if status != "exit 0":
        report["problems"].append(f"reference run: {status}")
        return report
    events = json.loads(events_path.read_text())
    cfg = build_config(overrides={**spec["overrides"], "runs_dir": spec["reference_dir"]})
    ref_root = Path(spec["reference_dir"]) / RunStore.run_name(cfg)
    expected = {str(s): sorted(p.name for p in (ref_root / "stages" / f"{s:02d}").iterdir())
                for s in range(n_stages + 1)}
    durations = {(e[0], e[1]): e[2] for e in events if e[0] in ("setup", "eval", "train")}
    writes: dict[object, list[int]] = {}  # stage (-1: the manifest's creation, "final") -> k
    for _, stage, k, _path in (e for e in events if e[0] == "write"):
        writes.setdefault(stage, []).append(k)

    # 2. the kills, each followed by a look at the folder as a reader would see it
    root = Path(spec["runs_dir"]) / RunStore.run_name(cfg)
    hows: list[str] = []
    for phase, stage in _schedule(rng, n_stages):
        seen = _inspect(root, expected, work)
        progress = next((s for s in range(n_stages + 1) if s not in seen["done"]), "final")
        if seen["status"] == "complete":
            progress = "final"
        # a planned stage the run has passed: aim at the first unfinished one instead
        if stage == -1 and (root / "manifest.json").exists():
            stage = progress
        if isinstance(stage, int) and stage >= 0 and progress != "final":
            stage = max(stage, progress)
        elif isinstance(stage, int) and stage >= 0:
            stage = "final"
        if phase == "train" and stage == 0:
            stage = 1
        if stage == "final" and phase != "free":
            phase = "store"
        target: dict = {"phase": phase, "stage": stage}
        if phase == "store":
            if not hows:  # each way of dying mid-write in turn, in a seeded order
                hows = rng.sample(["before_rename", "half", "after_rename"], 3)
            target["write"] = rng.choice(writes[stage])
            target["how"] = hows.pop()
        elif phase == "free":
            # a fraction of the work left by the reference's durations, so that the kill
            # lands before the run ends (the run also loads its model first: more margin)
            left = durations[("setup", -1)] + sum(
                d for (p, s), d in durations.items()
                if p != "setup" and progress != "final" and s >= progress)
            target["delay"] = rng.uniform(0.1, 0.9) * left
        else:
            # somewhere inside the phase, by the reference's duration of it
            target["delay"] = rng.uniform(0.0, 0.8) * durations[(phase, stage)]
        status, landed = _attempt(spec, spec["runs_dir"], target, mm)
        after = _inspect(root, expected, work)
        report["kills"].append({"target": target, "status": status,
                                "landed": landed and list(landed),
                                "temp_files": after["temp_files"], "done": after["done"]})
        report["problems"] += [f"after kill {len(report['kills'])} ({target}): {p}"
                               for p in after["problems"]]

    # 3. the same command, to completion
    status, _ = _attempt(spec, spec["runs_dir"], None, mm)
    report["final"] = status
    after = _inspect(root, expected, work)
    report["problems"] += [f"after the final run: {p}" for p in after["problems"]]
    report["final_temp_files"] = after["temp_files"]
    report["final_status"] = after["status"]
    report["run"], report["reference_run"] = str(root), str(ref_root)
    return report


if __name__ == "__main__":
    _spec = json.loads(Path(sys.argv[1]).read_text())
    Path(_spec["report"]).write_text(json.dumps(drive(_spec), indent=1))
    sys.exit(0)


# ===================================================================== the tests themselves
def _env() -> dict:
    """The environment of the tests' subprocesses."""
    # one OpenMP thread: two processes share a small CPU, and the helper forks after import
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1"}


def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_scores(
        smoke_overrides, tmp_path):
    """Killed (SIGKILL) at least 10 times across training, evaluation and the store's writes
    and run again each time, a run ends exactly where an uninterrupted run ends (same
    single-threaded CPU code on the same inputs: equal to the bit, so no tolerance); after
    every kill each stage marked done has all its files, every file under a real name parses,
    and the temporary files a kill leaves are cleared by the next run."""
    import numpy as np
    import pandas as pd

    from dmole_lab.store import RunStore

    over = {k: str(v) for k, v in smoke_overrides.items() if k != "runs_dir"}
    spec = {"overrides": over, "seed": SCHEDULE_SEED, "work": str(tmp_path),
            "runs_dir": str(tmp_path / "killed"), "reference_dir": str(tmp_path / "reference"),
            "report": str(tmp_path / "report.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "tests.test_interrupt",
                           str(tmp_path / "spec.json")], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["reference"] == "exit 0", proc.stderr[-3000:]
    kills = report["kills"]
    assert len(kills) >= 10
    assert all(k["status"] == "signal 9" for k in kills), (kills, proc.stderr[-3000:])
    landed = {k["landed"][0] for k in kills}
    assert {"train", "eval", "store"} <= landed, kills
    assert {k["target"]["how"] for k in kills if "how" in k["target"]} == {
        "before_rename", "half", "after_rename"}
    assert any(k["temp_files"] for k in kills)  # some kills did leave a temporary file ...
    assert report["problems"] == []
    assert report["final"] == "exit 0", proc.stderr[-3000:]
    assert report["final_status"] == "complete"
    assert report["final_temp_files"] == []  # ... and none is left at the end

    killed, reference = RunStore(Path(report["run"])), RunStore(Path(report["reference_run"]))
    pd.testing.assert_frame_equal(killed.summary("score_matrix"),
                                  reference.summary("score_matrix"), check_exact=True)
    pd.testing.assert_frame_equal(killed.table("predictions"), reference.table("predictions"),
                                  check_exact=True)
    n = len(killed.manifest()["tasks"])
    for t in range(1, n + 1):
        np.testing.assert_array_equal(killed.stage_table(t, "train_log")["loss"],
                                      reference.stage_table(t, "train_log")["loss"])
        got, want = killed.stage_state(t), reference.stage_state(t)
        assert got.keys() == want.keys()
        assert all((got[k] == want[k]).all() for k in want)


def _cli(argv: list[str]) -> subprocess.Popen:
    """Start ``dmole-lab run --quiet ARGV`` (``python -m dmole_lab``)."""
    return subprocess.Popen([sys.executable, "-m", "dmole_lab", "run", "--quiet", *argv],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_second_process_on_the_same_run_is_refused_and_the_first_finishes(smoke_overrides):
    """Two ``dmole-lab run`` of one config started at once: one runs, the other stops with
    exit status 2 and one line naming the run folder and the holder's pid; the run that ran is
    complete, with every stage's files."""
    from dmole_lab.config import build_config
    from dmole_lab.store import RunStore

    # 8 steps per stage, so the winner holds the folder well past the loser's start
    over = {**smoke_overrides, "stream.n_train": 32}
    argv = [f"--{k}={v}" for k, v in over.items()]
    procs = [_cli(argv), _cli(argv)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    store = RunStore(Path(over["runs_dir"]) / RunStore.run_name(build_config(overrides=over)))
    err = outs[loser][1].strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("dmole-lab run: error: run folder ")
    assert str(store.root) in err and f"pid {procs[winner].pid} " in err
    assert "Traceback" not in outs[loser][1]
    m = store.manifest()
    assert m["status"] == "complete" and set(m["stages"]) == {"0", "1", "2", "3"}
    assert len(store.summary("score_matrix")) > 0
    assert not [p for p in store.root.rglob(".*.tmp")]


_HOLD = """
import sys, time
from pathlib import Path
from dmole_lab.store import RunStore
with RunStore(Path(sys.argv[1])).locked():
    print("locked", flush=True)
    time.sleep(120)
"""


def test_lock_names_the_holder_and_dies_with_it(tmp_path):
    """A held run folder is refused with the holder's pid; after the holder is killed with
    SIGKILL the folder can be taken at once (the kernel drops the lock with the process)."""
    from dmole_lab.store import RunFolderError, RunStore

    store = RunStore(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(store.root)], cwd=ROOT,
                              env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderError, match=f"in use by another process \\(pid "
                                                 f"{holder.pid} on "):
            with store.locked():
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with store.locked():  # free again
        assert store.lock_holder().startswith(f"pid {os.getpid()} ")


def test_temporary_files_of_a_killed_writer_are_removed_by_the_next_holder(tmp_path):
    """What a killed write leaves (``.<name>.<random>.tmp``) is deleted once the folder is
    locked again; real files stay."""
    from dmole_lab.store import RunStore

    store = RunStore(tmp_path / "run")
    (store.root / "stages" / "01").mkdir(parents=True)
    left = [store.root / ".manifest.json.abc123.tmp",
            store.root / "stages" / "01" / ".scores.parquet.x9.tmp"]
    for p in left:
        p.write_bytes(b"half")
    (store.root / "stages" / "01" / "scores.parquet").write_bytes(b"kept")
    with store.locked():
        assert not any(p.exists() for p in left)
    assert (store.root / "stages" / "01" / "scores.parquet").read_bytes() == b"kept"
