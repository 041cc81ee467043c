"""Example images of every task (for data/README.md): ``python -m dmole_lab.viz.gallery
OUT.png``."""

from __future__ import annotations

import sys
import textwrap

from dmole_lab.data.tasks import GENERAL_SETS, TASKS, make_samples

from .plots import close, sample_grid


def gallery(path: str, per_task: int = 1, seed: int = 0) -> str:
    """Save a grid with ``per_task`` test samples of each task and of the general set."""
    images, captions = [], []
    for name in list(TASKS) + list(GENERAL_SETS):
        for s in make_samples(name, per_task, "test", seed):
            images.append(s.image)
            text = f"[{name}] {s.question} -> {s.answer}"
            captions.append("\n".join(textwrap.wrap(text, 34)))
    fig = sample_grid(images, captions, ncols=5)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    close(fig)
    return path


if __name__ == "__main__":
    print(gallery(sys.argv[1] if len(sys.argv) > 1 else "data/examples.png"))
