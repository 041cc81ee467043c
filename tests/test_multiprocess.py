"""Two processes through ``accelerate launch`` (gloo on CPUs) give a one-process run's results.

D-MoLE on the micro model: sharded batches with token-weighted losses and summed gradients, the
probe's gradient sums, the batch vote, the router fit and sharded evaluation all meet here.
Predictions, scores, allocations and routing must be equal; the trained experts, losses,
sensitivity scores and recorded dynamics agree to a relative 1e-5 (absolute 1e-6 near zero).
That tolerance is float32 rounding: each process sums its half of a batch's gradient and the
halves are then added, an order of additions one process does not use (measured: differences
of at most 5e-7 on losses near 5 and 2.4e-7 on expert weights). Dropout is off
because every process draws its own masks, so runs with dropout match only in distribution.

On CPUs ``accelerate launch --cpu`` starts a single process (accelerate runs several CPU
processes only through MPI), so the test launches torchrun workers with the shipped
``configs/accelerate/cpu-2.yaml`` and ``model.device=cpu``, as docs/scale.md tells users to.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from safetensors.torch import load_file

from dmole_lab.config import build_config
from dmole_lab.engine.continual import run
from dmole_lab.store import RunStore

RTOL, ATOL = 1e-5, 1e-6
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
EXACT = ("predictions", "scores", "allocation", "routing", "train_routing")

#: Records, per process, every file the process creates or renames under the runs folder
#: (every store write is a temporary file renamed into place).
AUDIT = '''
import os, sys
_root = os.environ["DMOLE_AUDIT_ROOT"]
_fd = os.open(os.path.join(os.environ["DMOLE_AUDIT_DIR"], "rank" + os.environ.get("RANK", "-")),
              os.O_WRONLY | os.O_CREAT | os.O_APPEND)
def _hook(event, args):
    if event in ("os.rename", "os.mkdir", "tempfile.mkstemp") or (
            event == "open" and isinstance(args[0], (str, bytes, os.PathLike))
            and isinstance(args[1], str) and any(c in args[1] for c in "wax+")):
        path = os.fsdecode(args[1] if event == "os.rename" else args[0])
        if path.startswith(_root):
            os.write(_fd, (event + " " + path + "\\n").encode())
sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def overrides(micro_model_dir):
    """D-MoLE on the 3-task micro stream, no dropout, eval batches dealt to both processes."""
    return {"model.path": str(micro_model_dir), "model.device": "cpu", "method": "dmole",
            "stream.tasks": "caption,grounding,ocr", "stream.n_train": 8, "stream.n_test": 4,
            "stream.n_general": 4, "train.batch_size": 4, "train.epochs": 1,
            "eval.batch_size": 2, "eval.max_new_tokens": 4, "dmole.dropout": 0.0,
            "dmole.router_epochs": 5, "dmole.r": 2, "dmole.alpha": 4.0}


@pytest.fixture(scope="module")
def reference(overrides, tmp_path_factory) -> Path:
    """The one-process run, in this process (no launcher)."""
    runs = tmp_path_factory.mktemp("one")
    return run(build_config(None, {**overrides, "runs_dir": str(runs)}), progress=False).root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(overrides: dict, runs: Path, audit: Path, config: str = "cpu-2.yaml",
            extra: tuple[str, ...] = ()) -> subprocess.Popen:
    audit.mkdir(parents=True, exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(audit), os.environ.get(
        "PYTHONPATH", "")]), "DMOLE_AUDIT_ROOT": str(runs), "DMOLE_AUDIT_DIR": str(audit),
        "OMP_NUM_THREADS": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    argv = [str(accelerate), "launch", "--config_file", str(CONFIGS / config), *extra,
            "--main_process_port", str(_free_port()), "-m", "dmole_lab", "run", "--quiet",
            f"--runs_dir={runs}", *(f"--{k}={v}" for k, v in overrides.items())]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _writes(audit: Path) -> dict[str, list[str]]:
    return {p.name: p.read_text().splitlines() for p in sorted(audit.glob("rank*"))}


def _same_results(a: Path, b: Path, gradient_norms: bool = True) -> None:
    """Every stage table and state of run ``a`` equals run ``b``'s (EXACT tables exactly,
    the rest to RTOL), and so do the run's metrics. ``gradient_norms=False``: run ``b``
    recorded no per-tower gradient norms (DeepSpeed keeps gradients sharded)."""
    stage_files = sorted(p.relative_to(a) for p in (a / "stages").rglob("*") if p.is_file())
    assert stage_files == sorted(p.relative_to(b) for p in (b / "stages").rglob("*")
                                 if p.is_file())
    for rel in stage_files + [Path("tables/metrics.parquet"), Path("tables/score_matrix.parquet")]:
        if rel.suffix == ".safetensors":
            x, y = load_file(a / rel), load_file(b / rel)
            assert x.keys() == y.keys()
            for k in x:
                np.testing.assert_allclose(x[k].numpy(), y[k].numpy(), rtol=RTOL, atol=ATOL,
                                           err_msg=f"{rel}: {k}")
            continue
        x, y = (pd.read_parquet(r / rel).drop(columns=["seconds"], errors="ignore")
                for r in (a, b))
        if rel.stem == "dynamics" and not gradient_norms:
            x = x[x["quantity"] != "grad_norm"].reset_index(drop=True)
            assert (y["quantity"] != "grad_norm").all()
        if rel.stem in EXACT:
            pd.testing.assert_frame_equal(x, y, obj=str(rel))
        else:
            pd.testing.assert_frame_equal(x, y, rtol=RTOL, atol=ATOL, obj=str(rel))


def test_two_processes_equal_one_and_only_the_main_process_writes(overrides, reference,
                                                                   tmp_path):
    runs, audit = tmp_path / "runs", tmp_path / "audit"
    _finish(_launch(overrides, runs, audit))
    (root,) = [p.parent for p in runs.glob("*/manifest.json")]
    assert root.name == reference.name  # the processes do not change the run's config
    assert RunStore(root).manifest()["processes"] == 2
    assert RunStore(root).manifest()["status"] == "complete"
    _same_results(reference, root)
    writes = _writes(audit)
    assert {"rank0", "rank1"} <= set(writes)  # "rank-": the launcher itself
    assert [w for name, ws in writes.items() if name != "rank0" for w in ws] == []
    assert any(w.endswith("manifest.json") for w in writes["rank0"])


def _rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def test_a_killed_rank_stops_the_run_cleanly_and_it_resumes_to_the_same_results(
        overrides, reference, tmp_path):
    runs, audit = tmp_path / "runs", tmp_path / "audit"
    launcher = _launch(overrides, runs, audit)
    store = RunStore(runs / reference.name)
    deadline = time.time() + 120
    while time.time() < deadline and not (store.manifest_path.exists()
                                          and store.stage_done(1)):
        assert launcher.poll() is None, launcher.communicate()[0][-3000:]
        time.sleep(0.05)
    victim, survivor = _rank_process(launcher, 1), _rank_process(launcher, 0)
    assert victim is not None and survivor is not None and not store.stage_done(3)
    victim.send_signal(signal.SIGKILL)
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode != 0, out[-3000:]
    try:  # the launcher took the other process down
        assert survivor.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        pass
    manifest = store.manifest()  # still whole JSON
    assert manifest.get("status") != "complete"
    done = [int(s) for s, v in manifest["stages"].items() if v.get("status") == "done"]
    assert 1 in done and 3 not in done
    for t in done:  # a stage marked done holds every file it had in the one-process run
        want = {p.name for p in (reference / "stages" / f"{t:02d}").iterdir()}
        assert want <= {p.name for p in store.stage_dir(t).iterdir()}, t
    _finish(_launch(overrides, runs, tmp_path / "audit-resume"))
    assert store.manifest()["status"] == "complete"
    _same_results(reference, store.root)


def test_the_shipped_launcher_configs_are_ones_accelerate_reads():
    from accelerate.commands.config.config_args import load_config_from_file

    for name, kind, processes in [("multi-gpu.yaml", "MULTI_GPU", 8),
                                  ("cpu-2.yaml", "MULTI_GPU", 2),
                                  ("zero2.yaml", "DEEPSPEED", 8)]:
        cfg = load_config_from_file(str(CONFIGS / name))
        assert cfg.distributed_type == kind and cfg.num_processes == processes
        assert cfg.mixed_precision == "no"  # the run's precision is its config's
    assert load_config_from_file(str(CONFIGS / "zero2.yaml")).deepspeed_config["zero_stage"] == 2


def test_deepspeed_zero2_shards_the_trainable_state_and_gives_the_same_results(
        overrides, reference, tmp_path):
    """configs/accelerate/zero2.yaml on two CPU processes: AdamW's state and the gradients are
    sharded by DeepSpeed, which also reduces and clips; results equal the one-process run's to
    the same tolerance (per-tower gradient norms are not recorded: no process holds them)."""
    runs, audit = tmp_path / "runs", tmp_path / "audit"
    _finish(_launch(overrides, runs, audit, "zero2.yaml", ("--num_processes", "2")))
    root = runs / reference.name
    assert RunStore(root).manifest()["processes"] == 2
    _same_results(reference, root, gradient_norms=False)
    assert [w for name, ws in _writes(audit).items() if name != "rank0" for w in ws] == []
