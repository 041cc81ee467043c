"""Smoke versions of the offline benchmarks (micro model, one or two steps): they run end to end
and write the figures they report."""

import json
import math
import re
import runpy
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, argv: list[str], monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(BENCH / script), run_name="__main__")
    assert done.value.code == 0


def _overrides(smoke_overrides):
    return [f"--{k}={v}" for k, v in smoke_overrides.items()] + ["--probe.sweep=1,2"]


def test_bench_proxy_oracle_smoke_resumes_seeds_and_feeds_the_layer_scores(
        smoke_overrides, tmp_path, monkeypatch, capsys):
    out = tmp_path / "proxy_oracle.json"
    args = ["--preset", "smoke", "--tasks", "caption,ocr", "--steps", "2",
            "--results-dir", str(tmp_path / "res"), "--json", str(out),
            *_overrides(smoke_overrides)]
    _run("bench_proxy_oracle.py", [*args, "--seeds", "2"], monkeypatch)
    result = json.loads(out.read_text())
    assert set(result["spearman_proxy_vs_oracle"]) >= {"vision/grad_norm", "llm/fisher"}
    oracle = pd.read_parquet(tmp_path / "res" / "oracle-smoke" / "tables" / "oracle.parquet")
    assert len(oracle) == 2 * 2 * (2 + 2)  # tasks x seeds x (vision + llm layers)
    assert (tmp_path / "res" / "probe-smoke" / "tables" / "sensitivity.parquet").is_file()
    # a third seed trains only that seed; the first two are read back unchanged
    capsys.readouterr()
    _run("bench_proxy_oracle.py", [*args, "--seeds", "3"], monkeypatch)
    trained = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("oracle ")]
    assert [ln.split(":")[0] for ln in trained] == ["oracle caption seed 2", "oracle ocr seed 2"]
    three = pd.read_parquet(tmp_path / "res" / "oracle-smoke" / "tables" / "oracle.parquet")
    pd.testing.assert_frame_equal(
        three[three.seed < 2].reset_index(drop=True)[oracle.columns], oracle)
    ceiling = pd.read_parquet(tmp_path / "res" / "oracle-smoke" / "tables"
                              / "oracle_ceiling.parquet")
    assert set(ceiling["seeds_per_half"]) == {1} and ceiling["single"].between(-1, 1).all()

    layer_json = tmp_path / "layer_scores.json"
    layer_args = ["--preset", "smoke", "--tasks", "caption,ocr", "--tune-steps", "2",
                  "--oracle", str(tmp_path / "res"), "--results-dir", str(tmp_path / "res"),
                  "--json", str(layer_json), *_overrides(smoke_overrides)]
    _run("bench_layer_scores.py", layer_args, monkeypatch)
    parts = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob(
        "layer-score-parts/*/*.parquet")}
    assert len(parts) == 2 * 2  # tasks x (factors, scores)
    first = json.loads(layer_json.read_text())
    _run("bench_layer_scores.py", layer_args, monkeypatch)  # read back, nothing measured
    assert {p: p.stat().st_mtime_ns for p in parts} == parts
    assert json.loads(layer_json.read_text())["spearman_with_oracle"] == first[
        "spearman_with_oracle"]
    scores = json.loads(layer_json.read_text())["spearman_with_oracle"]
    assert {"vision/grad_norm", "llm/cka_change", "llm/grad_norm:layer_z",
            "vision/grad_norm*resid_rms"} <= set(scores)
    agreement = pd.read_parquet(tmp_path / "res" / "layer-scores-smoke" / "tables"
                                / "agreement.parquet")
    assert agreement["spearman"].dropna().between(-1, 1).all()


def test_oracle_ceiling_compares_the_means_of_even_and_odd_seeds():
    from dmole_lab.analysis.profiles import oracle_ceiling as ceiling

    layers = range(5)
    # seeds 0 and 2 rank layers one way, 1 and 3 the reverse: halves disagree, pairs mixed
    rows = [{"task": "a", "tower": "llm", "layer": i, "seed": s,
             "gain": float(i if s % 2 == 0 else -i) + 0.01 * s} for s in range(4) for i in layers]
    c = ceiling(pd.DataFrame(rows)).iloc[0]
    assert c["spearman"] == pytest.approx(-1.0) and c["seeds_per_half"] == 2
    assert c["single"] == pytest.approx((2 * 1.0 + 4 * -1.0) / 6)


