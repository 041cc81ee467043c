"""Multi-task: one LoRA trained jointly on every task seen so far, the upper-bound reference.

docs/method.md section 3 ("one LoRA trained on all tasks jointly"). The objective at stage t is the
task loss on a joint mix,

    L = mean over the mix of L_i,  mix = n_t samples drawn evenly from tasks 1..t

(n_t = the size of task t's own set; each seen task gives n_t / t samples, drawn without
replacement and seeded by the stage). One LoRA is carried from stage to stage as in Seq-FT, so
every stage costs the same optimiser steps as the other methods and the model after the last
stage has trained jointly on all tasks. This is joint training over the tasks seen so far at
equal compute, not a separate run from scratch per stage; stage 1 trains on task 1 alone.

Every task's encoded training set is kept from ``begin_task`` (memory grows with the stream).
A resumed run re-creates the sets of the finished stages through the runner's ``train_set``
(the same stream, encoded the same way), so it draws the same mixes as an uninterrupted run.
"""

from __future__ import annotations

import numpy as np

from dmole_lab.data.encode import Encoded, concat, subset
from dmole_lab.seeding import stage_seed

from .base import register
from .seq_ft import SequentialFT


def even_mix(parts: list[Encoded], size: int, rng: np.random.Generator) -> Encoded:
    """``size`` samples drawn evenly from ``parts`` (the first size % len(parts) give one more).

    Within a part the draw is without replacement unless the part is smaller than its share.
    """
    k = len(parts)
    shares = [size // k + (i < size % k) for i in range(k)]
    picked = [subset(p, rng.choice(len(p), size=s, replace=s > len(p)))
              for p, s in zip(parts, shares) if s > 0]
    return concat(picked)


@register("multitask")
class MultiTask(SequentialFT):
    """Seq-FT's single LoRA, trained at each stage on an even mix of all tasks so far."""

    def __init__(self, cfg, anatomy):
        super().__init__(cfg, anatomy)
        self.tasks: list[str] = []
        self.seen: dict[str, Encoded] = {}
        self.t = 0

    def begin_task(self, model, t, task, data):
        """Keep task t's data; wrap the model on task 1, then carry the same LoRA."""
        self.t = t
        if task not in self.tasks:
            self.tasks.append(task)
        self.seen[task] = data
        return super().begin_task(model, t, task, data)

    def training_data(self, data):
        """A mix of len(data) samples drawn evenly (seeded) from every task seen so far."""
        if len(self.tasks) == 1:
            return data
        parts = [self.seen[name] if name in self.seen else self._rebuild(name)
                 for name in self.tasks]
        rng = np.random.default_rng(stage_seed(self.cfg.seed, self.t))
        return even_mix(parts, len(data), rng)

    def restore_task(self, model, t, task, state):
        """Load the adapter; remember the task (its data is re-created when next needed)."""
        if task not in self.tasks:
            self.tasks.append(task)
        return super().restore_task(model, t, task, state)

    def _rebuild(self, task: str) -> Encoded:
        """Task ``task``'s training set encoded as the runner encodes it (after a resume)."""
        if self.train_set is None:
            raise RuntimeError("multitask needs the runner's train_set to rebuild the data of "
                               f"task {task!r} after a resume")
        self.seen[task] = self.train_set(task)
        return self.seen[task]
