"""Evaluation: greedy generation on every eval set, then scoring (docs/method.md section 4)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dmole_lab.analysis.set_scores import score_set
from dmole_lab.config import EvalConfig
from dmole_lab.data.encode import Encoded, placement, prompt_batch, to_device
from dmole_lab.data.stream import SetSpec, synthetic_spec
from dmole_lab.training.distributed import processes


@torch.no_grad()
def generate(model, processor, data: Encoded, batch_size: int, max_new_tokens: int,
             before_batch: Callable[[np.ndarray], None] | None = None) -> list[str]:
    """Greedy answers for every sample of ``data`` (decoded, special tokens dropped).

    ``before_batch(idx)`` runs before each batch is generated (a router picks experts there).
    Under several processes the batches are dealt round-robin and the answers gathered, so
    every process returns all of them, each batch generated exactly as one process would.
    """
    procs = processes()
    device, dtype = placement(model)
    tok = processor.tokenizer
    model.eval()
    starts = range(0, len(data), batch_size)
    mine: list[tuple[int, list[str]]] = []
    for b in procs.mine(len(starts)):
        idx = np.arange(starts[b], min(starts[b] + batch_size, len(data)))
        if before_batch is not None:
            before_batch(idx)
        batch = to_device(prompt_batch(data, idx), device, dtype)
        with procs.autocast(device):
            gen = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=data.pad_id, eos_token_id=tok.eos_token_id,
            )
        new = gen[:, batch["input_ids"].shape[1] :]
        mine.append((b, [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]))
    return [answer for answers in procs.in_order(mine) for answer in answers]


def _image_size(samples) -> Callable[[int], tuple[int, int]]:
    def size(i: int) -> tuple[int, int]:
        h, w = samples[i].image.shape[:2]
        return int(w), int(h)
    return size


def evaluate(model, processor, sets: dict[str, Encoded], cfg: EvalConfig, stage: int,
             progress: bool = True,
             before_batch: Callable[[str, np.ndarray], None] | None = None,
             spec_of: Callable[[str], SetSpec] | None = None,
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score ``model`` on every set; returns tidy (scores, predictions) tables for ``stage``.

    ``spec_of(name)`` says how set ``name`` is scored (default: a synthetic set's task,
    :func:`~dmole_lab.data.stream.synthetic_spec`); scoring:
    :func:`dmole_lab.analysis.set_scores.score_set`.
    scores: stage, eval_task, metric, value, seconds, main (True on the row of the score
    matrix; extra rows such as bleu4 or pope_f1 have their own metric name);
    predictions: stage, eval_task, index, question, prediction, reference, score.
    """
    spec_of = spec_of or synthetic_spec
    score_rows, pred_frames = [], []
    bar = not progress or not processes().is_main
    for name, data in tqdm(sets.items(), desc=f"eval stage {stage}", disable=bar, leave=False):
        spec = spec_of(name)
        t0 = time.perf_counter()
        hook = (lambda idx, name=name: before_batch(name, idx)) if before_batch else None
        preds = generate(model, processor, data, cfg.batch_size,
                         min(cfg.max_new_tokens, spec.max_new_tokens), hook)
        refs = [s.answer for s in data.samples]
        result = score_set(spec.scorer, preds, refs, [s.meta for s in data.samples],
                           cider_scale=cfg.cider_scale, image_size=_image_size(data.samples))
        per = result.per_sample
        score_rows.append({"stage": stage, "eval_task": name, "metric": result.metric,
                           "value": result.value, "seconds": time.perf_counter() - t0,
                           "main": True})
        for k, v in result.extras.items():
            score_rows.append({"stage": stage, "eval_task": name, "metric": k, "value": v,
                               "seconds": 0.0, "main": False})
        pred_frames.append(pd.DataFrame({
            "stage": stage, "eval_task": name, "index": np.arange(len(preds)),
            "question": [s.question for s in data.samples], "prediction": preds,
            "reference": refs, "score": per,
        }))
    return pd.DataFrame(score_rows), pd.concat(pred_frames, ignore_index=True)
