"""One seed function for Python, NumPy and torch."""

from __future__ import annotations

import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and CUDA) with ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def stage_seed(seed: int, stage: int) -> int:
    """Seed of one stage, so a resumed run draws exactly what an uninterrupted one would."""
    return seed * 1000 + stage
