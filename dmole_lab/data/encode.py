"""Turn samples into model inputs through the checkpoint's own processor and chat template.

Samples are encoded once (image preprocessing and tokenisation are the slow part on a CPU) and
batches are then cut from the cached tensors. Training batches are right-padded with the loss
on answer tokens only; generation batches are left-padded prompts.

Samples read from files (:mod:`dmole_lab.data.formats`: lazy samples that hold image paths) are
encoded *lazily*: nothing is processed up front but the answers' tokens. Each batch decodes its
images and runs the processor on them (:class:`LazyPromptIds`); the prompt's token ids are
kept (int32) the first time, the image tensors never, so training starts after one batch and a
stream of any size never holds every image, or every pixel tensor, in memory. Both ways give
the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .formats.core import LazySample, SampleView
from .tasks import Sample


@dataclass
class Encoded:
    """Cached model inputs of a list of samples.

    ``prompt_ids[i]`` holds the chat-formatted prompt with image tokens already expanded,
    ``answer_ids[i]`` the answer tokens followed by EOS, ``image_inputs`` every tensor the
    processor returns for the images, indexed by sample along dim 0, and ``token_inputs``
    the processor's other outputs aligned with the prompt's tokens (Qwen2-VL's
    ``mm_token_type_ids``), one row per sample; batches pad them with 0. A lazy Encoded
    (``processor`` set) keeps no image tensors: :meth:`images` makes them per batch.
    """

    samples: Sequence[Sample]
    prompt_ids: list
    answer_ids: list
    image_inputs: dict[str, torch.Tensor]
    pad_id: int
    processor: Any = None
    token_inputs: dict[str, list] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lazy(self) -> bool:
        """True if image tensors are made per batch from the samples' image files."""
        return self.processor is not None

    def images(self, idx) -> dict[str, torch.Tensor]:
        """The image tensors of samples ``idx`` (in that order), cut from the cache or, for a
        lazy Encoded, decoded and processed now (which also keeps their prompt ids)."""
        if not self.lazy:
            rows = torch.as_tensor(idx, dtype=torch.long)
            return {k: v[rows] for k, v in self.image_inputs.items()}
        return _split_outputs(self.prompt_ids.fill(idx))[1]

    def token_rows(self, idx) -> dict[str, list]:
        """The token-aligned inputs of samples ``idx``: name -> one row per sample."""
        if self.lazy:
            extra = self.prompt_ids.extra
            return {k: [rows[int(i)] for i in idx] for k, rows in extra.items()}
        return {k: [rows[int(i)] for i in idx] for k, rows in self.token_inputs.items()}


class RaggedIds(Sequence):
    """Token id lists stored flat (int32 plus offsets): ~4 bytes a token, 8 a row, where a
    NumPy array per row costs ~100 bytes more and a list of Python ints ~9x the ids."""

    def __init__(self, rows: Sequence[Sequence[int]]) -> None:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.flat = np.fromiter((t for r in rows for t in r), dtype=np.int32,
                                count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i):
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} out of range for {len(self)} rows")
        i %= len(self)
        return self.flat[self.offsets[i] : self.offsets[i + 1]]


class LazyPromptIds(Sequence):
    """The prompt token ids of file-backed samples, made by the processor when first needed.

    ``ids[i]`` processes sample i alone if it was never part of a batch; :meth:`fill`
    processes a batch and returns the processor's output (the caller takes the image tensors
    from it). Ids are kept as int32 arrays (a list of Python ints costs ~9x the memory)."""

    def __init__(self, processor, samples: Sequence[Sample],
                 known: dict[int, np.ndarray] | None = None,
                 extra: dict[str, dict[int, np.ndarray]] | None = None) -> None:
        self.processor, self.samples = processor, samples
        self.known: dict[int, np.ndarray] = dict(known or {})
        #: token-aligned outputs (name -> sample -> row), kept like the ids
        self.extra: dict[str, dict[int, np.ndarray]] = {k: dict(v)
                                                        for k, v in (extra or {}).items()}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        i = int(i)
        if i not in self.known:
            self.fill([i])
        return self.known[i]

    def fill(self, idx):
        """Process samples ``idx`` together; keep their prompt ids; return the output."""
        idx = [int(i) for i in idx]
        out = _process(self.processor, [self.samples[i] for i in idx])
        mask = out["attention_mask"].bool()
        tokens = {"input_ids": out["input_ids"], **_split_outputs(out)[0]}
        for k, v in tokens.items():
            rows = self.known if k == "input_ids" else self.extra.setdefault(k, {})
            for i, row, m in zip(idx, v, mask):
                rows.setdefault(i, row[m].numpy().astype(np.int32))
        return out

    def subset(self, idx, samples: Sequence[Sample]) -> "LazyPromptIds":
        """The ids of samples ``idx`` (now numbered 0.., over ``samples``), known ones kept."""
        def keep(rows):
            return {k: rows[int(i)] for k, i in enumerate(idx) if int(i) in rows}
        return LazyPromptIds(self.processor, samples, keep(self.known),
                             {name: keep(rows) for name, rows in self.extra.items()})


