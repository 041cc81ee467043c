"""Score one evaluation set with the scorer its stream names (torch-free).

A scorer is one of our own metrics (:data:`scoring.METRICS`) as ``lab:<metric>`` - every set of
the synthetic stream, and the files export writes, so a run from them scores exactly as the
in-code stream -, a field scorer (:data:`scoring.SCORERS`; "exact", "option" and "cider" there
are the field's, not ours), or for a general-ability benchmark ``pope`` / ``mme`` / ``mmmu``
(docs/method.md section 4). :func:`score_set` turns raw replies and each sample's answer and
metadata into one main value on the 0-100 scale of the score matrix (MME: its perception score,
as the benchmark reports it), per-sample scores and named extras.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .general import mme_answer, mme_scores, mmmu_scores, pope_answer, pope_metrics
from .scoring import CORPUS_SCORERS, METRICS, SCORERS, score, score_field

#: Our own metrics under the names a stream file uses for them.
LAB_PREFIX = "lab:"
LAB_SCORERS = tuple(LAB_PREFIX + m for m in METRICS)
#: The general-ability benchmarks' own scoring (analysis.general).
BENCH_SCORERS = ("pope", "mme", "mmmu")
#: What a stream file's task (or held-out set) may name as its scorer.
TASK_SCORERS = (*SCORERS, *LAB_SCORERS)
#: Every scorer an evaluation set may have (the benchmarks are named by the stream file).
SET_SCORERS = (*TASK_SCORERS, *BENCH_SCORERS)
#: Generation cap per scorer when a stream file names none (eval.max_new_tokens caps it too).
DEFAULT_MAX_NEW_TOKENS = {"grounding": 32, "lab:iou": 16, "lab:cider": 32, "bleu1": 64,
                          "bleu2": 64, "bleu3": 64, "bleu4": 64, "rouge_l": 64, "cider": 64,
                          "option": 8, "lab:option": 8, "pope": 8, "mme": 8, "mmmu": 16}
FALLBACK_MAX_NEW_TOKENS = 16


def check_set_scorer(name: str) -> None:
    """Raise ValueError naming the allowed scorers unless ``name`` is one of :data:`SET_SCORERS`."""
    if name not in SET_SCORERS:
        raise ValueError(f"unknown scorer {name!r}; allowed: {', '.join(SET_SCORERS)}")


def default_max_new_tokens(scorer: str) -> int:
    """Tokens to generate for a set scored by ``scorer`` when its stream names no cap."""
    return DEFAULT_MAX_NEW_TOKENS.get(scorer, FALLBACK_MAX_NEW_TOKENS)


def own_metric(scorer: str) -> str | None:
    """Our own metric a ``lab:``-prefixed scorer names ("lab:exact" -> "exact"), else None."""
    if scorer.startswith(LAB_PREFIX):
        return scorer[len(LAB_PREFIX):]
    return None


@dataclass
class SetScore:
    """The result of scoring one set: the main row of the score matrix and its extras."""

    metric: str  # the name the scores table stores (our metric's bare name for lab:*)
    value: float  # 0-100 (MME: perception score, 0-2000)
    per_sample: np.ndarray  # 0-100 per sample; NaN where the scorer is corpus-level
    extras: dict[str, float] = field(default_factory=dict)


def field_references(scorer: str, answers: Sequence[str], metas: Sequence[dict],
                     image_size: Callable[[int], tuple[int, int]] | None = None) -> list:
    """The references a field scorer reads, built from each sample's answer and metadata.

    "vqa" / "textvqa": the human answers (``meta["answers"]``; else the one answer);
    "grounding": ``{"box", "size"}`` from ``meta`` (the size, when the record gave none, from
    ``image_size(i)``: (width, height) of sample i's image); a normalised box (CoIN's
    ``answer_bbox``, every coordinate in [0, 1]) is scaled by max(width, height) to the pixels
    of the padded square frame the scorer compares in; any other: the answer string.
    """
    if scorer in ("vqa", "textvqa"):
        return [list(m.get("answers") or [a]) for a, m in zip(answers, metas)]
    if scorer == "grounding":
        refs = []
        for i, (a, m) in enumerate(zip(answers, metas)):
            size = m.get("size")
            if size is None:
                if image_size is None:
                    raise ValueError(f"grounding reference {i} has no image size")
                size = image_size(i)
            box = m.get("box", a)
            if not isinstance(box, str) and all(0.0 <= float(v) <= 1.0 for v in box):
                box = [float(v) * max(size) for v in box]
            refs.append({"box": box, "size": tuple(size)})
        return refs
    return list(answers)


def score_set(scorer: str, preds: Sequence[str], answers: Sequence[str],
              metas: Sequence[dict] | None = None, cider_scale: float = 10.0,
              image_size: Callable[[int], tuple[int, int]] | None = None) -> SetScore:
    """Score the replies ``preds`` to one set with ``scorer`` (docs/method.md section 4).

    ``answers``: each sample's reference answer; ``metas``: each sample's metadata (human
    answers, boxes, POPE split, MME subtask and image, MMMU options); ``image_size(i)``: the
    (width, height) of sample i's image, read only by "grounding" when a record has no size.
    Our own metrics (``lab:<metric>``) score as :func:`scoring.score`; a per-sample
    field scorer gives 100 x the mean per-sample score; a caption scorer 100 x its corpus
    value (CIDEr: ``cider_scale`` x CIDEr-D, as our own "cider"); "pope" POPE's accuracy with
    F1, precision, recall and yes-ratio as extras; "mme" the perception score with cognition
    and total as extras; "mmmu" multiple-choice accuracy. Raises ValueError for an unknown
    scorer or unequal lengths.
    """
    preds, answers = [str(p) for p in preds], list(answers)
    metas = [dict(m or {}) for m in (metas if metas is not None else [{}] * len(answers))]
    if not (len(preds) == len(answers) == len(metas)) or not preds:
        raise ValueError(f"need equally many replies, answers and metas (> 0), got "
                         f"{len(preds)}/{len(answers)}/{len(metas)}")
    check_set_scorer(scorer)
    metric = own_metric(scorer)
    if metric is not None:  # stored under its bare name, as runs always stored our metrics
        value, per, extras = score(metric, preds, answers, cider_scale=cider_scale)
        return SetScore(metric, value, per, extras)
    if scorer == "pope":
        m = pope_metrics(preds, answers)
        per = 100.0 * np.array([pope_answer(p) == str(a).strip().lower()
                                for p, a in zip(preds, answers)], dtype=float)
        extras = {f"pope_{k}": float(m[k]) for k in ("f1", "precision", "recall", "yes_ratio")}
        return SetScore("pope", float(m["accuracy"]), per, extras)
    if scorer == "mme":
        df = pd.DataFrame({"prediction": preds, "label": answers,
                           "image": [m.get("image_id", i) for i, m in enumerate(metas)],
                           "subtask": [m.get("subtask", "other") for m in metas]})
        out = mme_scores(df)
        right = [float(mme_answer(p) == str(a).strip().lower()) for p, a in zip(preds, answers)]
        extras = {"mme_cognition": out["cognition"], "mme_total": out["total"]}
        return SetScore("mme", out["perception"], 100.0 * np.array(right), extras)
    if scorer == "mmmu":
        df = pd.DataFrame({"prediction": preds, "answer": answers,
                           "options": [m.get("options") or [] for m in metas]})
        out = mmmu_scores(df, subject_col=None)
        return SetScore("mmmu", out["accuracy"], 100.0 * out["correct"])
    refs = field_references(scorer, answers, metas, image_size)
    value = score_field(scorer, preds, refs)
    if scorer in CORPUS_SCORERS:
        scale = cider_scale if scorer == "cider" else 100.0
        return SetScore(scorer, scale * float(value), np.full(len(preds), np.nan))
    return SetScore(scorer, 100.0 * float(np.mean(value)), 100.0 * np.asarray(value, float))


__all__ = ["BENCH_SCORERS", "LAB_SCORERS", "SET_SCORERS", "SetScore", "TASK_SCORERS",
           "check_set_scorer", "default_max_new_tokens", "field_references", "own_metric",
           "score_set"]
