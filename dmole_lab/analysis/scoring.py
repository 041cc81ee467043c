"""Per-task scorers (docs/method.md section 4): predictions + references -> a 0-100 score.

Scorers are pure functions of stored strings, so any run can be re-scored later with the
"strict" or the "relaxed" variant without touching a model.
"""

from __future__ import annotations

import functools
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


# ---------------------------------------------------------------------------------------------
# The field's scorers (CoIN's evaluation, the official VQA / TextVQA accuracy, captions).
#
# Our own scorers above are the ones runs are scored with (docs/method.md section 4); the ones
# below score a task *as the field does*, so a finished run can be re-scored from its stored raw
# predictions and compared with published numbers. Per-sample scorers map (raw predictions,
# references) to one score in [0, 1] per sample; caption scorers are corpus-level.
# ---------------------------------------------------------------------------------------------

OPTION_LETTERS = "ABCDE"


@functools.lru_cache(maxsize=8)
def _letter_patterns(letters: str) -> tuple[re.Pattern, ...]:
    up, low = re.escape(letters.upper()), re.escape(letters.lower())
    any_case = f"[{up}{low}]"
    return (
        # 1. the reply is the letter alone, maybe wrapped / punctuated: "B", "b", "(B)", "B."
        re.compile(rf"\s*[(\[]?({any_case})[)\]]?\s*[.:)]?\s*"),
        # 2. after "answer (is)" / "option" / "choice" (":"): "(b)", "B", or a closing "b"
        re.compile(rf"(?i:answer|option|choice)(?:\s+is)?\s*:?\s*"
                   rf"(?:[(\[]({any_case})[)\]]|([{up}])\b|({any_case})(?=\s*[.:)]|\s*$))"),
        # 3. the reply starts with the letter and a closing mark: "b) cat", "B. cat", "C: dog"
        re.compile(rf"\s*[(\[]?({any_case})[)\].:](?:\s|$)"),
        # 4. a bracketed letter anywhere: "... (B) ..."
        re.compile(rf"[(\[]({any_case})[)\]]"),
        # 5. a stand-alone capital letter anywhere; "A" only when not the article ("A cat")
        re.compile(rf"(?<![\w'])([{up}])(?![\w'])(?!(?<=A)\s+[a-z])"),
    )


def parse_option_letter(text: str, letters: str = OPTION_LETTERS) -> str | None:
    """The option letter a free-text reply chooses (upper case), or None when it names none.

    Rules, first hit wins: the reply is the letter alone ("B", "b", "(B)", "B."); the letter
    after "answer is" / "answer:" ("The answer is (B).", "Answer: C"); a leading letter with a
    closing mark ("b) cat", "B. cat"); a bracketed letter anywhere; a stand-alone capital
    letter anywhere (a capital "A" followed by a lower-case word is the article, not option A).
    A lower-case letter counts only where it cannot be the article "a". This is the
    ScienceQA parsing of CoIN's evaluation made robust to free text (CoIN's own script takes
    the first one-character word of the reply); docs/method.md section 4 has our stricter
    variants.
    """
    for i, pat in enumerate(_letter_patterns(letters)):
        m = pat.fullmatch(text) if i == 0 else (pat.match(text) if i == 2 else pat.search(text))
        if m is not None:
            letter = next(g for g in m.groups() if g)
            return letter.upper()
    return None


def _answer_letter(ref, letters: str = OPTION_LETTERS) -> str:
    """A reference option as a capital letter: the letter itself or a 0-based option index."""
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        return letters[int(ref)].upper()
    text = str(ref).strip().strip("()[].").strip()
    if text.isdigit():
        return letters[int(text)].upper()
    if len(text) == 1 and text.upper() in letters.upper():
        return text.upper()
    raise ValueError(f"option reference must be a letter in {letters} or an index, got {ref!r}")


