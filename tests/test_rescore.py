"""Re-scoring a finished run from its stored raw predictions (docs/method.md section 4).

The run folder is written by hand with the RunStore API (a manifest and per-stage scores and
predictions tables), so no model is trained; every expected value below is computed by hand.
"""

import math

import pandas as pd
import pytest

from dmole_lab.analysis.rescore import rescore, rescored_metrics
from dmole_lab.analysis.scoring import cider_corpus, corpus_bleu
from dmole_lab.analysis.summaries import write_tables
from dmole_lab.cli import main
from dmole_lab.config import build_config
from dmole_lab.store import RunStore

TASKS = ["ocr", "caption"]
OCR_REFS = ["12", "7", "cat", "three"]
OCR_PREDS = {0: ["12", "the number 7", "Cat ", "5"],
             1: ["12", "7", "dog", ""],
             2: ["1", "7.", "cat", "3"]}
CAP_REFS = ["a red circle next to a star.", "a blue square below the line."]
CAP_PREDS = {0: ["a red circle next to a star.", "nothing"],
             1: ["A red circle next to a star.", "a blue square below the line."],
             2: ["no idea", "a blue square below the line."]}
#: Hand-computed per (stage, task), 0-100.
EXACT = {"ocr": [50.0, 50.0, 25.0], "caption": [50.0, 100.0, 50.0]}
SUBSTRING = {"ocr": [75.0, 50.0, 75.0], "caption": [50.0, 100.0, 50.0]}
VQA_OCR = [50.0, 50.0, 75.0]  # "three" == "3" and "7." == "7" after the VQA normalisation
#: Stored (our own) scores: deliberately unlike any rescored value.
STORED = {"ocr": [1.0, 2.0, 3.0], "caption": [4.0, 5.0, 6.0]}


def _predictions(stage: int) -> pd.DataFrame:
    frames = []
    for task, preds, refs in (("ocr", OCR_PREDS[stage], OCR_REFS),
                              ("caption", CAP_PREDS[stage], CAP_REFS)):
        frames.append(pd.DataFrame({
            "stage": stage, "eval_task": task, "index": range(len(preds)),
            "question": "q?", "prediction": preds, "reference": refs, "score": 0.0}))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture()
def run(tmp_path) -> RunStore:
    cfg = build_config(None, {"stream.tasks": ",".join(TASKS), "runs_dir": str(tmp_path)})
    store = RunStore.for_config(cfg, tmp_path)
    for stage in range(len(TASKS) + 1):
        scores = pd.DataFrame({"stage": stage, "eval_task": TASKS, "metric": ["exact", "cider"],
                               "value": [STORED[t][stage] for t in TASKS], "seconds": 0.0})
        store.finish_stage(stage, {"scores": scores, "predictions": _predictions(stage)},
                           info={"task": TASKS[stage - 1] if stage else None})
    store.update_manifest(status="complete")
    write_tables(store)  # the stored run-level tables, as a finished run has them
    return store


def _values(df: pd.DataFrame, task: str) -> list[float]:
    return df[df.eval_task == task].sort_values("stage")["value"].tolist()


def test_exact_and_substring_give_the_hand_computed_matrices(run):
    exact, sub = rescore(run, "exact"), rescore(run, "substring")
    assert list(exact.columns) == ["stage", "eval_task", "metric", "value"]
    assert set(exact.metric) == {"exact"} and set(sub.metric) == {"substring"}
    assert len(exact) == 3 * len(TASKS)
    for task in TASKS:
        assert _values(exact, task) == EXACT[task]
        assert _values(sub, task) == SUBSTRING[task]


def test_tasks_argument_and_vqa_wraps_the_single_reference(run):
    vqa = rescore(run, "vqa", tasks=["ocr"])
    assert set(vqa.eval_task) == {"ocr"}
    assert _values(vqa, "ocr") == VQA_OCR