def test_bench_recorders_smoke(smoke_overrides, tmp_path, monkeypatch):
    out = tmp_path / "recorders.json"
    _run("bench_recorders.py", ["--preset", "smoke", "--rounds", "2", "--steps", "2",
                                "--json", str(out), *_overrides(smoke_overrides)], monkeypatch)
    result = json.loads(out.read_text())
    assert result["rows_per_step"] == 4  # grad_norm and rel_update for vision and llm
    assert 0 < result["hook_share_of_step_pct"] < 100


def test_bench_router_smoke(smoke_overrides, tmp_path, monkeypatch):
    out = tmp_path / "router.json"
    _run("bench_router.py", ["--preset", "smoke", "--tasks", "caption,ocr", "--hidden", "4,8",
                             "--json", str(out), *_overrides(smoke_overrides),
                             "--dmole.router_epochs=3"], monkeypatch)
    result = json.loads(out.read_text())
    rows = pd.DataFrame(result["rows"])
    assert len(rows) == 4 and set(rows.normalise) == {"parts", "whole"}
    for col in ("vote_accuracy", "batch_accuracy", "own_accept", "false_accept"):
        assert rows[col].between(0, 1).all()
    assert result["feature_dim"] == 32 + 32  # micro vision + LLM widths


def test_bench_dmole_speed_smoke(smoke_overrides, tmp_path, monkeypatch):
    out = tmp_path / "speed.json"
    _run("bench_dmole_speed.py", ["--preset", "smoke", "--json", str(out),
                                  *_overrides(smoke_overrides), "--train.max_steps=2",
                                  "--dmole.router_epochs=2", "--eval.max_new_tokens=2"],
         monkeypatch)
    result = json.loads(out.read_text())
    dmole, seq = result["runs"][0]["dmole"], result["runs"][0]["seq-lora"]
    assert dmole["probe_seconds"] > 0 and seq["probe_seconds"] == 0
    assert dmole["training_seconds"] > dmole["train_seconds"]  # set-up and wrap-up counted
    assert 0 < result["probe_share_pct"] < 100
    assert result["wall_ratio_dmole_over_seq_lora"] == pytest.approx(
        dmole["training_seconds"] / seq["training_seconds"], abs=1e-3)
    # one pair: the fastest repeat of each stage is that pair's stage
    assert result["wall_ratio_stage_minima"] == result["wall_ratio_per_pair"][0] == \
        result["wall_ratio_dmole_over_seq_lora"]
    assert len(result["runs"][0]["dmole_stages"]) == 3  # the smoke stream's stages


def test_bench_seeds_smoke(route_overrides, tmp_path, monkeypatch, one_thread):
    # The routing preset: D-MoLE's router finds each task's test set (on the smoke stream a
    # router that never voted would pass too).
    out = tmp_path / "seeds.json"
    argv = ["--preset", "route", "--seeds", "0,1", "--variants",
            "dmole+dmole.routing=batch,seq-lora", "--json", str(out),
            *[f"--{k}={v}" for k, v in route_overrides.items()],
            f"--runs_dir={tmp_path / 'runs'}"]
    _run("bench_seeds.py", argv, monkeypatch)
    result = json.loads(out.read_text())
    runs = pd.DataFrame(result["runs"])
    assert len(runs) == 4 and runs.run.nunique() == 4
    assert set(result["table"]) == {"dmole+dmole.routing=batch", "seq-lora"}
    dmole = runs[runs.variant.str.startswith("dmole")]
    assert (dmole.router_accuracy >= 0.9).all(), dmole.router_accuracy  # measured 1.0, 1.0
    assert runs[runs.variant == "seq-lora"].router_accuracy.isna().all()
    assert result["table"]["dmole+dmole.routing=batch"]["router_accuracy"].startswith("1.00")
    first = out.stat().st_mtime_ns
    _run("bench_seeds.py", argv, monkeypatch)  # finished runs are reused, not recomputed
    again = pd.DataFrame(json.loads(out.read_text())["runs"])
    assert out.stat().st_mtime_ns > first
    pd.testing.assert_frame_equal(again, runs)  # same timings: read back, not re-measured


