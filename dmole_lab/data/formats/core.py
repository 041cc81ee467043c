"""Shared machinery of the real-data readers.

* :class:`LazySample` is a :class:`~dmole_lab.data.tasks.Sample` that holds image *paths* and
  decodes the image from disk each time ``sample.image`` is read, so a reader never holds
  pixels in memory.
* :class:`SampleView` is a read-only sequence of lazy samples backed by a ``datasets.Dataset``
  of text rows (memory-mapped Arrow on disk); a sample object is built only when indexed.
* :class:`Problem` / :class:`Report` collect every validation problem of a file (file, record
  index, id, field) with counts, instead of stopping at the first one.
* Record iteration over JSON lists, JSON objects and JSON Lines, and the Arrow cache that the
  readers build with ``datasets.Dataset.from_generator``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..tasks import Sample

#: Bumped whenever the rows a scanner yields change shape, so old Arrow caches are not reused.
FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGE_CHECKS = ("exists", "verify", "skip")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Decode the image at ``path`` as an (H, W, 3) uint8 RGB array (the Sample convention)."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an (H, W, 3) or (H, W) uint8 array as a PNG (lossless); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"image for {path} has dtype {arr.dtype}; expected uint8")
    Image.fromarray(arr).save(path, format="PNG")
    return path


class LazySample(Sample):
    """A :class:`Sample` whose image is read from disk on every access of ``.image``.

    ``image_paths`` holds every image of the record (absolute paths); ``.image`` decodes the
    first one (None for a text-only sample) and ``.images()`` all of them. Nothing is cached:
    holding a list of lazy samples costs only their text. Assigning ``sample.image = array``
    stores that array instead (e.g. after augmentation). The constructor takes the fields in
    :class:`Sample`'s order, so ``dataclasses.replace`` works (it passes the decoded image).
    """

    def __init__(self, task: str, image: np.ndarray | None = None, question: str = "",
                 answer: str = "", meta: dict | None = None, *,
                 image_paths: Sequence[str] = ()) -> None:
        self.task = task
        self.question = question
        self.answer = answer
        self.meta = dict(meta or {})
        self.image_paths = tuple(str(p) for p in image_paths)
        self._image = image

    @property
    def image_path(self) -> str | None:
        """The path of the first image, or None for a text-only sample."""
        return self.image_paths[0] if self.image_paths else None

    @property
    def image(self) -> np.ndarray | None:  # type: ignore[override]
        """The first image, decoded now from ``image_path`` ((H, W, 3) uint8), or None."""
        if self._image is not None:
            return self._image
        return load_image(self.image_paths[0]) if self.image_paths else None

    @image.setter
    def image(self, value: np.ndarray | None) -> None:
        self._image = value

    def images(self) -> list[np.ndarray]:
        """Every image of the sample, decoded now (empty for a text-only sample)."""
        if self._image is not None:
            return [self._image]
        return [load_image(p) for p in self.image_paths]

    def materialize(self) -> Sample:
        """A plain (eager) :class:`Sample` with the first image decoded."""
        return Sample(self.task, self.image, self.question, self.answer, dict(self.meta))

    def __repr__(self) -> str:
        return (f"LazySample(task={self.task!r}, image_path={self.image_path!r}, "
                f"question={self.question!r}, answer={self.answer!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LazySample):
            return NotImplemented
        return (self.task, self.image_paths, self.question, self.answer, self.meta) == (
            other.task, other.image_paths, other.question, other.answer, other.meta)

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------------------------ validation


@dataclass(frozen=True)
class Problem:
    """One validation finding: where it is (file, record index, line, id, field) and what.

    ``index`` is the 0-based position of the record in its file (for JSON Lines, among the
    non-blank lines); ``line`` the 1-based line where the file has lines. ``level`` is
    "error" (the record cannot be used) or "warning" (it is used, but look at it).
    """

    file: str
    message: str
    index: int | None = None
    id: str | None = None
    field: str | None = None
    line: int | None = None
    level: str = "error"

    def __str__(self) -> str:
        where = self.file
        if self.index is not None:
            extra = []
            if self.line is not None:
                extra.append(f"line {self.line}")
            if self.id is not None:
                extra.append(f"id {self.id!r}")
            where += f": record {self.index}" + (f" ({', '.join(extra)})" if extra else "")
        elif self.line is not None:
            where += f": line {self.line}"
        if self.field is not None:
            where += f": field {self.field!r}"
        return f"{self.level}: {where}: {self.message}"


class Levelled:
    """``errors``, ``warnings`` and ``ok`` of a report's ``problems`` (items with a ``level``)."""

    problems: list

    @property
    def errors(self) -> list:
        """The problems at error level: they make a record, a file or a task unusable."""
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list:
        """The problems at warning level: what they concern stays usable."""
        return [p for p in self.problems if p.level != "error"]

    @property
    def ok(self) -> bool:
        """True when no error was found (warnings allowed)."""
        return not self.errors


