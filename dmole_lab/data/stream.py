"""The continual stream: an ordered list of tasks with their train and test samples.

Two sources, one :class:`Stream`: the synthetic stream made in code (``stream.tasks``, the
default), or a stream file (``stream.file``: the field's data formats read from disk, see
:mod:`dmole_lab.data.stream_file` and docs/data.md). Each evaluation set carries how it is
scored (:class:`SetSpec`), so the training loop and the evaluation never ask where it came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dmole_lab.analysis.set_scores import LAB_PREFIX, default_max_new_tokens
from dmole_lab.config import StreamConfig, resolve_path

from .formats import read_coin, read_llava, read_mme, read_mmmu, read_pope
from .formats.core import LazySample
from .stream_file import StreamFile, TaskEntry, check_stream, load_stream_file
from .tasks import GENERAL_SETS, TASKS, Sample, make_samples, task_spec


@dataclass(frozen=True)
class SetSpec:
    """How an evaluation set is scored: the scorer (a name of
    :data:`analysis.set_scores.SET_SCORERS`; ``lab:<metric>`` for the synthetic stream) and
    the generation cap (``eval.max_new_tokens`` caps it too)."""

    scorer: str
    max_new_tokens: int


@dataclass
class Stream:
    """Tasks in training order, their samples, the held-out general sets, and how each
    evaluation set is scored (``specs``; ``source``: the stream file, or None in code)."""

    tasks: tuple[str, ...]
    train: dict[str, Sequence[Sample]]
    test: dict[str, Sequence[Sample]]
    general: dict[str, Sequence[Sample]]
    specs: dict[str, SetSpec] = field(default_factory=dict)
    source: Path | None = None

    def eval_sets(self) -> dict[str, Sequence[Sample]]:
        """Every set scored after each stage: the stream's test sets, then the general sets."""
        return {**self.test, **self.general}

    def spec(self, name: str) -> SetSpec:
        """How set ``name`` is scored (a synthetic set's spec comes from its task)."""
        return self.specs[name] if name in self.specs else synthetic_spec(name)


def synthetic_spec(name: str) -> SetSpec:
    """How a set of the synthetic stream is scored: its task's metric, as ``lab:<metric>``."""
    s = task_spec(name)
    return SetSpec(LAB_PREFIX + s.metric, s.max_new_tokens)


def validate_tasks(tasks: tuple[str, ...]) -> None:
    """Raise ValueError naming the problem if ``tasks`` is not a valid stream order."""
    if not tasks:
        raise ValueError(f"stream.tasks is empty; choose from: {', '.join(TASKS)}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(
            f"stream.tasks names unknown task(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(TASKS)}"
        )
    dupes = sorted({t for t in tasks if tasks.count(t) > 1})
    if dupes:
        raise ValueError(f"stream.tasks repeats {', '.join(dupes)}; each task may appear once")


class StreamCheckError(ValueError):
    """A stream file's data failed :func:`check_stream` (``report`` lists every problem)."""

    def __init__(self, report) -> None:
        self.report = report
        first = report.errors[0]
        more = len(report.errors) - 1
        super().__init__(f"stream file {report.stream.path} fails the data check: {first}"
                         + (f" (and {more} more error(s); run dmole-lab check-data "
                            f"--stream.file={report.stream.path})" if more else ""))


def stream_file_of(cfg: StreamConfig) -> StreamFile | None:
    """The parsed stream file of ``cfg`` (None for the synthetic stream); structural errors
    raise :class:`~dmole_lab.data.stream_file.StreamFileError`."""
    return load_stream_file(resolve_path(cfg.file)) if cfg.file else None


def check_stream_config(cfg: StreamConfig) -> tuple[str, ...]:
    """Check the stream of ``cfg`` without building it; returns its task names.

    Synthetic: the task order (ValueError). File: its structure and every data file
    (missing files or images, malformed records, empty tasks, duplicate ids), raising
    :class:`StreamCheckError` with the report when any error is found."""
    sf = stream_file_of(cfg)
    if sf is None:
        validate_tasks(cfg.tasks)
        return tuple(cfg.tasks)
    report = check_stream(sf)
    if not report.ok:
        raise StreamCheckError(report)
    return tuple(sf.task_names)


def stream_tasks(cfg: StreamConfig) -> tuple[str, ...]:
    """The task names of ``cfg``'s stream in training order (read from its file if any)."""
    sf = stream_file_of(cfg)
    return tuple(cfg.tasks) if sf is None else tuple(sf.task_names)


