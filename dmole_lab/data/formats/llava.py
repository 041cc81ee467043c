"""LLaVA conversation files (JSON list or JSON Lines) and D-MoLE's meta JSON.

A record: ``{"id": ..., "image": "rel/path.jpg" | [paths] | absent, "conversations":
[{"from": "human", "value": "<image>\\nQ1"}, {"from": "gpt", "value": "A1"}, ...]}``.

Multi-turn: the sample type holds one question and one answer, so a record with n assistant
turns becomes n samples, one per assistant turn, each training on that turn's answer. Sample k
(0-based) has ``question`` = the human turn alone for k = 0, and for k > 0 the earlier turns
written out as "USER: ...\\nASSISTANT: ...\\nUSER: <turn k>" (so today's single-turn encoder
sees the context). ``meta["history"]`` holds the earlier [question, answer] pairs and
``meta["turn"]`` / ``meta["n_turns"]`` the position: :func:`chat_messages` turns them into the
role/content messages of a chat template, and the last turn's sample of a record carries the
whole conversation (a conversation-level encoder can keep only those and mask all but the
assistant spans).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    safe_name,
    save_png,
    scan,
    strip_image_token,
)

HUMAN = ("human", "user")
ASSISTANT = ("gpt", "assistant")
MULTI_TURN = ("expand", "first", "last")
TEXT_ONLY = ("skip", "keep")
MULTI_IMAGE = ("keep", "skip")
DUPLICATES = ("error", "warning")


def _llava_spec(path, image_root, task, multi_turn, text_only, multi_image, images,
                duplicates) -> dict:
    check_choice("multi_turn", multi_turn, MULTI_TURN)
    check_choice("text_only", text_only, TEXT_ONLY)
    check_choice("multi_image", multi_image, MULTI_IMAGE)
    check_choice("images", images, IMAGE_CHECKS)
    check_choice("duplicates", duplicates, DUPLICATES)
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    return {"path": str(path.absolute()), "image_root": str(root.absolute()),
            "task": task or path.stem, "multi_turn": multi_turn, "text_only": text_only,
            "multi_image": multi_image, "images": images, "duplicates": duplicates}


@register_scanner("llava")
def _scan_llava(spec: dict, report: Report):
    path, root = Path(spec["path"]), Path(spec["image_root"])
    seen: dict[str, int] = {}
    for r in checked_records(path, report, "id", missing_id="warn_use_index"):
        index, rec, rid, bad = r.index, r.data, r.id, r.bad
        # without an id the record goes on with its index as id (checked_records warned)
        if r.source_id is not None and rid in seen:
            report.counts["duplicate_ids"] += 1
            bad(f"duplicate id {rid!r} (first at record {seen[rid]})", "id",
                spec["duplicates"])
            if spec["duplicates"] == "error":
                continue
        elif r.source_id is not None:
            seen[rid] = index
        turns = _turns(rec, bad)
        if turns is None:
            continue
        rel = rec.get("image")
        if rel is None:
            rels = []
        elif isinstance(rel, str):
            rels = [rel]
        elif isinstance(rel, list) and rel and all(isinstance(r, str) for r in rel):
            rels = rel
        else:
            bad(f"expected a path or a list of paths, got {json.dumps(rel)[:60]}", "image")
            continue
        n_tokens = sum(q.count("<image>") for q, _ in turns)
        if not rels and n_tokens:
            bad("has <image> but the record has no image", "conversations")
            continue
        if rels and n_tokens == 0:
            bad("no <image> placeholder; the image goes before the first question",
                "conversations", "warning")
        elif len(rels) > 1 and n_tokens != len(rels):
            bad(f"{n_tokens} <image> placeholder(s) for {len(rels)} images", "conversations",
                "warning")
        missing = False
        for k, r in enumerate(rels):
            reason = check_image(root / r, spec["images"])
            if reason:
                report.counts["missing_images"] += 1
                bad(reason, "image" if len(rels) == 1 else f"image[{k}]")
                missing = True
        if missing:
            continue
        report.counts["images"] += len(rels)
        if not rels:
            report.counts["text_only"] += 1
            if spec["text_only"] == "skip":
                report.counts["skipped_text_only"] += 1
                continue
        if len(rels) > 1:
            report.counts["multi_image"] += 1
            if spec["multi_image"] == "skip":
                report.counts["skipped_multi_image"] += 1
                continue
        if len(turns) > 1:
            report.counts["multi_turn"] += 1
        image_turn = next((t for t, (q, _) in enumerate(turns) if "<image>" in q), 0)
        clean = [(strip_image_token(q), a) for q, a in turns]
        keep = {"expand": range(len(clean)), "first": [0],
                "last": [len(clean) - 1]}[spec["multi_turn"]]
        base = {"id": rid, "source": str(path), "index": index, "images": rels,
                "n_turns": len(clean), "image_turn": image_turn}
        for k in keep:
            history = [list(t) for t in clean[:k]]
            yield make_row(spec["task"], render_history(history, clean[k][0]), clean[k][1],
                           [str(root / r) for r in rels],
                           {**base, "turn": k, "history": history, "raw_question": clean[k][0]})


def _turns(rec: dict, bad) -> list[tuple[str, str]] | None:
    """[(human text, assistant text)] of a record, or None after reporting why not."""
    conv = rec.get("conversations")
    if conv is None:
        bad("missing field 'conversations'", "conversations")
        return None
    if not isinstance(conv, list) or not conv:
        bad("expected a non-empty list of turns", "conversations")
        return None
    turns, question = [], None
    for j, t in enumerate(conv):
        if not isinstance(t, dict):
            bad(f"turn is a {type(t).__name__}, not an object", f"conversations[{j}]")
            return None
        who, value = t.get("from"), t.get("value")
        if not isinstance(value, str):
            bad(f"expected a string, got {json.dumps(value)[:60]}", f"conversations[{j}].value")
            return None
        want = HUMAN if question is None else ASSISTANT
        if who not in HUMAN + ASSISTANT:
            bad(f"expected 'human' or 'gpt', got {who!r}", f"conversations[{j}].from")
            return None
        if who not in want:
            bad(f"turns must alternate human/gpt starting with human; got {who!r} here",
                f"conversations[{j}].from")
            return None
        if question is None:
            question = value
        else:
            turns.append((question, value))
            question = None
    if question is not None:
        bad("the last human turn has no answer; it is ignored", f"conversations[{len(conv) - 1}]",
            "warning")
    if not turns:
        bad("no assistant turn to train on", "conversations")
        return None
    return turns


def render_history(history: Sequence[Sequence[str]], question: str) -> str:
    """The question of a later turn with the earlier turns written out before it.

    With no history this is ``question`` itself; otherwise "USER: q1\\nASSISTANT: a1\\n...
    USER: question" (the single-turn encoder's prompt; a template-aware encoder should use
    :func:`chat_messages` instead).
    """
    if not history:
        return question
    lines = [f"USER: {q}\nASSISTANT: {a}" for q, a in history]
    return "\n".join(lines + [f"USER: {question}"])


def chat_messages(sample: Sample) -> list[dict]:
    """The prompt of ``sample`` as chat-template messages (image in the turn that had it).

    For a multi-turn sample: the earlier user/assistant turns then the current user turn; for
    any other sample one user turn (image then text), as ``encode.chat_prompt`` builds it.
    Pass to ``processor.apply_chat_template(messages, add_generation_prompt=True)``.
    """
    meta = sample.meta or {}
    history = meta.get("history", [])
    question = meta.get("raw_question", sample.question) if history else sample.question
    n_images = len(meta.get("images", []))
    if not n_images:  # never decode a lazy image just to count it
        paths = getattr(sample, "image_paths", None)
        n_images = len(paths) if paths is not None else int(sample.image is not None)
    image_turn = meta.get("image_turn", 0)
    msgs: list[dict] = []
    for t, (q, a) in enumerate([*history, (question, None)]):
        content = [{"type": "image"}] * n_images if t == image_turn else []
        msgs.append({"role": "user", "content": [*content, {"type": "text", "text": q}]})
        if a is not None:
            msgs.append({"role": "assistant", "content": [{"type": "text", "text": a}]})
    return msgs


def check_llava(path: str | os.PathLike, image_root: str | os.PathLike | None = None, *,
                multi_turn: str = "expand", text_only: str = "skip", multi_image: str = "keep",
                images: str = "exists", duplicates: str = "error") -> Report:
    """Validate a LLaVA conversation file; returns every problem and the counts (no raise).

    ``image_root`` defaults to the file's folder. ``images``: "exists" checks each image file
    exists, "verify" also decodes its header, "skip" checks nothing on disk. Counts: records,
    samples (after the options below), images, missing_images, text_only, multi_image,
    multi_turn, duplicate_ids, skipped_*, errors, warnings.
    """
    spec = _llava_spec(path, image_root, None, multi_turn, text_only, multi_image, images,
                       duplicates)
    report, _ = scan("llava", spec)
    report.files = [spec["path"]]
    return report


def read_llava(path: str | os.PathLike, image_root: str | os.PathLike | None = None, *,
               task: str | None = None, multi_turn: str = "expand", text_only: str = "skip",
               multi_image: str = "keep", images: str = "exists", duplicates: str = "error",
               strict: bool = True, cache_dir: str | os.PathLike | None = None,
               keep_in_memory: bool = False) -> SampleView:
    """Read a LLaVA conversation file (JSON list or JSON Lines) as lazy samples.

    ``task`` names the samples' task (default: the file's stem). ``multi_turn``: "expand"
    gives one sample per assistant turn (every turn trains), "first" / "last" only that turn.
    ``text_only``: "skip" (default; today's encoder needs an image) or "keep" (image None).
    ``multi_image``: "keep" (``.image`` is the first, ``.images()`` all) or "skip".
    ``strict`` raises :class:`DataFormatError` on any error; otherwise records in error are
    left out (see ``view.report``). The text rows are cached as Arrow under ``cache_dir``
    (default: the ``datasets`` cache) unless ``keep_in_memory``.
    """
    spec = _llava_spec(path, image_root, task, multi_turn, text_only, multi_image, images,
                       duplicates)
    return build_view("llava", spec, [spec["path"]], strict=strict, cache_dir=cache_dir,
                      keep_in_memory=keep_in_memory)


# ------------------------------------------------------------------------------ writing


def _image_name(stem: str, used: set[str]) -> str:
    name, k = f"{safe_name(stem)}.png", 1
    while name in used:
        name, k = f"{safe_name(stem)}_{k}.png", k + 1
    used.add(name)
    return name


def write_images(sample: Sample, image_root: Path, image_subdir: str, stem: str,
                 used: set[str]) -> list[str]:
    """Write a sample's image(s) as PNG under ``image_root / image_subdir``; relative paths."""
    if hasattr(sample, "images") and callable(sample.images):
        arrays = sample.images()
    else:
        arrays = [] if sample.image is None else [sample.image]
    rels = []
    for k, arr in enumerate(arrays):
        rel = f"{image_subdir}/{_image_name(stem if k == 0 else f'{stem}_{k}', used)}"
        save_png(arr, image_root / rel)
        rels.append(rel)
    return rels


def dump_records(records: list[dict], path: str | os.PathLike) -> Path:
    """Write records as JSON Lines (``.jsonl``) or as one indented JSON list (otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if path.suffix.lower() == ".jsonl":
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        else:
            json.dump(records, f, ensure_ascii=False, indent=1)
    return path


def llava_records(samples: Iterable[Sample], image_root: str | os.PathLike,
                  image_subdir: str = "images") -> list[dict]:
    """LLaVA records for ``samples``, writing their images as PNG (see :func:`write_llava`)."""
    root = Path(image_root)
    samples = list(samples)
    # the samples of one multi-turn record: keep the last turn, it carries the conversation
    last: dict[str, int] = {}
    for i, s in enumerate(samples):
        meta = s.meta or {}
        if "history" in meta and "id" in meta:
            j = last.get(meta["id"])
            if j is None or meta.get("turn", 0) >= samples[j].meta.get("turn", 0):
                last[meta["id"]] = i
    used: set[str] = set()
    records = []
    for i, s in enumerate(samples):
        meta = s.meta or {}
        if "history" in meta and "id" in meta and last[meta["id"]] != i:
            continue
        rid = str(meta.get("id", f"{s.task}_{i}"))
        rels = write_images(s, root, image_subdir, rid, used)
        history = meta.get("history", [])
        question = meta.get("raw_question", s.question) if history else s.question
        pairs = [*history, (question, s.answer)]
        conv = []
        for t, (q, a) in enumerate(pairs):
            if t == 0 and rels:
                q = "\n".join(["<image>"] * len(rels) + [q])
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        rec: dict = {"id": rid}
        if rels:
            rec["image"] = rels[0] if len(rels) == 1 else rels
        rec["conversations"] = conv
        records.append(rec)
    return records


def write_llava(samples: Iterable[Sample], path: str | os.PathLike,
                image_root: str | os.PathLike | None = None,
                image_subdir: str = "images") -> Path:
    """Write ``samples`` as a LLaVA conversation file and their images as PNG.

    JSON Lines if ``path`` ends in ``.jsonl``, else one JSON list. Images go to
    ``image_root / image_subdir / <id>.png`` (``image_root`` defaults to the file's folder)
    and records name them relative to ``image_root``. The id is ``meta["id"]`` or
    "<task>_<position>"; "<image>\\n" starts the first human turn. Samples of one multi-turn
    record (as :func:`read_llava` expands them) are written back as that one record. Returns
    the file's path.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    return dump_records(llava_records(samples, root, image_subdir), path)


# ------------------------------------------------------------------------------ D-MoLE meta


@dataclass(frozen=True)
class MetaEntry:
    """One task of a D-MoLE / InternVL meta JSON (paths as written in the file)."""

    root: str
    annotation: str
    data_augment: bool = False
    repeat_time: float = 1
    length: int | None = None


def _resolve(value: str, base: Path) -> Path:
    p = Path(value)
    if p.is_absolute():
        return p
    return base / p if (base / p).exists() or not p.exists() else p


def read_meta(path: str | os.PathLike) -> dict[str, MetaEntry]:
    """The tasks of a meta JSON in file order; raises ValueError naming the task and field."""
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected an object mapping task names to entries")
    out = {}
    for name, e in doc.items():
        if not isinstance(e, dict):
            raise ValueError(f"{path}: task {name!r}: expected an object")
        for key in ("root", "annotation"):
            if not isinstance(e.get(key), str):
                raise ValueError(f"{path}: task {name!r}: field {key!r} must be a string")
        out[name] = MetaEntry(e["root"], e["annotation"], bool(e.get("data_augment", False)),
                              e.get("repeat_time", 1), e.get("length"))
    return out


def check_meta(path: str | os.PathLike, *, images: str = "exists") -> Report:
    """Validate a meta JSON and every task's annotation file; all problems, with counts.

    Relative ``root`` and ``annotation`` paths are resolved against the meta file's folder
    (falling back to the working directory). A ``length`` that differs from the number of
    records is a warning.
    """
    path = Path(path)
    report = Report("dmole-meta", [str(path)])
    try:
        entries = read_meta(path)
    except (ValueError, OSError) as e:
        report.add(path, str(e))
        return report
    for name, e in entries.items():
        report.counts["tasks"] += 1
        ann = _resolve(e.annotation, path.parent)
        sub = check_llava(ann, _resolve(e.root, path.parent), images=images)
        report.problems += sub.problems
        for k in ("errors", "warnings", "records", "samples", "missing_images"):
            report.counts[k] += sub.counts[k]
        if e.length is not None and e.length != sub.counts["records"]:
            report.add(path, f"task {name!r}: length {e.length} but {ann} has "
                       f"{sub.counts['records']} records", field="length", level="warning")
    return report


def read_meta_tasks(path: str | os.PathLike, **options) -> dict[str, SampleView]:
    """Each task of a meta JSON read with :func:`read_llava` (``options`` passed on).

    ``repeat_time`` and ``data_augment`` are not applied (they are kept by
    :func:`read_meta`); the task name becomes each sample's ``task``.
    """
    path = Path(path)
    return {name: read_llava(_resolve(e.annotation, path.parent),
                             _resolve(e.root, path.parent), task=name, **options)
            for name, e in read_meta(path).items()}


def write_meta(entries: dict[str, MetaEntry | dict], path: str | os.PathLike) -> Path:
    """Write a meta JSON ``{task: {root, annotation, data_augment, repeat_time, length}}``."""
    doc = {}
    for name, e in entries.items():
        e = e if isinstance(e, MetaEntry) else MetaEntry(**e)
        doc[name] = {"root": e.root, "annotation": e.annotation, "data_augment": e.data_augment,
                     "repeat_time": e.repeat_time, "length": e.length}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def write_meta_tasks(tasks: dict[str, Sequence[Sample]], out_dir: str | os.PathLike,
                     meta_name: str = "meta.json") -> Path:
    """Export tasks (e.g. a stream's train sets) as D-MoLE data: per task
    ``out_dir/<task>/annotation.jsonl`` + ``images/``, and ``out_dir/meta.json`` naming them
    with paths relative to ``out_dir``. Returns the meta file's path."""
    out = Path(out_dir)
    entries = {}
    for name, samples in tasks.items():
        ann = write_llava(samples, out / name / "annotation.jsonl", out / name)
        n = sum(1 for line in open(ann, encoding="utf-8") if line.strip())
        entries[name] = MetaEntry(name, f"{name}/annotation.jsonl", False, 1, n)
    return write_meta(entries, out / meta_name)
