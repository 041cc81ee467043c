"""General-ability benchmarks scored as the field scores them: POPE, MME, MMMU-style choice.

docs/method.md section 4 measures general ability on our own held-out sets; these functions
score the field's general benchmarks from stored raw replies (pandas in, dict / DataFrame out),
each following its benchmark's own evaluation (named in the docstrings). Torch-free.
"""

from __future__ import annotations

import ast
import re
import string

import numpy as np
import pandas as pd

# --- POPE ---------------------------------------------------------------------------------------

POPE_SPLITS = ("random", "popular", "adversarial")


def pope_answer(text: str) -> str:
    """A free-text reply as "yes" or "no", by the rule of POPE's evaluation.

    Only the first sentence counts (the text before the first "."); commas are removed; the
    reply is "no" when that sentence contains the word "no" or "not" (a whole word, any case;
    POPE's script looks for "No", "no" and "not"), otherwise "yes" - so a reply that says
    neither counts as yes. docs/method.md section 4 (general ability); POPE (Li et al., 2023).
    """
    words = str(text).split(".", 1)[0].replace(",", "").lower().split()
    return "no" if "no" in words or "not" in words else "yes"


def _yes_no_label(label) -> bool:
    """A POPE / MME label as True (yes) or False (no): "yes"/"no" in any case, or a 1/0."""
    if isinstance(label, (bool, np.bool_)):
        return bool(label)
    if isinstance(label, (int, np.integer)) and label in (0, 1):
        return bool(label)
    text = str(label).strip().lower()
    if text not in ("yes", "no"):
        raise ValueError(f"a yes/no label must be 'yes', 'no', 1 or 0, got {label!r}")
    return text == "yes"


def pope_metrics(preds, labels) -> dict[str, float]:
    """POPE's metrics of raw replies against yes/no labels, "yes" being the positive class.

    Replies are read with :func:`pope_answer`. Returns the counts (n, tp, fp, tn, fn) and, in
    percent, accuracy = (tp + tn) / n, precision = tp / (tp + fp), recall = tp / (tp + fn),
    f1 = 2 precision recall / (precision + recall) and yes_ratio = share of "yes" replies.
    A ratio with a zero denominator is 0. docs/method.md section 4; POPE (Li et al., 2023).
    """
    preds, labels = list(preds), list(labels)
    if len(preds) != len(labels) or not preds:
        raise ValueError(
            f"need equally many replies and labels, got {len(preds)}/{len(labels)}")
    said_yes = np.array([pope_answer(p) == "yes" for p in preds])
    is_yes = np.array([_yes_no_label(v) for v in labels])
    tp = int(np.sum(said_yes & is_yes))
    fp = int(np.sum(said_yes & ~is_yes))
    tn = int(np.sum(~said_yes & ~is_yes))
    fn = int(np.sum(~said_yes & is_yes))
    n = len(preds)
    ratio = lambda a, b: a / b if b else 0.0  # noqa: E731
    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "n": n, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "accuracy": 100.0 * (tp + tn) / n,
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "f1": 100.0 * ratio(2 * precision * recall, precision + recall),
        "yes_ratio": 100.0 * float(said_yes.mean()),
    }


def pope_scores(df: pd.DataFrame, pred_col: str = "prediction", label_col: str = "label",
                split_col: str | None = None):
    """POPE's metrics of a table of replies (:func:`pope_metrics`), overall or per split.

    Without ``split_col``: one dict. With it: a DataFrame with one row per split (random,
    popular, adversarial first, then any other split in sorted order) and the columns of
    :func:`pope_metrics`; no pooled row (the field reports the splits, or their mean).
    docs/method.md section 4; POPE (Li et al., 2023).
    """
    if split_col is None:
        return pope_metrics(df[pred_col], df[label_col])
    present = list(pd.unique(df[split_col]))
    order = [s for s in POPE_SPLITS if s in present] + sorted(
        (s for s in present if s not in POPE_SPLITS), key=str)
    rows = {s: pope_metrics(g[pred_col], g[label_col])
            for s, g in ((s, df[df[split_col] == s]) for s in order)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = split_col
    return out


# --- MME ----------------------------------------------------------------------------------------

MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                  "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
                 "code_reasoning")
