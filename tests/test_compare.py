"""The comparison: variants, shards, metrics recomputed from stored matrices, the CLI."""

import numpy as np
import pandas as pd
import pytest

from dmole_lab.analysis.compare import (
    Variant,
    format_table,
    jobs,
    method_table,
    parse_shard,
    parse_variant,
    run_metrics,
)
from dmole_lab.cli import main


def test_variants_name_methods_overrides_and_ablations():
    assert parse_variant("dmole+dmole.r=4") == Variant("dmole+dmole.r=4", "dmole",
                                                       {"dmole.r": "4"})
    assert parse_variant("dmole-v1") == Variant("dmole-v1", "dmole", {"dmole.towers": "llm"})
    assert parse_variant("dmole-v4").overrides == {"dmole.allocator": "uniform"}
    assert parse_variant("seq-lora") == Variant("seq-lora", "seq-lora", {})
    with pytest.raises(ValueError, match="'dmole.r' is not key=value"):
        parse_variant("dmole+dmole.r")


def test_shards_partition_the_jobs():
    vs = [parse_variant(v) for v in ("a", "b", "c")]
    every = jobs(vs, [0, 1])
    assert [(v.name, s) for v, s in every[:3]] == [("a", 0), ("b", 0), ("c", 0)]
    parts = [jobs(vs, [0, 1], (i, 4)) for i in range(1, 5)]
    assert sorted(sum(parts, []), key=every.index) == every
    assert sum(map(len, parts)) == len(every) == 6
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "1-2", "x/2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_method_table_recomputes_metrics_by_hand(compare_scores):
    # Two tasks. Seed 0: a[1,0]=60 -> a[2,0]=40 (BWT -20); seed 1: 60 -> 50 (BWT -10).
    A0 = np.array([[10.0, 5.0], [60.0, 5.0], [40.0, 70.0]])
    A1 = np.array([[10.0, 5.0], [60.0, 20.0], [50.0, 70.0]])
    s0, r0 = compare_scores("m", 0, A0)
    s1, r1 = compare_scores("m", 1, A1)
    per_run = run_metrics(pd.concat([s0, s1]), pd.DataFrame([r0, r1]))
    assert per_run.BWT.tolist() == [-20.0, -10.0]
    assert per_run.Last.tolist() == [55.0, 60.0]
    assert per_run.AVG.tolist() == [(60 + 55) / 2, (60 + 60) / 2]
    assert per_run.FWT.tolist() == [0.0, 15.0]  # a[1, 1] - b_1
    assert per_run.Retention.tolist() == [50.0, 50.0]
    by_t = run_metrics(pd.concat([s0, s1]), pd.DataFrame([r0, r1]), bwt_divisor="T")
    assert by_t.BWT.tolist() == [-10.0, -5.0]
    table = method_table(per_run)
    assert table.loc["m", ("BWT", "mean")] == -15.0
    assert table.loc["m", ("BWT", "std")] == pytest.approx(np.std([-20, -10], ddof=1))
    assert table.loc["m", "seeds"].item() == 2
    text = format_table(table)
    assert text.loc["m", "BWT"] == "-15.0 +- 7.1" and text.loc["m", "params_per_task"] == "10 +- 0"


