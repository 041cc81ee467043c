"""How well D-MoLE's autoencoder routers tell the stream's tasks apart, and what they cost.

Usage: python benchmarks/bench_router.py [--preset tiny] [--tasks a,b] [--normalise parts,whole]
                                         [--hidden 128] [--batch 64,0] [--lr 1e-3,3e-3]
                                         [--output-bias mean,default] [overrides...]

For each way of normalising the routing features (``representations(normalise=...)``,
docs/method.md section 2 step 4) and each combination of autoencoder width, batch size, learning
rate and output-bias start (default: the preset's ``dmole.router_*``), it caches the base
model's features of every task's training and test samples, fits one autoencoder per task and
reports on the test samples of all tasks together:

- ``vote_accuracy``: share of samples whose vote (best reconstruction among the accepting
  autoencoders) is their own task, averaged over tasks;
- ``batch_accuracy``: share of evaluation batches (``eval.batch_size``) whose top routed task
  under the support rule is their own task;
- ``own_accept``: share of a task's samples its own autoencoder accepts (the quantile makes
  this ~0.95 on training data);
- ``false_accept``: share of another task's samples an autoencoder accepts (averaged over
  ordered pairs): the cause of experts switched on for the wrong task;
- ``mean_epochs``: epochs the fits ran before early stopping;
- seconds to compute the features and to fit the autoencoders.

Writes benchmarks/results/router.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from dmole_lab.config import build_config, parse_cli_overrides
from dmole_lab.data.encode import encode
from dmole_lab.data.stream import build_stream
from dmole_lab.dmole.router import Router, representations, train_autoencoder
from dmole_lab.models.anatomy import anatomy_of
from dmole_lab.models.loading import load_model


def router_scores(router: Router, test: dict, batch_size: int) -> dict[str, float]:
    """Vote/batch accuracy, own- and false-accept rates of ``router`` on per-task features."""
    tasks = list(test)
    vote, batch = [], []
    for t, z in test.items():
        vote.append(np.mean([v == t for v in router.votes(z)]))
        tops = [router.route_inference(z[s : s + batch_size]) for s in range(0, len(z),
                                                                           batch_size)]
        batch.append(np.mean([bool(a) and a[0] == t for a in tops]))
    accept = {(a, b): float((router.autoencoders[a].errors(test[b])
                             <= router.autoencoders[a].threshold).float().mean())
              for a in tasks for b in tasks}
    return {
        "vote_accuracy": round(float(np.mean(vote)), 3),
        "batch_accuracy": round(float(np.mean(batch)), 3),
        "own_accept": round(float(np.mean([accept[t, t] for t in tasks])), 3),
        "false_accept": round(float(np.mean([v for (a, b), v in accept.items() if a != b])), 3),
    }


def main(argv=None) -> int:
    """Compute the features, fit the routers, print and store the comparison."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--tasks", default=None, help="comma-separated (default: the whole stream)")
    p.add_argument("--normalise", default="parts,whole", help="comma-separated modes")
    p.add_argument("--hidden", default=None,
                   help="comma-separated autoencoder widths (default: dmole.router_hidden)")
    p.add_argument("--batch", default=None,
                   help="comma-separated autoencoder batch sizes, 0 = full batch "
                        "(default: dmole.router_batch_size)")
    p.add_argument("--lr", default=None,
                   help="comma-separated autoencoder learning rates (default: dmole.router_lr)")
    p.add_argument("--output-bias", default=None,
                   help="comma-separated decoder bias inits (default: dmole.router_output_bias)")
    p.add_argument("--json", default=str(Path(__file__).with_name("results") / "router.json"))
    args, rest = p.parse_known_args(argv)
    cfg = build_config(args.preset, parse_cli_overrides(rest))
    c = cfg.dmole
    tasks = args.tasks.split(",") if args.tasks else list(cfg.stream.tasks)
    widths = [int(h) for h in args.hidden.split(",")] if args.hidden else [c.router_hidden]
    batches = ([int(b) for b in args.batch.split(",")] if args.batch
               else [c.router_batch_size])
    lrs = [float(v) for v in args.lr.split(",")] if args.lr else [c.router_lr]
    biases = args.output_bias.split(",") if args.output_bias else [c.router_output_bias]

    model, processor = load_model(cfg.model)
    anatomy = anatomy_of(model)
    stream = build_stream(cfg.stream, progress=False)
    data = {(t, split): encode(processor, getattr(stream, split)[t])
            for t in tasks for split in ("train", "test")}
    rows = []
    for mode in args.normalise.split(","):
        t0 = time.perf_counter()
        z = {key: representations(model, d, anatomy, batch_size=cfg.eval.batch_size,
                                  normalise=mode) for key, d in data.items()}
        feature_s = time.perf_counter() - t0
        for hidden, batch, lr, bias in itertools.product(widths, batches, lrs, biases):
            t0 = time.perf_counter()
            router = Router(support=c.router_support)
            for t in tasks:
                router.add(t, train_autoencoder(z[t, "train"], hidden,
                                                max_epochs=c.router_epochs,
                                                batch_size=batch, lr=lr, output_bias=bias,
                                                quantile=c.router_quantile, seed=cfg.seed))
            fit_s = time.perf_counter() - t0
            scores = router_scores(router, {t: z[t, "test"] for t in tasks},
                                   cfg.eval.batch_size)
            epochs = [router.autoencoders[t].epochs for t in tasks]
            rows.append({"normalise": mode, "hidden": hidden, "batch": batch, "lr": lr,
                         "output_bias": bias, **scores,
                         "mean_epochs": round(float(np.mean(epochs)), 1),
                         "feature_seconds": round(feature_s, 1),
                         "fit_seconds": round(fit_s, 1)})
            print(rows[-1], flush=True)
    result = {"preset": args.preset, "tasks": tasks,
              "n_train": cfg.stream.n_train, "n_test": cfg.stream.n_test,
              "feature_dim": int(next(iter(z.values())).shape[1]), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
