"""Hooks only through context managers: whatever is registered is removed on exit, error or not.

``record`` is the user-facing recorder (TransformerLens style)::

    with record(model, modules=["llm.3.attn.q"], layers=[("vision", 5)]) as cache:
        model(**batch)
    cache["llm.3.attn.q"]        # output of that module, (batch, tokens, features)
    cache["vision", 5]           # hidden states leaving vision layer 5
    cache.inputs["llm.3.attn.q"] # its input

Modules are named by canonical alias (dmole_lab.models.anatomy), never by an invented tree.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from dmole_lab.models.anatomy import Anatomy, anatomy_of


@contextmanager
def hooked(model: nn.Module, forward: dict[str, Callable] | None = None,
           pre: dict[str, Callable] | None = None) -> Iterator[None]:
    """Register forward (and forward-pre) hooks by native module path; remove all on exit."""
    handles = []
    try:
        for path, fn in (forward or {}).items():
            handles.append(model.get_submodule(path).register_forward_hook(fn))
        for path, fn in (pre or {}).items():
            handles.append(model.get_submodule(path).register_forward_pre_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return getattr(x, "last_hidden_state", None)


class Cache:
    """What a ``record`` block saw: module outputs/inputs by alias, layer outputs by (tower, i).

    Values are detached (CPU copies if ``to_cpu``); a second forward pass overwrites the first
    unless the block was opened with ``accumulate=True``, which keeps a list per key.
    """

    def __init__(self, accumulate: bool = False):
        self.accumulate = accumulate
        self.outputs: dict = {}
        self.inputs: dict = {}

    def _put(self, store: dict, key, value: torch.Tensor) -> None:
        if self.accumulate:
            store.setdefault(key, []).append(value)
        else:
            store[key] = value

    def __getitem__(self, key):
        if key not in self.outputs:
            raise KeyError(f"{key!r} was not recorded; recorded: {sorted(map(str, self.outputs))}")
        return self.outputs[key]

    def __contains__(self, key) -> bool:
        return key in self.outputs

    def keys(self) -> list:
        """Recorded keys: aliases (str) and (tower, layer) tuples."""
        return list(self.outputs)

    def __repr__(self) -> str:
        return f"Cache({len(self.outputs)} entries)"


@contextmanager
def record(model: nn.Module, modules: list[str] | str = (), layers: list[tuple[str, int]] = (),
           anatomy: Anatomy | None = None, inputs: bool = False, to_cpu: bool = False,
           accumulate: bool = False) -> Iterator[Cache]:
    """Record module outputs (and inputs) during the block; every hook is removed on exit.

    ``modules``: aliases such as ``"vision.3.attn.q"``, or "candidates" / "all".
    ``layers``: ``(tower, index)`` pairs; the cache holds the hidden states each layer returns,
    shape (batch, tokens, width), under the key as given (``cache["vision", -1]`` is the last
    vision layer if it was requested as ``("vision", -1)``).
    """
    anatomy = anatomy or anatomy_of(model)
    if isinstance(modules, str):
        modules = [m.alias for m in anatomy.select(modules)]
    cache = Cache(accumulate)

    def keep(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        return t.cpu() if to_cpu else t

    forward = {}
    for alias in modules:
        if alias not in anatomy.by_alias:
            raise KeyError(f"unknown module alias {alias!r}; e.g. {anatomy.modules[0].alias!r}")
        info = anatomy.by_alias[alias]

        def hook(mod, args, out, alias=alias):
            cache._put(cache.outputs, alias, keep(out))
            if inputs:
                cache._put(cache.inputs, alias, keep(args[0]))

        forward[info.path] = hook
    for tower, index in layers:
        if tower not in anatomy.layer_paths:
            raise KeyError(f"unknown tower {tower!r}; allowed: {', '.join(anatomy.layer_paths)}")
        n = anatomy.n_layers(tower)
        i = index % n if -n <= index < n else None
        if i is None:
            raise IndexError(f"{tower} has {n} layers; got layer {index}")

        def layer_hook(mod, args, out, key=(tower, index)):
            cache._put(cache.outputs, key, keep(_first_tensor(out)))

        forward[f"{anatomy.layer_paths[tower]}.{i}"] = layer_hook
    with hooked(model, forward):
        yield cache