def option_accuracy(preds: list[str], refs: list, letters: str = OPTION_LETTERS) -> np.ndarray:
    """Field scorer "option": 1.0 where the letter parsed from the reply is the answer.

    CoIN's evaluation scores ScienceQA this way (an option letter A-E parsed from the reply,
    compared with the answer index). ``refs`` are letters ("B") or 0-based indices (1 -> "B");
    a reply naming no letter scores 0. Parsing: :func:`parse_option_letter`. See
    docs/method.md section 4 for our own strict / relaxed option scorer.
    """
    return np.array([float(parse_option_letter(p, letters) == _answer_letter(r, letters))
                     for p, r in zip(preds, refs)])


def exact_accuracy(preds: list[str], refs: list[str]) -> np.ndarray:
    """Field scorer "exact": case-insensitive exact match after stripping white space.

    CoIN's evaluation scores VizWiz and VQAv2 this way (not with the soft VQA accuracy).
    Unlike our "exact" (docs/method.md section 4) a trailing full stop is not dropped.
    """
    return np.array([float(p.strip().lower() == str(r).strip().lower())
                     for p, r in zip(preds, refs)])


def substring_accuracy(preds: list[str], refs: list[str]) -> np.ndarray:
    """Field scorer "substring": 1.0 where reply and class name contain one another.

    CoIN's evaluation scores ImageNet this way (the reply in the class name or the class name
    in the reply); here case-insensitively and after stripping. An empty reply scores 0 (a
    literal substring test would let it match every class). docs/method.md section 4.
    """
    out = []
    for p, r in zip(preds, refs):
        p, r = p.strip().lower(), str(r).strip().lower()
        out.append(float(bool(p) and bool(r) and (p in r or r in p)))
    return np.array(out)


def ocr_accuracy(preds: list[str], refs: list[str]) -> np.ndarray:
    """Field scorer "ocr": OCR-VQA as CoIN's evaluation scores it, lower-cased exact match.

    Both sides are stripped and lower-cased; a reply containing "Unanswerable" scores 0, as in
    CoIN's script. docs/method.md section 4.
    """
    return np.array([float("Unanswerable" not in p
                           and p.strip().lower() == str(r).strip().lower())
                     for p, r in zip(preds, refs)])


def gqa_accuracy(preds: list[str], refs: list[str]) -> np.ndarray:
    """Field scorer "gqa": the GQA accuracy for single answers (exact match), per sample.

    As CoIN's evaluation prepares GQA predictions: a trailing full stop dropped, lower-cased,
    stripped; then the official GQA accuracy (1 if the prediction equals the answer). The
    answer is lower-cased and stripped too (GQA's answers already are). docs/method.md
    section 4.
    """
    return np.array([float(p.strip().rstrip(".").strip().lower() == str(r).strip().lower())
                     for p, r in zip(preds, refs)])


# --- the official VQA accuracy -----------------------------------------------------------------

_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
              "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})
_CANONICAL_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's i'd've i'm i've isn't it'd it'd've "
    "it'll let's ma'am mightn't mightn't've might've mustn't must've needn't not've o'clock "
    "oughtn't shan't she'd've she's should've shouldn't shouldn't've somebody'd somebody'd've "
    "somebody'll somebody's someone'd someone'd've someone'll someone's something'd "
    "something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've "
    "when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's "
    "won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll "
    "you're you've").split()
#: Spellings without (some of) the apostrophes that are English words themselves stay as they are.
_REAL_WORDS = frozenset({"shed", "well", "were", "wed", "ill", "id", "its", "hell", "shell"})


def _contraction_table() -> dict[str, str]:
    """Every spelling of a contraction with one or more apostrophes left out -> the contraction
    (e.g. "dont" -> "don't", "couldntve" / "couldn'tve" -> "couldn't've")."""
    table: dict[str, str] = {}
    for canon in _CANONICAL_CONTRACTIONS:
        pos = [i for i, c in enumerate(canon) if c == "'"]
        for mask in range(1, 2 ** len(pos)):
            drop = {p for k, p in enumerate(pos) if mask >> k & 1}
            variant = "".join(c for i, c in enumerate(canon) if i not in drop)
            if variant not in _REAL_WORDS:
                table[variant] = canon
    return table


