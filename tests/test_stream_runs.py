"""Runs on stream files: the exported synthetic stream trains and scores exactly as the in-code
stream, with every method; the shipped CoIN stream runs on its fixture with every set scored by
its own scorer; a stream that fails the check, or changed data under a finished run, is
refused before anything is written."""

import json
from pathlib import Path

import pandas as pd
import pytest

from dmole_lab.analysis.summaries import score_matrix
from dmole_lab.cli import main
from dmole_lab.config import METHOD_NAMES, build_config
from dmole_lab.data.export import export_stream
from dmole_lab.data.stream import StreamCheckError, build_stream
from dmole_lab.engine.continual import check_run
from dmole_lab.store import RunFolderError

STREAMS = Path(__file__).resolve().parents[1] / "configs" / "streams"


@pytest.fixture(scope="session")
def exported(tmp_path_factory, resume_overrides):
    """The smoke stream of ``resume_overrides`` written by export (PNG, LLaVA, CoIN, YAML)."""
    cfg = build_config(None, resume_overrides)
    return export_stream(cfg.stream, tmp_path_factory.mktemp("export"), progress=False)


def _same_run(a, b) -> None:
    """Two runs trained on the same batches and answered the same: every stored table equal."""
    pd.testing.assert_frame_equal(score_matrix(a), score_matrix(b))
    pa, pb = a.table("predictions"), b.table("predictions")
    assert pa["prediction"].tolist() == pb["prediction"].tolist()
    assert pa["question"].tolist() == pb["question"].tolist()
    assert a.table("train_log")["loss"].tolist() == b.table("train_log")["loss"].tolist()
    assert a.manifest()["tasks"] == b.manifest()["tasks"]


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_method_runs_from_exported_files_as_in_code(exported, resume_overrides,
                                                          shared_run, method):
    in_code = shared_run({**resume_overrides, "method": method})
    from_files = shared_run({**resume_overrides, "method": method, "stream.file": str(exported)})
    _same_run(in_code, from_files)
    assert from_files.manifest()["stream_data"]["file"] == str(exported)
    assert "stream_data" not in in_code.manifest()


def test_export_round_trip_on_the_trained_tiny_model(tmp_path, one_thread_run):
    """The acceptance test: the smoke preset (the shipped pre-trained tiny model, whose scores
    move) from exported files gives the in-code score matrix, through the CLI."""
    out = tmp_path / "export"
    assert main(["export", "--preset", "smoke", "--out", str(out), "--quiet",
                 "--stream.n_train=24"]) == 0
    assert main(["export", "--preset", "smoke", "--out", str(out), "--quiet"]) == 2  # not empty
    stream = out / "stream.yaml"
    assert main(["check-data", f"--stream.file={stream}", "--images", "verify"]) == 0
    runs = str(tmp_path / "runs")
    common = {"runs_dir": runs, "stream.n_train": 24, "train.max_steps": 3, "train.lr": 1e-2}
    a = one_thread_run(build_config("smoke", common))
    b = one_thread_run(build_config("smoke", {**common, "stream.file": str(stream)}))
    _same_run(a, b)
    A = score_matrix(a).pivot_table(index="stage", columns="eval_task", values="value")
    assert A.nunique().max() > 1, "the scores never moved: the comparison would be vacuous"


def test_exported_files_hold_the_stream(exported, resume_overrides):
    cfg = build_config(None, resume_overrides)
    a, b = build_stream(cfg.stream, progress=False), build_stream(
        build_config(None, {**resume_overrides, "stream.file": str(exported)}).stream,
        progress=False)
    assert a.tasks == b.tasks and list(a.general) == list(b.general)
    for name in a.tasks:
        assert b.spec(name) == a.spec(name) and a.spec(name).scorer.startswith("lab:")
        for x, y in zip([*a.train[name], *a.test[name]], [*b.train[name], *b.test[name]]):
            assert (x.question, x.answer) == (y.question, y.answer)
            assert (x.image == y.image).all()  # PNG is lossless
    records = json.loads((exported.parent / "grounding" / "test.json").read_text())
    assert {"question_id", "image", "text", "answer_bbox", "size"} <= set(records[0])


def test_coin_stream_runs_with_every_set_scored_its_way(data_root, micro_model_dir, tmp_path,
                                                        one_thread_run):
    cfg = build_config(None, {"model.path": str(micro_model_dir), "runs_dir": str(tmp_path),
                              "stream.file": str(STREAMS / "coin.yaml"),
                              "train.batch_size": 2, "train.max_steps": 1,
                              "eval.max_new_tokens": 4})
    store = one_thread_run(cfg)
    m = store.manifest()
    tasks = ["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2",
             "OCR-VQA"]
    assert m["status"] == "complete" and m["tasks"] == tasks
    scores = store.table("scores")
    main_rows = scores[scores["main"]]
    assert len(main_rows) == 9 * (len(tasks) + 3)  # stages 0..8 x (tasks + POPE, MME, MMMU)
    last = main_rows[main_rows["stage"] == 8].set_index("eval_task")["metric"].to_dict()
    assert last == {"ScienceQA": "option", "TextVQA": "textvqa", "ImageNet": "substring",
                    "GQA": "gqa", "VizWiz": "exact", "Grounding": "grounding",
                    "VQAv2": "exact", "OCR-VQA": "ocr", "pope": "pope", "mme": "mme",
                    "mmmu": "mmmu"}
    extras = set(scores.loc[~scores["main"], "metric"])
    assert {"pope_f1", "pope_yes_ratio", "mme_cognition", "mme_total"} <= extras
    sm = score_matrix(store)
    assert sm["value"].between(0, 2000).all() and len(sm) == len(main_rows)
    metrics = store.summary("metrics")
    assert {"AVG", "BWT", "General (pope) zero-shot"} <= set(metrics["metric"])
    # any scorer re-scores the stored raw text
    assert main(["report", "--run-dir", str(store.root), "--rescore", "exact"]) == 0


