"""General-ability benchmarks as laid out on disk: POPE, MME and MMMU-style multiple choice.

* POPE: the official question files ``coco_pope_{random,popular,adversarial}.json`` (JSON
  Lines despite the suffix): ``{"question_id", "image", "text", "label": "yes"|"no"}``,
  optionally ``category`` (the split, as in LLaVA's ``llava_pope_test.jsonl``).
* MME: the release folder, one folder per subtask holding either the images and one
  ``<image stem>.txt`` per image side by side, or ``images/`` and ``questions_answers_YN/``;
  each text file has one "question<TAB>answer" line per question (two per image, Yes/No).
* MMMU-style: JSON list or JSON Lines of ``{"id", "question", "options", "answer",
  "subject"?, "question_type"?, "image_1".."image_7" | "image"}`` with image paths relative to
  an image root (the columns of the official release, images written out as files).
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..tasks import Sample
from .core import (
    IMAGE_CHECKS,
    IMAGE_SUFFIXES,
    Report,
    SampleView,
    build_view,
    check_choice,
    check_image,
    checked_records,
    make_row,
    register_scanner,
    safe_name,
    save_png,
    scan,
)
from .llava import dump_records, write_images

POPE_SPLITS = ("random", "popular", "adversarial")
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
                  "landmark", "artwork", "OCR")
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
                 "code_reasoning")
MMMU_INSTRUCTION = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCDEFGHIJ"


def _paths(paths) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    return [Path(p) for p in paths]


def _files_spec(paths, image_root, task: str, images: str, what: str) -> dict:
    """The spec a benchmark reader caches on: absolute question files, the image root (default:
    the first file's folder), the task name and the image check."""
    check_choice("images", images, IMAGE_CHECKS)
    files = _paths(paths)
    if not files:
        raise ValueError(f"no {what} file given")
    root = Path(image_root) if image_root is not None else files[0].parent
    return {"paths": [str(p.absolute()) for p in files], "image_root": str(root.absolute()),
            "task": task, "images": images}


# ------------------------------------------------------------------------------ POPE


def _pope_spec(paths, image_root, task, split, images) -> dict:
    if split is not None:
        check_choice("split", split, POPE_SPLITS)
    return {**_files_spec(paths, image_root, task or "pope", images, "POPE question"),
            "split": split}


def pope_split_of(path: str | os.PathLike) -> str | None:
    """The POPE split named in a file name (``coco_pope_adversarial.json``), or None."""
    m = re.search(r"(random|popular|adversarial)", Path(path).name)
    return m.group(1) if m else None


@register_scanner("pope")
def _scan_pope(spec: dict, report: Report):
    root = Path(spec["image_root"])
    seen: dict[tuple, tuple[str, int]] = {}
    for fname in spec["paths"]:
        path = Path(fname)
        file_split = spec["split"] or pope_split_of(path)
        for r in checked_records(path, report, "question_id"):
            index, rec, qid, bad = r.index, r.data, r.id, r.bad
            split = rec.get("category", file_split)
            if split not in POPE_SPLITS:
                bad(f"unknown split {split!r}; name it in 'category', the file name or the "
                    f"split argument ({', '.join(POPE_SPLITS)})", "category")
                continue
            if (split, qid) in seen:
                report.counts["duplicate_ids"] += 1
                f0, i0 = seen[(split, qid)]
                bad(f"duplicate question_id {qid!r} in split {split!r} (first at record {i0} "
                    f"of {f0})", "question_id")
                continue
            seen[(split, qid)] = (path.name, index)
            bad_field = next((k for k in ("image", "text", "label")
                              if not isinstance(rec.get(k), str)), None)
            if bad_field:
                bad(f"expected a string, got {json.dumps(rec.get(bad_field))[:60]}", bad_field)
                continue
            label = rec["label"].strip().lower()
            if label not in ("yes", "no"):
                bad(f"expected 'yes' or 'no', got {rec['label']!r}", "label")
                continue
            reason = check_image(root / rec["image"], spec["images"])
            if reason:
                report.counts["missing_images"] += 1
                bad(reason, "image")
                continue
            report.counts["images"] += 1
            report.counts[label] += 1
            meta = {"question_id": rec["question_id"], "id": qid, "split": split,
                    "image": rec["image"], "source": str(path), "index": index}
            yield make_row(spec["task"], rec["text"], label, [str(root / rec["image"])], meta)


def check_pope(paths: str | os.PathLike | Sequence[str | os.PathLike],
               image_root: str | os.PathLike | None = None, *, split: str | None = None,
               images: str = "exists") -> Report:
    """Validate POPE question file(s); all problems, with counts (records, yes, no, ...).

    The split of a record is its ``category``, else ``split``, else the one in the file
    name. Question ids must be unique within a split (the official files reuse 1..N across
    splits). ``image_root`` defaults to the first file's folder.
    """
    spec = _pope_spec(paths, image_root, None, split, images)
    report, _ = scan("pope", spec)
    report.files = spec["paths"]
    return report


def read_pope(paths: str | os.PathLike | Sequence[str | os.PathLike],
              image_root: str | os.PathLike | None = None, *, task: str = "pope",
              split: str | None = None, images: str = "exists", strict: bool = True,
              cache_dir: str | os.PathLike | None = None,
              keep_in_memory: bool = False) -> SampleView:
    """Read POPE question file(s) as lazy samples: question = ``text``, answer = "yes"/"no"
    (lower case), meta ``split``, ``question_id``, ``image``. Options as in
    :func:`check_pope` and :func:`~dmole_lab.data.formats.read_llava`."""
    spec = _pope_spec(paths, image_root, task, split, images)
    return build_view("pope", spec, spec["paths"], strict=strict, cache_dir=cache_dir,
                      keep_in_memory=keep_in_memory)


def write_pope(samples: Iterable[Sample], path: str | os.PathLike,
               image_root: str | os.PathLike | None = None, image_subdir: str = "images",
               split: str | None = None) -> Path:
    """Write POPE question records ``{"question_id", "image", "text", "label", "category"}``
    (JSON Lines, as the official files) and the images as PNG. ``label`` is the answer,
    ``category`` ``meta["split"]`` or ``split``; ``question_id`` ``meta["question_id"]`` or
    the position (from 1)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    used: set[str] = set()
    records = []
    for i, s in enumerate(samples):
        meta = s.meta or {}
        qid = meta.get("question_id", i + 1)
        rels = write_images(s, root, image_subdir, f"pope_{qid}", used)
        rec = {"question_id": qid, "image": rels[0] if rels else None, "text": s.question,
               "label": s.answer}
        if meta.get("split", split) is not None:
            rec["category"] = meta.get("split", split)
        records.append(rec)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


# ------------------------------------------------------------------------------ MME


def mme_category(subtask: str) -> str:
    """"perception" or "cognition" for an MME subtask, "unknown" for other folder names."""
    if subtask in MME_PERCEPTION:
        return "perception"
    return "cognition" if subtask in MME_COGNITION else "unknown"


def _mme_pairs(sub: Path) -> list[tuple[Path, Path]]:
    """(text file, image folder) of each image of a subtask folder, in name order."""
    qa = sub / "questions_answers_YN"
    if qa.is_dir():
        return [(t, sub / "images") for t in sorted(qa.glob("*.txt"))]
    return [(t, sub) for t in sorted(sub.glob("*.txt"))]


def _mme_subtasks(root: Path, subtasks) -> list[Path]:
    if subtasks is not None:
        return [root / s for s in subtasks]
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and _mme_pairs(d)]


def _mme_spec(root, task, subtasks, images) -> dict:
    check_choice("images", images, IMAGE_CHECKS)
    root = Path(root)
    subs = _mme_subtasks(root, subtasks)
    return {"root": str(root.absolute()), "subtasks": [d.name for d in subs],
            "task": task or "mme", "images": images}


def _mme_files(spec: dict) -> list[Path]:
    root = Path(spec["root"])
    return [t for s in spec["subtasks"] for t, _ in _mme_pairs(root / s)]


@register_scanner("mme")
def _scan_mme(spec: dict, report: Report):
    root = Path(spec["root"])
    if not root.is_dir():
        report.add(root, "MME root folder not found")
        return
    if not spec["subtasks"]:
        report.add(root, "no subtask folder with question files (<name>.txt) found")
    for name in spec["subtasks"]:
        sub = root / name
        if not sub.is_dir():
            report.add(sub, "subtask folder not found")
            continue
        category = mme_category(name)
        if category == "unknown":
            report.add(sub, f"{name!r} is not one of MME's 14 subtasks", level="warning")
        for txt, image_dir in _mme_pairs(sub):
            image_id = f"{name}/{txt.stem}"
            image = next((image_dir / (txt.stem + ext) for ext in IMAGE_SUFFIXES
                          if (image_dir / (txt.stem + ext)).is_file()), None)
            report.counts["images"] += 1
            if image is None and spec["images"] != "skip":
                report.counts["missing_images"] += 1
                report.add(txt, f"image not found: {image_dir / txt.stem}.<png|jpg|...>",
                           id=image_id, field="image")
                continue
            if image is None:
                image = image_dir / (txt.stem + ".png")
            reason = check_image(image, spec["images"])
            if reason:
                report.counts["missing_images"] += 1
                report.add(txt, reason, id=image_id, field="image")
                continue
            rows, k = [], -1
            for lineno, raw in enumerate(txt.read_text(encoding="utf-8").splitlines(), 1):
                if not raw.strip():
                    continue
                k += 1
                report.counts["records"] += 1
                parts = raw.rstrip("\r\n").split("\t")
                where = {"index": k, "line": lineno, "id": f"{image_id}#{k}"}
                if len(parts) != 2 or not parts[0].strip():
                    report.add(txt, "expected 'question<TAB>answer'", field="question", **where)
                    continue
                question, answer = parts[0].strip(), parts[1].strip()
                if answer.lower() not in ("yes", "no"):
                    report.add(txt, f"expected Yes or No, got {answer!r}", field="answer",
                               **where)
                    continue
                meta = {"subtask": name, "category": category,
                        "image_id": f"{name}/{image.name}", "question_id": f"{image_id}#{k}",
                        "id": f"{image_id}#{k}", "source": str(txt)}
                rows.append(make_row(spec["task"], question, answer, [str(image)], meta))
            if len(rows) != 2:
                report.add(txt, f"{len(rows)} usable question(s) for this image; MME pairs two "
                           "(acc+ needs both)", id=image_id, level="warning")
            yield from rows


def check_mme(root: str | os.PathLike, *, subtasks: Sequence[str] | None = None,
              images: str = "exists") -> Report:
    """Validate an MME release folder; all problems, with counts.

    ``subtasks`` limits the folders read (default: every folder holding question files).
    Errors: a line that is not "question<TAB>answer", an answer other than Yes/No, a missing
    image. An image without exactly two questions and an unknown subtask are warnings.
    """
    spec = _mme_spec(root, None, subtasks, images)
    report, _ = scan("mme", spec)
    report.files = [spec["root"]]
    return report


def read_mme(root: str | os.PathLike, *, task: str = "mme",
             subtasks: Sequence[str] | None = None, images: str = "exists", strict: bool = True,
             cache_dir: str | os.PathLike | None = None,
             keep_in_memory: bool = False) -> SampleView:
    """Read an MME release folder as lazy samples (two per image).

    question = the question as written (with its "Please answer yes or no."), answer = "Yes"
    / "No" as written; meta ``subtask``, ``category`` (perception / cognition), ``image_id``
    (pairs the two questions of an image for acc+) and ``question_id``.
    """
    spec = _mme_spec(root, task, subtasks, images)
    return build_view("mme", spec, _mme_files(spec), strict=strict, cache_dir=cache_dir,
                      keep_in_memory=keep_in_memory)


def write_mme(samples: Iterable[Sample], root: str | os.PathLike) -> Path:
    """Write samples in MME's side-by-side layout: ``root/<subtask>/<name>.png`` and
    ``<name>.txt`` with one "question<TAB>answer" line per sample of that image.

    The subtask is ``meta["subtask"]`` (default the sample's task); samples sharing
    ``meta["image_id"]`` share one image and text file (otherwise each sample gets its own).
    Returns ``root``.
    """
    root = Path(root)
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for i, s in enumerate(samples):
        meta = s.meta or {}
        sub = str(meta.get("subtask", s.task))
        stem = Path(str(meta.get("image_id", f"{i:06d}"))).stem
        groups[(sub, safe_name(stem))].append(s)
    for (sub, stem), group in groups.items():
        save_png(group[0].image, root / sub / f"{stem}.png")
        lines = []
        for s in group:
            if any(c in s.question + s.answer for c in "\t\n"):
                raise ValueError(f"MME question/answer may not contain a tab or a line break: "
                                 f"{s.question!r} -> {s.answer!r}")
            lines.append(f"{s.question}\t{s.answer}")
        (root / sub / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------------------ MMMU


def parse_options(value) -> list[str] | None:
    """MMMU options as a list of strings: a JSON list, or the release's string form of a
    Python list ("['a', 'b']"); None if neither."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return None
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def mmmu_prompt(question: str, options: Sequence[str]) -> str:
    """The multiple-choice prompt: question, one "A. option" line each, the instruction
    (LLaVA's MMMU prompt); an open question is returned as is."""
    if not options:
        return question
    lines = [f"{LETTERS[k]}. {o}" for k, o in enumerate(options)]
    return "\n".join([question, *lines, MMMU_INSTRUCTION])


def mmmu_subject(rec_id: str) -> str:
    """The subject in an MMMU id ("validation_Art_Theory_12" -> "Art_Theory")."""
    m = re.fullmatch(r"(?:dev|validation|test)_(.+)_\d+", rec_id)
    return m.group(1) if m else ""


def _mmmu_images(rec: dict) -> tuple[list[tuple[str, str]], str | None]:
    """[(field, relative path)] of a record, or ([], the bad field)."""
    out = []
    if "image" in rec and rec["image"] is not None:
        img = rec["image"]
        rels = [img] if isinstance(img, str) else img
        if not isinstance(rels, list) or not all(isinstance(r, str) for r in rels):
            return [], "image"
        out += [("image" if isinstance(img, str) else f"image[{k}]", r)
                for k, r in enumerate(rels)]
    for k in range(1, 8):
        v = rec.get(f"image_{k}")
        if v is None:
            continue
        if not isinstance(v, str):
            return [], f"image_{k}"
        out.append((f"image_{k}", v))
    return out, None


def _mmmu_spec(paths, image_root, task, images) -> dict:
    return _files_spec(paths, image_root, task or "mmmu", images, "MMMU")


@register_scanner("mmmu")
def _scan_mmmu(spec: dict, report: Report):
    root = Path(spec["image_root"])
    seen: dict[str, tuple[str, int]] = {}
    for fname in spec["paths"]:
        path = Path(fname)
        for r in checked_records(path, report, "id"):
            index, rec, rid, bad = r.index, r.data, r.id, r.bad
            if rid in seen:
                report.counts["duplicate_ids"] += 1
                bad(f"duplicate id {rid!r} (first at record {seen[rid][1]} of {seen[rid][0]})",
                    "id")
                continue
            seen[rid] = (path.name, index)
            if not isinstance(rec.get("question"), str):
                bad(f"expected a string, got {json.dumps(rec.get('question'))[:60]}", "question")
                continue
            options = parse_options(rec.get("options", []))
            if options is None:
                bad(f"expected a list of strings, got {json.dumps(rec.get('options'))[:60]}",
                    "options")
                continue
            qtype = rec.get("question_type") or ("multiple-choice" if options else "open")
            answer = rec.get("answer")
            if not isinstance(answer, str) or not answer.strip():
                bad(f"expected a string, got {json.dumps(answer)[:60]}", "answer")
                continue
            answer = answer.strip()
            if qtype == "multiple-choice":
                if not options:
                    bad("a multiple-choice question needs options", "options")
                    continue
                if answer not in LETTERS[: len(options)]:
                    bad(f"expected a letter A-{LETTERS[len(options) - 1]} for {len(options)} "
                        f"options, got {answer!r}", "answer")
                    continue
            rels, bad_field = _mmmu_images(rec)
            if bad_field:
                bad("expected a path", bad_field)
                continue
            fields = {f for f, _ in rels}
            cited = re.findall(r"<image (\d+)>", rec["question"] + " ".join(options))
            for k in sorted(set(cited)):
                if f"image_{k}" not in fields and "image" not in fields:
                    bad(f"the question cites <image {k}> but the record has no image_{k}",
                        f"image_{k}", "warning")
            reasons = [(f, check_image(root / r, spec["images"])) for f, r in rels]
            reasons = [(f, r) for f, r in reasons if r]
            if reasons:
                report.counts["missing_images"] += len(reasons)
                for f, r in reasons:
                    bad(r, f)
                continue
            report.counts["images"] += len(rels)
            if not rels:
                report.counts["text_only"] += 1
            elif len(rels) > 1:
                report.counts["multi_image"] += 1
            subject = rec.get("subject") or mmmu_subject(rid)
            report.counts[qtype] += 1
            meta = {"id": rid, "subject": subject, "question_type": qtype, "options": options,
                    "raw_question": rec["question"], "images": [r for _, r in rels],
                    "source": str(path), "index": index}
            for k in ("subfield", "topic_difficulty", "img_type", "explanation"):
                if rec.get(k) is not None:
                    meta[k] = rec[k]
            yield make_row(spec["task"], mmmu_prompt(rec["question"], options), answer,
                           [str(root / r) for _, r in rels], meta)


def check_mmmu(paths: str | os.PathLike | Sequence[str | os.PathLike],
               image_root: str | os.PathLike | None = None, *,
               images: str = "exists") -> Report:
    """Validate MMMU-style file(s); all problems, with counts.

    Errors: missing/duplicate ``id``, ``question`` not a string, ``options`` not a list (or its
    string form), a multiple-choice ``answer`` that is not one of the options' letters, a
    missing image. ``image_root`` defaults to the first file's folder.
    """
    spec = _mmmu_spec(paths, image_root, None, images)
    report, _ = scan("mmmu", spec)
    report.files = spec["paths"]
    return report


def read_mmmu(paths: str | os.PathLike | Sequence[str | os.PathLike],
              image_root: str | os.PathLike | None = None, *, task: str = "mmmu",
              images: str = "exists", strict: bool = True,
              cache_dir: str | os.PathLike | None = None,
              keep_in_memory: bool = False) -> SampleView:
    """Read MMMU-style multiple-choice (and open) questions as lazy samples.

    question = :func:`mmmu_prompt` (question, lettered options, instruction; "<image k>"
    markers left in the text), answer = the letter (or the open answer); meta ``subject``,
    ``question_type``, ``options``, ``raw_question``, ``images`` (every image; ``.image`` is
    the first, ``.images()`` all).
    """
    spec = _mmmu_spec(paths, image_root, task, images)
    return build_view("mmmu", spec, spec["paths"], strict=strict, cache_dir=cache_dir,
                      keep_in_memory=keep_in_memory)


def write_mmmu(samples: Iterable[Sample], path: str | os.PathLike,
               image_root: str | os.PathLike | None = None,
               image_subdir: str = "images") -> Path:
    """Write MMMU-style records ``{"id", "question", "options", "answer", "subject",
    "question_type", "image_1", ...}`` and the images as PNG.

    ``question`` / ``options`` / ``subject`` come from meta (``raw_question``, ``options``,
    ``subject``) when present, else the sample's question, no options (an open question) and
    its task. JSON Lines for ``.jsonl``, else a JSON list.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    used: set[str] = set()
    records = []
    for i, s in enumerate(samples):
        meta = s.meta or {}
        rid = str(meta.get("id", f"{s.task}_{i}"))
        options = list(meta.get("options", []))
        rec = {"id": rid, "question": meta.get("raw_question", s.question), "options": options,
               "answer": s.answer, "subject": meta.get("subject", s.task),
               "question_type": meta.get("question_type",
                                         "multiple-choice" if options else "open")}
        for k, rel in enumerate(write_images(s, root, image_subdir, rid, used), 1):
            rec[f"image_{k}"] = rel
        records.append(rec)
    return dump_records(records, path)

