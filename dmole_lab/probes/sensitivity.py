"""Zero-cost sensitivity proxies: how much each candidate module would like to change for a task.

The paper's proxy (docs/method.md section 2, step 1): on the frozen base model, accumulate the
gradients of the next-token loss (answer tokens, token mean) over K+1 batches without zeroing,
and score module m by s_m = sum over its parameters p of ||accumulated grad of p||_F (weight
and bias norms added; no normalisation by size). Alternatives, for comparison:

- ``grad_norm_per_param``: s_m divided by the module's parameter count (weights + biases);
- ``snip``: sum over the parameters of |w * accumulated grad| (SNIP connection sensitivity);
- ``fisher``: mean over samples of ||per-sample gradient||_F^2, the trace of the empirical
  Fisher of the module, each sample's gradient being that of its own token-mean loss.

Only the gradients a proxy needs are computed: the gradient proxies set ``requires_grad`` on
the candidate modules' parameters alone; the Fisher proxy computes no parameter gradient at all
and forms per-sample gradient norms from each module's input and output gradient in hooks.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dmole_lab.data.encode import Encoded, answer_tokens, placement, to_device, train_batch
from dmole_lab.models.anatomy import Anatomy, ModuleInfo, anatomy_of
from dmole_lab.training.distributed import processes

from .hooks import hooked

PROXIES = {
    "grad_norm": "sum_p ||sum over K+1 batches of grad p||_F (docs/method.md section 2, step 1)",
    "grad_norm_per_param": "grad_norm / parameter count of the module",
    "snip": "sum_p sum |p * accumulated grad p| (SNIP)",
    "fisher": "mean over samples of ||per-sample grad||_F^2 (empirical Fisher trace)",
}
GRAD_PROXIES = ("grad_norm", "grad_norm_per_param", "snip")


def check_proxies(proxies) -> tuple[str, ...]:
    """Validate proxy names; error names the bad one and the allowed ones."""
    proxies = tuple(proxies)
    if not proxies:
        raise ValueError(f"no proxy given; allowed: {', '.join(PROXIES)}")
    for p in proxies:
        if p not in PROXIES:
            raise ValueError(f"unknown proxy {p!r}; allowed: {', '.join(PROXIES)}")
    return proxies


def probe_batches(n_samples: int, batch_size: int, share: float = 0.01) -> int:
    """K+1 of docs/method.md section 2 step 1: K = max(1, round(share x batches of the task))."""
    n_batches = math.ceil(n_samples / batch_size)
    return max(1, round(share * n_batches)) + 1


@contextmanager
def _only_grad_on(model: torch.nn.Module, params: list[torch.nn.Parameter]):
    """Within the block only ``params`` require grad; state and train/eval mode are restored."""
    saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        for p in params:
            p.requires_grad_(True)
        model.eval()  # deterministic: no dropout while probing
        yield
    finally:
        for p, flag, grad in saved:
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)


class _FisherHooks:
    """Per-sample squared gradient norms of candidate modules, from hooks (no parameter grads).

    For a linear module with input x_b (tokens x in) and output gradient g_b (tokens x out) of
    sample b, the weight gradient is G_b = c_b g_b^T x_b, with c_b = N / n_b turning the batch's
    token-mean loss (N answer tokens) into sample b's own (n_b tokens). ||G_b||_F^2 is computed
    from token Gram matrices when that is cheaper than forming G_b.
    """

    def __init__(self, modules: list[ModuleInfo]):
        self.modules = modules
        self.sums = {m.alias: 0.0 for m in modules}
        self.n_samples = 0
        self.scale: torch.Tensor | None = None  # c_b, set per batch

    def forward_hooks(self) -> dict:
        def make(alias):
            def hook(mod, args, out):
                x = args[0].detach()
                has_bias = getattr(mod, "bias", None) is not None
                if out.requires_grad:
                    out.register_hook(lambda g: self._add(alias, x, g, has_bias))
            return hook
        return {m.path: make(m.alias) for m in self.modules}

    def _add(self, alias: str, x: torch.Tensor, g: torch.Tensor, has_bias: bool) -> None:
        B = self.scale.shape[0]
        if x.shape[0] != B:  # tiled images: rows are (sample, tile), samples outermost
            if x.shape[0] % B:
                raise ValueError(f"{alias}: {x.shape[0]} rows do not split over {B} samples")
        x = x.reshape(B, -1, x.shape[-1]).float()
        g = g.reshape(B, -1, g.shape[-1]).float()
        T, n_in, n_out = x.shape[1], x.shape[2], g.shape[2]
        if T * T * (n_in + n_out) < T * n_in * n_out:
            sq = ((g @ g.transpose(1, 2)) * (x @ x.transpose(1, 2))).sum((1, 2))
        else:
            sq = torch.einsum("bto,bti->boi", g, x).pow(2).sum((1, 2))
        if has_bias:
            sq = sq + g.sum(1).pow(2).sum(1)
        self.sums[alias] += float((self.scale.pow(2) * sq).sum())

    def scores(self) -> dict[str, float]:
        return {a: s / max(1, self.n_samples) for a, s in self.sums.items()}


def _module_params(model, info: ModuleInfo) -> list[torch.nn.Parameter]:
    """The module's own weight and bias (not those of adapters wrapped around it)."""
    mod = model.get_submodule(info.path)
    return list(getattr(mod, "base_layer", mod).parameters())