def test_bench_dmole_speed_reuses_finished_runs(smoke_overrides, tmp_path, monkeypatch):
    out = tmp_path / "speed.json"
    argv = ["--preset", "smoke", "--json", str(out), "--reuse", "0",
            *_overrides(smoke_overrides), "--train.max_steps=2", "--dmole.router_epochs=2",
            "--eval.max_new_tokens=2"]
    _run("bench_dmole_speed.py", argv, monkeypatch)
    first = json.loads(out.read_text())
    assert first["reused_seeds"] == "0" and len(list((tmp_path / "runs").iterdir())) == 2
    _run("bench_dmole_speed.py", argv, monkeypatch)  # read back, not re-measured
    assert json.loads(out.read_text())["runs"] == first["runs"]


def test_bench_compare_shards_ship_and_resume_elsewhere(smoke_overrides, tmp_path, monkeypatch,
                                                        capsys):
    from dmole_lab.cli import main
    from dmole_lab.viz.results import open_comparison, ship_comparison, unpack_runs

    out = tmp_path / "compare.json"
    argv = ["--preset", "smoke", "--methods", "seq-lora,seq-ft", "--seeds", "0", "--shards",
            "2", "--json", str(out), *_overrides(smoke_overrides), "--train.max_steps=1"]
    _run("bench_compare.py", argv, monkeypatch)
    result = json.loads(out.read_text())
    assert result["runs"] == 2 and result["wall_seconds"] > 0
    assert "| seq-lora |" in result["table"] and "| seq-ft |" in result["table"]
    folder = tmp_path / "runs" / "compare-smoke"
    runs = pd.read_parquet(folder / "runs.parquet")
    dest = ship_comparison(folder, "shipped", [tmp_path / "runs" / r for r in runs.run],
                           results_dir=tmp_path / "results")
    scores, shipped_runs = open_comparison("shipped", tmp_path / "results")
    assert set(scores.variant) == {"seq-lora", "seq-ft"} and len(shipped_runs) == 2
    assert not list(dest.rglob("*.safetensors"))  # light: no weights travel
    # Shipping a table of one run drops the other run's folder: shipped runs match the table.
    ship_comparison(folder, "shipped", [tmp_path / "runs" / runs.run[0]],
                    results_dir=tmp_path / "results")
    assert [p.name for p in (dest / "runs").iterdir()] == [runs.run[0]]
    dest = ship_comparison(folder, "shipped", [tmp_path / "runs" / r for r in runs.run],
                           results_dir=tmp_path / "results")
    # A fresh clone: the shipped runs count as finished, nothing is retrained.
    fresh = tmp_path / "fresh"
    assert len(unpack_runs("shipped", fresh, tmp_path / "results")) == 2
    assert main(["compare", "--quiet", "--preset", "smoke", "--methods", "seq-lora,seq-ft",
                 "--seeds", "0", "--out", str(tmp_path / "again"), *_overrides(smoke_overrides),
                 "--train.max_steps=1", f"--runs_dir={fresh}"]) == 0
    assert "2 of 2 runs finished" in capsys.readouterr().out
    assert not list(fresh.rglob("predictions.parquet"))  # nothing was run again


def test_stage_minima_ratio_takes_each_stage_from_its_fastest_repeat():
    speed = runpy.run_path(str(BENCH / "bench_dmole_speed.py"))
    runs = [{"dmole_stages": [10.0, 50.0], "seq-lora_stages": [20.0, 20.0]},
            {"dmole_stages": [30.0, 10.0], "seq-lora_stages": [10.0, 40.0]}]
    # D-MoLE: 10 + 10, sequential LoRA: 10 + 20
    assert speed["stage_minima_ratio"](runs) == pytest.approx(20 / 30)


