"""The field's scorers (dmole_lab.analysis.scoring, second half) and general benchmarks
(dmole_lab.analysis.general) against hand-computed cases."""

import numpy as np
import pandas as pd
import pytest

from dmole_lab.analysis import general, scoring

# --- registry -------------------------------------------------------------------------------------


def test_registry_names_and_unknown_name():
    assert set(scoring.SCORERS) == {"option", "exact", "vqa", "textvqa", "substring",
                                    "grounding", "ocr", "gqa", "bleu1", "bleu2", "bleu3",
                                    "bleu4", "rouge_l", "cider"}
    assert scoring.CORPUS_SCORERS == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}
    with pytest.raises(ValueError, match=r"unknown scorer 'f1'; allowed: option, exact, vqa"):
        scoring.score_field("f1", ["a"], ["a"])
    with pytest.raises(ValueError, match="equally many"):
        scoring.score_field("exact", ["a", "b"], ["a"])
    per = scoring.score_field("exact", ["A", "b"], ["a", "a"])
    assert isinstance(per, np.ndarray) and per.tolist() == [1.0, 0.0]
    assert isinstance(scoring.score_field("bleu1", ["a b"], ["a b"]), float)


def test_own_score_entry_point_unchanged():
    # our scorer (docs/method.md section 4) keeps its signature and return value
    assert scoring.METRICS == ("exact", "option", "cider", "iou")
    value, per, extra = scoring.score("exact", ["a", "b"], ["a", "a"])
    assert value == 50.0 and per.tolist() == [100.0, 0.0] and extra == {}


# --- option / exact / substring / ocr / gqa -----------------------------------------------------


def test_option_parses_letter_from_free_text():
    preds = ["The answer is (B).", "B", "b) cat", "Answer: C", "A cat sits on a mat", "",
             "I pick E", "The answer is a cat", "a"]
    refs = [1, "B", "b", 2, "A", "A", 4, "A", 0]
    # "A cat ..." and "The answer is a cat" name no option (the article), so they score 0
    assert scoring.score_field("option", preds, refs).tolist() == [1, 1, 1, 1, 0, 0, 1, 0, 1]
    assert scoring.parse_option_letter("no idea") is None
    with pytest.raises(ValueError, match="option reference"):
        scoring.option_accuracy(["A"], ["F"])


def test_exact_is_case_insensitive_after_stripping_only():
    # " Yes " -> "yes" == "yes"; "yes." keeps its full stop (CoIN does not drop it); "Two" ==
    # "two"; "2" != "two" (no number-word normalisation here)
    got = scoring.score_field("exact", [" Yes ", "yes.", "Two", "2"], ["yes", "yes", "two", "two"])
    assert got.tolist() == [1, 0, 1, 0]


def test_substring_either_direction():
    preds = ["Golden Retriever dog", "dog", "", "cat"]
    refs = ["golden retriever", "Golden retriever dog", "tench", "tiger"]
    # class in reply, reply in class, empty reply (never a match), no overlap
    assert scoring.score_field("substring", preds, refs).tolist() == [1, 1, 0, 0]


def test_ocr_and_gqa():
    ocr = scoring.score_field("ocr", ["The Hobbit ", "Unanswerable", "tolkien", "Hobbit."],
                              ["the hobbit", "Unanswerable", "J. R. R. Tolkien", "hobbit"])
    assert ocr.tolist() == [1, 0, 0, 0]
    # GQA: trailing full stop dropped, lower-cased; "the left" != "left"
    gqa = scoring.score_field("gqa", ["Yes.", " left", "the left"], ["yes", "left", "left"])
    assert gqa.tolist() == [1, 1, 0]


# --- VQA / TextVQA ------------------------------------------------------------------------------


def test_vqa_normalisation():
    assert scoring.vqa_normalize("The Two dogs.") == "2 dogs"     # article, number word, stop
    assert scoring.vqa_normalize("An apple") == "apple"
    assert scoring.vqa_normalize("none") == "0"
    assert scoring.vqa_normalize("dont") == "don't"               # contraction restored
    assert scoring.vqa_normalize("couldntve") == "couldn't've"
    assert scoring.vqa_normalize("were") == "were"                # a word, not "we're"
    assert scoring.vqa_normalize("1,000") == "1000"               # comma between digits
    assert scoring.vqa_normalize("2.5") == "2.5"                  # point before a digit kept
    assert scoring.vqa_normalize("red-white") == "red white"      # mark inside a word -> space
    assert scoring.vqa_normalize("yes , sir") == "yes sir"        # mark next to a space -> gone


