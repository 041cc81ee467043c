"""Does `dmole-lab plan`'s memory estimate hold? Its figure against a measured peak.

Usage: python benchmarks/bench_plan_memory.py [--shapes internvl2-2b,qwen2-vl-2b]
                                              [--layers 4,4] [--batch 2] [--dtype float32]
                                              [--methods seq-lora,dmole] [--device cpu]

For each shape and method, in its own process: the shape at real width with ``--layers``
(vision, LLM) layers is built, the method's adapters are put on it and AdamW is set up over the
trainable parameters, as a stage does. The baseline is the memory in use then (weights
included). One training step (forward, backward, optimiser step) of ``--batch`` samples of the
shape's size runs, and the peak above the baseline is measured: on CUDA
``torch.cuda.max_memory_allocated``, on the CPU the peak of what malloc has handed out
(mallinfo2, sampled every millisecond); the RSS high-water mark, which also keeps what malloc
caches, is reported beside it. The estimate is what `plan` adds
above the weights for that depth: 4 x the trainable bytes (parameters, gradients, two AdamW
moments) + activations (counted on a two-layer copy and scaled to ``--layers``, plus the
loss's float32 softmax and gradient).
Writes benchmarks/results/plan_memory.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

MB = 1 << 20


def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class MallocPeak:
    """Peak of the bytes glibc's malloc has handed out and not taken back (mallinfo2: in-use
    heap + mmap'd blocks), sampled every millisecond by a thread: on the CPU the counterpart of
    CUDA's max_memory_allocated (RSS also keeps what malloc caches)."""

    def __init__(self) -> None:
        import ctypes

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                "uordblks", "fordblks", "keepcost")]

        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = Info
        self.peak = 0
        self._stop = False

    def now(self) -> int:
        info = self._libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def __enter__(self):
        import threading
        import time

        def sample():
            while not self._stop:
                self.peak = max(self.peak, self.now())
                time.sleep(0.001)

        self.base = self.now()
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self.now())


def worker(args) -> dict:
    """Measure one (shape, method) in this process."""
    import copy

    import torch

    from dmole_lab.config import build_config
    from dmole_lab.engine.plan import activation_table, with_adapters
    from dmole_lab.models.anatomy import anatomy_of
    from dmole_lab.models.shapes import cut_down, dummy_batch, load_shape, shape_config

    torch.set_num_threads(2)
    shape = load_shape(args.shape)
    layers = tuple(int(x) for x in args.layers.split(","))
    cfg = build_config(None, {"model.shape": args.shape, "model.path": "/nowhere",
                              "model.dtype": args.dtype, "train.batch_size": args.batch})
    family = "dmole" if args.method == "dmole" else args.method
    act = activation_table(cfg, shape, shape_config(shape, layers), progress=False,
                           families=(family,))
    per_sample = float(act["activation_bytes_per_sample"].iloc[0]
                       + act["loss_bytes_per_sample"].iloc[0])
    model = cut_down(shape, layers, args.dtype)
    model = model.to(args.device)
    anatomy = anatomy_of(model)
    model, params = with_adapters(family, cfg, model, anatomy)
    trainable = sum(p.numel() * p.element_size() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = {k: v.to(args.device) for k, v in dummy_batch(shape, model.config, args.batch).items()}
    batch = {k: v.to(getattr(torch, args.dtype)) if v.is_floating_point() else v
             for k, v in batch.items()}
    del copy
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_now()
    model.train()
    with MallocPeak() as heap:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = heap.peak - heap.base
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    estimate = 4 * trainable + per_sample * args.batch
    return {"shape": args.shape, "method": args.method, "layers": list(layers),
            "batch": args.batch, "dtype": args.dtype, "device": args.device,
            "estimate_mb": round(estimate / MB, 1),
            "activations_mb": round(per_sample * args.batch / MB, 1),
            "trainable_state_mb": round(4 * trainable / MB, 1),
            "measured_peak_mb": round(peak / MB, 1),
            **({} if cuda else {"rss_peak_mb": round(rss_peak / MB, 1)}),
            "estimate_over_measured": round(estimate / peak, 3) if peak > 0 else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="internvl2-2b,qwen2-vl-2b")
    p.add_argument("--methods", default="seq-lora,dmole")
    p.add_argument("--layers", default="4,4")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=str(Path(__file__).parent / "results" / "plan_memory.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    rows = []
    for shape in args.shapes.split(","):
        for method in args.methods.split(","):
            cmd = [sys.executable, __file__, "--worker", "--shape", shape, "--method", method,
                   "--layers", args.layers, "--batch", str(args.batch), "--dtype", args.dtype,
                   "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
