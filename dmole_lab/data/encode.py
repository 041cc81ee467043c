"""Turn samples into model inputs through the checkpoint's own processor and chat template.

Samples are encoded once (image preprocessing and tokenisation are the slow part on a CPU) and
batches are then cut from the cached tensors. Training batches are right-padded with the loss
on answer tokens only; generation batches are left-padded prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .tasks import Sample


@dataclass
class Encoded:
    """Cached model inputs of a list of samples.

    ``prompt_ids[i]`` holds the chat-formatted prompt with image tokens already expanded,
    ``answer_ids[i]`` the answer tokens followed by EOS, and ``image_inputs`` every tensor the
    processor returns for the images, indexed by sample along dim 0.
    """

    samples: list[Sample]
    prompt_ids: list[list[int]]
    answer_ids: list[list[int]]
    image_inputs: dict[str, torch.Tensor]
    pad_id: int

    def __len__(self) -> int:
        return len(self.samples)


def chat_prompt(processor, question: str) -> str:
    """The processor's chat template applied to one user turn (image then text)."""
    content = [{"type": "image"}, {"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(processor, samples: list[Sample], chunk: int = 256) -> Encoded:
    """Encode ``samples`` with ``processor`` (tokenizer + image processor) once."""
    tok = processor.tokenizer
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; generation could never stop")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompt_ids: list[list[int]] = []
    image_parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        texts = [chat_prompt(processor, s.question) for s in part]
        images = [Image.fromarray(s.image) for s in part]
        out = processor(text=texts, images=images, return_tensors="pt", padding=True,
                        add_special_tokens=False)
        mask = out["attention_mask"].bool()
        prompt_ids += [row[m].tolist() for row, m in zip(out["input_ids"], mask)]
        for k, v in out.items():
            if k in ("input_ids", "attention_mask"):
                continue
            if not isinstance(v, torch.Tensor) or v.shape[0] != len(part):
                raise ValueError(
                    f"processor output {k!r} is not per-sample (shape {tuple(v.shape)}); "
                    "this architecture needs per-batch image encoding"
                )
            image_parts.setdefault(k, []).append(v)
    answers = tok([" " + s.answer for s in samples], add_special_tokens=False)["input_ids"]
    answer_ids = [a + [tok.eos_token_id] for a in answers]
    image_inputs = {k: torch.cat(v) for k, v in image_parts.items()}
    return Encoded(list(samples), prompt_ids, answer_ids, image_inputs, pad_id)


def train_batch(enc: Encoded, idx: np.ndarray | list[int]) -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt + answer with labels = -100 everywhere but the answer."""
    seqs = [enc.prompt_ids[i] + enc.answer_ids[i] for i in idx]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), enc.pad_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    attn = torch.zeros_like(ids)
    for r, i in enumerate(idx):
        p, a = enc.prompt_ids[i], enc.answer_ids[i]
        n = len(p) + len(a)
        ids[r, :n] = torch.tensor(p + a)
        labels[r, len(p) : n] = torch.tensor(a)
        attn[r, :n] = 1
    batch = {"input_ids": ids, "attention_mask": attn, "labels": labels}
    batch.update({k: v[torch.as_tensor(idx)] for k, v in enc.image_inputs.items()})
    return batch


def prompt_batch(enc: Encoded, idx: np.ndarray | list[int]) -> dict[str, torch.Tensor]:
    """Left-padded prompts (for generation) with their attention mask."""
    seqs = [enc.prompt_ids[i] for i in idx]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), enc.pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s)
        attn[r, width - len(s) :] = 1
    batch = {"input_ids": ids, "attention_mask": attn}
    batch.update({k: v[torch.as_tensor(idx)] for k, v in enc.image_inputs.items()})
    return batch


def placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """(device, floating dtype) of ``model``'s parameters: where batches must go."""
    device = next(model.parameters()).device
    dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
    return device, dtype


def to_device(batch: dict[str, torch.Tensor], device, dtype=None) -> dict[str, torch.Tensor]:
    """Move a batch to ``device``; floating tensors (pixels) also to ``dtype`` if given."""
    out = {}
    for k, v in batch.items():
        v = v.to(device)
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v
    return out


def subset(enc: Encoded, idx: np.ndarray | list[int]) -> Encoded:
    """The samples ``idx`` of ``enc`` (in that order, repeats allowed) as a new Encoded."""
    idx = [int(i) for i in idx]
    rows = torch.as_tensor(idx, dtype=torch.long)
    return Encoded([enc.samples[i] for i in idx], [enc.prompt_ids[i] for i in idx],
                   [enc.answer_ids[i] for i in idx],
                   {k: v[rows] for k, v in enc.image_inputs.items()}, enc.pad_id)


def concat(parts: list[Encoded]) -> Encoded:
    """``parts`` one after the other; image tensors are concatenated along dim 0 (samples).

    Raises ValueError if the parts were encoded differently: another pad id, other image
    input names, or image tensors whose per-sample shapes differ.
    """
    if not parts:
        raise ValueError("concat needs at least one Encoded")
    first = parts[0]
    for p in parts[1:]:
        if p.pad_id != first.pad_id:
            raise ValueError(f"pad ids differ ({first.pad_id} vs {p.pad_id}): the parts were "
                             "encoded by different tokenizers")
        if p.image_inputs.keys() != first.image_inputs.keys():
            raise ValueError(f"image inputs differ: {sorted(first.image_inputs)} vs "
                             f"{sorted(p.image_inputs)}")
        for k, v in p.image_inputs.items():
            if v.shape[1:] != first.image_inputs[k].shape[1:]:
                raise ValueError(f"image input {k!r} has per-sample shape {tuple(v.shape[1:])}"
                                 f", not {tuple(first.image_inputs[k].shape[1:])}")
    return Encoded([s for p in parts for s in p.samples],
                   [x for p in parts for x in p.prompt_ids],
                   [x for p in parts for x in p.answer_ids],
                   {k: torch.cat([p.image_inputs[k] for p in parts]) for k in first.image_inputs},
                   first.pad_id)
