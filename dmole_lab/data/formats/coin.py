"""CoIN evaluation files: question records joined with their answers by ``question_id``.

Question file (JSON list or JSON Lines): ``{"question_id", "image", "text", ...}``; ``text``
is the prompt (a leading "<image>" is dropped: the encoder places the image). The answer of a
question comes from the answer file when one is given, else from the question record itself
(CoIN's ``test.json`` files carry ``answer`` next to ``text``). Answer fields, in order of
precedence:

* ``answer_bbox`` (grounding): "[x1, y1, x2, y2]" (string or list, CoIN normalises by the
  padded square side) with the image ``size`` [width, height];
* ``answers``: a list of human answers (strings or ``{"answer": ...}``), as in the TextVQA /
  VQAv2 annotations; the sample's answer is the most frequent one, all are kept in meta;
* ``answer``: a string; an integer with ``choices`` (ScienceQA's ``problems.json``) becomes
  the option letter A, B, ...
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..tasks import Sample
from .core import (
    IMAGE_CHECKS,
    Report,
    SampleView,
    build_view,
    check_choice,
    check_image,
    checked_records,
    make_row,
    register_scanner,
    scan,
    strip_image_token,
)
from .llava import dump_records, write_images

OPTION_LETTERS = "ABCDEFGHIJ"


def parse_bbox(value) -> list[float] | None:
    """Four numbers from "[x1, y1, x2, y2]" or a list of four numbers, else None."""
    if isinstance(value, str):
        nums = re.findall(r"-?\d+(?:\.\d+)?(?:[eE]-?\d+)?", value)
    elif isinstance(value, list):
        nums = value
    else:
        return None
    try:
        box = [float(v) for v in nums]
    except (TypeError, ValueError):
        return None
    return box if len(box) == 4 else None


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def answer_of(rec: dict) -> tuple[str, dict] | tuple[None, tuple[str, str]]:
    """(answer text, extra meta) from a record's answer fields, or (None, (field, reason))."""
    if "answer_bbox" in rec:
        box = parse_bbox(rec["answer_bbox"])
        if box is None:
            return None, ("answer_bbox", "expected four numbers [x1, y1, x2, y2], got "
                          f"{json.dumps(rec['answer_bbox'])[:60]}")
        extra: dict = {"box": box}
        if "size" in rec:
            size = rec["size"]
            if (not isinstance(size, list) or len(size) != 2
                    or not all(isinstance(v, (int, float)) and v > 0 for v in size)):
                return None, ("size", f"expected [width, height] > 0, got {json.dumps(size)}")
            extra["size"] = size
        text = rec["answer_bbox"] if isinstance(rec["answer_bbox"], str) else (
            "[" + ", ".join(_fmt(v) for v in box) + "]")
        return text.strip(), extra
    if "answers" in rec:
        raw = rec["answers"]
        if not isinstance(raw, list) or not raw:
            return None, ("answers", "expected a non-empty list of answers")
        answers = [a.get("answer") if isinstance(a, dict) else a for a in raw]
        if not all(isinstance(a, str) for a in answers):
            return None, ("answers", "expected strings or objects with a string 'answer'")
        return Counter(answers).most_common(1)[0][0], {"answers": answers}
    if "answer" in rec:
        a = rec["answer"]
        if isinstance(a, bool) or a is None:
            return None, ("answer", f"expected a string, got {json.dumps(a)}")
        if isinstance(a, int) and isinstance(rec.get("choices"), list):
            if not 0 <= a < len(rec["choices"]):
                return None, ("answer", f"index {a} out of range for "
                              f"{len(rec['choices'])} choices")
            return OPTION_LETTERS[a], {"choices": rec["choices"]}
        if not isinstance(a, (str, int, float)):
            return None, ("answer", f"expected a string, got {json.dumps(a)[:60]}")
        return str(a), {}
    return None, ("answer", "no answer field (answer, answers or answer_bbox)")


def _coin_spec(questions, answers, image_root, task, require_answers, images) -> dict:
    check_choice("images", images, IMAGE_CHECKS)
    q = Path(questions)
    root = Path(image_root) if image_root is not None else q.parent
    return {"questions": str(q.absolute()),
            "answers": None if answers is None else str(Path(answers).absolute()),
            "image_root": str(root.absolute()), "task": task or q.stem,
            "require_answers": require_answers, "images": images}


def _answer_table(path: Path, report: Report) -> dict[str, dict]:
    table: dict[str, dict] = {}
    first: dict[str, int] = {}
    for r in checked_records(path, report, "question_id", "answer_records"):
        qid = r.id
        if qid in table:
            report.counts["duplicate_ids"] += 1
            r.bad(f"duplicate question_id {qid!r} (first at record {first[qid]})",
                  "question_id")
            continue
        answer, extra = answer_of(r.data)
        if answer is None:
            fld, why = extra
            r.bad(why, fld)
            continue
        table[qid], first[qid] = {"answer": answer, **extra}, r.index
    return table


