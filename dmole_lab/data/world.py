"""The synthetic visual world: scenes of coloured shapes and handwritten digits, drawn with PIL.

A scene is a 48x48 RGB image split into a 3x3 grid of 16-pixel cells; every object sits in its
own cell with a little positional jitter. Digits are real handwriting: the 8x8 images of
scikit-learn's bundled digits data set, upscaled. The digit instances are split once into a
train pool and a test pool, so test images show handwriting never seen in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 48
CELL = 16
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 90, 235),
    "yellow": (230, 210, 40),
    "purple": (165, 60, 205),
}
SIZES = {"small": 8, "large": 13}
# Positional jitter in pixels. Small enough that a box predicted from (cell, size) alone still
# reaches IoU >= 0.5, so grounding asks "which object, where, how big" and not for pixel-exact
# regression, which the tiny model cannot learn within one stage.
JITTER = 1
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Obj:
    """One object of a scene; ``box`` is (x1, y1, x2, y2) in pixels, inclusive-exclusive."""

    kind: str  # "shape" or "digit"
    cell: tuple[int, int]  # (row, col) in the 3x3 grid
    box: tuple[int, int, int, int]
    shape: str | None = None
    colour: str | None = None
    size: str | None = None
    value: int | None = None  # the digit shown
    instance: int | None = None  # index into the digit pool

    @property
    def name(self) -> str:
        """Short noun phrase, e.g. "red circle" or "number 7"."""
        if self.kind == "digit":
            return f"number {self.value}"
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A list of objects (in raster order of their cells) plus a background grey level."""

    objects: tuple[Obj, ...]
    background: int

    def shapes(self) -> list[Obj]:
        """The shape objects, in raster order."""
        return [o for o in self.objects if o.kind == "shape"]

    def digits(self) -> list[Obj]:
        """The digit objects, in raster order."""
        return [o for o in self.objects if o.kind == "digit"]

    def to_meta(self) -> list[dict]:
        """JSON-able description of the objects (stored with every sample)."""
        return [asdict(o) for o in self.objects]


@lru_cache(maxsize=1)
def _digit_pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(1234).permutation(len(data.images))
    cut = int(0.6 * len(order))
    pools = {}
    for split, idx in (("train", order[:cut]), ("test", order[cut:])):
        pools[split] = (data.images[idx].astype(np.float32) / 16.0, data.target[idx].astype(int))
    return pools


def digit_pool(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 8, 8) in [0, 1], labels (N,)) of the split's handwriting pool."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return _digit_pools()[split]


def _place(rng: np.random.Generator, cell: tuple[int, int], side: int) -> tuple[int, ...]:
    """Box of an object of ``side`` pixels centred in ``cell``, jittered by up to JITTER px."""
    centre = (CELL - side) // 2
    jx, jy = (centre + int(v) for v in rng.integers(-JITTER, JITTER + 1, size=2))
    x1 = cell[1] * CELL + jx
    y1 = cell[0] * CELL + jy
    return (x1, y1, x1 + side, y1 + side)


def sample_scene(
    rng: np.random.Generator,
    split: str,
    n_shapes: int,
    n_digits: int = 0,
    distinct: str | None = "pair",
    allowed_sizes: tuple[str, ...] = tuple(SIZES),
) -> Scene:
    """Draw a random scene description.

    ``distinct`` makes shapes unique by "pair" (colour and shape), "shape", "colour", or
    None (repeats allowed), so that questions naming an object have one answer.
    """
    if n_shapes + n_digits > 9:
        raise ValueError("at most 9 objects fit in the 3x3 grid")
    cells = [(int(c) // 3, int(c) % 3) for c in rng.permutation(9)[: n_shapes + n_digits]]
    images, labels = digit_pool(split)
    objs: list[Obj] = []
    used: set = set()
    for i, cell in enumerate(cells):
        if i < n_digits:
            inst = int(rng.integers(len(labels)))
            objs.append(Obj("digit", cell, _place(rng, cell, SIZES["large"]),
                            value=int(labels[inst]), instance=inst))
            continue
        while True:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            key = {"pair": (shape, colour), "shape": shape, "colour": colour, None: i}[distinct]
            if key not in used:
                used.add(key)
                break
        size = allowed_sizes[int(rng.integers(len(allowed_sizes)))]
        objs.append(Obj("shape", cell, _place(rng, cell, SIZES[size]), shape=shape,
                        colour=colour, size=size))
    objs.sort(key=lambda o: o.cell)
    return Scene(tuple(objs), background=int(rng.integers(10, 60)))


def render(scene: Scene, rng: np.random.Generator, split: str) -> np.ndarray:
    """Draw ``scene`` as a (48, 48, 3) uint8 array, with colour jitter and pixel noise."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (scene.background,) * 3)
    draw = ImageDraw.Draw(img)
    digit_images, _ = digit_pool(split)
    for o in scene.objects:
        x1, y1, x2, y2 = o.box
        if o.kind == "digit":
            glyph = Image.fromarray((digit_images[o.instance] * 255).astype(np.uint8))
            glyph = np.asarray(glyph.resize((x2 - x1, y2 - y1), Image.BILINEAR)) / 255.0
            region = np.asarray(img, dtype=np.float32)
            tone = 200 + rng.integers(0, 56)
            patch = region[y1:y2, x1:x2]
            region[y1:y2, x1:x2] = patch * (1 - glyph[..., None]) + tone * glyph[..., None]
            img = Image.fromarray(region.clip(0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(img)
            continue
        base = np.array(COLOURS[o.colour]) + rng.integers(-20, 21, size=3)
        fill = tuple(int(v) for v in base.clip(0, 255))
        box = (x1, y1, x2 - 1, y2 - 1)
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        elif o.shape == "triangle":
            draw.polygon([((x1 + x2) / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)], fill=fill)
        elif o.shape == "cross":
            t = max(2, (x2 - x1) // 3)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            draw.rectangle((cx - t // 2, y1, cx - t // 2 + t - 1, y2 - 1), fill=fill)
            draw.rectangle((x1, cy - t // 2, x2 - 1, cy - t // 2 + t - 1), fill=fill)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return arr.clip(0, 255).astype(np.uint8)