def test_vqa_soft_score_leave_one_out():
    answers = ["2"] * 2 + ["3"] * 8
    # 10 answers, 2 match. Leaving out one of the 2 matching: 1 match left -> 1/3 (2 subsets);
    # leaving out one of the 8 others: 2 matches -> 2/3 (8 subsets).
    # (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10 = 0.6
    assert scoring.vqa_soft_score("two", answers) == pytest.approx(0.6)
    # 3 match: (3 * 2/3 + 7 * min(3/3, 1)) / 10 = (2 + 7) / 10 = 0.9
    assert scoring.vqa_soft_score("Two.", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)
    # 1 match: (1 * 0 + 9 * 1/3) / 10 = 0.3; 4 match: every subset has >= 3 -> 1.0
    assert scoring.vqa_soft_score("2", ["2"] + ["3"] * 9) == pytest.approx(0.3)
    assert scoring.vqa_soft_score("2", ["2"] * 4 + ["3"] * 6) == pytest.approx(1.0)
    got = scoring.score_field("vqa", ["the two", "4", "Yes"], [answers, answers, "yes"])
    # "the two" -> "2" (0.6); "4" matches none (0.0); a single reference answer: match -> 1.0
    assert got == pytest.approx([0.6, 0.0, 1.0])


def test_textvqa_uses_its_own_normalisation():
    # "Coca-Cola?" -> "coca-cola" (question mark removed) -> "coca cola"; 2 of 10 match -> 0.6
    answers = ["coca cola"] * 2 + ["pepsi"] * 8
    assert scoring.score_field("textvqa", ["Coca-Cola?"], [answers]) == pytest.approx([0.6])
    # "man's" -> "man 's" in TextVQA on both sides; the VQA normalisation keeps "man's"
    assert scoring.textvqa_accuracy(["man's"], [["man 's"] * 10]).tolist() == [1.0]
    assert scoring.vqa_accuracy(["man's"], [["man 's"] * 10]).tolist() == [0.0]


# --- grounding ------------------------------------------------------------------------------------


def test_grounding_scales_by_max_side_and_needs_iou_above_half():
    ref = {"box": (0, 0, 100, 100), "size": (200, 100)}       # max(w, h) = 200
    preds = [
        "[0.0, 0.0, 0.5, 0.5]",    # x 200 -> (0, 0, 100, 100): IoU 1 (per-axis scaling: 0.5)
        "[0, 0, 0.5, 0.255]",      # -> (0, 0, 100, 51): IoU 5100 / 10000 = 0.51 > 0.5 -> hit
        "[0, 0, 0.5, 0.245]",      # -> (0, 0, 100, 49): IoU 0.49 -> miss
        "[0, 0, 0.5, 0.25]",       # -> (0, 0, 100, 50): IoU exactly 0.5, not > 0.5 -> miss
        "[0, 0, 100, 100]",        # numbers outside [0, 1]: not a normalised box -> miss
        "no box here",
    ]
    got = scoring.score_field("grounding", preds, [ref] * len(preds))
    assert got.tolist() == [1, 1, 0, 0, 0, 0]
    # CoIN's answer_bbox string and the (box, size) pair are accepted too
    assert scoring.grounding_accuracy(
        ["The box is [0.1, 0.1, 0.5, 0.5]."],
        [{"answer_bbox": "[20, 20, 100, 100]", "size": [100, 200]}]).tolist() == [1.0]
    assert scoring.grounding_accuracy(["0, 0, .5, .5"], [((0, 0, 50, 50), (100, 100))]) == [1.0]
    with pytest.raises(ValueError, match="box and the image size"):
        scoring.grounding_accuracy(["[0, 0, 1, 1]"], [{"box": (0, 0, 1, 1)}])


# --- captions (corpus-level) ----------------------------------------------------------------------


