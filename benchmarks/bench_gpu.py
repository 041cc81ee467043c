"""Training speed of real-size architectures on a GPU: samples/s, tokens/s, peak memory, the
probe's share of a stage, model FLOPs utilisation, D-MoLE's step time over LoRA's.

Usage: python benchmarks/bench_gpu.py [--shapes internvl2-2b,qwen2-vl-2b,llava-1.5-7b]
                                      [--methods seq-lora,dmole,moelora,branchlora]
                                      [--batch 8] [--steps 10] [--warmup 3]
                                      [--device cuda] [--dtype bfloat16] [--peak-tflops 989]
       python benchmarks/bench_gpu.py --smoke     (CPU, shrunken shapes: the tests run this)

Each shape (``dmole_lab/models/shapes/*.json``) is built from its transformers config at full
depth with random weights (no download) and frozen. For each method the adapters it trains on
a task are put on it (:func:`dmole_lab.engine.plan.with_adapters`, the same code `plan` counts
with): ``seq-lora`` is peft LoRA on every linear layer (r 8, alpha 16 in the presets), D-MoLE
has B = budget x candidates experts (the paper's 0.5) with the vision floor's share in the vision
tower, on modules drawn at random (seeded; which modules get experts changes the step only by
their widths). A training step of ``--batch`` samples of the shape's size (``dummy_batch``:
its image tiles, image tokens and 128 text tokens, loss on the text) with AdamW is timed after
``--warmup`` steps, with a device synchronisation around the timed steps.

- probe share: D-MoLE's zero-cost probe on K+1 batches (forward and backward with gradients on
  the candidate modules' weights only, as ``probes.sensitivity`` runs it) over the probe plus
  the stage's training steps, for a task of ``--task-samples`` samples (K+1 from
  ``probe_batches``, 1 % of its batches);
- MFU: model FLOPs per step over the time and the device's peak (``--peak-tflops``; 989 for
  dense bf16 on an H100 or H200 SXM). Model FLOPs count the weights the step multiplies by:
  2 x parameters x tokens in the forward pass per tower (vision and projector on the vision
  tower's tokens, LLM and output head on the LLM's), as much again in the backward pass for
  every tower gradients flow through (the LLM always; the vision tower when it holds trained
  parameters), and 2 x trainable parameters x tokens for their weight gradients. Attention's
  token-by-token products are not counted, so MFU is a lower bound.

Writes benchmarks/results/gpu.json (``--smoke``: gpu_smoke.json) with one row per shape and
method, and prints the table.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SMOKE_LAYERS = (2, 2)


def shrink(shape: dict) -> dict:
    """The shape with one attention head per tower at the real head width, two layers per
    tower, and feed-forward widths scaled alike (image size, token counts and vocabulary stay):
    every code path of the real architecture at a size a CPU steps through in seconds."""
    out = json.loads(json.dumps(shape))
    v, t = out["vision_config"], out["text_config"]
    head_t = t["hidden_size"] // t["num_attention_heads"]
    scale_t = head_t / t["hidden_size"]
    t.update(hidden_size=head_t, num_attention_heads=1, num_key_value_heads=1,
             intermediate_size=max(8, int(t["intermediate_size"] * scale_t)))
    if "embed_dim" in v:  # Qwen2-VL: embed_dim is the tower's width, hidden_size the merger's
        head_v = v["embed_dim"] // v["num_heads"]
        v.update(embed_dim=head_v, num_heads=1, hidden_size=head_t)
    else:
        head_v = v["hidden_size"] // v["num_attention_heads"]
        scale_v = head_v / v["hidden_size"]
        v.update(hidden_size=head_v, num_attention_heads=1,
                 intermediate_size=max(8, int(v["intermediate_size"] * scale_v)))
        if "projection_dim" in v:
            v["projection_dim"] = head_v
    return out


def dmole_paths(cfg, anatomy, seed: int = 0) -> list[str]:
    """B = budget x candidates modules, floor(vision_floor x B) of them in the vision tower,
    drawn at random within each tower (docs/method.md section 2 steps 2-3)."""
    import numpy as np

    from dmole_lab.dmole.allocation import expert_count

    c = cfg.dmole
    vision, llm = anatomy.candidates("vision"), anatomy.candidates("llm")
    budget = expert_count(len(vision) + len(llm), c.budget, c.rounding)
    k_v = min(len(vision), math.floor(c.vision_floor * budget))
    rng = np.random.default_rng(seed)
    pick = [vision[i] for i in rng.choice(len(vision), k_v, replace=False)]
    pick += [llm[i] for i in rng.choice(len(llm), min(len(llm), budget - k_v), replace=False)]
    return [m.path for m in pick]


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_flops(model, anatomy, params, batch, vision_tokens: int) -> float:
    """Model FLOPs of one training step (module docstring)."""
    per_tower: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            continue
        tower = anatomy.tower_of(name)
        per_tower[tower] = per_tower.get(tower, 0) + p.numel()
    head = model.get_output_embeddings().weight
    trained = {anatomy.tower_of(n) for n, p in model.named_parameters() if p.requires_grad}
    llm_tokens = batch["input_ids"].numel()
    vision = per_tower.get("vision", 0) + per_tower.get("projector", 0)
    llm = per_tower.get("llm", 0) + head.numel()
    back_v = 2 if trained & {"vision", "projector"} else 1
    flops = 2 * vision * vision_tokens * back_v + 2 * llm * llm_tokens * 2
    n_trainable = sum(p.numel() for p in params)
    return flops + 2 * n_trainable * llm_tokens  # the adapters' weight gradients (roughly)


def measure(shape_name: str, method: str, args) -> dict:
    """One (shape, method): build, add adapters, time steps and the probe."""
    import torch

    from dmole_lab.config import build_config, list_presets
    from dmole_lab.engine.plan import with_adapters
    from dmole_lab.models.anatomy import anatomy_of
    from dmole_lab.models.shapes import cut_down, dummy_batch, load_shape
    from dmole_lab.probes.sensitivity import _module_params, _only_grad_on, probe_batches

    device = torch.device(args.device)
    shape = load_shape(shape_name)
    if args.smoke:
        shape = shrink(shape)
    # the shape's preset (the paper's settings) where one is shipped under its name
    cfg = build_config(shape_name if shape_name in list_presets() else None,
                       {"model.dtype": args.dtype, "train.batch_size": args.batch})
    model = cut_down(shape, SMOKE_LAYERS if args.smoke else None, args.dtype,
                     device=args.device)
    anatomy = anatomy_of(model)
    batch = {k: v.to(device) for k, v in dummy_batch(shape, model.config, args.batch).items()}
    batch = {k: v.to(getattr(torch, args.dtype)) if v.is_floating_point() else v
             for k, v in batch.items()}
    seen = {}
    first = model.get_submodule(f"{anatomy.layer_paths['vision']}.0")

    def count(_module, inputs):  # a pre-hook that returns nothing leaves the inputs as they are
        seen.setdefault("vision_tokens", inputs[0].shape[:-1].numel())

    hook = first.register_forward_pre_hook(count)
    probe_s = k1 = None
    if method == "dmole":  # the probe runs on the frozen base model, before experts exist
        k1 = probe_batches(args.task_samples, args.batch)
        cands = [p for m in anatomy.candidates() for p in _module_params(model, m)]
        with _only_grad_on(model, cands):
            model(**batch).loss.backward()  # warm-up
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(k1):
                model(**batch).loss.backward()
            _sync(device)
            probe_s = time.perf_counter() - t0
    paths = dmole_paths(cfg, anatomy) if method == "dmole" else None
    model, params = with_adapters(method, cfg, model, anatomy, batch_size=args.batch,
                                  dmole_paths=paths)
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step():
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    for _ in range(args.warmup):
        step()
    hook.remove()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    flops = model_flops(model, anatomy, params, batch, seen["vision_tokens"])
    row = {"shape": shape_name, "method": method, "batch": args.batch, "dtype": args.dtype,
           "device": str(device), "step_s": step_s, "samples_per_s": args.batch / step_s,
           "tokens_per_s": batch["input_ids"].numel() / step_s,
           "trainable": sum(p.numel() for p in params), "peak_gib": peak,
           "model_tflops_per_step": flops / 1e12,
           "mfu": flops / step_s / (args.peak_tflops * 1e12) if args.peak_tflops else None}
    if probe_s is not None:
        train_s = math.ceil(args.task_samples / args.batch) * step_s
        row.update(probe_batches=k1, probe_s=probe_s, probe_share=probe_s / (probe_s + train_s))
    return row


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default="internvl2-2b,qwen2-vl-2b,llava-1.5-7b")
    p.add_argument("--methods", default="seq-lora,dmole,moelora,branchlora")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the device's dense peak in this dtype (0: no MFU)")
    p.add_argument("--task-samples", type=int, default=10_000,
                   help="samples of one task, for the probe's share of its stage")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, float32, shrunken shapes, batch 2, 2 steps (a check, not a figure)")
    p.add_argument("--json", default=None, help="output file")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.dtype, args.peak_tflops = "cpu", "float32", 0.0
        args.batch, args.steps, args.warmup = min(args.batch, 2), min(args.steps, 2), 1
    import torch

    rows = []
    for s in args.shapes.split(","):
        for m in args.methods.split(","):
            rows.append(measure(s, m, args))
            gc.collect()  # the model and optimiser of the last measure go with its frame
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    for s in {r["shape"] for r in rows}:
        lora = next((r for r in rows if r["shape"] == s and r["method"] == "seq-lora"), None)
        for r in rows:
            if r["shape"] == s and lora is not None:
                r["step_over_lora"] = r["step_s"] / lora["step_s"]
    out = Path(args.json) if args.json else RESULTS / ("gpu_smoke.json" if args.smoke
                                                       else "gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    device = (torch.cuda.get_device_name(torch.device(args.device))
              if args.device.startswith("cuda") else platform.processor() or "cpu")
    out.write_text(json.dumps({"device": device, "torch": torch.__version__,
                               "args": vars(args), "rows": rows}, indent=1))
    import pandas as pd

    cols = ["shape", "method", "samples_per_s", "tokens_per_s", "peak_gib", "mfu",
            "probe_share", "step_over_lora"]
    table = pd.DataFrame(rows).reindex(columns=cols)
    with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
        print(f"{device}, {args.dtype}, batch {args.batch}")
        print(table.to_string(index=False))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
