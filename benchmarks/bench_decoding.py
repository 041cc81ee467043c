"""Greedy decoding with transformers' default (dynamic) KV cache against its static cache.

Usage: python benchmarks/bench_decoding.py [--preset tiny] [--rounds 3] [--threads 1]
                                           [--json PATH] [overrides...]

Generates the answers of every test set of the preset's stream with the base model, as one
evaluation stage does (``dmole_lab.training.evaluation.generate``: one batch per set, greedy,
``eval.max_new_tokens``), once per cache in alternating order for ``--rounds`` rounds. Reports
each round's seconds, whether the two caches gave the same tokens, and how many tokens the
answers took against the cap (``generate`` stops a batch when every sequence has ended).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.data.encode import encode, placement, prompt_batch, to_device
from dmole_lab.data.stream import build_stream
from dmole_lab.models.loading import load_model

CACHES = {"dynamic": {}, "static": {"cache_implementation": "static"}}


@torch.no_grad()
def decode_sets(model, sets: dict, tok, max_new_tokens: int, **kw) -> tuple[float, list]:
    """Seconds to generate every set (one batch each) and the new tokens of each."""
    device, dtype = placement(model)
    outs = []
    start = time.perf_counter()
    for data in sets.values():
        batch = to_device(prompt_batch(data, list(range(len(data)))), device, dtype)
        gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=data.pad_id, eos_token_id=tok.eos_token_id, **kw)
        outs.append(gen[:, batch["input_ids"].shape[1]:])
    return time.perf_counter() - start, outs


def main(argv=None) -> int:
    """Time both caches in alternating rounds and report."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (make demo's workers: 1)")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "decoding.json"))
    args, rest = p.parse_known_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    cfg = build_config(args.preset, parse_cli_overrides(rest))
    torch.set_num_threads(args.threads)
    model, processor = load_model(cfg.model)
    model.eval()
    sets = {k: encode(processor, v) for k, v in build_stream(cfg.stream, progress=False)
            .test.items()}
    seconds: dict[str, list[float]] = {name: [] for name in CACHES}
    same, lengths = True, []
    for r in range(args.rounds):
        order = list(CACHES) if r % 2 == 0 else list(reversed(CACHES))
        tokens = {}
        for name in order:
            t, tokens[name] = decode_sets(model, sets, processor.tokenizer,
                                          cfg.eval.max_new_tokens, **CACHES[name])
            seconds[name].append(round(t, 4))
        same &= all(torch.equal(a, b) for a, b in zip(tokens["dynamic"], tokens["static"]))
        lengths = [int(x.shape[1]) for x in tokens["dynamic"]]
    ratio = statistics.median(s / d for s, d in zip(seconds["static"], seconds["dynamic"]))
    out = {"preset": args.preset, "threads": args.threads, "overrides": rest,
           "sets": len(sets), "samples": sum(len(d) for d in sets.values()),
           "max_new_tokens": cfg.eval.max_new_tokens, "tokens_per_set": lengths,
           "seconds": seconds, "static_over_dynamic": round(ratio, 3), "same_tokens": same}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