def test_bleu_by_hand_and_corpus_level():
    # unigrams of "a b c d" in "a b x y": a, b -> 2/4; same length, no brevity penalty
    assert scoring.score_field("bleu1", ["a b c d"], ["a b x y"]) == pytest.approx(0.5)
    # "a b c d" vs "a b c e": unigrams 3/4, bigrams (ab, bc of ab, bc, cd) 2/3
    # BLEU-2 = sqrt(3/4 * 2/3) = sqrt(0.5)
    assert scoring.score_field("bleu2", ["a b c d"], ["a b c e"]) == pytest.approx(0.5 ** 0.5)
    # corpus-level: counts pooled, (2 + 1) / (2 + 4) = 0.5, not the per-sample mean
    # (2/2 + 1/4) / 2 = 0.625
    assert scoring.bleu1_corpus(["a b", "c d e f"], ["a b", "c x y z"]) == pytest.approx(0.5)
    # several references per sample: counts clipped by the best reference -> 4/4
    assert scoring.bleu1_corpus(["a b c d"], [["a b x y", "c d z w"]]) == pytest.approx(1.0)
    # case and punctuation are dropped by the tokenisation: identical 4-word captions -> 1
    assert scoring.bleu4_corpus(["a small red circle"], ["A small red circle."]) \
        == pytest.approx(1.0)


def test_rouge_l_by_hand():
    # "a b c" vs "a c d e": LCS "a c" = 2, P = 2/3, R = 2/4; beta^2 = 1.44
    # F = (1 + 1.44) P R / (R + 1.44 P) = 2.44 * (1/3) / (0.5 + 0.96) = 0.81333 / 1.46
    expected = 2.44 * (2 / 3) * 0.5 / (0.5 + 1.44 * (2 / 3))
    assert expected == pytest.approx(0.557078, abs=1e-6)
    assert scoring.score_field("rouge_l", ["a b c"], ["a c d e"]) == pytest.approx(expected)


def test_cider_corpus():
    refs = ["a small red circle.", "a large blue square and a small green cross.",
            "a large yellow triangle."]
    # an exact caption scores CIDEr-D 10 on pycocoevalcap's scale
    assert scoring.score_field("cider", refs, refs) == pytest.approx(10.0, abs=1e-6)
    preds = ["a small red square.", "a blue circle.", "nothing"]
    worse = scoring.cider_corpus(preds, refs)
    assert worse < 5.0
    # the corpus value is the mean of our per-sample CIDEr-D on the same tokenisation
    assert worse == pytest.approx(float(np.mean(scoring.cider(preds, refs))))


# --- POPE ---------------------------------------------------------------------------------------


def test_pope_answer_rule():
    assert general.pope_answer("Yes, there is a dog.") == "yes"
    assert general.pope_answer("No.") == "no"
    assert general.pope_answer("There is not a cat in the image.") == "no"
    assert general.pope_answer("NO") == "no"
    assert general.pope_answer("Yes. But there is no cat.") == "yes"   # first sentence only
    assert general.pope_answer("There is nothing") == "yes"             # "no" must be a word
    assert general.pope_answer("I don't know") == "yes"                 # neither word -> yes


def _pope_table():
    # tp = 3 (yes/yes), fp = 1 (yes/no), tn = 4 (no/no), fn = 2 (no/yes); n = 10
    preds = ["Yes"] * 3 + ["Yes, I see it."] + ["No"] * 4 + ["There is not one."] * 2
    labels = ["yes"] * 3 + ["no"] + ["no"] * 4 + ["yes"] * 2
    return preds, labels


def test_pope_metrics_by_hand():
    preds, labels = _pope_table()
    m = general.pope_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (3, 1, 4, 2, 10)
    assert m["accuracy"] == pytest.approx(70.0)        # (3 + 4) / 10
    assert m["precision"] == pytest.approx(75.0)       # 3 / (3 + 1)
    assert m["recall"] == pytest.approx(60.0)          # 3 / (3 + 2)
    # F1 = 2 * 0.75 * 0.6 / (0.75 + 0.6) = 0.9 / 1.35 = 2/3
    assert m["f1"] == pytest.approx(200.0 / 3)
    assert m["yes_ratio"] == pytest.approx(40.0)       # (3 + 1) yes replies / 10


def test_pope_per_split():
    preds, labels = _pope_table()
    df = pd.DataFrame({"prediction": preds + ["yes", "no"] + ["no", "no"],
                       "label": labels + [1, 0] + [True, False],
                       "split": ["adversarial"] * 10 + ["random"] * 2 + ["popular"] * 2})
    out = general.pope_scores(df, split_col="split")
    assert out.index.tolist() == ["random", "popular", "adversarial"]
    assert out.loc["adversarial", "f1"] == pytest.approx(200.0 / 3)
    assert out.loc["random", "accuracy"] == 100.0
    # popular: tn = 1, fn = 1, no yes reply -> precision 0 (empty denominator), recall 0
    assert out.loc["popular", ["accuracy", "precision", "recall", "f1", "yes_ratio"]].tolist() \
        == [50.0, 0.0, 0.0, 0.0, 0.0]
    assert general.pope_scores(df)["n"] == 14


