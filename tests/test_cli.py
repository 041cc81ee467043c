import pytest

from dmole_lab.cli import main


@pytest.mark.parametrize("argv,fragment", [
    (["run", "--preset", "nope"], "unknown preset 'nope'"),
    (["run", "--train.lrr=1"], "'lrr' is not a field of train"),
    (["run", "--train.epochs=two"], "train.epochs expects int"),
    (["run", "--stream.tasks=caption,unicorn"], "unknown task(s) 'unicorn'"),
    (["run", "--model.path=/no/such/folder"], "does not exist"),
    (["run", "--method=magic"], "unknown method 'magic'"),
    (["run", "--dmole.curriculum=magic"], "dmole.curriculum 'magic' is not one of current"),
    (["run", "--dmole.budget=2"], "dmole.budget must be a number in (0, 1], got 2.0"),
    (["run", "--methods=dmole,magic"], "unknown method 'magic'"),
    (["run", "--methods=dmole,seq-lora", "--jobs=0"], "--jobs must be >= 1, got 0"),
    (["run", "--jobs=2"], "--jobs 2 needs --methods"),
])
def test_bad_input_exits_2_with_reason(argv, fragment, capsys, tmp_path):
    argv = argv + [f"--runs_dir={tmp_path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err


def test_config_keys_listing(capsys):
    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "train.lr" in out and "peak learning rate" in out


def test_run_and_report_commands(smoke_overrides, capsys):
    argv = [f"--{k}={v}" for k, v in smoke_overrides.items()]
    assert main(["run", "--quiet", *argv]) == 0
    out = capsys.readouterr().out
    assert "score matrix" in out and "BWT" in out
    assert main(["report", *argv]) == 0
    report = capsys.readouterr().out  # the report re-prints the finished run to stdout
    assert "score matrix a[t, i] (row 0 = zero-shot)" in report and "BWT" in report
    assert report.count("\n") > 8  # the matrix and metrics themselves, not just the headings


def test_run_several_methods_prints_and_writes_a_comparison(smoke_overrides, capsys, tmp_path):
    import pandas as pd

    argv = [f"--{k}={v}" for k, v in smoke_overrides.items()]
    assert main(["run", "--quiet", "--methods", "dmole,seq-lora", *argv, "--train.max_steps=2",
                 "--dmole.router_epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "comparison (seed 0" in out and "router accuracy" in out
    folder = tmp_path / "runs" / "compare" / "dmole_vs_seq-lora-seed0"
    table = pd.read_parquet(folder / "comparison.parquet")
    assert table.method.tolist() == ["dmole", "seq-lora"]
    assert table.params_per_task.iloc[0] < table.params_per_task.iloc[1]
    assert (folder / "score_matrices.png").stat().st_size > 1000


def test_methods_in_parallel_processes_match_the_same_runs_one_after_the_other(
        smoke_overrides, capsys, tmp_path):
    """Two single-threaded workers give the score matrices of single-threaded runs in turn."""
    import torch

    from dmole_lab.config import build_config
    from dmole_lab.engine.continual import run
    from dmole_lab.engine.parallel import run_parallel

    over = {**smoke_overrides, "train.max_steps": "2", "dmole.router_epochs": "2"}
    argv = [f"--{k}={v}" for k, v in over.items()]
    assert main(["run", "--quiet", "--methods", "dmole,seq-lora", "--jobs", "2", *argv]) == 0
    out = capsys.readouterr().out
    assert "comparison (seed 0" in out and "router accuracy" in out
    parallel = {s.manifest()["method"]: s.summary("score_matrix")
                for s in run_parallel([build_config(None, {**over, "method": m})
                                       for m in ("dmole", "seq-lora")], jobs=2, progress=False)}
    assert set(parallel) == {"dmole", "seq-lora"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for m, sm in parallel.items():
            alone = run(build_config(None, {**over, "method": m,
                                            "runs_dir": str(tmp_path / "alone")}), progress=False)
            assert alone.summary("score_matrix").equals(sm)
    finally:
        torch.set_num_threads(threads)