def sensitivity(model: torch.nn.Module, data: Encoded, proxies=("grad_norm",),
                batches: int | None = None, batch_size: int = 16, seed: int = 0,
                snapshots: tuple[int, ...] | None = None, anatomy: Anatomy | None = None,
                progress: bool = False) -> pd.DataFrame:
    """Score every candidate module of the frozen ``model`` on ``data`` with ``proxies``.

    ``batches`` is K+1 (default: :func:`probe_batches` of the data); samples are drawn in a
    seeded order, cycling if the data is short. ``snapshots`` lists batch counts at which the
    scores are also read (the accumulated gradients are never zeroed, so the scores after n
    batches are what a probe of n batches gives). Returns a tidy table with columns tower,
    layer, module (alias), kind, n_params, in_features, out_features (so expert sizes can be
    computed from the table alone), proxy, batches, score.
    """
    proxies = check_proxies(proxies)
    anatomy = anatomy or anatomy_of(model)
    batches = batches or probe_batches(len(data), batch_size)
    snapshots = sorted({min(s, batches) for s in (snapshots or ())} | {batches})
    if batches < 1 or snapshots[0] < 1:
        raise ValueError(f"probe batches must be >= 1, got {batches} / snapshots {snapshots}")
    candidates = anatomy.candidates()
    need_grads = any(p in GRAD_PROXIES for p in proxies)
    fisher = _FisherHooks(candidates) if "fisher" in proxies else None
    params = {m.alias: _module_params(model, m) for m in candidates}
    trainable = [p for ps in params.values() for p in ps] if need_grads else []
    device, dtype = placement(model)
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(data))
                            for _ in range(math.ceil(batches * batch_size / len(data)))])
    procs = processes()
    rows = []
    with _only_grad_on(model, trainable), hooked(model, fisher.forward_hooks() if fisher else {}):
        for b in tqdm(range(1, batches + 1), desc="probe", disable=not progress, leave=False):
            # Under several processes each takes its shard of the batch, its token-mean loss
            # weighted by its share of the batch's answer tokens (as in training_stage).
            idx = procs.shard(order[(b - 1) * batch_size : b * batch_size])
            n = answer_tokens(data, idx)
            n_global = int(procs.sum(torch.tensor(n, dtype=torch.float64)))
            if len(idx):
                batch = to_device(train_batch(data, idx), device, dtype)
                if fisher is not None:
                    n_b = (batch["labels"][:, 1:] != -100).sum(1).clamp(min=1).float()
                    fisher.scale = n_global / n_b
                    fisher.n_samples += len(idx)
                    if not need_grads:  # the graph needs a leaf that asks for gradients
                        batch["pixel_values"].requires_grad_(True)
                loss = model(**batch).loss
                (loss if n == n_global else loss * (n / n_global)).backward()
            if b in snapshots:
                with _summed_over_processes(procs, trainable, fisher):
                    rows += _read_scores(params, candidates, proxies, fisher, b)
    return pd.DataFrame(rows)


@contextmanager
def _summed_over_processes(procs, params: list[torch.nn.Parameter], fisher):
    """Within the block, gradients and Fisher sums are those of every process together; the
    accumulation each process continues with is its own again after it."""
    if procs.world == 1:
        yield
        return
    own = [p.grad for p in params]
    for p in params:
        p.grad = None if p.grad is None else p.grad.clone()
    procs.sum_grads(params)
    if fisher is not None:
        own_sums, own_n = dict(fisher.sums), fisher.n_samples
        names = list(own_sums)
        totals = procs.sum(torch.tensor([own_sums[a] for a in names] + [own_n],
                                        dtype=torch.float64))
        fisher.sums = dict(zip(names, totals[:-1].tolist()))
        fisher.n_samples = int(totals[-1])
    try:
        yield
    finally:
        for p, g in zip(params, own):
            p.grad = g
        if fisher is not None:
            fisher.sums, fisher.n_samples = own_sums, own_n


@torch.no_grad()
def _read_scores(params, candidates, proxies, fisher, b) -> list[dict]:
    fisher_scores = fisher.scores() if fisher is not None else {}
    rows = []
    for m in candidates:
        ps = params[m.alias]
        n = sum(p.numel() for p in ps)
        values = {}
        if any(p in GRAD_PROXIES for p in proxies):
            norm = sum(float(p.grad.float().norm()) for p in ps)
            values.update(grad_norm=norm, grad_norm_per_param=norm / n,
                          snip=sum(float((p.float() * p.grad.float()).abs().sum()) for p in ps))
        if fisher is not None:
            values["fisher"] = fisher_scores[m.alias]
        for proxy in proxies:
            rows.append({"tower": m.tower, "layer": m.layer, "module": m.alias, "kind": m.kind,
                         "n_params": n, "in_features": m.in_features,
                         "out_features": m.out_features, "proxy": proxy, "batches": b,
                         "score": values[proxy]})
    return rows