def test_compare_command_runs_shards_and_tabulates(smoke_overrides, tmp_path, capsys):
    argv = [f"--{k}={v}" for k, v in smoke_overrides.items()] + ["--train.max_steps=2"]
    out = tmp_path / "cmp"
    common = ["compare", "--quiet", "--methods", "seq-lora,seq-ft", "--seeds", "0",
              "--out", str(out), "--threads", "1"]
    assert main([*common, "--shard", "1/2", *argv]) == 0
    text = capsys.readouterr().out
    assert "1 of 2 runs finished" in text and "missing: seq-ft (seed 0)" in text
    assert main([*common, "--shard", "2/2", *argv]) == 0
    text = capsys.readouterr().out
    assert "2 of 2 runs finished" in text and "missing" not in text
    table = pd.read_parquet(out / "table.parquet")
    assert table.variant.tolist() == ["seq-lora", "seq-ft"]
    assert {"AVG_mean", "BWT_std", "Retention_mean", "params_per_task_mean",
            "training_seconds_mean", "seeds"} <= set(table.columns)
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores.variant) == {"seq-lora", "seq-ft"} and (scores.stage.max() == 3)
    assert "| seq-lora |" in (out / "table.md").read_text()
    runs_before = sorted(p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/manifest.json"))
    assert main([*common, "--table-only", *argv]) == 0  # nothing retrained
    assert main([*common, "--shard", "1/2", *argv]) == 0  # finished runs are not even reopened
    runs_after = sorted(p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/manifest.json"))
    assert runs_before == runs_after
    assert main(["compare", "--methods", "nope", *argv]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_compare_goes_on_after_a_failing_job(smoke_overrides, tmp_path, capsys, monkeypatch):
    """A job that crashes while it runs is reported with its traceback; the others still run.
    (A bad value such as mole.top_k=9 no longer gets that far: the config check stops the
    whole sweep first.)"""
    from dmole_lab.methods import METHODS

    def broken(self, model, t, task, data):
        raise RuntimeError("MoLE set-up broke on purpose")

    monkeypatch.setattr(METHODS["mole"], "begin_task", broken)
    argv = [f"--{k}={v}" for k, v in smoke_overrides.items()] + ["--train.max_steps=1"]
    code = main(["compare", "--quiet", "--methods", "mole,seq-lora", "--seeds",
                 "0", "--out", str(tmp_path / "cmp"), *argv])
    captured = capsys.readouterr()
    assert code == 1
    assert "failed (traceback above): mole (seed 0)" in captured.err
    assert "broke on purpose" in captured.err  # the traceback of the failing job
    assert "1 of 2 runs finished" in captured.out  # seq-lora still ran


def test_merge_gathers_shards_from_several_machines_and_refuses_mismatches(
        smoke_overrides, tmp_path, capsys):
    """Two machines each run one shard in their own runs folder; ``--merge`` tabulates both
    as one sweep would. A shard started with another learning rate, or made by another
    version of torch, is refused by name before anything is written."""
    import json
    import shutil

    argv = [f"--{k}={v}" for k, v in smoke_overrides.items() if k != "runs_dir"]
    argv += ["--train.max_steps=2"]
    common = ["compare", "--quiet", "--methods", "seq-lora,seq-ft", "--seeds", "0",
              "--threads", "1"]
    a, b = tmp_path / "machine-a", tmp_path / "machine-b"
    assert main([*common, "--shard", "1/2", f"--runs_dir={a}", "--out", str(a / "t"),
                 *argv]) == 0
    assert main([*common, "--shard", "2/2", f"--runs_dir={b}", "--out", str(b / "t"),
                 *argv]) == 0
    capsys.readouterr()
    out = tmp_path / "merged"
    assert main([*common, "--merge", str(a), str(b), "--out", str(out), *argv]) == 0
    assert "2 of 2 runs finished" in capsys.readouterr().out
    table = pd.read_parquet(out / "table.parquet")
    assert table.variant.tolist() == ["seq-lora", "seq-ft"]
    # the same table as one machine holding both runs
    both = tmp_path / "both"
    for run in [*a.glob("*-*/manifest.json"), *b.glob("*-*/manifest.json")]:
        shutil.copytree(run.parent, both / run.parent.name)
    assert main([*common, "--table-only", f"--runs_dir={both}", "--out", str(both / "t"),
                 *argv]) == 0
    pd.testing.assert_frame_equal(table, pd.read_parquet(both / "t" / "table.parquet"))

    c = tmp_path / "machine-c"  # a shard run with another learning rate
    assert main([*common, "--shard", "2/2", f"--runs_dir={c}", "--out", str(c / "t"),
                 "--train.lr=0.01", *argv]) == 0
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert main([*common, "--merge", str(a), str(c), "--out", str(refused), *argv]) == 2
    err = capsys.readouterr().err
    assert "cannot merge" in err and "seq-ft run at seed 0 with another config" in err
    assert "train.lr=0.01 (the sweep: 0.002)" in err
    assert not refused.exists()

    (manifest,) = b.glob("seq-ft-*/manifest.json")  # the same run made by another torch
    m = json.loads(manifest.read_text())
    m["versions"]["torch"] = "2.0.0"
    manifest.write_text(json.dumps(m))
    assert main([*common, "--merge", str(a), str(b), "--out", str(refused), *argv]) == 2
    err = capsys.readouterr().err
    assert "made by different code" in err and "torch=2.0.0" in err
    assert not refused.exists()


def test_run_row_reads_the_training_join_share_of_routed_runs(tmp_path, stored_run):
    import json
    import math

    from dmole_lab.analysis.compare import METRICS, run_row
    from dmole_lab.store import write_table

    def stored(root):
        store = stored_run(root, 0.5)
        write_table(root / "tables" / "metrics.parquet", pd.DataFrame(
            {"metric": list(METRICS), "value": 1.0, "bwt_divisor": "T-1",
             "forgetting_mode": "first"}))
        return store

    store = stored(tmp_path / "routed")
    m = json.loads(store.manifest_path.read_text())
    m.update(method="dmole", stages={  # stored out of order: stage 1 has no earlier task
        "2": {"trainable_params": 10, "train_batches_with_earlier_expert": 0.5},
        "1": {"trainable_params": 10, "train_batches_with_earlier_expert": 0.0},
        "3": {"trainable_params": 10, "train_batches_with_earlier_expert": 0.25}})
    store.manifest_path.write_text(json.dumps(m))
    assert run_row(store)["train_join_share"] == 0.375
    plain = stored(tmp_path / "plain")
    m.update(method="seq-lora", stages={"1": {"trainable_params": 10}})
    plain.manifest_path.write_text(json.dumps(m))
    assert math.isnan(run_row(plain)["train_join_share"])
