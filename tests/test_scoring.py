import numpy as np
import pytest

from dmole_lab.analysis import scoring


def test_exact_strict_and_relaxed():
    preds, refs = ["Red.", "it is red", "blue"], ["red", "red", "red"]
    assert scoring.exact_match(preds, refs).tolist() == [1, 0, 0]
    assert scoring.exact_match(preds, refs, "relaxed").tolist() == [1, 1, 0]


def test_option_letter():
    preds = ["b", "(c)", "b. square", "answer: d"]
    refs = ["b", "c", "b", "d"]
    assert scoring.option_letter(preds, refs).tolist() == [1, 1, 0, 0]
    assert scoring.option_letter(preds, refs, "relaxed").tolist() == [1, 1, 1, 1]


def test_iou_threshold():
    assert scoring.box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert scoring.box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    hits = scoring.iou_hits(["[0, 0, 10, 10]", "[1, 1, 10, 10]", "[5, 0, 15, 10]", "none"],
                            ["[0, 0, 10, 10]"] * 4)
    assert hits.tolist() == [1, 1, 0, 0]


def test_cider_perfect_is_100_and_wrong_is_lower():
    refs = ["a small red circle.", "a large blue square and a small green cross.",
            "a large yellow triangle."]
    value, per, extra = scoring.score("cider", refs, refs)
    assert value == pytest.approx(100.0, abs=1e-6)
    worse, _, _ = scoring.score("cider", ["a small red square.", "a blue circle.", "nothing"],
                                refs)
    assert worse < 50 and extra["bleu4"] == pytest.approx(100.0, abs=1e-3)


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match="allowed: exact"):
        scoring.score("f1", ["a"], ["a"])
    with pytest.raises(ValueError, match="equally many"):
        scoring.score("exact", ["a"], [])
    v, per, _ = scoring.score("exact", ["a", "b"], ["a", "a"])
    assert v == 50.0 and np.array_equal(per, [100.0, 0.0])
