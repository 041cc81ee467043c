"""Model anatomy: which modules form each tower, their layers, and the candidate linear modules.

The per-architecture facts live as data in ``anatomy_maps/<model_type>.json`` (native module
paths, tried in order so that several ``transformers`` layouts are covered). Every module gets a
canonical alias ``"<tower>.<layer>.<kind>"`` such as ``"vision.3.attn.q"`` or
``"llm.5.mlp.down"``; the native path is kept alongside so hooks and adapters address the real
module. Adding an architecture means adding a JSON file, nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from torch import nn

from dmole_lab.config import TOWERS

MAPS_DIR = Path(__file__).with_name("anatomy_maps")
#: How the vision tower lays out a batch: one row per sample, or tiles / crops / patches whose
#: number varies per sample (the map's "vision_rows"; per-sample gates there are undefined).
VISION_ROWS = ("per_sample", "per_tile")


@dataclass(frozen=True)
class ModuleInfo:
    """One linear module of a tower layer."""

    alias: str  # "vision.3.attn.q"
    path: str  # native path in the HF model, e.g. "model.vision_tower.encoder.layers.3..."
    tower: str  # "vision" | "llm"
    layer: int
    kind: str  # "attn.q", "mlp.down", ...
    candidate: bool  # probed by the sensitivity proxy and eligible for experts
    in_features: int
    out_features: int

    @property
    def n_params(self) -> int:
        """Weight parameters (bias excluded)."""
        return self.in_features * self.out_features


def available_maps() -> list[str]:
    """Model types that have an anatomy map."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.json"))


def load_map(model_type: str) -> dict:
    """The anatomy map of ``model_type``; clear error naming the types that exist."""
    path = MAPS_DIR / f"{model_type}.json"
    if not path.is_file():
        raise ValueError(
            f"no anatomy map for model_type {model_type!r}; available: "
            f"{', '.join(available_maps())}. Add dmole_lab/models/anatomy_maps/{model_type}.json"
        )
    return json.loads(path.read_text())


def _first_existing(model: nn.Module, paths: list[str], what: str) -> tuple[str, nn.Module]:
    for p in paths:
        try:
            return p, model.get_submodule(p)
        except AttributeError:
            continue
    raise ValueError(f"none of the {what} paths {paths} exists in {type(model).__name__}")


class Anatomy:
    """Resolved anatomy of one model instance: towers, layers and candidate modules."""

    def __init__(self, model: nn.Module, amap: dict):
        self.model_type = amap["model_type"]
        self.map = amap
        self.layer_paths: dict[str, str] = {}
        self.modules: list[ModuleInfo] = []
        for tower in TOWERS:
            spec = amap["towers"][tower]
            base, layers = _first_existing(model, spec["layers"], f"{tower} layers")
            self.layer_paths[tower] = base
            for i in range(len(layers)):
                for kind, rel in spec["modules"].items():
                    path = f"{base}.{i}.{rel}"
                    try:
                        mod = model.get_submodule(path)
                    except AttributeError:
                        continue
                    if not isinstance(mod, nn.Linear):
                        continue
                    self.modules.append(ModuleInfo(
                        f"{tower}.{i}.{kind}", path, tower, i, kind,
                        kind in spec["candidates"], mod.in_features, mod.out_features))
        self.projector_path, _ = _first_existing(model, amap["projector"], "projector")
        self.vision_path, _ = _first_existing(model, amap["vision_model"], "vision model")
        self.language_path, _ = _first_existing(model, amap["language_model"], "language model")
        self.final_norm_path, _ = _first_existing(
            model, amap.get("final_norm", [f"{self.language_path}.norm"]), "final norm")
        rows = amap.get("vision_rows", "per_sample")
        if rows not in VISION_ROWS:
            raise ValueError(f"anatomy map {self.model_type!r}: vision_rows {rows!r} is not one "
                             f"of {', '.join(VISION_ROWS)}")
        #: whether the vision tower sees one row per sample (LLaVA-1.5) or a number of tiles,
        #: crops or patches that varies per sample (every other supported architecture)
        self.vision_per_sample = rows == "per_sample"
        if not any(m.candidate for m in self.modules):
            raise ValueError(f"anatomy map {self.model_type!r} matched no candidate module")

    @cached_property
    def by_alias(self) -> dict[str, ModuleInfo]:
        """Alias -> ModuleInfo."""
        return {m.alias: m for m in self.modules}

    @cached_property
    def by_path(self) -> dict[str, ModuleInfo]:
        """Native path -> ModuleInfo."""
        return {m.path: m for m in self.modules}

    def n_layers(self, tower: str) -> int:
        """Number of layers of ``tower``."""
        return 1 + max(m.layer for m in self.modules if m.tower == tower)

    def candidates(self, tower: str | None = None) -> list[ModuleInfo]:
        """Candidate modules (probed and eligible for experts), optionally of one tower."""
        return [m for m in self.modules if m.candidate and (tower is None or m.tower == tower)]

    def select(self, which: str = "all") -> list[ModuleInfo]:
        """Modules by a named selection: "all" linear modules of both towers or "candidates"."""
        if which == "all":
            return list(self.modules)
        if which == "candidates":
            return self.candidates()
        raise ValueError(f"unknown module selection {which!r}; allowed: all, candidates")

    def tower_of(self, name: str) -> str:
        """Tower of a parameter or module name: "vision", "llm", "projector" or "other".

        Works on native names and on wrapped ones (PEFT's ``base_model.model.`` prefix, adapter
        suffixes such as ``.lora_A.default.weight``), because it looks for the tower's root
        path inside ``name``. The longest root is tried first: Qwen2-VL's projector (the
        merger) lives inside its vision model.
        """
        padded = f".{name}."
        roots = (("vision", self.vision_path), ("llm", self.language_path),
                 ("projector", self.projector_path))
        for tower, root in sorted(roots, key=lambda r: -len(r[1])):
            if f".{root}." in padded:
                return tower
        return "other"

    def module_of(self, name: str) -> ModuleInfo | None:
        """The anatomy module that owns parameter/module ``name`` (wrapped names allowed)."""
        for m in self.modules_by_depth:
            if f".{m.path}." in f".{name}.":
                return m
        return None

    @cached_property
    def modules_by_depth(self) -> list[ModuleInfo]:
        """Modules, longest path first (so a prefix never shadows a deeper match)."""
        return sorted(self.modules, key=lambda m: -len(m.path))

    def __repr__(self) -> str:
        return (f"Anatomy({self.model_type}: vision {self.n_layers('vision')} layers, "
                f"llm {self.n_layers('llm')} layers, {len(self.modules)} linear modules, "
                f"{len(self.candidates())} candidates)")


def anatomy_of(model: nn.Module) -> Anatomy:
    """Resolve the anatomy of ``model`` from its ``config.model_type`` (PEFT wrappers allowed)."""
    base = model
    if hasattr(model, "get_base_model"):
        base = model.get_base_model()
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    if model_type is None:
        raise ValueError(f"{type(model).__name__} has no config.model_type")
    return Anatomy(base, load_map(model_type))
