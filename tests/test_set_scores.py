"""score_set: one entry point for our metrics, the field scorers and the benchmarks, checked
against hand-computed values."""

import numpy as np
import pytest

from dmole_lab.analysis.set_scores import (
    SET_SCORERS,
    check_set_scorer,
    default_max_new_tokens,
    field_references,
    score_set,
)


def test_our_metrics_under_both_names():
    preds, refs = ["Red.", "blue", "a"], ["red", "green", "a"]
    lab, field = score_set("lab:exact", preds, refs), score_set("exact", preds, refs)
    assert lab.metric == "exact"  # stored under the bare name, as runs always did
    assert lab.value == pytest.approx(200 / 3) and lab.per_sample.tolist() == [100, 0, 100]
    # the field's "exact" (CoIN) keeps the full stop: "Red." != "red"
    assert field.metric == "exact" and field.per_sample.tolist() == [0, 0, 100]
    assert score_set("lab:cider", ["a red box ."], ["a red box."]).extras.keys() == {"bleu4"}


def test_field_scorers_read_answers_boxes_and_sizes():
    # VQA: 2 of 10 humans said "red": each leave-one-out subset of 9 holds 1 or 2 of them,
    # min(1, n/3) averaged = (8 * 2/3 + 2 * 1/3) / 10 = 0.6
    metas = [{"answers": ["red"] * 2 + ["blue"] * 8}]
    vqa = score_set("vqa", ["Red"], ["blue"], metas)
    assert vqa.metric == "vqa" and vqa.value == pytest.approx(60.0)
    # the box of the reference in normalised coordinates, the size from the image
    box = score_set("grounding", ["[0.1, 0.1, 0.5, 0.5]", "[0.6, 0.6, 0.9, 0.9]"],
                    ["b", "b"], [{"box": [0.1, 0.1, 0.5, 0.5]}] * 2,
                    image_size=lambda i: (100, 50))
    assert box.per_sample.tolist() == [100.0, 0.0] and box.value == 50.0
    refs = field_references("grounding", ["x"], [{"box": [0, 0, 1, 1], "size": [4, 2]}])
    assert refs == [{"box": [0.0, 0.0, 4.0, 4.0], "size": (4, 2)}]  # normalised: x max(w, h)
    with pytest.raises(ValueError, match="no image size"):
        field_references("grounding", ["x"], [{"box": [0, 0, 1, 1]}])
    sub = score_set("substring", ["a golden retriever", ""], ["golden retriever", "cat"])
    assert sub.per_sample.tolist() == [100.0, 0.0]


def test_corpus_scorers_have_no_per_sample_score():
    out = score_set("bleu1", ["a red box"], ["a red box"])
    assert out.value == pytest.approx(100.0) and np.isnan(out.per_sample).all()
    cider = score_set("cider", ["a red box", "two blue balls"],
                      ["a red box", "two blue balls"], cider_scale=10.0)
    assert cider.value > 0 and np.isnan(cider.per_sample).all()


def test_benchmarks():
    # POPE: 2 yes labels, 2 no; replies yes, no ("not"), yes, yes -> tp 2... by hand:
    # labels  yes yes no no ; said yes no yes yes -> tp 1, fn 1, fp 2, tn 0
    pope = score_set("pope", ["Yes.", "There is not.", "yes", "Yes, there is"],
                     ["yes", "yes", "no", "no"])
    assert pope.value == 25.0 and pope.per_sample.tolist() == [100, 0, 0, 0]
    assert pope.extras["pope_precision"] == pytest.approx(100 / 3)
    assert pope.extras["pope_recall"] == 50.0 and pope.extras["pope_yes_ratio"] == 75.0
    # MME: one existence image, both right (acc 100, acc+ 100: 200), one OCR image one right
    metas = [{"subtask": "existence", "image_id": "e/1"}] * 2 + \
        [{"subtask": "OCR", "image_id": "o/1"}] * 2
    mme = score_set("mme", ["Yes", "No", "yes", "yes"], ["Yes", "No", "Yes", "No"], metas)
    assert mme.metric == "mme" and mme.value == 200.0 + 50.0 + 0.0
    assert mme.extras == {"mme_cognition": 0.0, "mme_total": 250.0}
    mmmu = score_set("mmmu", ["(B)", "I pick A", "cat"], ["B", "B", "A"],
                     [{"options": ["x", "y"]}, {"options": ["x", "y"]}, {"options": ["cat", "d"]}])
    assert mmmu.per_sample.tolist() == [100.0, 0.0, 100.0]


def test_bad_input_names_what_is_allowed():
    with pytest.raises(ValueError, match="unknown scorer 'bleu5'; allowed: option"):
        score_set("bleu5", ["a"], ["a"])
    with pytest.raises(ValueError, match="unknown scorer 'lab:f1'"):
        score_set("lab:f1", ["a"], ["a"])
    with pytest.raises(ValueError, match="equally many"):
        score_set("exact", ["a"], ["a", "b"])
    check_set_scorer("pope")
    assert all(default_max_new_tokens(s) >= 1 for s in SET_SCORERS)
