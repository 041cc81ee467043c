"""The nine tasks of the synthetic continual stream, the general set and the pre-training mix.

Each task mirrors one of the paper's task types (docs/method.md section 2, task order) and leans on
different abilities on purpose: shallow vision (colour), spatial vision (grounding, relations),
fine-detail vision (reading handwritten digits), global vision (counting), and language
(arithmetic about what is seen, answer formats such as option letters and boxes).

Generation is deterministic: the samples of (task, split) depend only on the seed.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .world import COLOURS, SHAPES, Scene, render, sample_scene

LETTERS = "abcde"


@dataclass
class Sample:
    """One instruction-following example: an image, a question and its reference answer."""

    task: str
    image: np.ndarray  # (48, 48, 3) uint8
    question: str
    answer: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """What a task asks, how it is scored, and which paper task it stands in for."""

    name: str
    metric: str  # exact | option | cider | iou
    analog: str  # the paper's task it mirrors
    leans_on: str  # what the task mostly needs, in words
    make: Callable[[np.random.Generator, str], Sample] = field(repr=False)
    max_new_tokens: int = 8


def _describe(o) -> str:
    return f"a {o.size} {o.colour} {o.shape}"


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _scene_sample(task: str, rng, split, scene: Scene, question: str, answer: str, **meta):
    return Sample(task, render(scene, rng, split), question, answer,
                  {"objects": scene.to_meta(), **meta})


def _options(correct: str, pool: list[str]) -> tuple[str, str]:
    """The four options of ``pool`` in a fixed order; returns (options text, answer letter).

    A fixed order keeps the task a mapping from what is seen to a letter; shuffled options
    would add in-context matching, which the tiny model does not learn within a stage.
    """
    text = " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(pool))
    return text, LETTERS[pool.index(correct)]


# ------------------------------------------------------------------------------ the tasks


def make_caption(rng, split) -> Sample:
    scene = sample_scene(rng, split, n_shapes=int(rng.integers(1, 4)))
    answer = _join([_describe(o) for o in scene.shapes()]) + "."
    return _scene_sample("caption", rng, split, scene, "describe the image.", answer)


def make_grounding(rng, split) -> Sample:
    # One object: the tiny model reads images by position and cannot bind "red" + "circle" to
    # one of several objects (existence questions stay at chance), so the task is where and
    # how big, with the box as text.
    scene = sample_scene(rng, split, n_shapes=1)
    target = scene.shapes()[0]
    x1, y1, x2, y2 = target.box
    answer = f"[{x1}, {y1}, {x2}, {y2}]"
    q = f"where is the {target.colour} {target.shape}? answer with its box."
    return _scene_sample("grounding", rng, split, scene, q, answer, box=list(target.box))


def make_textcap(rng, split) -> Sample:
    scene = sample_scene(rng, split, n_shapes=1, n_digits=1)
    shape, digit = scene.shapes()[0], scene.digits()[0]
    answer = f"{_describe(shape)} next to the number {digit.value}."
    return _scene_sample("textcap", rng, split, scene, "describe the image and its text.", answer)


def make_count_mc(rng, split) -> Sample:
    n = int(rng.integers(1, 5))
    scene = sample_scene(rng, split, n_shapes=n, distinct=None)
    opts, letter = _options(str(n), ["1", "2", "3", "4"])
    q = f"how many shapes are there? {opts}. answer with the letter."
    return _scene_sample("count_mc", rng, split, scene, q, letter)


def make_ocr(rng, split) -> Sample:
    scene = sample_scene(rng, split, n_shapes=int(rng.integers(0, 3)), n_digits=1)
    answer = str(scene.digits()[0].value)
    return _scene_sample("ocr", rng, split, scene, "what number is written in the image?", answer)


def make_relation_cap(rng, split) -> Sample:
    while True:
        scene = sample_scene(rng, split, n_shapes=2)
        a, b = scene.shapes()
        dr, dc = b.cell[0] - a.cell[0], b.cell[1] - a.cell[1]
        if abs(dr) != abs(dc):
            break
    # The subject is the first object in reading order, so the sentence is determined by the
    # image (a random subject made half the references unpredictable).
    if abs(dc) > abs(dr):
        rel = "left of" if dc > 0 else "right of"
    else:
        rel = "above" if dr > 0 else "below"
    answer = f"the {a.colour} {a.shape} is {rel} the {b.colour} {b.shape}."
    return _scene_sample("relation_cap", rng, split, scene,
                         "describe how the objects are placed.", answer)


def make_color_vqa(rng, split) -> Sample:
    scene = sample_scene(rng, split, n_shapes=int(rng.integers(1, 4)), distinct="shape")
    target = scene.shapes()[int(rng.integers(len(scene.shapes())))]
    q = f"what colour is the {target.shape}?"
    return _scene_sample("color_vqa", rng, split, scene, q, target.colour)


def make_arith_vqa(rng, split) -> Sample:
    # A fixed addend: with addends 1-3 the tiny model stayed near 23% within a stage.
    scene = sample_scene(rng, split, n_shapes=int(rng.integers(0, 2)), n_digits=1)
    k = 1
    d = scene.digits()[0].value
    q = f"what is the number in the image plus {k}?"
    return _scene_sample("arith_vqa", rng, split, scene, q, str(d + k), addend=k)


def make_color_mc(rng, split) -> Sample:
    # One object and a colour question: "which shape is red?" among several objects stayed at
    # chance (no attribute binding, see make_grounding), and shape-to-letter at 44%.
    scene = sample_scene(rng, split, n_shapes=1)
    target = scene.shapes()[0]
    opts, letter = _options(target.colour, list(COLOURS))
    q = f"pick the colour of the shape: {opts}. answer with the letter."
    return _scene_sample("color_mc", rng, split, scene, q, letter)


def _existence(rng, split, adversarial: float, task: str) -> Sample:
    """POPE-style existence question, "yes" half of the time.

    A negative names an absent object: with probability ``adversarial`` it differs from a
    present object in one attribute (POPE's adversarial setting), otherwise it is random.
    """
    scene = sample_scene(rng, split, n_shapes=int(rng.integers(1, 4)),
                         n_digits=int(rng.integers(0, 2)))
    present = {(o.colour, o.shape) for o in scene.shapes()}
    if rng.random() < 0.5:
        colour, shape = sorted(present)[int(rng.integers(len(present)))]
        answer = "yes"
    else:
        near = rng.random() < adversarial
        base_colour, base_shape = sorted(present)[int(rng.integers(len(present)))]
        while True:
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            if near:
                if rng.random() < 0.5:
                    shape = base_shape
                else:
                    colour = base_colour
            if (colour, shape) not in present:
                break
        answer = "no"
    return _scene_sample(task, rng, split, scene, f"is there a {colour} {shape} in the image?",
                         answer)


def make_pope(rng, split) -> Sample:
    """POPE analog: existence questions with adversarial negatives."""
    return _existence(rng, split, adversarial=1.0, task="pope")


def make_exists(rng, split) -> Sample:
    """Pre-training only: existence questions, half the negatives adversarial."""
    return _existence(rng, split, adversarial=0.5, task="exists")


def _list_objects(rng, split, task: str) -> Sample:
    scene = sample_scene(rng, split, n_shapes=int(rng.integers(1, 4)),
                         n_digits=int(rng.integers(0, 2)))
    answer = ", ".join(o.name for o in scene.objects)
    return _scene_sample(task, rng, split, scene, "what is in the image?", answer)


def make_list_objects(rng, split) -> Sample:
    """Pre-training: list every object, in raster order (a terse caption style)."""
    return _list_objects(rng, split, "list_objects")


def make_general(rng, split) -> Sample:
    """The default general set: the pre-training object listing, on held-out scenes."""
    return _list_objects(rng, split, "general")


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("caption", "cider", "VizWiz-Caption", "deep vision: shape, colour, size",
                 make_caption, 24),
        TaskSpec("grounding", "iou", "SK-VG", "spatial vision and a box format",
                 make_grounding, 18),
        TaskSpec("textcap", "cider", "TextCaps", "reading plus shape description",
                 make_textcap, 16),
        TaskSpec("count_mc", "option", "IconQA", "global vision (counting), letter answers",
                 make_count_mc, 3),
        TaskSpec("ocr", "exact", "OCR-VQA", "fine detail vision (handwriting)", make_ocr, 3),
        TaskSpec("relation_cap", "cider", "Flickr30k", "spatial relations between objects",
                 make_relation_cap, 16),
        TaskSpec("color_vqa", "exact", "VizWiz-VQA", "shallow vision (colour)",
                 make_color_vqa, 3),
        TaskSpec("arith_vqa", "exact", "KVQA", "language: arithmetic about a read digit",
                 make_arith_vqa, 4),
        TaskSpec("color_mc", "option", "PMC-VQA", "colour recognition, letter answers",
                 make_color_mc, 3),
    ]
}
#: Held-out sets that measure retention of what the base model could do before the stream.
GENERAL_SETS: dict[str, TaskSpec] = {
    "general": TaskSpec("general", "cider", "-", "object listing, as in pre-training",
                        make_general, 24),
    "pope": TaskSpec("pope", "exact", "POPE", "object existence, adversarial negatives",
                     make_pope, 3),
}
PRETRAIN_MIX: dict[str, TaskSpec] = {
    "list_objects": TaskSpec("list_objects", "cider", "-", "pre-training captions",
                             make_list_objects, 24),
    "exists": TaskSpec("exists", "exact", "-", "pre-training existence questions",
                       make_exists, 3),
}


def task_spec(name: str) -> TaskSpec:
    """The TaskSpec of a stream task or of a general set; clear error for unknown names."""
    if name in GENERAL_SETS:
        return GENERAL_SETS[name]
    if name in PRETRAIN_MIX:
        return PRETRAIN_MIX[name]
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASKS)} "
                         f"(general sets: {', '.join(GENERAL_SETS)})")
    return TASKS[name]


def make_samples(name: str, n: int, split: str, seed: int, stream: int = 0) -> list[Sample]:
    """``n`` deterministic samples of task ``name`` from ``split`` ("train" or "test").

    ``stream`` separates independent draws of the same task and split (e.g. pre-training vs
    the general evaluation set), so they never share a scene.
    """
    spec = task_spec(name)
    if n < 1:
        raise ValueError(f"task {name!r} would be empty: n={n}; ask for at least 1 sample")
    split_id = {"train": 0, "test": 1}.get(split)
    if split_id is None:
        raise ValueError(f"unknown split {split!r}; allowed: train, test")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), split_id, stream])
    return [spec.make(rng, split) for _ in range(n)]
