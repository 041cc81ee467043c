"""The continual stream: an ordered list of tasks with their train and test samples."""

from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from dmole_lab.config import StreamConfig

from .tasks import GENERAL_SETS, TASKS, Sample, make_samples


@dataclass
class Stream:
    """Tasks in training order, their samples, and the held-out general sets."""

    tasks: tuple[str, ...]
    train: dict[str, list[Sample]]
    test: dict[str, list[Sample]]
    general: dict[str, list[Sample]]

    def eval_sets(self) -> dict[str, list[Sample]]:
        """Every set scored after each stage: the stream's test sets, then the general sets."""
        return {**self.test, **self.general}


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


def build_stream(cfg: StreamConfig, progress: bool = True) -> Stream:
    """Generate the stream of ``cfg`` (deterministic in ``cfg.seed``)."""
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