_MME_CANON = {name.lower(): name for name in MME_PERCEPTION + MME_COGNITION}


def mme_answer(text: str) -> str:
    """A free-text reply as "yes", "no" or "other", by the rule of MME's evaluation.

    Lower-cased and stripped: "yes" / "no" as they are; otherwise "yes" if the first four
    characters contain "yes", else "no" if they contain "no", else "other" (always wrong).
    docs/method.md section 4; MME (Fu et al., 2023).
    """
    text = str(text).strip().lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mme_scores(df: pd.DataFrame, pred_col: str = "prediction", label_col: str = "label",
               image_col: str = "image", subtask_col: str = "subtask") -> dict:
    """MME's scores of a table of replies (one row per question, two questions per image).

    Per subtask: acc = percent of questions answered right (replies read with
    :func:`mme_answer`), acc_plus = percent of images whose two questions are both right,
    score = acc + acc_plus (max 200). Perception = sum of the scores of MME's perception
    subtasks (existence, count, position, color, posters, celebrity, scene, landmark, artwork,
    OCR; max 2000), cognition = sum over commonsense_reasoning, numerical_calculation,
    text_translation, code_reasoning (max 800). Subtask names match case-insensitively;
    others are scored (category "other") but left out of the totals. Returns
    {"subtasks": DataFrame (category, n_questions, n_images, acc, acc_plus, score),
    "perception", "cognition", "total": perception + cognition, "missing": MME subtasks absent
    from the table}. Raises ValueError if an image of a subtask has not exactly two questions.
    docs/method.md section 4; MME (Fu et al., 2023).
    """
    rows = {}
    for sub, g in df.groupby(subtask_col, sort=False):
        name = _MME_CANON.get(str(sub).lower(), str(sub))
        truth = np.array([_yes_no_label(v) for v in g[label_col]])
        said = np.array([mme_answer(p) for p in g[pred_col]])
        right = pd.Series((said == np.where(truth, "yes", "no")), index=g.index)
        per_image = right.groupby(g[image_col].to_numpy())
        sizes = per_image.size()
        if (sizes != 2).any():
            bad = sizes[sizes != 2].index.tolist()[:5]
            raise ValueError(f"MME needs two questions per image; subtask {name!r}: {bad}")
        category = ("perception" if name in MME_PERCEPTION else
                    "cognition" if name in MME_COGNITION else "other")
        acc = 100.0 * float(right.mean())
        acc_plus = 100.0 * float(per_image.all().mean())
        rows[name] = {"category": category, "n_questions": len(g), "n_images": len(sizes),
                      "acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "subtask"
    total = lambda cat: float(table.loc[table["category"] == cat, "score"].sum())  # noqa: E731
    perception, cognition = total("perception"), total("cognition")
    return {"subtasks": table, "perception": perception, "cognition": cognition,
            "total": perception + cognition,
            "missing": [s for s in MME_PERCEPTION + MME_COGNITION if s not in rows]}


# --- MMMU-style multiple choice -------------------------------------------------------------------

_EDGE_PUNCT = ",.!?;:'\" "


def _options(options) -> list[str]:
    if isinstance(options, str):
        options = ast.literal_eval(options)
    return [str(o) for o in options]


def parse_choice(reply: str, options) -> str | None:
    """The option letter (A, B, ...) a free-text reply chooses among ``options``, or None.

    As MMMU's evaluation parses multiple-choice replies: punctuation at the ends stripped;
    the reply alone as a letter; else candidates are bracketed letters "(B)", else
    stand-alone capital letters ("B", "B.", "B)"), else option texts the reply repeats; of
    several candidates the one occurring last in the reply wins (MMMU's rule). Our choices
    where MMMU differs: a bracketed letter may be lower case ("(b)"); a capital "A" followed
    by a lower-case word is the article, not option A; an option text counts as a whole-word
    match in replies of any length (MMMU only looks for texts in replies of more than five
    words), "last" meaning the match that ends last and, of matches ending together, the
    longest (so "black cat" beats the option "cat" inside it); a reply naming no option gives
    None, scored wrong (MMMU picks a random option, which would make scores
    non-deterministic). ``options`` is a list of option texts
    (or its string form, as MMMU's data store it). docs/method.md section 4; MMMU (Yue et al.,
    2024).
    """
    opts = _options(options)
    letters = string.ascii_uppercase[:len(opts)]
    if not letters:
        raise ValueError("a multiple-choice question needs options")
    text = str(reply).strip(_EDGE_PUNCT)
    alone = re.fullmatch(r"\(?([A-Za-z])\)?", text)
    if alone is not None and alone.group(1).upper() in letters:
        return alone.group(1).upper()
    cls = f"[{letters}]"
    found = [(m.start(), m.group(1).upper())
             for m in re.finditer(rf"\(({cls})\)", text, re.IGNORECASE)]
    if not found:
        found = [(m.start(), m.group(1)) for m in re.finditer(
            rf"(?<![\w'])({cls})(?=$|\s|[.,:;)])(?!(?<=A)\s+[a-z])", text)]
    if found:
        return max(found)[1]
    low = text.lower()
    hits = []
    for letter, opt in zip(letters, opts):
        opt = opt.strip().lower()
        if opt:
            hits += [(m.end(), len(opt), letter)
                     for m in re.finditer(rf"(?<!\w){re.escape(opt)}(?!\w)", low)]
    return max(hits)[2] if hits else None


def _choice_letter(answer, n_options: int) -> str:
    if isinstance(answer, (int, np.integer)) and not isinstance(answer, bool):
        return string.ascii_uppercase[int(answer)]
    text = str(answer).strip().strip("()").strip()
    if text.isdigit():
        return string.ascii_uppercase[int(text)]
    if len(text) == 1 and text.upper() in string.ascii_uppercase[:n_options]:
        return text.upper()
    raise ValueError(f"an MMMU answer must be an option letter or index, got {answer!r}")


def mmmu_scores(df: pd.DataFrame, pred_col: str = "prediction", options_col: str = "options",
                answer_col: str = "answer", subject_col: str | None = "subject") -> dict:
    """MMMU-style multiple-choice accuracy of a table of replies, overall and per subject.

    Each reply is parsed with :func:`parse_choice` against its row's options and compared with
    the answer (a letter, or a 0-based option index). Returns {"accuracy": percent, "n",
    "correct": per-row 0/1 array, "parsed": the parsed letters (None where none),
    "per_subject": DataFrame (accuracy, n) by subject, or None without ``subject_col``}.
    Only multiple-choice rows: a row without options raises ValueError (MMMU's open questions
    need its own answer matching). docs/method.md section 4; MMMU (Yue et al., 2024).
    """
    if df.empty:
        raise ValueError("no rows to score")
    parsed, correct = [], []
    for reply, options, answer in zip(df[pred_col], df[options_col], df[answer_col]):
        opts = _options(options)
        letter = parse_choice(reply, opts)
        parsed.append(letter)
        correct.append(float(letter is not None and letter == _choice_letter(answer, len(opts))))
    correct = np.array(correct)
    per_subject = None
    if subject_col is not None:
        per_subject = (pd.DataFrame({"subject": df[subject_col].to_numpy(), "c": correct})
                       .groupby("subject")["c"].agg(["mean", "size"])
                       .rename(columns={"mean": "accuracy", "size": "n"}))
        per_subject["accuracy"] *= 100.0
    return {"accuracy": 100.0 * float(correct.mean()), "n": len(correct), "correct": correct,
            "parsed": parsed, "per_subject": per_subject}