def test_compare_sweeps_reads_what_a_change_did_to_each_variant(tmp_path, monkeypatch, capsys):
    """A copy of the shipped comparison in which sequential LoRA trained in half the time but
    learned nothing new in stage 1, and D-MoLE forgot: the table and the checks must say so."""
    from dmole_lab.analysis.compare import sweep_changes
    from dmole_lab.viz.results import RESULTS_DIR, open_comparison

    scores, runs = open_comparison("compare-tiny")
    after = tmp_path / "compare-after"
    after.mkdir()
    changed = scores.copy()
    seq1 = ((changed["variant"] == "seq-lora") & (changed["stage"] == 1)
            & (changed["eval_task"] == "caption"))
    changed.loc[seq1, "value"] = changed.loc[
        (changed["variant"] == "seq-lora") & (changed["stage"] == 0)
        & (changed["eval_task"] == "caption"), "value"].to_numpy()
    last = changed["stage"] == changed["stage"].max()
    changed.loc[(changed["variant"] == "dmole") & last & (changed["eval_task"] == "caption"),
                "value"] -= 5.0
    fast = runs.copy()
    fast.loc[fast["variant"] == "seq-lora", "training_seconds"] /= 2
    changed.to_parquet(after / "scores.parquet")
    fast[fast["variant"] != "o-lora"].to_parquet(after / "runs.parquet")

    table = sweep_changes((scores, runs), open_comparison("compare-after", tmp_path))
    assert "o-lora" not in table.index  # only variants in both
    assert table.loc["seq-lora", ("time_ratio", "")] == pytest.approx(0.5)
    assert table.loc["ewc", ("time_ratio", "")] == pytest.approx(1.0)
    # caption, learned at every seed, is now at its zero-shot score after its own stage
    assert table.loc["seq-lora", ("learned", "after")] == pytest.approx(
        table.loc["seq-lora", ("learned", "before")] - 1)
    assert table.loc["dmole", ("BWT", "before")] == 0
    assert table.loc["dmole", ("BWT", "after")] == pytest.approx(-5.0 / 8)

    _run("compare_sweeps.py", ["compare-tiny", "compare-after", "--before-dir", str(RESULTS_DIR),
                               "--after-dir", str(tmp_path), "--json",
                               str(tmp_path / "out.json")], monkeypatch)
    out = capsys.readouterr().out
    assert re.search(r"in its own stage, at every seed: before (holds|FAILS), after FAILS", out)
    assert "D-MoLE's BWT is 0: before holds, after FAILS" in out
    assert "seq-lora forgets (BWT < -10): before holds, after holds" in out
    data = json.loads((tmp_path / "out.json").read_text())
    assert data["variants"]["seq-lora"]["time_ratio"] == pytest.approx(0.5)

    # the before side as committed: the repository's own history, as a fresh clone has it
    _run("compare_sweeps.py", ["compare-tiny", "compare-tiny", "--before-rev", "HEAD", "--json",
                               str(tmp_path / "rev.json")], monkeypatch)
    assert json.loads((tmp_path / "rev.json").read_text())["before"] == "HEAD:results/compare-tiny"
    with pytest.raises(SystemExit, match="cannot read results/compare-tiny at revision 'no-such"):
        runpy.run_path(str(BENCH / "compare_sweeps.py"))["main"](
            ["compare-tiny", "compare-tiny", "--before-rev", "no-such-rev"])


def test_bench_decoding_smoke_times_both_caches_on_the_same_answers(smoke_overrides, tmp_path,
                                                                    monkeypatch):
    out = tmp_path / "decoding.json"
    _run("bench_decoding.py", ["--preset", "smoke", "--rounds", "2", "--json", str(out),
                               *_overrides(smoke_overrides)], monkeypatch)
    data = json.loads(out.read_text())
    assert set(data["seconds"]) == {"dynamic", "static"}
    assert all(len(v) == 2 and min(v) > 0 for v in data["seconds"].values())
    assert data["same_tokens"] is True  # the cache is storage, not arithmetic
    assert data["sets"] == 3 and 1 <= max(data["tokens_per_set"]) <= data["max_new_tokens"]