def stream_fingerprint(sf: StreamFile) -> dict:
    """{"file", "digest"}: a digest of the stream file's text and of the content of every
    annotation file it names (not the images; a folder such as MME's by its path), so a run
    can tell when it would resume on changed data. Paths do not count: moved data resumes."""
    h = hashlib.sha256(sf.path.read_bytes())
    files = [p for t in [*sf.tasks, *sf.sets] for p in (t.train, t.test, t.answers) if p]
    for o in sf.general.values():
        files += [*o.get("paths", []), *([o["root"]] if o.get("root") else [])]
    for p in map(Path, files):
        if p.is_file():
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(p.name.encode())
    return {"file": str(sf.path), "digest": h.hexdigest()[:16]}


def stream_fingerprint_of(stream: Stream) -> dict | None:
    """:func:`stream_fingerprint` of the file ``stream`` was read from (None: made in code)."""
    return None if stream.source is None else stream_fingerprint(load_stream_file(stream.source))


def build_stream(cfg: StreamConfig, progress: bool = True) -> Stream:
    """The stream of ``cfg``: read from ``cfg.file`` if set, else generated (deterministic in
    ``cfg.seed``)."""
    sf = stream_file_of(cfg)
    if sf is not None:
        return stream_from_file(sf, progress)
    validate_tasks(cfg.tasks)
    for key in ("n_train", "n_test", "n_general"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"stream.{key}={getattr(cfg, key)} would leave a set empty; use >= 1")
    train, test = {}, {}
    for name in tqdm(cfg.tasks, desc="generating stream", disable=not progress, leave=False):
        train[name] = make_samples(name, cfg.n_train, "train", cfg.seed)
        test[name] = make_samples(name, cfg.n_test, "test", cfg.seed)
    unknown = [g for g in cfg.general if g not in GENERAL_SETS]
    if unknown:
        raise ValueError(f"stream.general names unknown set(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: {', '.join(GENERAL_SETS)}")
    general = {g: make_samples(g, cfg.n_general, "test", cfg.seed, stream=1) for g in cfg.general}
    return Stream(tuple(cfg.tasks), train, test, general)


class Suffixed(Sequence):
    """A read-only view of lazy samples whose questions end with ``suffix`` (after a newline),
    as the field's evaluation scripts append an answer-format instruction."""

    def __init__(self, samples: Sequence[LazySample], suffix: str) -> None:
        self.samples, self.suffix = samples, suffix

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        s = self.samples[i]
        return LazySample(s.task, None, f"{s.question}\n{self.suffix}", s.answer, s.meta,
                          image_paths=s.image_paths)


def _capped(view, cap: int | None, pairs: bool = False):
    """The first ``cap`` samples of ``view`` (whole pairs for MME), or all of them."""
    if cap is None or cap >= len(view):
        return view
    cap = cap - cap % 2 if pairs else cap
    return view.select(range(max(cap, 2 if pairs else 1)))


def _test_set(t: TaskEntry):
    if t.test_format == "llava":
        view = read_llava(t.test, t.image_root, task=t.name)
    else:
        view = read_coin(t.test, t.answers, t.image_root, task=t.name)
    view = _capped(view, t.max_test)
    return Suffixed(view, t.prompt_suffix) if t.prompt_suffix else view


def _spec(scorer: str, cap: int | None) -> SetSpec:
    return SetSpec(scorer, cap or default_max_new_tokens(scorer))


def stream_from_file(sf: StreamFile, progress: bool = True) -> Stream:
    """The stream a parsed stream file describes, read lazily (images stay on disk; docs/data.md).

    Each task: its LLaVA training file (every assistant turn a sample) capped at ``max_train``,
    its test file (CoIN questions with their answers, or LLaVA) capped at ``max_test`` with
    ``prompt_suffix`` appended; each general benchmark (POPE, MME, MMMU) and held-out set
    likewise. Readers are strict: a record in error raises (run check-data first)."""
    train, test, general, specs = {}, {}, {}, {}
    for t in tqdm(sf.tasks, desc="reading stream", disable=not progress, leave=False):
        train[t.name] = _capped(read_llava(t.train, t.image_root, task=t.name), t.max_train)
        test[t.name] = _test_set(t)
        specs[t.name] = _spec(t.scorer, t.max_new_tokens)
    for bench, o in sf.general.items():
        if bench == "pope":
            view = read_pope(o["paths"], o.get("image_root"), split=o.get("split"))
        elif bench == "mme":
            view = read_mme(o["root"], subtasks=o.get("subtasks"))
        else:
            view = read_mmmu(o["paths"], o.get("image_root"))
        general[bench] = _capped(view, o.get("max_test"), pairs=bench == "mme")
        specs[bench] = _spec(bench, o.get("max_new_tokens"))
    for s in sf.sets:
        general[s.name] = _test_set(s)
        specs[s.name] = _spec(s.scorer, s.max_new_tokens)
    return Stream(tuple(sf.task_names), train, test, general, specs, sf.path)
