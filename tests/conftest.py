"""Shared fixtures: a micro LLaVA built in code and saved like a real checkpoint."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dmole_lab.models.tiny import TinySpec  # noqa: E402

MICRO = TinySpec(vision_hidden=32, vision_layers=2, vision_heads=2, patch_size=16,
                 text_hidden=32, text_layers=2, text_heads=2, vocab_size=256)


@pytest.fixture(scope="session")
def micro_processor():
    from dmole_lab.models.tiny import build_processor

    return build_processor(MICRO)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, micro_processor):
    """A randomly initialised micro model + processor in Hugging Face format."""
    import torch

    from dmole_lab.models.tiny import build_model

    torch.manual_seed(0)
    model = build_model(micro_processor, MICRO)
    path = tmp_path_factory.mktemp("micro-llava")
    model.save_pretrained(path)
    micro_processor.save_pretrained(path)
    return path


@pytest.fixture()
def smoke_overrides(micro_model_dir, tmp_path):
    """Overrides for a seconds-long run of the micro model on a 3-task stream."""
    return {
        "model.path": str(micro_model_dir),
        "runs_dir": str(tmp_path / "runs"),
        "stream.tasks": "caption,grounding,ocr",
        "stream.n_train": 8,
        "stream.n_test": 4,
        "stream.n_general": 4,
        "train.batch_size": 4,
        "train.epochs": 1,
        "eval.batch_size": 8,
        "eval.max_new_tokens": 4,
    }


class Interrupted(Exception):
    """Raised by :func:`interrupt_after` to simulate a run killed mid-stage."""


def interrupt_after(n_steps: int):
    """A step callback that raises :class:`Interrupted` on training step ``n_steps + 1``."""
    calls = {"n": 0}

    def callback(step, loss, model):
        calls["n"] += 1
        if calls["n"] > n_steps:
            raise Interrupted

    return callback
