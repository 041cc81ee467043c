"""Stream files: a YAML file naming a real task stream (tasks in order, their data, scorers).

Schema (every key not listed is an error)::

    name: coin                       # optional label
    description: ...                 # optional free text
    tasks:                           # required, non-empty, in training order
      - name: ScienceQA              # required, unique
        train: path/train.json       # required: LLaVA conversation JSON / JSON Lines
        test: path/test.json         # required: CoIN question file or LLaVA test file
        test_format: coin            # coin (default) | llava
        answers: path/problems.json  # optional, coin only: separate answer file
        image_root: path/cl_dataset  # required: folder the records' image paths start from
        scorer: option               # required: a field scorer (analysis.scoring.SCORERS)
                                     # or one of our own metrics as lab:exact, lab:option,
                                     # lab:cider, lab:iou (analysis.set_scores)
        prompt_suffix: "..."         # optional text appended (after a newline) to each
                                     # test question, as the field's evaluation scripts do
        max_train: 1000              # optional positive caps on the samples used (the
        max_test: 500                # first ones of each file)
        max_new_tokens: 16           # optional generation cap (default: by scorer)
    general:                         # optional held-out sets, scored after every stage
      pope: {paths: [a.json, ...], image_root: coco/val2014}   # image_root optional
      mme: {root: MME_Benchmark_release_version}
      mmmu: {paths: [mmmu/validation.jsonl], image_root: mmmu} # image_root optional
      <name>: {test: ..., image_root: ..., scorer: ...}  # any other name, or any entry with
                                     # a test key: a test set with the test keys of a task
                                     # (test_format, answers, prompt_suffix, max_test, ...)
    The benchmarks also take max_test and max_new_tokens (MME's cap is rounded down to
    whole image pairs).

Paths: ``${VAR}`` / ``$VAR`` environment variables and ``~`` are expanded (an unset variable
is an error), then a relative path is taken relative to the YAML file's folder.
:func:`load_stream_file` checks the structure (raising :class:`StreamFileError`);
:func:`check_stream` runs the format checkers over every file and reports every problem.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmole_lab.analysis.set_scores import TASK_SCORERS
from dmole_lab.data.formats import (
    Levelled,
    Problem,
    Report,
    check_coin,
    check_llava,
    check_mme,
    check_mmmu,
    check_pope,
)

TEST_FORMATS = ("coin", "llava")
TASK_KEYS = ("name", "train", "test", "test_format", "answers", "image_root", "scorer",
             "prompt_suffix", "max_train", "max_test", "max_new_tokens")
TASK_REQUIRED = ("name", "train", "test", "image_root", "scorer")
#: Keys of a general set that is not a named benchmark: a task without training data.
SET_KEYS = tuple(k for k in TASK_KEYS if k not in ("name", "train", "max_train"))
SET_REQUIRED = ("test", "image_root", "scorer")
TOP_KEYS = ("name", "description", "tasks", "general")
_BENCH_CAPS = ("max_test", "max_new_tokens")
GENERAL_KEYS = {"pope": (("paths",), ("paths", "image_root", "split", *_BENCH_CAPS)),
                "mme": (("root",), ("root", "subtasks", *_BENCH_CAPS)),
                "mmmu": (("paths",), ("paths", "image_root", *_BENCH_CAPS))}
IMAGE_CHECKS = ("exists", "verify", "skip")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


class StreamFileError(ValueError):
    """A stream file's structure is wrong (one-line message naming the file and the key)."""


@dataclass(frozen=True)
class TaskEntry:
    """One task of a stream file (or a held-out set: ``train`` None); every path already
    expanded and absolute."""

    name: str
    train: Path | None
    test: Path
    image_root: Path
    scorer: str
    test_format: str = "coin"
    answers: Path | None = None
    prompt_suffix: str = ""
    max_train: int | None = None
    max_test: int | None = None
    max_new_tokens: int | None = None


@dataclass(frozen=True)
class StreamFile:
    """A parsed stream file: the tasks in order, the general benchmarks (name -> options,
    paths absolute) and the other held-out sets (tasks without training data)."""

    path: Path
    tasks: list[TaskEntry]
    general: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    sets: list[TaskEntry] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        """The task names in stream order."""
        return [t.name for t in self.tasks]


def _expand(value: Any, where: str, base: Path, src: Path) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise StreamFileError(f"{src}: {where}: expected a path string, got {value!r}")

    def sub(m: re.Match) -> str:
        var = m.group(1) or m.group(2)
        if var not in os.environ:
            raise StreamFileError(f"{src}: {where}: environment variable {var} is not set "
                                  f"(in {value!r})")
        return os.environ[var]

    p = Path(_VAR.sub(sub, value)).expanduser()
    return p if p.is_absolute() else (base / p)