def test_caps_and_prompt_suffix_apply(data_root, tmp_path):
    text = (STREAMS / "coin.yaml").read_text()
    text = text.replace("  scorer: option\n", "  scorer: option\n  max_train: 1\n  max_test: 1\n"
                        "  prompt_suffix: Answer with the letter.\n")
    text = text.replace("    root: ${DATA_ROOT}/MME_Benchmark_release_version\n",
                        "    root: ${DATA_ROOT}/MME_Benchmark_release_version\n    max_test: 3\n")
    path = tmp_path / "coin.yaml"
    path.write_text(text)
    stream = build_stream(build_config(None, {"stream.file": str(path)}).stream, progress=False)
    assert len(stream.train["ScienceQA"]) == 1 and len(stream.test["ScienceQA"]) == 1
    assert stream.test["ScienceQA"][0].question == "question 0?\nAnswer with the letter."
    assert stream.train["ScienceQA"][0].question == "question 0?"  # the suffix is for tests
    assert len(stream.general["mme"]) == 2  # whole image pairs: 3 -> 2
    assert stream.spec("ScienceQA").max_new_tokens == 8 and stream.spec("Grounding").scorer \
        == "grounding"


def test_a_failing_stream_never_starts_a_run(data_root, micro_model_dir, tmp_path, capsys):
    p = data_root / "playground" / "Instructions_Original" / "GQA" / "train.json"
    recs = json.loads(p.read_text())
    recs[1]["conversations"][1]["from"] = "bot"
    p.write_text(json.dumps(recs))
    runs = tmp_path / "runs"
    args = ["run", f"--model.path={micro_model_dir}", f"--runs_dir={runs}",
            f"--stream.file={STREAMS / 'coin.yaml'}", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "field 'conversations[1].from'" in err and "[GQA train]" in err
    assert "fails the check" in err and not runs.exists()
    with pytest.raises(StreamCheckError, match="GQA"):
        check_run(build_config(None, {"model.path": str(micro_model_dir),
                                      "stream.file": str(STREAMS / "coin.yaml")}))
    assert main(["run", "--stream.file=no/such.yaml"]) == 2
    assert "stream.file must be empty" in capsys.readouterr().err


def test_changed_data_under_a_run_is_refused(exported, resume_overrides, shared_run, tmp_path,
                                            one_thread_run):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported.parent, copy)
    cfg = build_config(None, {**resume_overrides, "method": "seq-lora", "train.max_steps": 1,
                              "runs_dir": str(tmp_path / "runs"),
                              "stream.file": str(copy / "stream.yaml")})
    store = one_thread_run(cfg)
    one_thread_run(cfg)  # the same data: the finished run is found again
    p = copy / "ocr" / "test.json"
    recs = json.loads(p.read_text())
    recs[0]["answer"] = "changed"
    p.write_text(json.dumps(recs))
    with pytest.raises(RunFolderError, match="changed since run"):
        one_thread_run(cfg)
    assert store.manifest()["status"] == "complete"


def test_probe_reads_a_stream_file(exported, resume_overrides, tmp_path, one_thread):
    from dmole_lab.engine.probe_stream import probe_stream

    overrides = {**resume_overrides, "runs_dir": str(tmp_path), "probe.sweep": "1"}
    a = probe_stream(build_config(None, overrides), progress=False)
    b = probe_stream(build_config(None, {**overrides, "stream.file": str(exported)}),
                     progress=False)
    ta, tb = a.summary("sensitivity"), b.summary("sensitivity")
    pd.testing.assert_frame_equal(ta.reset_index(drop=True), tb.reset_index(drop=True))
    assert b.manifest()["tasks"] == ["caption", "grounding", "ocr"]


def test_compare_sweeps_a_stream_file(exported, resume_overrides, tmp_path, one_thread, capsys):
    overrides = {**resume_overrides, "runs_dir": str(tmp_path / "runs"), "train.max_steps": 1,
                 "stream.file": str(exported)}
    args = [f"--{k}={v}" for k, v in overrides.items()]
    out = tmp_path / "table"
    assert main(["compare", "--methods", "seq-lora,dmole", "--seeds", "0", "--no-ablations",
                 "--out", str(out), "--quiet", *args]) == 0
    assert "2 of 2 runs finished" in capsys.readouterr().out
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/manifest.json")]
    assert len(runs) == 2
    assert all(r["tasks"] == ["caption", "grounding", "ocr"] and r["stream_data"] for r in runs)
