"""Per-task scorers (docs/method.md section 4): predictions + references -> a 0-100 score.

Scorers are pure functions of stored strings, so any run can be re-scored later with the
"strict" or the "relaxed" variant without touching a model.
"""

from __future__ import annotations

import re

import numpy as np

METRICS = ("exact", "option", "cider", "iou")
MODES = ("strict", "relaxed")
_PUNCT = re.compile(r"([.,!?;:\[\]()])")


def normalize(text: str) -> str:
    """Lower-case, strip, drop a trailing full stop (docs/method.md section 4: exact match)."""
    return text.strip().lower().rstrip(".").strip()


def caption_tokens(text: str) -> str:
    """Our caption tokenisation for CIDEr/BLEU: lower-case, punctuation split off, dropped."""
    spaced = _PUNCT.sub(" ", text.lower())
    return " ".join(spaced.split())


def exact_match(preds: list[str], refs: list[str], mode: str = "strict") -> np.ndarray:
    """1.0 where the normalised prediction equals the reference ("relaxed": contains it as a
    whole word)."""
    out = []
    for p, r in zip(preds, refs):
        p, r = normalize(p), normalize(r)
        if mode == "strict":
            out.append(float(p == r))
        else:
            out.append(float(re.search(rf"(^|\W){re.escape(r)}($|\W)", p) is not None))
    return np.array(out)


def option_letter(preds: list[str], refs: list[str], mode: str = "strict") -> np.ndarray:
    """Multiple-choice accuracy on the option letter.

    strict: the answer is the letter alone (optionally "a." or "(a)"); relaxed: the first
    stand-alone letter a-e anywhere in the prediction.
    """
    out = []
    for p, r in zip(preds, refs):
        p = normalize(p)
        if mode == "strict":
            m = re.fullmatch(r"\(?([a-z])\)?\.?", p)
        else:
            m = re.search(r"(?:^|\W)\(?([a-e])\)?(?:$|\W)", p)
        out.append(float(m is not None and m.group(1) == normalize(r)))
    return np.array(out)


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first four numbers of ``text`` as (x1, y1, x2, y2), or None."""
    nums = re.findall(r"-?\d+(?:\.\d+)?", text)
    if len(nums) < 4:
        return None
    return tuple(float(v) for v in nums[:4])


def box_iou(a, b) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda t: max(0.0, t[2] - t[0]) * max(0.0, t[3] - t[1])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def iou_hits(preds: list[str], refs: list[str], threshold: float = 0.5) -> np.ndarray:
    """1.0 where the predicted box has IoU >= ``threshold`` with the reference box."""
    out = []
    for p, r in zip(preds, refs):
        pb, rb = parse_box(p), parse_box(r)
        out.append(float(pb is not None and rb is not None and box_iou(pb, rb) >= threshold))
    return np.array(out)


def cider(preds: list[str], refs: list[str]) -> np.ndarray:
    """Per-sample CIDEr-D (pycocoevalcap's scorer on our tokenisation; one reference each)."""
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [caption_tokens(r)] for i, r in enumerate(refs)}
    res = {i: [caption_tokens(p) or "<empty>"] for i, p in enumerate(preds)}
    _, per_sample = Cider().compute_score(gts, res)
    return np.asarray(per_sample, dtype=float)


def bleu4(preds: list[str], refs: list[str]) -> float:
    """Corpus BLEU-4 (pycocoevalcap) on our tokenisation, 0-100."""
    from pycocoevalcap.bleu.bleu import Bleu

    gts = {i: [caption_tokens(r)] for i, r in enumerate(refs)}
    res = {i: [caption_tokens(p) or "<empty>"] for i, p in enumerate(preds)}
    scores, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return 100.0 * float(scores[3])


def score(metric: str, preds: list[str], refs: list[str], mode: str = "strict",
          cider_scale: float = 10.0) -> tuple[float, np.ndarray, dict[str, float]]:
    """Score one task: (score 0-100, per-sample scores, extra metrics such as BLEU-4).

    CIDEr is reported as ``cider_scale`` x CIDEr-D; with the default 10 a caption identical to
    its reference scores 100, which keeps captions on the 0-100 scale of the other tasks.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    if mode not in MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; allowed: {', '.join(MODES)}")
    if len(preds) != len(refs) or not refs:
        raise ValueError(
            f"need equally many predictions and references, got {len(preds)}/{len(refs)}")
    extra: dict[str, float] = {}
    if metric == "exact":
        per = 100.0 * exact_match(preds, refs, mode)
    elif metric == "option":
        per = 100.0 * option_letter(preds, refs, mode)
    elif metric == "iou":
        per = 100.0 * iou_hits(preds, refs)
    else:
        per = cider_scale * cider(preds, refs)
        extra["bleu4"] = bleu4(preds, refs)
    return float(per.mean()), per, extra