#: Processors whose pixel tensor is flat over the batch (every image's patches or tiles one
#: after another), so it cannot be cut per sample: such samples are always encoded per batch.
FLAT_PIXEL_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor", "InternVLProcessor")


def chat_prompt(processor, question: str) -> str:
    """The processor's chat template applied to one user turn (image then text)."""
    content = [{"type": "image"}, {"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    try:
        return processor.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False)
    except AttributeError:  # SmolVLM's reads its video processor, absent without torchvision
        return processor.tokenizer.apply_chat_template(
            messages, chat_template=processor.chat_template, add_generation_prompt=True,
            tokenize=False)


def _split_outputs(out) -> tuple[dict, dict]:
    """A processor output's (token-aligned, image) inputs, ids and attention mask left out:
    token-aligned ones are laid out like the prompt's tokens (Qwen2-VL's mm_token_type_ids),
    every other output is an image input."""
    tokens, images = {}, {}
    for k, v in out.items():
        if k in ("input_ids", "attention_mask"):
            continue
        aligned = isinstance(v, torch.Tensor) and v.shape == out["input_ids"].shape
        (tokens if aligned else images)[k] = v
    return tokens, images


def _process(processor, part: Sequence[Sample]):
    """The processor's output for the prompts and images of ``part`` (images decoded now).

    Images go one list per sample: some processors (SmolVLM) read a flat list as one sample's
    images."""
    texts = [chat_prompt(processor, s.question) for s in part]
    images = [[Image.fromarray(s.image)] for s in part]
    return processor(text=texts, images=images, return_tensors="pt", padding=True,
                     add_special_tokens=False)


def is_lazy(samples: Sequence[Sample]) -> bool:
    """True for samples read from files (a SampleView, or lazy samples): encode them lazily."""
    return isinstance(samples, SampleView) or (
        len(samples) > 0 and isinstance(samples[0], LazySample))


def encode(processor, samples: Sequence[Sample], chunk: int = 256,
           lazy: bool | None = None) -> Encoded:
    """Encode ``samples`` with ``processor`` (tokenizer + image processor) once.

    ``lazy`` (default: :func:`is_lazy`) tokenises the answers only: prompts and images are
    processed per batch (:class:`LazyPromptIds`, :meth:`Encoded.images`) and ``samples`` is
    kept as given (a file-backed view stays on disk)."""
    tok = processor.tokenizer
    if tok.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; generation could never stop")
    if lazy is None:
        lazy = is_lazy(samples) or type(processor).__name__ in FLAT_PIXEL_PROCESSORS
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompt_ids: list = []
    image_parts: dict[str, list[torch.Tensor]] = {}
    token_inputs: dict[str, list] = {}
    for start in range(0, 0 if lazy else len(samples), chunk):
        part = [samples[i] for i in range(start, min(start + chunk, len(samples)))]
        out = _process(processor, part)
        mask = out["attention_mask"].bool()
        prompt_ids += [row[m].tolist() for row, m in zip(out["input_ids"], mask)]
        tokens, images = _split_outputs(out)
        for k, v in tokens.items():
            token_inputs.setdefault(k, []).extend(row[m].tolist() for row, m in zip(v, mask))
        for k, v in images.items():
            if not _cacheable(v, len(part), image_parts.get(k)):
                # not one row per sample, or padded per chunk (tiles, crops): per batch instead
                return encode(processor, samples, chunk, lazy=True)
            image_parts.setdefault(k, []).append(v)
    answer_ids: list = []
    for start in range(0, len(samples), chunk):
        texts = [" " + samples[i].answer for i in range(start, min(start + chunk, len(samples)))]
        answer_ids += [a + [tok.eos_token_id]
                       for a in tok(texts, add_special_tokens=False)["input_ids"]]
    if lazy:
        return Encoded(samples, LazyPromptIds(processor, samples), RaggedIds(answer_ids), {},
                       pad_id, processor)
    image_inputs = {k: torch.cat(v) for k, v in image_parts.items()}
    return Encoded(list(samples), prompt_ids, answer_ids, image_inputs, pad_id,
                   token_inputs=token_inputs)


def _cacheable(value, n: int, before: list | None) -> bool:
    """Whether an image output can be cached and cut per sample: a tensor with one row per
    sample whose per-sample shape is that of the earlier chunks'."""
    if not isinstance(value, torch.Tensor) or value.shape[0] != n:
        return False
    return not before or before[0].shape[1:] == value.shape[1:]


def _pad_token_rows(rows: dict[str, list], width: int, left: bool) -> dict:
    """Token-aligned inputs as (batch, width) tensors, 0 where the prompt has no token."""
    out = {}
    for name, per in rows.items():
        t = torch.zeros((len(per), width), dtype=torch.long)
        for r, row in enumerate(per):
            if left:
                t[r, width - len(row):] = torch.as_tensor(row)
            else:
                t[r, : len(row)] = torch.as_tensor(row)
        out[name] = t
    return out


def answer_tokens(enc: Encoded, idx) -> int:
    """Answer tokens (EOS included) of samples ``idx``: the positions :func:`train_batch`
    labels, which the next-token loss averages over."""
    return sum(len(enc.answer_ids[i]) for i in idx)


def train_batch(enc: Encoded, idx: np.ndarray | list[int]) -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt + answer with labels = -100 everywhere but the answer."""
    images = enc.images(idx)  # first: a lazy Encoded learns the batch's prompt ids here
    width = max(len(enc.prompt_ids[i]) + len(enc.answer_ids[i]) for i in idx)
    ids = torch.full((len(idx), width), enc.pad_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    attn = torch.zeros_like(ids)
    for r, i in enumerate(idx):
        p, a = enc.prompt_ids[i], enc.answer_ids[i]
        n = len(p) + len(a)
        ids[r, : len(p)] = torch.as_tensor(p)
        ids[r, len(p) : n] = torch.as_tensor(a)
        labels[r, len(p) : n] = torch.as_tensor(a)
        attn[r, :n] = 1
    batch = {"input_ids": ids, "attention_mask": attn, "labels": labels}
    batch.update(images)
    batch.update(_pad_token_rows(enc.token_rows(idx), width, left=False))
    return batch


def prompt_batch(enc: Encoded, idx: np.ndarray | list[int]) -> dict[str, torch.Tensor]:
    """Left-padded prompts (for generation) with their attention mask."""
    images = enc.images(idx)  # first: a lazy Encoded learns the batch's prompt ids here
    seqs = [enc.prompt_ids[i] for i in idx]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), enc.pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.as_tensor(s)
        attn[r, width - len(s) :] = 1
    batch = {"input_ids": ids, "attention_mask": attn}
    batch.update(images)
    batch.update(_pad_token_rows(enc.token_rows(idx), width, left=True))
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
    samples = [enc.samples[i] for i in idx]
    answers = [enc.answer_ids[i] for i in idx]
    if enc.lazy:
        return Encoded(samples, enc.prompt_ids.subset(idx, samples), answers, {}, enc.pad_id,
                       enc.processor)
    return Encoded(samples, [enc.prompt_ids[i] for i in idx], answers, enc.images(idx),
                   enc.pad_id, token_inputs=enc.token_rows(idx))


def concat(parts: list[Encoded]) -> Encoded:
    """``parts`` one after the other; image tensors are concatenated along dim 0 (samples).

    Raises ValueError if the parts were encoded differently: another pad id, other image
    input names, or image tensors whose per-sample shapes differ. If any part is lazy the
    result is lazy (its images are made per batch from the samples).
    """
    if not parts:
        raise ValueError("concat needs at least one Encoded")
    first = parts[0]
    lazy = next((p for p in parts if p.lazy), None)
    if lazy is not None:
        for p in parts[1:]:
            if p.pad_id != first.pad_id:
                raise ValueError(f"pad ids differ ({first.pad_id} vs {p.pad_id}): the parts "
                                 "were encoded by different tokenizers")
        samples, known, extra, offset = [], {}, {}, 0
        for p in parts:
            samples += [p.samples[i] for i in range(len(p))]
            ids = p.prompt_ids.known if p.lazy else dict(enumerate(p.prompt_ids))
            known.update({offset + i: np.asarray(v, dtype=np.int32) for i, v in ids.items()})
            rows = p.prompt_ids.extra if p.lazy else {
                k: dict(enumerate(v)) for k, v in p.token_inputs.items()}
            for k, v in rows.items():
                extra.setdefault(k, {}).update(
                    {offset + i: np.asarray(r, dtype=np.int32) for i, r in v.items()})
            offset += len(p)
        return Encoded(samples, LazyPromptIds(lazy.processor, samples, known, extra),
                       RaggedIds([x for p in parts for x in p.answer_ids]),
                       {}, first.pad_id, lazy.processor)
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
                   first.pad_id,
                   token_inputs={k: [x for p in parts for x in p.token_inputs[k]]
                                 for k in first.token_inputs})
