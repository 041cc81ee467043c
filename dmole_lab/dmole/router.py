"""D-MoLE's task router: per-task autoencoders on base-model representations (docs/method.md
section 2 step 4, and "Routing during training" / "Inference").

- :func:`representations`: z per sample = [max-pool of the vision encoder's last hidden states,
  max-pool of the LLM's final-norm hidden states over the instruction's text positions],
  L2-normalised, from the base model (experts off). Computed once per sample and cached. One
  forward of the prompt gives both parts; image-token positions are left out of the LLM pool
  (our reading of "instruction text, no image tokens", documented as such). Each part is
  L2-normalised before the concatenation (and the result scaled to unit norm): docs/method.md says
  only "L2 normalise", and normalising the whole lets the larger-norm part drown the other.
  On the embedded default the vision max-pool has ~5x the norm of the LLM one, and per-sample
  vote accuracy of the autoencoders rises from 0.46 to 0.73 with per-part normalisation
  (``benchmarks/bench_router.py``).
- :class:`TaskAutoencoder`: Linear d->h, ReLU, Linear h->d, Sigmoid; MSE; Adam; early stopping.
  Its threshold tau is a quantile (default 0.95) of its own training reconstruction errors.
- :class:`Router`: votes and the support rule (0.3) at batch level, or per sample.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from dmole_lab.config import OUTPUT_BIAS, ROUTING_MODES, TRAIN_ROUTING
from dmole_lab.data.encode import Encoded, placement, prompt_batch, to_device
from dmole_lab.models.anatomy import Anatomy
from dmole_lab.probes.hooks import hooked
from dmole_lab.training.distributed import processes


def _image_token_id(model) -> int | None:
    cfg = model.config
    for key in ("image_token_id", "image_token_index"):
        if getattr(cfg, key, None) is not None:
            return int(getattr(cfg, key))
    return None


@torch.no_grad()
def representations(model: nn.Module, data: Encoded, anatomy: Anatomy, batch_size: int = 64,
                    progress: bool = False, normalise: str = "parts",
                    shared: bool = False) -> torch.Tensor:
    """(N, d_vision + d_llm) routing features of every sample of ``data``.

    ``normalise="parts"`` (default): both parts L2-normalised, concatenated, scaled by
    1/sqrt(2) to unit norm; ``"whole"``: the concatenation L2-normalised (kept for comparison).
    ``shared=True``: every process of a run calls this for the same ``data``, so the batches
    are dealt among them and the features gathered (each batch computed as one process would).

    Run with every expert off (the base model): the caller deactivates them.
    """
    if normalise not in ("parts", "whole"):
        raise ValueError(f"normalise must be 'parts' or 'whole', got {normalise!r}")
    device, dtype = placement(model)
    vision_last = f"{anatomy.layer_paths['vision']}.{anatomy.n_layers('vision') - 1}"
    final_norm = anatomy.final_norm_path
    try:
        model.get_submodule(final_norm)
    except AttributeError as e:
        raise ValueError(f"no final norm at {final_norm!r} for the router features") from e
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_mod, _inp, out):
            seen[name] = (out[0] if isinstance(out, tuple) else out).detach()
        return hook

    def keep_llm_input(_mod, args):
        seen["llm_input"] = args[0].detach()

    image_id = _image_token_id(model)
    first_llm = f"{anatomy.layer_paths['llm']}.0"
    was_training = model.training
    model.eval()
    parts = []
    procs = processes()
    starts = list(range(0, len(data), batch_size))
    mine = procs.mine(len(starts)) if shared else range(len(starts))
    with hooked(model, {vision_last: keep("vision"), final_norm: keep("llm")},
                pre={first_llm: keep_llm_input}):
        for b in tqdm(mine, desc="router features", disable=not progress, leave=False):
            start = starts[b]
            idx = np.arange(start, min(start + batch_size, len(data)))
            batch = to_device(prompt_batch(data, idx), device, dtype)
            model(**batch)
            v = _vision_summary(seen, batch, len(idx), image_id, anatomy.vision_per_sample)
            text = batch["attention_mask"].bool()
            if image_id is not None:
                text &= batch["input_ids"] != image_id
            h = seen["llm"].float().masked_fill(~text[..., None], float("-inf")).amax(1)
            if normalise == "parts":
                v, h = _unit(v) / 2**0.5, _unit(h) / 2**0.5
            parts.append((b, torch.cat([v, h], 1).cpu()))
    model.train(was_training)
    return _unit(torch.cat(procs.in_order(parts) if shared else [z for _, z in parts]))


def _vision_summary(seen: dict, batch: dict, n: int, image_id: int | None,
                    per_sample: bool) -> torch.Tensor:
    """(n, d) per-sample max over the vision tower's last layer.

    Where the vision tower does not see one row per sample (``per_sample`` False: Qwen2-VL's
    patches are flat over the batch, LLaVA-NeXT's crops and InternVL's and Idefics3's tiles
    vary in number per sample), the max is taken over the sample's image tokens as the
    language model receives them: the projected vision features, the first place where each
    sample's image is laid out per sample (docs/method.md section 2 step 4)."""
    v = seen["vision"].float()
    if per_sample:
        return v.reshape(n, -1, v.shape[-1]).amax(1)
    if image_id is None:
        raise ValueError("the vision tower's output is not one row per sample and the model "
                         "names no image token to find each sample's image features by")
    inp = seen["llm_input"].float()
    return inp.masked_fill(~(batch["input_ids"] == image_id)[..., None], float("-inf")).amax(1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def vision_feature_width(model: nn.Module, anatomy: Anatomy) -> int:
    """Width of the vision part of :func:`representations`: the vision tower's hidden size, or
    the language model's where the vision part is read from the image tokens."""
    if not anatomy.vision_per_sample:
        return int(model.get_input_embeddings().embedding_dim)
    cfg = getattr(getattr(model, "config", None), "vision_config", None)
    if cfg is None or getattr(cfg, "hidden_size", None) is None:
        raise ValueError(f"{type(model).__name__} has no config.vision_config.hidden_size")
    return int(cfg.hidden_size)


class TaskAutoencoder(nn.Module):
    """Linear d->h, ReLU, Linear h->d, Sigmoid (docs/method.md section 2 step 4)."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim),
                                 nn.Sigmoid())
        self.register_buffer("threshold", torch.tensor(float("inf")))
        #: epochs the fit ran before early stopping (0 for an autoencoder loaded from disk)
        self.epochs = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction of z: (N, d) -> (N, d)."""
        return self.net(z)

    @torch.no_grad()
    def errors(self, z: torch.Tensor) -> torch.Tensor:
        """Per-sample mean squared reconstruction error, (N,)."""
        return (self(z) - z).pow(2).mean(1)


def train_autoencoder(z: torch.Tensor, hidden: int = 128, lr: float = 1e-3,
                      max_epochs: int = 200, patience: int = 10, batch_size: int = 64,
                      quantile: float = 0.95, seed: int = 0,
                      output_bias: str = "mean") -> TaskAutoencoder:
    """Fit one task's autoencoder on its features ``z`` (N, d); sets its threshold.

    10% of the samples (at least one) are held out for early stopping; the best weights on them
    are kept. The threshold is the ``quantile`` of the training errors. ``batch_size`` <= 0
    takes every training sample in each step (full batch: one Adam step per epoch).

    ``output_bias="mean"`` starts the decoder's bias at the logit of the training mean, so the
    untrained autoencoder already outputs the average feature. L2-normalised features are
    small (about 1/sqrt(d) per coordinate) while a default-initialised sigmoid outputs ~0.5:
    without it, most of the fit is spent walking the output bias down at Adam's step size.
    ``"default"`` keeps PyTorch's initialisation.
    """
    if not 0 < quantile <= 1:
        raise ValueError(f"router quantile must be in (0, 1], got {quantile}")
    if output_bias not in OUTPUT_BIAS:
        raise ValueError(f"router output_bias {output_bias!r} is not one of "
                         f"{', '.join(OUTPUT_BIAS)}")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    ae = TaskAutoencoder(z.shape[1], hidden)
    perm = torch.randperm(len(z), generator=g)
    n_val = max(1, len(z) // 10) if len(z) > 1 else 0
    val, train = z[perm[:n_val]], z[perm[n_val:]]
    if output_bias == "mean":
        with torch.no_grad():
            ae.net[2].bias.copy_(torch.logit(train.mean(0).clamp(1e-4, 1 - 1e-4)))
    opt = torch.optim.Adam(ae.parameters(), lr=lr)
    best, best_state, bad = float("inf"), None, 0
    if batch_size <= 0:
        batch_size = max(1, len(train))
    for epoch in range(1, max_epochs + 1):
        ae.epochs = epoch
        order = torch.randperm(len(train), generator=g)
        for s in range(0, len(train), batch_size):
            x = train[order[s : s + batch_size]]
            loss = (ae(x) - x).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        v = float(ae.errors(val if n_val else train).mean())
        if v < best - 1e-7:
            best, bad = v, 0
            best_state = {k: t.clone() for k, t in ae.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    ae.load_state_dict(best_state)
    ae.threshold.fill_(float(torch.quantile(ae.errors(train), quantile)))
    return ae


class Router:
    """Per-task autoencoders and the voting rules of docs/method.md section 2."""

    def __init__(self, support: float = 0.3, mode: str = "batch", training: str = "voters"):
        if mode not in ROUTING_MODES:
            raise ValueError(f"unknown routing mode {mode!r}; allowed: {', '.join(ROUTING_MODES)}")
        if training not in TRAIN_ROUTING:
            raise ValueError(f"unknown training routing {training!r}; allowed: "
                             f"{', '.join(TRAIN_ROUTING)}")
        self.support, self.mode, self.training = support, mode, training
        self.autoencoders: dict[str, TaskAutoencoder] = {}

    @property
    def tasks(self) -> list[str]:
        """Tasks with an autoencoder, in the order they were learned."""
        return list(self.autoencoders)

    def add(self, task: str, ae: TaskAutoencoder) -> None:
        """Register ``task``'s trained autoencoder."""
        self.autoencoders[task] = ae

    def votes(self, z: torch.Tensor, among: list[str] | None = None) -> list[str | None]:
        """Each sample's vote: the task (of ``among``) reconstructing it best, among those
        below their threshold; None when no autoencoder accepts it."""
        tasks = list(among if among is not None else self.tasks)
        if not tasks or len(z) == 0:
            return [None] * len(z)
        err = torch.stack([self.autoencoders[t].errors(z) for t in tasks], 1)  # (N, T)
        tau = torch.stack([self.autoencoders[t].threshold for t in tasks])
        err = err.masked_fill(err > tau, float("inf"))
        best = err.argmin(1)
        ok = torch.isfinite(err.gather(1, best[:, None]))[:, 0]
        return [tasks[int(b)] if o else None for b, o in zip(best, ok)]

    def _ranked(self, votes: list[str | None], of_all: bool = False) -> list[tuple[str, float]]:
        """Voted tasks, most votes first, each with its support: votes over votes cast, or over
        every sample (abstentions included) with ``of_all``."""
        cast = [v for v in votes if v is not None]
        if not cast:
            return []
        names, counts = np.unique(cast, return_counts=True)
        order = sorted(zip(names, counts), key=lambda x: (-x[1], self.tasks.index(x[0])))
        total = len(votes) if of_all else len(cast)
        return [(str(n), c / total) for n, c in order]

    def route_training(self, z: torch.Tensor, current: str) -> list[str]:
        """Active tasks while training ``current``: itself, plus the most-voted earlier task if
        its support is >= the support threshold (docs/method.md section 2, Training).

        ``training`` says what support is: ``voters`` (released code) divides by the votes
        cast among earlier tasks, so two voters out of sixteen samples can carry a batch;
        ``batch`` divides by the batch size, closer to the support an earlier task gets at test
        time, when ``current``'s own autoencoder takes most votes; ``own`` never adds one, as at
        test time when the router picks ``current`` alone."""
        if self.training == "own":
            return [current]
        earlier = [t for t in self.tasks if t != current]
        ranked = self._ranked(self.votes(z, earlier), of_all=self.training == "batch")
        extra = [ranked[0][0]] if ranked and ranked[0][1] >= self.support else []
        return [current, *extra]

    def route_inference(self, z: torch.Tensor) -> list[str] | list[list[str]]:
        """Active tasks at test time (no task id).

        Batch mode: the top-voted task, plus the second if its support >= the threshold; none
        if nobody votes (the base model answers). Sample mode: each sample's own vote.
        """
        votes = self.votes(z)
        if self.mode == "sample":
            return [[v] if v is not None else [] for v in votes]
        ranked = self._ranked(votes)
        active = [ranked[0][0]] if ranked else []
        if len(ranked) > 1 and ranked[1][1] >= self.support:
            active.append(ranked[1][0])
        return active

    def state_dict(self, task: str) -> dict[str, torch.Tensor]:
        """``task``'s autoencoder weights and threshold."""
        return {f"router.{k}": v.detach().clone()
                for k, v in self.autoencoders[task].state_dict().items()}

    def load(self, task: str, state: dict[str, torch.Tensor]) -> None:
        """Rebuild ``task``'s autoencoder from :meth:`state_dict` output."""
        sub = {k.removeprefix("router."): v for k, v in state.items() if k.startswith("router.")}
        ae = TaskAutoencoder(sub["net.0.weight"].shape[1], sub["net.0.weight"].shape[0])
        ae.load_state_dict(sub)
        self.add(task, ae)