def test_bench_parallel_smoke(smoke_overrides, tmp_path, monkeypatch):
    out = tmp_path / "parallel.json"
    _run("bench_parallel.py", ["--preset", "smoke", "--rounds", "1", "--json", str(out),
                               *_overrides(smoke_overrides), "--train.max_steps=1",
                               "--dmole.router_epochs=2"], monkeypatch)
    result = json.loads(out.read_text())
    (row,) = result["rounds"]
    assert row["serial"] > 0 and row["parallel"] > 0
    # times are stored to the millisecond, the ratio from the unrounded ones
    assert result["median_ratio"] == pytest.approx(row["parallel"] / row["serial"], rel=0.01)
    assert result["methods"] == ["dmole", "seq-lora"]


def test_bench_widgets_smoke(tmp_path, monkeypatch):
    out = tmp_path / "widgets.json"
    _run("bench_widgets.py", ["--repeats", "1", "--explorers", "dynamics,allocation", "--json",
                              str(out)], monkeypatch)
    result = json.loads(out.read_text())
    assert result["repeats"] == 1 and set(result["explorers"]) == {"dynamics", "allocation"}
    alloc = result["explorers"]["allocation"]
    assert alloc["source"] == "dmole-tiny"
    assert set(alloc["controls"]) == {"fraction", "vision_floor", "curriculum"}
    for e in result["explorers"].values():
        for c in e["controls"].values():
            assert c["updates"] == 2 and 0 < c["median_ms"] <= c["max_ms"]  # there and back
        assert e["updates"] == 2 * len(e["controls"])
    # the allocation alone is part of each update
    assert 0 < alloc["allocation_only"]["median_ms"] <= alloc["median_ms"]
    with pytest.raises(SystemExit, match="unknown explorer 'nope'"):
        runpy.run_path(str(BENCH / "bench_widgets.py"))["main"](["--explorers", "nope"])


def test_profile_step_smoke(smoke_overrides, tmp_path, monkeypatch):
    out = tmp_path / "profile_step.json"
    _run("profile_step.py", ["--preset", "smoke", "--methods", "seq-lora,dmole", "--steps", "2",
                             "--rounds", "1", "--json", str(out), *_overrides(smoke_overrides)],
         monkeypatch)
    rows = json.loads(out.read_text())["methods"]
    for row in rows.values():
        assert row["step_ms"] > 0 and row["forward_ops"] > 0 and row["gflop_per_step"] > 0
        shares = [row[f"{k}_share"] for k in ("batch", "forward", "backward", "optimiser")]
        assert abs(sum(shares) - 1) < 1e-3 and min(shares) > 0  # rounded to 4 places
        assert 0 < row["products_share_of_profiled"] < 1 and row["distinct_products"] > 0
        assert row["step_over_floor"] > 0 and row["dropout"] > 0
        assert row["narrow_factors"] > 0 and row["narrow_ms"] > 0 and row["plain_ms"] > 0


def test_bench_demo_against_an_earlier_revision(smoke_overrides, tmp_path, monkeypatch):
    """The demo command timed for the working tree and for HEAD's code side by side; each run's
    breakdown and qualitative results are read back from its manifest."""
    out = tmp_path / "bench_demo.json"
    _run("bench_demo.py", ["--preset", "smoke", "--methods", "dmole", "--jobs", "1",
                           "--against", "HEAD",
                           "--json", str(out), *_overrides(smoke_overrides)], monkeypatch)
    d = json.loads(out.read_text())
    assert set(d["variants"]) == {"HEAD", "current"}
    for variant in d["variants"].values():
        assert len(variant["wall_seconds"]) == 1 and variant["wall_seconds"][0] > 0
        assert set(variant["last"]) == {"dmole"}
        for run in variant["last"].values():
            assert run["tasks"] == 3 and 0 <= run["learned_in_own_stage"] <= 3
            assert run["seconds"]["train"] > 0 and run["seconds"]["eval"] > 0
        assert variant["last"]["dmole"]["metrics"]["BWT"] == 0.0  # frozen experts forget nothing
    assert d["before_over_after"] > 0