def _check_keys(d: Any, allowed: tuple, required: tuple, where: str, src: Path) -> None:
    if not isinstance(d, dict):
        raise StreamFileError(f"{src}: {where}: expected a mapping, got {type(d).__name__}")
    unknown = [k for k in d if k not in allowed]
    if unknown:
        raise StreamFileError(f"{src}: {where}: unknown key {unknown[0]!r}; allowed: "
                              f"{', '.join(allowed)}")
    missing = [k for k in required if d.get(k) is None]
    if missing:
        raise StreamFileError(f"{src}: {where}: missing field {missing[0]!r}")


def _cap(value: Any, where: str, src: Path) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StreamFileError(f"{src}: {where}: expected a positive integer, got {value!r}")
    return value


def _task(d: Any, i: int | str, base: Path, src: Path) -> TaskEntry:
    """A task (``i`` its position) or, for ``i`` a name, a held-out set of ``general``."""
    is_set = isinstance(i, str)
    where = f"general.{i}" if is_set else f"tasks[{i}]"
    if is_set:
        _check_keys(d, SET_KEYS, SET_REQUIRED, where, src)
        d = {**d, "name": i}
    else:
        _check_keys(d, TASK_KEYS, TASK_REQUIRED, where, src)
    name = d["name"]
    if not isinstance(name, str) or not name.strip():
        raise StreamFileError(f"{src}: {where}.name: expected a non-empty string")
    where = f"set {name!r}" if is_set else f"task {name!r}"
    scorer = d["scorer"]
    if scorer not in TASK_SCORERS:
        raise StreamFileError(f"{src}: {where}: unknown scorer {scorer!r}; allowed: "
                              f"{', '.join(TASK_SCORERS)}")
    fmt = d.get("test_format", "coin")
    if fmt not in TEST_FORMATS:
        raise StreamFileError(f"{src}: {where}: test_format {fmt!r} is not one of "
                              f"{', '.join(TEST_FORMATS)}")
    if d.get("answers") is not None and fmt != "coin":
        raise StreamFileError(f"{src}: {where}: 'answers' needs test_format coin")
    suffix = d.get("prompt_suffix") or ""
    if not isinstance(suffix, str):
        raise StreamFileError(f"{src}: {where}.prompt_suffix: expected a string")
    return TaskEntry(
        name=name,
        train=None if is_set else _expand(d["train"], f"{where}.train", base, src),
        test=_expand(d["test"], f"{where}.test", base, src),
        image_root=_expand(d["image_root"], f"{where}.image_root", base, src),
        scorer=scorer, test_format=fmt,
        answers=(_expand(d["answers"], f"{where}.answers", base, src)
                 if d.get("answers") is not None else None),
        prompt_suffix=suffix,
        max_train=_cap(d.get("max_train"), f"{where}.max_train", src),
        max_test=_cap(d.get("max_test"), f"{where}.max_test", src),
        max_new_tokens=_cap(d.get("max_new_tokens"), f"{where}.max_new_tokens", src),
    )


def _general(d: Any, base: Path, src: Path
             ) -> tuple[dict[str, dict[str, Any]], list[TaskEntry]]:
    """(benchmarks: name -> options, other held-out sets) of the ``general`` mapping."""
    if d is None:
        return {}, []
    if not isinstance(d, dict):
        raise StreamFileError(f"{src}: general: expected a mapping, got {type(d).__name__}")
    out: dict[str, dict[str, Any]] = {}
    # an entry with a test file is a held-out set whatever its name (the exported synthetic
    # stream has a set named pope); any other entry must be a named benchmark
    is_set = {name: name not in GENERAL_KEYS or (isinstance(o, dict) and "test" in o)
              for name, o in d.items()}
    sets = [_task(opts, str(name), base, src) for name, opts in d.items() if is_set[name]]
    for bench, opts in d.items():
        if is_set[bench]:
            continue
        required, allowed = GENERAL_KEYS[bench]
        where = f"general.{bench}"
        _check_keys(opts, allowed, required, where, src)
        o = dict(opts)
        for key in _BENCH_CAPS:
            o[key] = _cap(o.get(key), f"{where}.{key}", src)
        if "paths" in o:
            paths = o["paths"] if isinstance(o["paths"], list) else [o["paths"]]
            if not paths:
                raise StreamFileError(f"{src}: {where}.paths: empty list")
            o["paths"] = [_expand(p, f"{where}.paths", base, src) for p in paths]
        for key in ("root", "image_root"):
            if o.get(key) is not None:
                o[key] = _expand(o[key], f"{where}.{key}", base, src)
        out[bench] = o
    return out, sets