def test_corpus_scorers_give_one_value_per_stage_and_task(run):
    cider = rescore(run, "cider", tasks=["caption"])
    bleu = rescore(run, "bleu1", tasks=["caption"])
    assert len(cider) == len(bleu) == 3
    # corpus CIDEr-D (0-10) times the run's eval.cider_scale (10): perfect captions score 100
    assert cider.set_index("stage").loc[1, "value"] == pytest.approx(100.0)
    for stage in range(3):
        c = cider.set_index("stage").loc[stage, "value"]
        b = bleu.set_index("stage").loc[stage, "value"]
        assert c == pytest.approx(10.0 * cider_corpus(CAP_PREDS[stage], CAP_REFS))
        assert b == pytest.approx(100.0 * corpus_bleu(CAP_PREDS[stage], CAP_REFS, 1))
    assert cider.set_index("stage").loc[2, "value"] < 100.0


def test_rescored_metrics_follow_the_rescored_matrix(run):
    m = rescored_metrics(run, "substring")
    assert set(m.scorer) == {"substring"}
    d = m[(m.bwt_divisor == "T-1") & (m.forgetting_mode == "first")].set_index("metric")["value"]
    # A = [[75, 50], [50, 100], [75, 50]] (rows: stages 0-2; columns: ocr, caption)
    assert d["AVG"] == pytest.approx((50 + (75 + 50) / 2) / 2)
    assert d["Last"] == pytest.approx(62.5)
    assert d["BWT"] == pytest.approx(25.0)
    assert d["Forgetting"] == pytest.approx(-25.0)
    assert d["FWT"] == pytest.approx(50.0)
    assert d["MFT"] == pytest.approx(50.0)
    t = m[(m.bwt_divisor == "T") & (m.forgetting_mode == "first")].set_index("metric")["value"]
    assert t["BWT"] == pytest.approx(12.5)


def test_scorers_the_stored_references_cannot_feed_raise_a_clear_error(run):
    with pytest.raises(ValueError, match=r"image size.*can be used: option, exact"):
        rescore(run, "grounding")
    with pytest.raises(ValueError, match=r"unknown scorer 'nope'; allowed: option, exact"):
        rescore(run, "nope")
    with pytest.raises(ValueError, match=r"'option' cannot score eval task 'ocr'"):
        rescore(run, "option")
    with pytest.raises(ValueError, match=r"no stored predictions of eval task 'pope'"):
        rescore(run, "exact", tasks=["pope"])


def _files(store: RunStore) -> dict[str, bytes]:
    return {str(p.relative_to(store.root)): p.read_bytes()
            for p in sorted(store.root.rglob("*.parquet"))}


def test_report_rescore_prints_writes_and_leaves_the_stored_tables(run, capsys):
    before = _files(run)
    assert main(["report", "--run-dir", str(run.root), "--rescore", "substring"]) == 0
    out = capsys.readouterr().out
    assert "re-scored with 'substring'" in out and "stored" in out
    assert "62.5" in out and "56.25" in out  # the rescored Last and AVG
    sm = run.summary("score_matrix_substring")
    pd.testing.assert_frame_equal(sm, rescore(run, "substring"))
    metrics = run.summary("metrics_substring")
    last = metrics[(metrics.metric == "Last") & (metrics.bwt_divisor == "T-1")
                   & (metrics.forgetting_mode == "first")]["value"].item()
    assert last == pytest.approx(62.5)
    after = _files(run)
    assert set(after) - set(before) == {"tables/score_matrix_substring.parquet",
                                        "tables/metrics_substring.parquet"}
    assert all(after[k] == v for k, v in before.items())  # stored tables byte for byte
    stored = run.summary("score_matrix")
    assert _values(stored, "ocr") == STORED["ocr"]
    assert not math.isnan(stored.value.sum())


@pytest.mark.parametrize("scorer,fragment", [
    ("nope", "unknown scorer 'nope'; allowed: option, exact, vqa"),
    ("grounding", "needs a box and the image size"),
])
def test_report_rescore_bad_scorer_exits_2_in_one_line(run, capsys, scorer, fragment):
    before = _files(run)
    assert main(["report", "--run-dir", str(run.root), "--rescore", scorer]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert fragment in err and "\n" not in err
    assert captured.out == "" and _files(run) == before