def test_bench_gpu_smoke(tmp_path, monkeypatch):
    """benchmarks/bench_gpu.py on the CPU: a shrunken LLaVA-1.5-7B shape (real image size,
    token counts and vocabulary; one head per tower, two layers), LoRA against D-MoLE."""
    out = tmp_path / "gpu.json"
    _run("bench_gpu.py", ["--smoke", "--shapes", "llava-1.5-7b", "--methods", "seq-lora,dmole",
                          "--batch", "1", "--task-samples", "100", "--json", str(out)],
         monkeypatch)
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    lora, dmole = rows["seq-lora"], rows["dmole"]
    assert lora["step_over_lora"] == 1.0
    assert math.isclose(dmole["step_over_lora"], dmole["step_s"] / lora["step_s"])
    assert lora["tokens_per_s"] == pytest.approx((576 + 128) * lora["samples_per_s"], rel=1e-12)
    assert 0 < dmole["probe_share"] < 1 and dmole["probe_batches"] == 2  # K = 1% of 100
    assert dmole["trainable"] > 0 and lora["trainable"] > 0
    assert lora["model_tflops_per_step"] > 0 and lora["mfu"] is None  # no peak on a CPU


def _reliability_module():
    return runpy.run_path(str(BENCH / "bench_proxy_reliability.py"))


def test_proxy_reliability_measures_agreement_between_seeds_and_with_the_oracle():
    """Stability is the Spearman between probe seeds' layer rankings (1 when they agree, -1 when
    reversed); agreement is the Spearman with the oracle's gains."""
    bench = _reliability_module()
    rows = []
    for seed, batches, task in [(s, b, t) for s in (0, 1) for b in (1, 2) for t in ("a", "b")]:
        for layer in range(4):
            # task a: the seeds rank the layers alike; task b: seed 1 reverses them (at K+1 = 1)
            flip = task == "b" and seed == 1 and batches == 1
            score = float(4 - layer if flip else layer + 1)
            rows.append({"task": task, "probe_seed": seed, "batches": batches, "tower": "llm",
                         "layer": layer, "module": f"llm.{layer}.q", "proxy": "grad_norm",
                         "score": score})
    table = pd.DataFrame(rows)
    stable = bench["stability"](table).set_index(["batches", "task"])["spearman"]
    assert stable[(1, "a")] == pytest.approx(1.0) and stable[(1, "b")] == pytest.approx(-1.0)
    assert stable[(2, "b")] == pytest.approx(1.0)
    oracle = pd.DataFrame([{"task": t, "tower": "llm", "layer": k, "gain": float(k)}
                           for t in ("a", "b") for k in range(4)])
    agree = bench["against_oracle"](table, oracle)
    got = agree.set_index(["batches", "probe_seed", "task"])["spearman"]
    assert got[(1, 0, "a")] == pytest.approx(1.0) and got[(1, 1, "b")] == pytest.approx(-1.0)
    summary = bench["reliability"](bench["stability"](table), agree).set_index("batches")
    assert summary.loc[1, "stability"] == pytest.approx(0.0)  # mean of +1 and -1 over tasks
    assert summary.loc[2, "oracle"] == pytest.approx(1.0)


def test_bench_proxy_reliability_smoke(smoke_overrides, tmp_path, monkeypatch):
    out = tmp_path / "reliability.json"
    _run("bench_proxy_reliability.py", ["--preset", "smoke", "--tasks", "caption,ocr",
                                        "--seeds", "2", "--batches", "1,2", "--oracle", "none",
                                        "--results-dir", str(tmp_path / "res"),
                                        "--json", str(out), *_overrides(smoke_overrides)],
         monkeypatch)
    result = json.loads(out.read_text())
    rows = pd.DataFrame(result["rows"])
    assert set(rows.batches) == {1, 2} and set(rows.tower) == {"vision", "llm"}
    assert rows.stability.between(-1, 1).all()
    table = pd.read_parquet(tmp_path / "res" / "proxy-reliability-smoke" / "tables"
                            / "reliability.parquet")
    assert len(table) == len(rows)