# --- MME ----------------------------------------------------------------------------------------


def test_mme_answer_rule():
    assert general.mme_answer("Yes, it is.") == "yes"
    assert general.mme_answer("No.") == "no"
    assert general.mme_answer("Not sure") == "no"       # "no" in the first four characters
    assert general.mme_answer("Maybe") == "other"
    assert general.mme_answer("I think yes") == "other"  # "yes" not in "i th"


def test_mme_acc_acc_plus_and_totals():
    rows = [
        # existence: img1 both right; img2 second wrong ("Yes" for no)
        ("existence", "e1", "Yes", "Yes"), ("existence", "e1", "No", "No"),
        ("existence", "e2", "Yes", "Yes"), ("existence", "e2", "Yes", "No"),
        # OCR (named in lower case): img1 both right; img2 both wrong ("Maybe" is other)
        ("ocr", "o1", "yes", "Yes"), ("ocr", "o1", "no", "No"),
        ("ocr", "o2", "Maybe", "Yes"), ("ocr", "o2", "no", "Yes"),
        # code_reasoning: one image, one of two right
        ("code_reasoning", "c1", "Yes", "Yes"), ("code_reasoning", "c1", "Yes", "No"),
    ]
    df = pd.DataFrame(rows, columns=["subtask", "image", "prediction", "label"])
    out = general.mme_scores(df)
    t = out["subtasks"]
    # existence: acc = 3/4 = 75, acc+ = 1/2 images = 50, score 125
    assert t.loc["existence", ["acc", "acc_plus", "score"]].tolist() == [75.0, 50.0, 125.0]
    # OCR: acc = 2/4 = 50, acc+ = 1/2 = 50, score 100
    assert t.loc["OCR", ["acc", "acc_plus", "score"]].tolist() == [50.0, 50.0, 100.0]
    # code_reasoning: acc = 1/2 = 50, acc+ = 0/1 = 0, score 50
    assert t.loc["code_reasoning", ["acc", "acc_plus", "score"]].tolist() == [50.0, 0.0, 50.0]
    assert out["perception"] == 225.0 and out["cognition"] == 50.0 and out["total"] == 275.0
    assert "count" in out["missing"] and "OCR" not in out["missing"]
    with pytest.raises(ValueError, match="two questions per image"):
        general.mme_scores(df.iloc[:3])


# --- MMMU ---------------------------------------------------------------------------------------


def test_parse_choice():
    opts = ["cat", "black cat", "dog", "12"]
    assert general.parse_choice("(c)", opts) == "C"
    assert general.parse_choice("The answer is B.", opts) == "B"
    assert general.parse_choice("Option (A) or (C)", opts) == "C"        # last one wins
    assert general.parse_choice("I think it is the black cat", opts) == "B"  # not "cat"
    assert general.parse_choice("dog", opts) == "C"                     # the option text
    assert general.parse_choice("The answer is 2", opts) is None        # "2" is not "12"
    assert general.parse_choice("A nice picture", ["x", "y"]) is None   # the article


def test_mmmu_accuracy_overall_and_per_subject():
    df = pd.DataFrame({
        "subject": ["Art", "Art", "Math", "Math", "Math"],
        "options": [["x", "y", "z"], ["x", "y", "z"], ["x", "y", "z"], ["x", "y", "z"],
                    "['cat', 'black cat']"],
        "prediction": ["(B)", "The answer is C.", "I believe it is y, not z", "no idea",
                       "black cat"],
        "answer": ["B", 0, "C", "A", 1],
    })
    out = general.mmmu_scores(df)
    # parsed: B (right), C vs A (wrong), z -> C (right, the last one named), none (wrong),
    # "black cat" -> B = index 1 (right): 3 / 5 = 60
    assert out["parsed"] == ["B", "C", "C", None, "B"]
    assert out["correct"].tolist() == [1, 0, 1, 0, 1]
    assert out["accuracy"] == pytest.approx(60.0) and out["n"] == 5
    per = out["per_subject"]
    assert per.loc["Art", "accuracy"] == pytest.approx(50.0)           # 1 / 2
    assert per.loc["Math", "accuracy"] == pytest.approx(200.0 / 3)     # 2 / 3
    assert per["n"].tolist() == [2, 3]
