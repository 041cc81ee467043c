"""Re-score a finished run with one of the field's scorers, from its stored raw predictions.

Every stage of a run stores its raw predictions with their references
(``stages/<t>/predictions.parquet``), so the score matrix can be recomputed with another scorer
of :data:`dmole_lab.analysis.scoring.SCORERS` (CoIN's evaluation, the official VQA accuracy,
the caption metrics) without touching a model; the metrics of docs/method.md section 4 follow
from the rescored matrix. Torch-free: reads the run folder only, and writes nothing.
"""

from __future__ import annotations

import pandas as pd

from dmole_lab.store import RunStore

from .scoring import CORPUS_SCORERS, SCORERS, score_field
from .summaries import metrics_table

#: Scorers whose references are lists of human answers; a stored single answer is wrapped.
LIST_REFERENCE_SCORERS = frozenset({"vqa", "textvqa"})
#: Scorers whose references need more than the stored reference string holds.
UNSCORABLE = {"grounding": "a box and the image size (width, height) per reference"}
#: Scale of the corpus CIDEr-D (0-10) when the run's config names none (``eval.cider_scale``).
DEFAULT_CIDER_SCALE = 10.0


def usable_scorers() -> list[str]:
    """The field scorers that can re-score stored predictions (every one whose reference a
    stored reference string can give; docs/method.md section 4)."""
    return [name for name in SCORERS if name not in UNSCORABLE]


def check_scorer(scorer: str) -> None:
    """Raise ValueError (one line, naming the allowed scorers) unless ``scorer`` is a field
    scorer that can re-score stored predictions (docs/method.md section 4)."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; allowed: {', '.join(usable_scorers())}")
    if scorer in UNSCORABLE:
        raise ValueError(
            f"scorer {scorer!r} needs {UNSCORABLE[scorer]}, which stored predictions do not "
            f"keep (their reference is one string); scorers that can be used: "
            f"{', '.join(usable_scorers())}")


def _cider_scale(manifest: dict) -> float:
    return float(manifest.get("config", {}).get("eval", {}).get("cider_scale",
                                                                DEFAULT_CIDER_SCALE))


def _score_group(scorer: str, preds: list[str], refs: list, scale: float) -> float:
    """One 0-100 value of a (stage, eval task): the mean per-sample score, or the corpus score."""
    value = score_field(scorer, preds, refs)
    if scorer in CORPUS_SCORERS:
        return float(value) * (scale if scorer == "cider" else 100.0)
    return 100.0 * float(value.mean())


def rescore(store: RunStore, scorer: str, tasks: list[str] | None = None) -> pd.DataFrame:
    """Re-score every finished stage's stored raw predictions with the field scorer ``scorer``.

    ``tasks``: the eval tasks to re-score (default: the run's stream tasks, in stream order;
    a general set such as ``"general"`` may be named too). Returns a tidy table (stage,
    eval_task, metric = ``scorer``, value), value on the 0-100 scale of the score matrix:
    100 x the mean per-sample score, or for a corpus-level scorer (:data:`CORPUS_SCORERS`) one
    value per (stage, eval task) - BLEU / ROUGE-L times 100, corpus CIDEr-D (0-10) times the
    run's ``eval.cider_scale`` (10: as our own "cider"). References are the stored reference
    strings as given; for "vqa" / "textvqa" each becomes a one-answer list. Raises ValueError
    for an unknown scorer, for one that needs references the stored strings cannot give
    ("grounding": box and image size), for a task without stored predictions, or for a
    reference the scorer cannot read (e.g. "option" on a non-letter answer), and
    FileNotFoundError if the run kept no predictions. docs/method.md section 4.
    """
    check_scorer(scorer)
    manifest = store.manifest()
    tasks = list(manifest["tasks"]) if tasks is None else list(tasks)
    preds = store.table("predictions")
    scale = _cider_scale(manifest)
    rows = []
    for stage in sorted(preds["stage"].unique()):
        at = preds[preds["stage"] == stage]
        for task in tasks:
            part = at[at["eval_task"] == task].sort_values("index")
            if part.empty:
                raise ValueError(f"run {store.root.name} has no stored predictions of eval task "
                                 f"{task!r} at stage {stage}")
            texts = [str(p) for p in part["prediction"].fillna("")]
            refs = part["reference"].tolist()
            if scorer in LIST_REFERENCE_SCORERS:
                refs = [[r] if isinstance(r, str) else list(r) for r in refs]
            try:
                value = _score_group(scorer, texts, refs, scale)
            except (ValueError, IndexError, TypeError) as e:  # a reference it cannot read
                raise ValueError(f"scorer {scorer!r} cannot score eval task {task!r} "
                                 f"(stage {stage}): {type(e).__name__}: {e}") from None
            rows.append({"stage": int(stage), "eval_task": task, "metric": scorer,
                         "value": value})
    return pd.DataFrame(rows, columns=["stage", "eval_task", "metric", "value"])


def rescored_metrics(store: RunStore, scorer: str,
                     matrix: pd.DataFrame | None = None) -> pd.DataFrame:
    """The metrics of docs/method.md section 4 (AVG, Last, BWT, Forgetting, FWT, MFT under both
    BWT divisors and both forgetting modes: :func:`metrics.summary` of the rescored matrix),
    as the stored ``metrics`` table has them, with a ``scorer`` column. ``matrix``: the result
    of :func:`rescore` if already computed (default: computed here)."""
    sm = rescore(store, scorer) if matrix is None else matrix
    return metrics_table(sm, store.manifest()).assign(scorer=scorer)


__all__ = ["LIST_REFERENCE_SCORERS", "UNSCORABLE", "check_scorer", "rescore",
           "rescored_metrics", "usable_scorers"]
