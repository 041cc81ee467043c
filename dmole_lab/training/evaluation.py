"""Evaluation: greedy generation on every eval set, then scoring (docs/method.md section 4)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dmole_lab.analysis.scoring import score
from dmole_lab.config import EvalConfig
from dmole_lab.data.encode import Encoded, placement, prompt_batch, to_device
from dmole_lab.data.tasks import task_spec


@torch.no_grad()
def generate(model, processor, data: Encoded, batch_size: int, max_new_tokens: int,
             before_batch: Callable[[np.ndarray], None] | None = None) -> list[str]:
    """Greedy answers for every sample of ``data`` (decoded, special tokens dropped).

    ``before_batch(idx)`` runs before each batch is generated (a router picks experts there).
    """
    device, dtype = placement(model)
    tok = processor.tokenizer
    model.eval()
    out: list[str] = []
    for start in range(0, len(data), batch_size):
        idx = np.arange(start, min(start + batch_size, len(data)))
        if before_batch is not None:
            before_batch(idx)
        batch = to_device(prompt_batch(data, idx), device, dtype)
        gen = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=data.pad_id, eos_token_id=tok.eos_token_id,
        )
        new = gen[:, batch["input_ids"].shape[1] :]
        out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    return out


def evaluate(model, processor, sets: dict[str, Encoded], cfg: EvalConfig, stage: int,
             progress: bool = True,
             before_batch: Callable[[str, np.ndarray], None] | None = None,
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``model`` on every set; returns tidy (scores, predictions) tables for ``stage``.

    scores: stage, eval_task, metric, value (plus extra rows such as bleu4, with their own
    metric name); predictions: stage, eval_task, index, question, prediction, reference, score.
    """
    score_rows, pred_frames = [], []
    for name, data in tqdm(sets.items(), desc=f"eval stage {stage}", disable=not progress,
                           leave=False):
        spec = task_spec(name)
        t0 = time.perf_counter()
        hook = (lambda idx, name=name: before_batch(name, idx)) if before_batch else None
        preds = generate(model, processor, data, cfg.batch_size,
                         min(cfg.max_new_tokens, spec.max_new_tokens), hook)
        refs = [s.answer for s in data.samples]
        value, per, extra = score(spec.metric, preds, refs, cider_scale=cfg.cider_scale)
        score_rows.append({"stage": stage, "eval_task": name, "metric": spec.metric,
                           "value": value, "seconds": time.perf_counter() - t0})
        for k, v in extra.items():
            score_rows.append({"stage": stage, "eval_task": name, "metric": k, "value": v,
                               "seconds": 0.0})
        pred_frames.append(pd.DataFrame({
            "stage": stage, "eval_task": name, "index": np.arange(len(preds)),
            "question": [s.question for s in data.samples], "prediction": preds,
            "reference": refs, "score": per,
        }))
    return pd.DataFrame(score_rows), pd.concat(pred_frames, ignore_index=True)