@dataclass
class Report(Levelled):
    """Every problem found in a data set, plus counts (records, samples, images, ...)."""

    format: str
    files: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, file: str | os.PathLike, message: str, **where: Any) -> Problem:
        """Record a problem in ``file`` (keyword arguments: see :class:`Problem`)."""
        p = Problem(str(file), message, **where)
        self.problems.append(p)
        self.counts["errors" if p.level == "error" else "warnings"] += 1
        return p

    def summary(self, limit: int = 20) -> str:
        """Counts on one line, then up to ``limit`` problems, one per line."""
        counts = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        lines = [f"{self.format} data in {', '.join(self.files) or '-'}: {counts}"]
        lines += [str(p) for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problem(s)")
        return "\n".join(lines)

    def raise_for_errors(self) -> None:
        """Raise :class:`DataFormatError` listing the problems if any error was found."""
        if not self.ok:
            raise DataFormatError(self)

    def __str__(self) -> str:
        return self.summary()


class DataFormatError(ValueError):
    """A data set failed validation; ``.report`` holds every problem and the counts."""

    def __init__(self, report: Report) -> None:
        self.report = report
        n = len(report.errors)
        super().__init__(f"{n} error(s) in {report.format} data\n{report.summary()}")


# ------------------------------------------------------------------------------ records


def iter_records(path: str | os.PathLike, report: Report, count: str = "records"
                 ) -> Iterator[tuple[int, int | None, Any]]:
    """Yield (index, line, record) for each record of a JSON list or JSON Lines file.

    Each record, malformed ones included, adds one to ``report.counts[count]``.

    ``.jsonl`` files are read line by line (a malformed line is reported and skipped; later
    lines keep their indices). Other files are parsed as one JSON document first and read as
    JSON Lines if that fails with extra data (POPE's ``.json`` files are JSON Lines). A JSON
    object whose "data" holds a list yields that list (TextVQA's annotation files); an object
    whose values are all objects yields its values, with the key added as "question_id" when
    missing (ScienceQA's ``problems.json``); any other object is one record (a one-line JSON
    Lines file). ``line`` is None for records of a JSON list.
    """
    path = Path(path)
    if not path.is_file():
        report.add(path, "file not found")
        return
    if path.suffix.lower() != ".jsonl":
        text = path.read_text(encoding="utf-8")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            if not e.msg.startswith("Extra data"):
                report.add(path, f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                           line=e.lineno)
                return
        else:
            for item in _doc_records(path, doc, report):
                report.counts[count] += 1
                yield item
            return
    yield from _jsonl_records(path, report, count)


def _doc_records(path: Path, doc: Any, report: Report) -> Iterator[tuple[int, Any, Any]]:
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if isinstance(doc, list):
        for i, rec in enumerate(doc):
            yield i, None, rec
    elif isinstance(doc, dict) and doc and all(isinstance(v, dict) for v in doc.values()):
        for i, (key, rec) in enumerate(doc.items()):
            if isinstance(rec, dict) and "question_id" not in rec:
                rec = {"question_id": key, **rec}
            yield i, None, rec
    elif isinstance(doc, dict):  # one record (a JSON Lines file of one line)
        yield 0, 1, doc
    else:
        report.add(path, f"top-level JSON is a {type(doc).__name__}; expected a list of "
                   "records (or JSON Lines)")


def _jsonl_records(path: Path, report: Report, count: str) -> Iterator[tuple[int, int, Any]]:
    index = 0
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            report.counts[count] += 1
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                report.add(path, f"not valid JSON: {e.msg} at column {e.colno}", index=index,
                           line=lineno)
            else:
                yield index, lineno, rec
            index += 1


def record_id(rec: Any, *keys: str) -> str | None:
    """The first of ``keys`` present in the record, as a string (None if none is)."""
    if isinstance(rec, dict):
        for k in keys:
            if rec.get(k) is not None:
                return str(rec[k])
    return None


@dataclass(frozen=True)
class Record:
    """A JSON object read from ``path`` (record ``index``, at ``line``) with its id.

    ``id`` is the record's id, or ``"<file stem>:<index>"`` where the record has none and the
    reader goes on with the index; ``source_id`` is the id as the record gives it (None then),
    and is what :meth:`bad` reports.
    """

    report: Report
    path: Path
    index: int
    line: int | None
    data: dict
    id: str
    source_id: str | None

    def bad(self, message: str, field: str | None = None, level: str = "error") -> Problem:
        """Report a problem of this record (in ``field``, at ``level``)."""
        return self.report.add(self.path, message, index=self.index, line=self.line,
                               id=self.source_id, field=field, level=level)


MISSING_ID = ("error", "warn_use_index")


def checked_records(path: str | os.PathLike, report: Report, id_field: str,
                    count: str = "records", missing_id: str = "error") -> Iterator[Record]:
    """Yield each record of ``path`` (see :func:`iter_records`) that is an object with an id.

    A record that is not an object is reported and skipped. A record without ``id_field`` is
    reported and skipped with ``missing_id="error"``; with ``"warn_use_index"`` it is
    reported as a warning and yielded with ``"<file stem>:<index>"`` as its id.
    """
    check_choice("missing_id", missing_id, MISSING_ID)
    path = Path(path)
    for index, line, data in iter_records(path, report, count):
        rec = Record(report, path, index, line, data, "", record_id(data, id_field))
        if not isinstance(data, dict):
            rec.bad(f"record is a {type(data).__name__}, not an object")
            continue
        if rec.source_id is not None:
            yield replace(rec, id=rec.source_id)
        elif missing_id == "error":
            rec.bad(f"missing field {id_field!r}", id_field)
        else:
            rec.bad(f"missing field {id_field!r}; using the record index", id_field, "warning")
            yield replace(rec, id=f"{path.stem}:{index}")


def check_image(path: Path, how: str) -> str | None:
    """None if the image at ``path`` passes check ``how`` ("exists", "verify", "skip"), else
    the reason. "verify" opens the file and checks its header (slow; catches broken
    downloads)."""
    if how == "skip":
        return None
    if not path.is_file():
        return f"image not found: {path}"
    if how == "verify":
        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
            return f"image cannot be decoded: {path} ({type(e).__name__}: {e})"
    return None


def check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """Raise ValueError naming ``name`` if ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r}; allowed: {', '.join(allowed)}")


def strip_image_token(text: str) -> str:
    """``text`` without LLaVA's "<image>" placeholders and the line breaks next to them."""
    return re.sub(r"\n?<image>\n?", "\n", text).strip()


def safe_name(text: str) -> str:
    """A file-name-safe version of an id."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._") or "x"


# ------------------------------------------------------------------------------ the view

ScanFn = Callable[[dict, Report], Iterator[dict]]
_SCANNERS: dict[str, ScanFn] = {}


def register_scanner(kind: str) -> Callable[[ScanFn], ScanFn]:
    """Register the function that turns a spec into rows (and problems) for format ``kind``."""

    def deco(fn: ScanFn) -> ScanFn:
        _SCANNERS[kind] = fn
        return fn

    return deco


def scan(kind: str, spec: dict) -> tuple[Report, int]:
    """Run format ``kind``'s scanner over ``spec`` without keeping rows: (report, n rows)."""
    report = Report(kind)
    n = sum(1 for _ in _SCANNERS[kind](spec, report))
    report.counts["samples"] = n
    return report, n


def _generate(kind: str, spec: str, signature: str, version: int) -> Iterator[dict]:
    """The generator ``Dataset.from_generator`` runs; ``signature`` and ``version`` only key
    the cache."""
    yield from _SCANNERS[kind](json.loads(spec), Report(kind))


def _signature(files: Sequence[str | os.PathLike], report: Report) -> str:
    """A digest of the files' paths and contents and of the problems found (which capture
    the state of the images), so a cached Arrow table is reused only for the same inputs."""
    h = hashlib.sha256()
    for f in files:
        p = Path(f)
        h.update(f"{p.resolve()}\n".encode())
        if p.is_file():
            with open(p, "rb") as fh:
                h.update(hashlib.file_digest(fh, "blake2b").digest())
    for prob in report.problems:
        h.update(str(prob).encode())
    return h.hexdigest()


def build_view(kind: str, spec: dict, files: Sequence[str | os.PathLike], *, strict: bool,
               cache_dir: str | os.PathLike | None, keep_in_memory: bool) -> SampleView:
    """Validate, then build the rows of ``spec`` into an Arrow table and wrap it in a view.

    With ``strict`` a data set with any error raises :class:`DataFormatError`; otherwise the
    records in error are left out and the report stays on the view.
    """
    import datasets
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    report, n = scan(kind, spec)
    report.files = [str(f) for f in files]
    if strict:
        report.raise_for_errors()
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        if n == 0:
            feats = ROW_FEATURES()
            rows = datasets.Dataset.from_dict({k: [] for k in feats}, features=feats)
        else:
            rows = datasets.Dataset.from_generator(
                _generate, features=ROW_FEATURES(),
                gen_kwargs={"kind": kind, "spec": json.dumps(spec, sort_keys=True),
                            "signature": _signature(files, report), "version": FORMAT_VERSION},
                cache_dir=None if cache_dir is None else str(cache_dir),
                keep_in_memory=keep_in_memory)
    finally:
        if not was_disabled:
            enable_progress_bars()
    return SampleView(rows, report)


def ROW_FEATURES():  # noqa: N802 - a constant built on demand (datasets imports slowly)
    """The Arrow schema of a row: text fields, absolute image paths, meta as JSON text."""
    import datasets

    s = datasets.Value("string")
    return datasets.Features({"task": s, "question": s, "answer": s,
                              "images": datasets.List(s), "meta": s})


def make_row(task: str, question: str, answer: str, images: Sequence[str], meta: dict) -> dict:
    """One row of a view's table (what a scanner yields)."""
    return {"task": task, "question": question, "answer": answer,
            "images": [str(p) for p in images], "meta": json.dumps(meta, ensure_ascii=False)}


def _row_sample(row: dict) -> LazySample:
    return LazySample(row["task"], None, row["question"], row["answer"], json.loads(row["meta"]),
                      image_paths=row["images"])


class SampleView(Sequence):
    """Read-only sequence of :class:`LazySample`, backed by a ``datasets.Dataset`` of rows.

    ``view[i]`` builds one sample (no image decoded), ``view[a:b]`` and ``view[[i, j]]`` a
    list of samples, iteration reads rows in batches. ``view.rows`` is the Arrow-backed
    dataset (columns task, question, answer, images, meta as JSON text) and ``view.report``
    the validation report of the files it was read from.
    """

    def __init__(self, rows, report: Report) -> None:
        self.rows = rows
        self.report = report

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(len(self)))]
        if isinstance(key, (list, tuple, np.ndarray)):
            return [self[int(i)] for i in key]
        i = int(key)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {key} out of range for {len(self)} samples")
        return _row_sample(self.rows[i])

    def __iter__(self) -> Iterator[LazySample]:
        for batch in self.rows.iter(batch_size=512):
            for j in range(len(batch["task"])):
                yield _row_sample({k: v[j] for k, v in batch.items()})

    def select(self, indices: Sequence[int]) -> SampleView:
        """A view of the samples ``indices`` (in that order), sharing the same Arrow data."""
        return SampleView(self.rows.select([int(i) for i in indices]), self.report)

    def to_list(self) -> list[LazySample]:
        """All samples as a list (text only; images stay on disk)."""
        return list(self)

    def __repr__(self) -> str:
        return f"SampleView({len(self)} samples, {self.report.format})"