def load_stream_file(path: str | os.PathLike) -> StreamFile:
    """Parse and structurally validate a stream YAML file (schema: module docstring).

    Raises :class:`StreamFileError` (a ``ValueError``) with a one-line message on a missing
    file, invalid YAML, an unknown key, a missing field, an unknown scorer (naming the
    allowed ones), a bad ``test_format`` or cap, duplicate task names or an unset
    environment variable. Does not look at the data files: see :func:`check_stream`.
    """
    import yaml

    src = Path(path)
    if not src.is_file():
        raise StreamFileError(f"stream file not found: {src}")
    try:
        doc = yaml.safe_load(src.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise StreamFileError(f"{src}: not valid YAML: {' '.join(str(e).split())}") from None
    _check_keys(doc, TOP_KEYS, ("tasks",), "top level", src)
    if not isinstance(doc["tasks"], list) or not doc["tasks"]:
        raise StreamFileError(f"{src}: tasks: expected a non-empty list of tasks")
    base = src.resolve().parent
    tasks = [_task(d, i, base, src) for i, d in enumerate(doc["tasks"])]
    general, sets = _general(doc.get("general"), base, src)
    names = [t.name for t in tasks] + list(general) + [s.name for s in sets]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise StreamFileError(f"{src}: duplicate task or set name {dup[0]!r}")
    return StreamFile(path=src, tasks=tasks, general=general,
                      name=str(doc.get("name") or src.stem),
                      description=str(doc.get("description") or ""), sets=sets)


@dataclass(frozen=True)
class StreamProblem:
    """A problem of one part (``train``, ``test``, ``config``, or a benchmark) of one task."""

    task: str
    part: str
    problem: Problem

    @property
    def level(self) -> str:
        """"error" or "warning", as the underlying problem."""
        return self.problem.level

    def __str__(self) -> str:
        return f"[{self.task} {self.part}] {self.problem}"


@dataclass
class StreamReport(Levelled):
    """Everything :func:`check_stream` found: problems (each naming its task and part) and
    per task (and benchmark) the counts of each checked file."""

    stream: StreamFile
    problems: list[StreamProblem] = field(default_factory=list)
    counts: dict[str, dict[str, Counter]] = field(default_factory=dict)

    def count_lines(self) -> list[str]:
        """One line per task / benchmark: its name and the record and sample counts."""
        lines = []
        for name, parts in self.counts.items():
            bits = [f"{part}: {c.get('records', 0)} records, {c.get('samples', 0)} samples"
                    for part, c in parts.items()]
            lines.append(f"{name}: " + "; ".join(bits))
        return lines

    def summary(self, limit: int | None = None) -> str:
        """Counts per task, then the problems (all, or the first ``limit``)."""
        shown = self.problems if limit is None else self.problems[:limit]
        lines = [f"stream {self.stream.name} ({self.stream.path}): {len(self.stream.tasks)} "
                 f"tasks, {len(self.errors)} error(s), {len(self.warnings)} warning(s)"]
        lines += self.count_lines() + [str(p) for p in shown]
        if len(shown) < len(self.problems):
            lines.append(f"... and {len(self.problems) - len(shown)} more problem(s)")
        return "\n".join(lines)

    def _add(self, task: str, part: str, report: Report) -> None:
        self.counts.setdefault(task, {})[part] = report.counts
        self.problems += [StreamProblem(task, part, p) for p in report.problems]
        if report.counts.get("samples", 0) == 0 and not any(
                p.message == "file not found" for p in report.problems):
            where = report.files[0] if report.files else "-"
            self.problems.append(StreamProblem(task, part, Problem(
                where, "no usable samples (empty task data)")))


def check_stream(stream_file: StreamFile | str | os.PathLike, images: str = "exists"
                 ) -> StreamReport:
    """Check every file of a stream: each task's train and test files and the general sets.

    ``stream_file`` is a :class:`StreamFile` or a path (loaded with :func:`load_stream_file`,
    whose structural errors raise). ``images``: "exists", "verify" (also decode each image
    header) or "skip". Never raises on data problems: the report lists every problem of the
    format checkers (missing files or images, unreadable images, malformed records with
    their index, id and field, duplicate ids), an unknown scorer, and a part with no usable
    samples, each naming its task and part, plus the counts per task.
    """
    if images not in IMAGE_CHECKS:
        raise ValueError(f"images {images!r} is not one of {', '.join(IMAGE_CHECKS)}")
    sf = stream_file if isinstance(stream_file, StreamFile) else load_stream_file(stream_file)
    out = StreamReport(sf)
    for t in [*sf.tasks, *sf.sets]:
        if t.scorer not in TASK_SCORERS:
            out.problems.append(StreamProblem(t.name, "config", Problem(
                str(sf.path), f"unknown scorer {t.scorer!r}; allowed: "
                              f"{', '.join(TASK_SCORERS)}", field="scorer")))
        if t.train is not None:
            out._add(t.name, "train", check_llava(t.train, t.image_root, images=images))
        if t.test_format == "llava":
            test = check_llava(t.test, t.image_root, images=images)
        else:
            test = check_coin(t.test, t.answers, t.image_root, images=images)
        out._add(t.name, "test", test)
    for bench, o in sf.general.items():
        if bench == "pope":
            rep = check_pope(o["paths"], o.get("image_root"), split=o.get("split"),
                             images=images)
        elif bench == "mme":
            rep = check_mme(o["root"], subtasks=o.get("subtasks"), images=images)
        else:
            rep = check_mmmu(o["paths"], o.get("image_root"), images=images)
        out._add(bench, "general", rep)
    return out


__all__ = ["StreamFile", "StreamFileError", "StreamProblem", "StreamReport", "TaskEntry",
           "check_stream", "load_stream_file"]