def test_bench_plasticity_smoke_runs_every_switch_and_pairs_them(smoke_overrides, tmp_path,
                                                                  monkeypatch):
    from dmole_lab.analysis.plasticity import SWITCHES

    out = tmp_path / "plasticity.json"
    _run("bench_plasticity.py", ["--preset", "smoke", "--seeds", "0", "--results-dir",
                                 str(tmp_path / "res"), "--json", str(out),
                                 *_overrides(smoke_overrides), "--train.max_steps=1",
                                 "--dmole.router_epochs=2"], monkeypatch)
    result = json.loads(out.read_text())
    assert result["runs"] == len(SWITCHES)
    runs = pd.read_parquet(tmp_path / "res" / "plasticity-smoke" / "runs.parquet")
    assert set(runs.variant) == {v for v, _ in SWITCHES.values()}
    own = runs[runs.variant == "dmole+dmole.train_routing=own"]
    assert (own["train_join_share"] == 0.0).all()  # no earlier task ever joins
    # the capacity switch trains about sequential LoRA's parameters: rank 18 against 8
    params = runs.set_index("variant")["params_per_task"]
    assert params["dmole+dmole.r=18+dmole.alpha=36"] == pytest.approx(params["dmole"] * 18 / 8)
    effects = result["paired_effects_vs_default"]
    assert {"(b) own experts only/MFT", "v1 (LLM only)/AVG"} <= set(effects)


def test_bench_oracle_agreement_smoke_reads_shared_seeds_and_trains_the_rest(
        smoke_overrides, tmp_path, monkeypatch, capsys):
    args = ["--preset", "smoke", "--tasks", "caption", "--steps", "2",  # one task is enough
            *_overrides(smoke_overrides)]
    _run("bench_proxy_oracle.py", [*args, "--seeds", "2", "--results-dir", str(tmp_path / "res"),
                                   "--json", str(tmp_path / "o.json")], monkeypatch)
    capsys.readouterr()
    out = tmp_path / "agreement.json"
    _run("bench_oracle_agreement.py", [*args, "--seeds", "4", "--tower", "vision",
                                       "--results-dir", str(tmp_path / "res"), "--ship",
                                       "--json", str(out)], monkeypatch)
    trained = [ln.split(":")[0] for ln in capsys.readouterr().out.splitlines()
               if ln.startswith("oracle ")]
    assert trained == [f"oracle caption vision seed {s}" for s in (2, 3)]
    result = json.loads(out.read_text())
    assert [r["seeds"] for r in result["agreement"]] == [2, 4]
    assert all(-1 <= r["split_half"] <= 1 for r in result["agreement"])
    # the two seeds read from bench_proxy_oracle's cache keep their cost, as do the new ones
    assert result["cost"]["parts"] == result["cost"]["parts_timed"] == 4
    assert result["cost"]["train_seconds"] > 0
    proxies = result["proxy_vs_oracle"]  # the probe bench_proxy_oracle.py shipped
    assert proxies["probe"] == "probe-smoke"
    assert [r["seeds"] for r in proxies["by_seeds"]] == [2, 4]
    assert {"grad_norm", "snip", "fisher"} <= set(proxies["by_seeds"][0])
    shipped = tmp_path / "res" / "oracle-vision-smoke" / "tables"
    oracle = pd.read_parquet(shipped / "oracle.parquet")
    assert set(oracle.tower) == {"vision"} and sorted(set(oracle.seed)) == [0, 1, 2, 3]
    curve = pd.read_parquet(shipped / "agreement.parquet")
    assert set(pd.read_parquet(shipped / "oracle_ceiling.parquet").task) == {"caption"}
    assert curve["split_half"].round(3).tolist() == [r["split_half"] for r in result["agreement"]]
    assert len(pd.read_parquet(shipped / "proxy_by_seeds.parquet").query("seeds == 4")) == len(
        proxies["by_seeds"][1]) - 1
