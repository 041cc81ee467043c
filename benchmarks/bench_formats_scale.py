"""Does the lazy LLaVA reader scale? File-backed samples against today's in-memory list.

Usage: python benchmarks/bench_formats_scale.py [--sizes 20000,200000] [--batch 16]
                                                [--epoch-records 10000] [--image-pool 1000]
                                                [--inmem-max 20000] [--format jsonl]

For each size N a LLaVA conversation file of N single-turn records is generated (JSON Lines by
default, ``--format json`` for one JSON list) with small PNG images on disk. To keep generation
within minutes the images are a pool of ``--image-pool`` distinct synthetic samples (1,000 by
default, the stream's nine tasks interleaved) referenced round-robin: record i carries the
image, question and answer of pool sample i mod pool. ``read_llava`` reads it into a lazy
``SampleView`` (Arrow rows on disk, images decoded on access). The reference is today's
in-memory path: ``make_samples`` over the same nine tasks, every image held as an array in a
list. Generating that list is slow (about 700 samples/s on 2 cores), so it runs at
min(N, ``--inmem-max``) samples and its per-sample figures are extrapolated linearly to N
(``in_memory[...]["extrapolated"]`` says where). For each path and size it reports

- load: seconds to build the stream (lazy: validate + build the Arrow cache cold, and again
  with the cache warm; in-memory: generate the list), the process RSS high-water mark before
  and after (resource.getrusage) and, in a second traced build in the same process, the
  tracemalloc peak and what stays allocated (Python allocations only: Arrow's own buffers and
  memory-mapped files are not seen by tracemalloc, RSS sees them);
- lazy path, as a run takes it: ``encode`` of the whole view (lazy: the answers' tokens only;
  its seconds and the RSS after), then batches cut by ``train_batch``, which fetches, decodes
  and processes each batch's samples with the tiny model's processor;
- first batch: seconds of one batch of ``--batch`` samples, and the time to it (load +
  encode + first batch; in memory: load + encode and cut the first batch);
- one epoch: shuffled batches of ``--batch`` over ``--epoch-records`` records (0: all), samples
  per second and the implied seconds for a whole epoch of N (in memory also split into fetch /
  decode / encode);
- growth: bytes per record of the RSS growth and of the tracemalloc peak, and their slope
  between sizes (does memory grow with N beyond the index?).

Every (path, size) runs in its own subprocess so each RSS high-water mark is its own. Torch
runs on one thread (the machine is shared). Writes benchmarks/results/formats_scale.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

MB = 1 << 20


# ------------------------------------------------------------------------------ measuring


def rss_hwm() -> int:
    """The process's RSS high-water mark in bytes (getrusage reports KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_now() -> int:
    """The process's current RSS in bytes (VmRSS; 0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def inmem_samples(n: int, seed: int) -> list:
    """Today's in-memory path: ``n`` samples over the stream's nine tasks, images as arrays."""
    from dmole_lab.data.tasks import TASKS, make_samples

    names = list(TASKS)
    per = [n // len(names) + (k < n % len(names)) for k in range(len(names))]
    out = []
    for name, k in zip(names, per):
        if k:
            out += make_samples(name, k, "train", seed)
    return out


def pool_samples(n: int, seed: int) -> list:
    """``n`` synthetic samples with the nine tasks interleaved (the image pool)."""
    from dmole_lab.data.tasks import TASKS

    per_task = [inmem_samples_one(name, math.ceil(n / len(TASKS)), seed) for name in TASKS]
    return [s for group in zip(*per_task) for s in group][:n]


def inmem_samples_one(name: str, n: int, seed: int) -> list:
    """``n`` samples of task ``name`` (stream 7, apart from the in-memory reference)."""
    from dmole_lab.data.tasks import make_samples

    return make_samples(name, n, "train", seed, stream=7)


def generate(workdir: Path, sizes: list[int], pool: int, fmt: str, seed: int) -> dict:
    """Write the image pool and one LLaVA file per size; returns paths, sizes and seconds."""
    from dmole_lab.data.formats import save_png

    t = time.perf_counter()
    samples = pool_samples(pool, seed)
    rels = []
    for j, s in enumerate(samples):
        rel = f"images/p{j:05d}.png"
        save_png(s.image, workdir / rel)
        rels.append(rel)
    pool_seconds = time.perf_counter() - t
    image_bytes = sum((workdir / r).stat().st_size for r in rels)
    lines = [json.dumps({"image": rels[j], "conversations": [
        {"from": "human", "value": "<image>\n" + samples[j].question},
        {"from": "gpt", "value": samples[j].answer}]}) for j in range(len(samples))]
    files = {}
    for n in sizes:
        t = time.perf_counter()
        path = workdir / f"llava_{n}.{fmt}"
        with open(path, "w", encoding="utf-8") as f:
            if fmt == "json":
                f.write("[\n")
            for i in range(n):
                # the id goes first, as LLaVA files have it; the rest is the pool record
                rec = '{"id": "r%07d", ' % i + lines[i % len(lines)][1:]
                sep = (",\n" if i < n - 1 else "\n") if fmt == "json" else "\n"
                f.write(rec + sep)
            if fmt == "json":
                f.write("]\n")
        files[n] = {"path": str(path), "bytes": path.stat().st_size,
                    "seconds": round(time.perf_counter() - t, 3)}
    return {"pool_images": len(rels), "pool_seconds": round(pool_seconds, 3),
            "pool_image_bytes": image_bytes, "files": files}


# ------------------------------------------------------------------------------ the worker


def _epoch(get, n: int, processor, batch: int, records: int, seed: int) -> dict:
    """Shuffled batches over ``records`` of ``n`` samples: fetch, decode, encode each."""
    import numpy as np

    from dmole_lab.data.encode import encode, train_batch

    order = np.random.default_rng(seed).permutation(n)[: (records or n)]
    fetch = decode = enc_s = 0.0
    n_batches = 0
    t0 = time.perf_counter()
    for start in range(0, len(order), batch):
        idx = [int(i) for i in order[start : start + batch]]
        t = time.perf_counter()
        samples = get(idx)
        t1 = time.perf_counter()
        samples = [s.materialize() if hasattr(s, "materialize") else s for s in samples]
        t2 = time.perf_counter()
        train_batch(encode(processor, samples), list(range(len(samples))))
        t3 = time.perf_counter()
        fetch, decode, enc_s = fetch + t1 - t, decode + t2 - t1, enc_s + t3 - t2
        n_batches += 1
    seconds = time.perf_counter() - t0
    return {"records": len(order), "batches": n_batches, "seconds": round(seconds, 3),
            "fetch_seconds": round(fetch, 3), "decode_seconds": round(decode, 3),
            "encode_seconds": round(enc_s, 3),
            "samples_per_s": round(len(order) / seconds, 1),
            "full_epoch_seconds_est": round(n * seconds / len(order), 1)}


def _epoch_lazy(enc, batch: int, records: int, seed: int) -> dict:
    """Shuffled batches over ``records`` of a lazy Encoded, as the training loop cuts them
    (``train_batch``: fetch, decode, process, pad in one call)."""
    import numpy as np

    from dmole_lab.data.encode import train_batch

    order = np.random.default_rng(seed).permutation(len(enc))[: (records or len(enc))]
    n_batches = 0
    t0 = time.perf_counter()
    for start in range(0, len(order), batch):
        train_batch(enc, [int(i) for i in order[start : start + batch]])
        n_batches += 1
    seconds = time.perf_counter() - t0
    return {"records": len(order), "batches": n_batches, "seconds": round(seconds, 3),
            "samples_per_s": round(len(order) / seconds, 1),
            "full_epoch_seconds_est": round(len(enc) * seconds / len(order), 1)}


def worker(args) -> dict:
    """Measure one (path, size) in this process; returns the figures."""
    import datasets  # noqa: F401 - imported before the baseline, like the reader's caller
    import torch
    from transformers import AutoProcessor

    from dmole_lab.config import ModelConfig, resolve_path
    from dmole_lab.data.encode import encode, train_batch
    from dmole_lab.data.formats import read_llava

    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(str(resolve_path(ModelConfig().path)),
                                              local_files_only=True)
    n, lazy = args.n, args.worker == "file"
    cache = Path(args.cache_dir) if lazy else None

    def build(cache_dir: Path | None):
        if lazy:
            return read_llava(args.file, cache_dir=cache_dir)
        return inmem_samples(n, args.seed)

    # warm-up outside the figures: first-call imports and caches of the reader / generator
    if lazy:
        warm = cache / "warm.jsonl"
        warm.parent.mkdir(parents=True, exist_ok=True)
        with open(args.file, encoding="utf-8") as f:
            head = f.readline() if args.file.endswith(".jsonl") else json.load(f)[0]
        warm.write_text(head if isinstance(head, str) else json.dumps(head) + "\n")
        read_llava(warm, Path(args.file).parent, cache_dir=cache / "warm")
    else:
        inmem_samples(9, args.seed + 1)
    gc.collect()
    out: dict = {"n": n, "rss_hwm_baseline_mb": round(rss_hwm() / MB, 1),
                 "rss_baseline_mb": round(rss_now() / MB, 1)}
    base = rss_hwm()
    t = time.perf_counter()
    stream = build(cache / "a" if lazy else None)
    out["load_seconds"] = round(time.perf_counter() - t, 3)
    out["samples"] = len(stream)
    out["load_records_per_s"] = round(n / out["load_seconds"], 1)
    growth = rss_hwm() - base
    out.update(rss_hwm_after_load_mb=round(rss_hwm() / MB, 1),
               rss_after_load_mb=round(rss_now() / MB, 1),
               rss_load_growth_mb=round(growth / MB, 1),
               rss_load_growth_bytes_per_record=round(growth / n, 1))
    if lazy:
        out["arrow_bytes"] = sum(os.path.getsize(f["filename"]) for f in stream.rows.cache_files)

    def get(idx):
        return stream[idx] if lazy else [stream[i] for i in idx]

    if lazy:  # the library's path: encode lazily (answers only), batches from train_batch
        t = time.perf_counter()
        enc = encode(processor, stream)
        out["encode_seconds"] = round(time.perf_counter() - t, 3)
        out["rss_after_encode_mb"] = round(rss_now() / MB, 1)
        out["rss_encode_growth_bytes_per_record"] = round((rss_hwm() - base) / n, 1)
        t = time.perf_counter()
        first = list(range(min(args.batch, n)))
        train_batch(enc, first)
        out["first_batch_seconds"] = round(time.perf_counter() - t, 4)
        out["time_to_first_batch_seconds"] = round(
            out["load_seconds"] + out["encode_seconds"] + out["first_batch_seconds"], 3)
        out["epoch"] = _epoch_lazy(enc, args.batch, args.epoch_records, args.seed)
        del enc
    else:
        t = time.perf_counter()
        first = get(list(range(min(args.batch, n))))
        train_batch(encode(processor, first), list(range(len(first))))
        out["first_batch_seconds"] = round(time.perf_counter() - t, 4)
        out["time_to_first_batch_seconds"] = round(
            out["load_seconds"] + out["first_batch_seconds"], 3)
        out["epoch"] = _epoch(get, len(stream), processor, args.batch, args.epoch_records,
                              args.seed)
    out["rss_hwm_end_mb"] = round(rss_hwm() / MB, 1)
    del stream, first
    gc.collect()
    if lazy:  # the Arrow cache of the first build is there now: a second read reuses it
        t = time.perf_counter()
        again = build(cache / "a")
        out["load_warm_seconds"] = round(time.perf_counter() - t, 3)
        del again
        gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    stream = build(cache / "b" if lazy else None)  # cold again (a fresh Arrow cache)
    traced = time.perf_counter() - t
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out.update(traced_load_seconds=round(traced, 3), traced_peak_mb=round(peak / MB, 2),
               traced_retained_mb=round(current / MB, 2),
               traced_peak_bytes_per_record=round(peak / n, 1),
               traced_retained_bytes_per_record=round(current / n, 1))
    return out


def run_worker(kind: str, n: int, args, file: str | None, cache_dir: Path) -> dict:
    """Run :func:`worker` in a fresh interpreter (its own RSS high-water mark)."""
    res = cache_dir / f"{kind}_{n}.json"
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--batch", str(args.batch),
           "--epoch-records", str(min(args.epoch_records or n, n)), "--seed", str(args.seed),
           "--cache-dir", str(cache_dir / f"cache_{kind}_{n}"), "--worker-out", str(res)]
    if file:
        cmd += ["--file", file]
    if args.in_process:  # one interpreter for everything: RSS high-water marks are shared
        return worker(p_worker().parse_args(cmd[2:]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(res.read_text())


# ------------------------------------------------------------------------------ summary


def slopes(rows: list[dict], key: str) -> list[dict]:
    """Bytes per record between consecutive sizes of figure ``key`` (in MB in the rows)."""
    out = []
    for a, b in zip(rows, rows[1:]):
        if b["n"] > a["n"]:
            out.append({"from": a["n"], "to": b["n"], "bytes_per_record": round(
                (b[key] - a[key]) * MB / (b["n"] - a["n"]), 1)})
    return out


def extrapolate(ref: dict, n: int) -> dict:
    """The in-memory figures of ``ref`` scaled linearly to ``n`` samples."""
    k = n / ref["n"]
    return {"n": n, "from_n": ref["n"], "extrapolated": n != ref["n"],
            "load_seconds": round(ref["load_seconds"] * k, 2),
            "rss_load_growth_mb": round(ref["rss_load_growth_mb"] * k, 1),
            "traced_peak_mb": round(ref["traced_peak_mb"] * k, 1),
            "samples_per_s": ref["epoch"]["samples_per_s"],
            "full_epoch_seconds_est": round(n / ref["epoch"]["samples_per_s"], 1)}


def p_worker(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of the per-measurement subprocess (hidden in ``--help``)."""
    p = p or argparse.ArgumentParser()
    p.add_argument("--worker", choices=("file", "memory"), help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=16, help="samples per batch")
    p.add_argument("--epoch-records", type=int, default=0,
                   help="records the epoch pass covers (0: the whole epoch)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    """Generate the files, measure each path and size in a subprocess, print and store."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="20000,200000", help="comma-separated record counts")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process, no subprocesses (quick; RSS marks shared)")
    p.add_argument("--image-pool", type=int, default=1000,
                   help="distinct images on disk, referenced round-robin")
    p.add_argument("--inmem-max", type=int, default=20000,
                   help="largest in-memory reference list; larger sizes are extrapolated")
    p.add_argument("--format", choices=("jsonl", "json"), default="jsonl")
    p.add_argument("--workdir", default=None, help="where files go (default: a temp folder, "
                   "removed afterwards)")
    p.add_argument("--json",
                   default=str(Path(__file__).with_name("results") / "formats_scale.json"))
    args = p_worker(p).parse_args(argv)
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(worker(args)))
        return 0

    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    if not sizes or sizes[0] < 1 or args.batch < 1:
        p.error("--sizes needs positive record counts and --batch >= 1")
    inmem_sizes = sorted({min(n, args.inmem_max) for n in sizes})
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="formats_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    load_avg = os.getloadavg()
    try:
        gen = generate(workdir, sizes, args.image_pool, args.format, args.seed)
        print(f"generated {args.image_pool} images in {gen['pool_seconds']:.1f} s; files: "
              + ", ".join(f"{n}: {v['bytes'] / MB:.1f} MB in {v['seconds']:.1f} s"
                          for n, v in gen["files"].items()), flush=True)
        file_rows, mem_rows = [], []
        for n in sizes:
            file_rows.append(run_worker("file", n, args, gen["files"][n]["path"], workdir))
            print(f"file N={n}: {json.dumps(file_rows[-1])}", flush=True)
        for n in inmem_sizes:
            mem_rows.append(run_worker("memory", n, args, None, workdir))
            print(f"in-memory N={n}: {json.dumps(mem_rows[-1])}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    gen["files"] = {str(n): {k: v for k, v in f.items() if k != "path"}
                    for n, f in gen["files"].items()}

    comparison = []
    for row in file_rows:
        ref = max((r for r in mem_rows if r["n"] <= row["n"]), key=lambda r: r["n"])
        mem = extrapolate(ref, row["n"])
        comparison.append({
            "n": row["n"], "in_memory": mem,
            "file_load_seconds": row["load_seconds"],
            "file_rss_load_growth_mb": row["rss_load_growth_mb"],
            "file_traced_peak_mb": row["traced_peak_mb"],
            "file_samples_per_s": row["epoch"]["samples_per_s"],
            "file_full_epoch_seconds_est": row["epoch"]["full_epoch_seconds_est"],
            "rss_growth_ratio_file_over_memory": round(
                row["rss_load_growth_mb"] / mem["rss_load_growth_mb"], 3)
            if mem["rss_load_growth_mb"] else None,
            "throughput_ratio_file_over_memory": round(
                row["epoch"]["samples_per_s"] / mem["samples_per_s"], 3)})
    result = {
        "what": "lazy LLaVA file reader (read_llava -> SampleView) vs in-memory synthetic "
                "samples: load time and memory, first batch, per-batch-encoded epoch, "
                "memory per record across sizes",
        "settings": {"sizes": sizes, "inmem_sizes": inmem_sizes, "batch": args.batch,
                     "epoch_records": args.epoch_records, "image_pool": args.image_pool,
                     "images_round_robin": True, "format": args.format, "seed": args.seed,
                     "isolated_processes": not args.in_process,
                     "torch_threads": 1, "cpu_count": os.cpu_count(),
                     "load_avg_at_start": [round(x, 2) for x in load_avg]},
        "generation": gen,
        "file": file_rows,
        "in_memory": mem_rows,
        "growth": {
            "file_rss_bytes_per_record": slopes(file_rows, "rss_load_growth_mb"),
            "file_traced_peak_bytes_per_record": slopes(file_rows, "traced_peak_mb"),
            "file_traced_retained_bytes_per_record": slopes(file_rows, "traced_retained_mb"),
            "memory_rss_bytes_per_record": slopes(mem_rows, "rss_load_growth_mb"),
            "memory_traced_peak_bytes_per_record": slopes(mem_rows, "traced_peak_mb"),
            "memory_rss_bytes_per_sample_at_largest": mem_rows[-1][
                "rss_load_growth_bytes_per_record"],
        },
        "comparison": comparison,
        "total_seconds": round(time.perf_counter() - t_all, 1),
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"growth": result["growth"], "comparison": comparison}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