_CONTRACTIONS = _contraction_table()


def _vqa_punctuation(text: str) -> str:
    """The official VQA evaluation's punctuation step: each punctuation mark is deleted where it
    touches a space (or the text has a comma between digits), otherwise replaced by a space;
    then full stops not followed by a digit are deleted (so "2.5" keeps its point)."""
    glue = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for p in _VQA_PUNCT:
        out = out.replace(p, "" if glue or p + " " in text or " " + p in text else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def _vqa_digits_articles(text: str) -> str:
    """The official VQA evaluation's word step: lower case, number words up to ten -> digits
    ("none" -> "0"), articles a/an/the dropped, apostrophe-less contractions restored."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_normalize(text: str) -> str:
    """An answer normalised as the official VQA evaluation does: new lines and tabs to spaces,
    stripped, punctuation handled, lower-cased, number words to digits ("two" -> "2"),
    articles removed, contractions restored ("dont" -> "don't"). docs/method.md section 4."""
    text = str(text).replace("\n", " ").replace("\t", " ").strip()
    return _vqa_digits_articles(_vqa_punctuation(text))


def textvqa_normalize(text: str) -> str:
    """An answer normalised as the TextVQA evaluation (the EvalAI answer processor) does: lower
    case, commas and question marks removed, "'s" split off ("man's" -> "man 's"), then the
    official VQA normalisation (:func:`vqa_normalize`). docs/method.md section 4."""
    text = str(text).lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return vqa_normalize(text)


def vqa_soft_score(pred: str, answers, normalizer=vqa_normalize) -> float:
    """The VQA soft accuracy of one prediction against its human answers, in [0, 1].

    For each of the n leave-one-out subsets of the n (usually 10) human answers,
    min(#answers in the subset equal to the prediction / 3, 1); the n values averaged. With 10
    answers of which k match: k = 0 -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >= 4 -> 1. Prediction
    and answers are normalised with ``normalizer`` first. A single reference answer (a string
    or a one-element list) leaves no subset to vote, so it scores 1.0 on a match. The official
    VQA evaluation; docs/method.md section 4.
    """
    p = normalizer(pred)
    gts = [answers] if isinstance(answers, str) else list(answers)
    if not gts:
        raise ValueError("a VQA reference needs at least one human answer")
    gts = [normalizer(a) for a in gts]
    if len(gts) == 1:
        return float(p == gts[0])
    hits = sum(g == p for g in gts)
    return float(np.mean([min((hits - (g == p)) / 3.0, 1.0) for g in gts]))


def vqa_accuracy(preds: list[str], refs: list) -> np.ndarray:
    """Field scorer "vqa": the official VQA accuracy, one soft score in [0, 1] per sample.

    ``refs`` holds, per sample, the list of (usually 10) human answers. Both sides are
    normalised with :func:`vqa_normalize`. The official evaluation script normalises the
    prediction only when the human answers disagree (the stored answers being already
    normalised); we normalise always, as the EvalAI answer processor used by LLaVA-style
    evaluations does, so raw stored answers and replies compare alike. Score: see
    :func:`vqa_soft_score`. docs/method.md section 4.
    """
    return np.array([vqa_soft_score(p, r) for p, r in zip(preds, refs)])


def textvqa_accuracy(preds: list[str], refs: list) -> np.ndarray:
    """Field scorer "textvqa": the TextVQA accuracy (CoIN's evaluation uses it for TextVQA).

    The same leave-one-out soft score over the human answers as the official VQA accuracy
    (:func:`vqa_soft_score`), with the TextVQA / EvalAI answer normalisation
    (:func:`textvqa_normalize`) on prediction and answers. docs/method.md section 4.
    """
    return np.array([vqa_soft_score(p, r, textvqa_normalize) for p, r in zip(preds, refs)])


# --- grounding ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?|-?\.\d+")


def parse_normalized_box(text: str) -> tuple[float, float, float, float] | None:
    """The first four numbers of a reply as a normalised (x1, y1, x2, y2) box, or None when the
    reply has fewer than four numbers or any of the four lies outside [0, 1] (a box in pixels
    is not the normalised box the task asks for). CoIN's grounding evaluation."""
    nums = [float(v) for v in _NUMBER.findall(text)[:4]]
    if len(nums) < 4 or any(v < 0.0 or v > 1.0 for v in nums):
        return None
    return tuple(nums)


def _grounding_ref(ref) -> tuple[tuple[float, ...], tuple[float, float]]:
    if isinstance(ref, dict):
        box = next((ref[k] for k in ("box", "bbox", "answer_bbox") if k in ref), None)
        size = ref.get("size")
    else:
        box, size = ref
    if box is None or size is None:
        raise ValueError(f"a grounding reference needs a box and the image size, got {ref!r}")
    if isinstance(box, str):
        box = [float(v) for v in _NUMBER.findall(box)]
    box = tuple(float(v) for v in box)
    if len(box) != 4 or len(size) != 2:
        raise ValueError(f"grounding reference: box (x1, y1, x2, y2) and size (w, h), got {ref!r}")
    return box, (float(size[0]), float(size[1]))


def grounding_accuracy(preds: list[str], refs: list, threshold: float = 0.5) -> np.ndarray:
    """Field scorer "grounding": 1.0 where the reply's box has IoU > ``threshold`` (strictly).

    As CoIN's grounding evaluation: the reply's normalised box (:func:`parse_normalized_box`)
    is scaled by max(width, height), i.e. to the pixels of the padded square image the model
    saw, and compared with the reference box in pixels of that padded square frame (CoIN's
    normalised ``answer_bbox`` times max(width, height); for a square image simply its
    pixels). Each reference is ``{"box": (x1, y1, x2, y2), "size": (width, height)}`` (or
    ``"bbox"`` / ``"answer_bbox"``, the box also as a string "[x1, y1, x2, y2]") or a pair
    (box, size). A reply without a valid box scores 0. Our own "iou" scorer counts
    IoU >= 0.5 (docs/method.md section 4).
    """
    out = []
    for p, r in zip(preds, refs):
        box, (w, h) = _grounding_ref(r)
        pb = parse_normalized_box(p)
        if pb is None:
            out.append(0.0)
            continue
        side = max(w, h)
        out.append(float(box_iou(tuple(v * side for v in pb), box) > threshold))
    return np.array(out)


# --- captions (corpus-level) ------------------------------------------------------------------


def _caption_inputs(preds: list[str], refs: list) -> tuple[dict, dict]:
    if not preds:
        raise ValueError("caption scorers need at least one prediction")
    gts = {i: [caption_tokens(t) or "<empty>" for t in ([r] if isinstance(r, str) else r)]
           for i, r in enumerate(refs)}
    if any(not v for v in gts.values()):
        raise ValueError("every caption needs at least one reference")
    res = {i: [caption_tokens(p) or "<empty>"] for i, p in enumerate(preds)}
    return gts, res


def corpus_bleu(preds: list[str], refs: list, n: int = 4) -> float:
    """Corpus-level BLEU-n in [0, 1] (pycocoevalcap, "closest" reference length).

    Corpus-level, not per-sample: n-gram counts are pooled over the corpus before the
    geometric mean and the brevity penalty. ``refs`` holds per sample one reference string or
    a list of them. Text tokenised with :func:`caption_tokens` (lower case, punctuation
    dropped) instead of the Java PTB tokenizer. The caption metrics of UCIT / HiDe-LLaVA;
    docs/method.md section 4.
    """
    from pycocoevalcap.bleu.bleu import Bleu

    if not 1 <= n <= 4:
        raise ValueError(f"BLEU order must be 1-4, got {n}")
    gts, res = _caption_inputs(preds, refs)
    scores, _ = Bleu(n).compute_score(gts, res, verbose=0)
    return float(scores[n - 1])


def _bleu_scorer(n: int):
    def bleu_n(preds: list[str], refs: list) -> float:
        return corpus_bleu(preds, refs, n)

    bleu_n.__name__ = bleu_n.__qualname__ = f"bleu{n}_corpus"
    bleu_n.__doc__ = (f"Field scorer \"bleu{n}\": corpus-level BLEU-{n} in [0, 1] (not per-sample);"
                      " see :func:`corpus_bleu`. docs/method.md section 4.")
    return bleu_n


bleu1_corpus, bleu2_corpus, bleu3_corpus, bleu4_corpus = (_bleu_scorer(n) for n in range(1, 5))


def rouge_l_corpus(preds: list[str], refs: list) -> float:
    """Field scorer "rouge_l": corpus ROUGE-L in [0, 1] (pycocoevalcap, F-measure, beta 1.2).

    Reported at corpus level (the mean over samples of the per-sample ROUGE-L, as
    pycocoevalcap reports it), not per sample. Tokenisation: :func:`caption_tokens`. The
    caption metrics of UCIT / HiDe-LLaVA; docs/method.md section 4.
    """
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _caption_inputs(preds, refs)
    value, _ = Rouge().compute_score(gts, res)
    return float(value)


def cider_corpus(preds: list[str], refs: list) -> float:
    """Field scorer "cider": corpus CIDEr-D (pycocoevalcap), on its own scale (0-10).

    Corpus-level, not per-sample: the n-gram IDF weights come from the whole set of
    references, so one sample's value depends on the others. Not multiplied by
    ``eval.cider_scale`` (our "cider" of docs/method.md section 4 is). Tokenisation:
    :func:`caption_tokens`. The caption metrics of UCIT / HiDe-LLaVA.
    """
    from pycocoevalcap.cider.cider import Cider

    gts, res = _caption_inputs(preds, refs)
    value, _ = Cider().compute_score(gts, res)
    return float(value)


#: The field's scorers by name. Per-sample ones return an array of scores in [0, 1]; the
#: corpus-level caption ones (:data:`CORPUS_SCORERS`) return one float.
SCORERS = {
    "option": option_accuracy,
    "exact": exact_accuracy,
    "vqa": vqa_accuracy,
    "textvqa": textvqa_accuracy,
    "substring": substring_accuracy,
    "grounding": grounding_accuracy,
    "ocr": ocr_accuracy,
    "gqa": gqa_accuracy,
    "bleu1": bleu1_corpus,
    "bleu2": bleu2_corpus,
    "bleu3": bleu3_corpus,
    "bleu4": bleu4_corpus,
    "rouge_l": rouge_l_corpus,
    "cider": cider_corpus,
}
CORPUS_SCORERS = frozenset({"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"})


def score_field(name: str, preds: list[str], refs: list, **kw):
    """Score raw predictions with the field's scorer ``name`` (see :data:`SCORERS`).

    Returns the per-sample scores (numpy array in [0, 1]) for per-sample scorers, the corpus
    score (a float) for the caption scorers in :data:`CORPUS_SCORERS`. Keyword arguments go to
    the scorer (``letters`` for "option", ``threshold`` for "grounding"). Raises ValueError on
    an unknown name (naming the allowed ones) or unequal lengths. Named ``score_field``
    because :func:`score` is our own scoring entry point (docs/method.md section 4), whose
    behaviour stored runs depend on.
    """
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; allowed: {', '.join(SCORERS)}")
    if len(preds) != len(refs):
        raise ValueError(
            f"need equally many predictions and references, got {len(preds)}/{len(refs)}")
    return SCORERS[name](list(preds), list(refs), **kw)