@register_scanner("coin")
def _scan_coin(spec: dict, report: Report):
    qpath, root = Path(spec["questions"]), Path(spec["image_root"])
    table = _answer_table(Path(spec["answers"]), report) if spec["answers"] else None
    used: set[str] = set()
    seen: dict[str, int] = {}
    for r in checked_records(qpath, report, "question_id"):
        index, rec, qid, bad = r.index, r.data, r.id, r.bad
        if qid in seen:
            report.counts["duplicate_ids"] += 1
            bad(f"duplicate question_id {qid!r} (first at record {seen[qid]})", "question_id")
            continue
        seen[qid] = index
        if table is not None and qid in table:
            used.add(qid)
        text = rec.get("text")
        if not isinstance(text, str):
            bad("missing field 'text'" if text is None else
                f"expected a string, got {json.dumps(text)[:60]}", "text")
            continue
        rel = rec.get("image")
        if rel is not None and not isinstance(rel, str):
            bad(f"expected a path, got {json.dumps(rel)[:60]}", "image")
            continue
        if rel is not None:
            reason = check_image(root / rel, spec["images"])
            if reason:
                report.counts["missing_images"] += 1
                bad(reason, "image")
                continue
            report.counts["images"] += 1
        else:
            report.counts["text_only"] += 1
        if table is not None and qid in table:
            found = table[qid]
        elif table is None and any(k in rec for k in ("answer", "answers", "answer_bbox")):
            answer, extra = answer_of(rec)
            if answer is None:
                bad(extra[1], extra[0])
                continue
            found = {"answer": answer, **extra}
        elif spec["require_answers"]:
            where = f"in {spec['answers']}" if table is not None else "in the record"
            bad(f"no answer for question_id {qid!r} {where}", "answer")
            continue
        else:
            found = {"answer": ""}
        extra = {k: v for k, v in rec.items()
                 if k not in ("question_id", "image", "text", "answer", "answers",
                              "answer_bbox", "size", "conversations")}
        meta = {**extra, **{k: v for k, v in found.items() if k != "answer"},
                "question_id": rec["question_id"], "id": qid, "image": rel,
                "source": str(qpath), "index": index}
        yield make_row(spec["task"], strip_image_token(text), found["answer"],
                       [] if rel is None else [str(root / rel)], meta)
    if table is not None:
        unused = [q for q in table if q not in used]
        report.counts["unmatched_answers"] = len(unused)
        if unused:
            shown = ", ".join(map(repr, unused[:5])) + (" ..." if len(unused) > 5 else "")
            report.add(spec["answers"], f"{len(unused)} answer(s) match no question: {shown}",
                       field="question_id", level="warning")


def check_coin(questions: str | os.PathLike, answers: str | os.PathLike | None = None,
               image_root: str | os.PathLike | None = None, *, require_answers: bool = True,
               images: str = "exists") -> Report:
    """Validate a CoIN question file (and its answer file); all problems, with counts.

    Errors: malformed records, missing ``question_id`` / ``text``, duplicate question ids in
    either file, missing images, questions without an answer (unless ``require_answers`` is
    False), unparseable ``answer_bbox`` / ``size``. Answers that match no question are a
    warning. ``image_root`` defaults to the question file's folder.
    """
    spec = _coin_spec(questions, answers, image_root, None, require_answers, images)
    report, _ = scan("coin", spec)
    report.files = [f for f in (spec["questions"], spec["answers"]) if f]
    return report


def read_coin(questions: str | os.PathLike, answers: str | os.PathLike | None = None,
              image_root: str | os.PathLike | None = None, *, task: str | None = None,
              require_answers: bool = True, images: str = "exists", strict: bool = True,
              cache_dir: str | os.PathLike | None = None,
              keep_in_memory: bool = False) -> SampleView:
    """Read CoIN questions joined with their answers (by ``question_id``) as lazy samples.

    ``question`` is the record's ``text``, ``answer`` the answer (see the module doc: box
    string for grounding, most frequent human answer, option letter); meta keeps
    ``question_id``, ``image``, ``box`` / ``size`` for grounding, ``answers`` for VQA-style
    annotations, and every other field of the question record (e.g. ``category``). With
    ``require_answers=False`` unanswered questions get answer "" (prediction only).
    ``strict``, ``cache_dir`` and ``keep_in_memory`` as in :func:`read_llava`.
    """
    spec = _coin_spec(questions, answers, image_root, task, require_answers, images)
    files = [f for f in (spec["questions"], spec["answers"]) if f]
    return build_view("coin", spec, files, strict=strict, cache_dir=cache_dir,
                      keep_in_memory=keep_in_memory)


def write_coin(samples: Iterable[Sample], questions_path: str | os.PathLike,
               answers_path: str | os.PathLike | None = None,
               image_root: str | os.PathLike | None = None,
               image_subdir: str = "images") -> tuple[Path, Path | None]:
    """Write CoIN question records (and answer records) for ``samples``, images as PNG.

    Question records: ``{"question_id", "image", "text"}`` (``question_id`` =
    ``meta["question_id"]`` or the position). With ``answers_path`` the answers go there as
    ``{"question_id", "answer"}``; without, ``answer`` is written into the question records
    (CoIN's ``test.json`` style). A grounding sample (meta has ``box``) gets ``answer_bbox``
    = its answer text and ``size`` = ``meta["size"]`` or the image's [width, height]. JSON
    Lines when a path ends in ``.jsonl``, else a JSON list. Returns both paths.
    """
    qpath = Path(questions_path)
    root = Path(image_root) if image_root is not None else qpath.parent
    used: set[str] = set()
    questions, answers = [], []
    for i, s in enumerate(samples):
        meta = s.meta or {}
        qid = meta.get("question_id", i)
        rels = write_images(s, root, image_subdir, f"{s.task}_{qid}", used)
        q: dict = {"question_id": qid}
        if rels:
            q["image"] = rels[0]
        q["text"] = s.question
        a: dict = {"question_id": qid}
        if "box" in meta:
            size = meta.get("size")
            if size is None and rels:
                h, w = s.image.shape[:2]
                size = [int(w), int(h)]
            a["answer_bbox"] = s.answer
            if size is not None:
                a["size"] = list(size)
        else:
            a["answer"] = s.answer
        if answers_path is None:
            q.update({k: v for k, v in a.items() if k != "question_id"})
        questions.append(q)
        answers.append(a)
    dump_records(questions, qpath)
    if answers_path is None:
        return qpath, None
    return qpath, dump_records(answers, answers_path)
