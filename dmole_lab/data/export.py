"""Write the synthetic stream in the field's formats: PNG images, LLaVA training JSON, CoIN test
files and a stream YAML (docs/data.md section 8).

The exported folder is a stream file like any other: ``dmole-lab run --stream.file=DIR/stream.yaml``
trains on it, ``dmole-lab check-data`` checks it. Each task names our own metric as its scorer
(``lab:<metric>``) and its generation cap, so a run from the files scores exactly as a run on the
in-code stream (tests/test_export.py asserts the same score matrix).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from tqdm.auto import tqdm

from dmole_lab.config import StreamConfig

from .formats import write_coin, write_llava
from .stream import build_stream

STREAM_YAML = "stream.yaml"


def export_stream(cfg: StreamConfig, out: str | Path, progress: bool = True) -> Path:
    """Write the synthetic stream of ``cfg`` under ``out``; returns the stream YAML's path.

    Layout: ``images/<task>/*.png``; ``<task>/train.json`` (LLaVA conversations) and
    ``<task>/test.json`` (CoIN questions with their answers; grounding as ``answer_bbox`` and
    ``size``) for each task in stream order; ``general/<set>.json`` for each held-out set;
    ``stream.yaml`` naming them with relative paths (the folder can be moved). Refuses a
    ``cfg`` that already names a stream file, and an ``out`` that holds a stream YAML."""
    if cfg.file:
        raise ValueError(f"stream.file is set ({cfg.file}); export writes the synthetic stream")
    out = Path(out)
    if (out / STREAM_YAML).exists():
        raise FileExistsError(f"{out / STREAM_YAML} exists; export into an empty folder")
    stream = build_stream(cfg, progress=progress)
    images = out / "images"
    tasks, general = [], {}
    for name in tqdm(stream.tasks, desc="exporting tasks", disable=not progress, leave=False):
        write_llava(stream.train[name], out / name / "train.json", images, f"{name}/train")
        write_coin(stream.test[name], out / name / "test.json", image_root=images,
                   image_subdir=f"{name}/test")
        tasks.append({"name": name, "train": f"{name}/train.json",
                      "test": f"{name}/test.json", "test_format": "coin",
                      "image_root": "images", **_scoring(stream.spec(name))})
    for name, samples in stream.general.items():
        write_coin(samples, out / "general" / f"{name}.json", image_root=images,
                   image_subdir=f"general/{name}")
        general[name] = {"test": f"general/{name}.json", "test_format": "coin",
                         "image_root": "images", **_scoring(stream.spec(name))}
    doc = {"name": f"synthetic-seed{cfg.seed}",
           "description": "the synthetic stream written by dmole-lab export",
           "tasks": tasks, **({"general": general} if general else {})}
    path = out / STREAM_YAML
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _scoring(spec) -> dict:
    return {"scorer": spec.scorer, "max_new_tokens": spec.max_new_tokens}


__all__ = ["STREAM_YAML", "export_stream"]
