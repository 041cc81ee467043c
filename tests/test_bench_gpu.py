"""Smoke run of benchmarks/bench_gpu.py on the CPU: a shrunken LLaVA-1.5-7B shape (real image
size, token counts and vocabulary; one head per tower, two layers), LoRA against D-MoLE."""

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"


def test_bench_gpu_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gpu.json"
    assert mod.main(["--smoke", "--shapes", "llava-1.5-7b", "--methods", "seq-lora,dmole",
                     "--batch", "1", "--task-samples", "100", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    lora, dmole = rows["seq-lora"], rows["dmole"]
    assert lora["step_over_lora"] == 1.0
    assert math.isclose(dmole["step_over_lora"], dmole["step_s"] / lora["step_s"])
    assert lora["tokens_per_s"] == (576 + 128) * lora["samples_per_s"]
    assert 0 < dmole["probe_share"] < 1 and dmole["probe_batches"] == 2  # K = 1% of 100
    assert dmole["trainable"] > 0 and lora["trainable"] > 0
    assert lora["model_tflops_per_step"] > 0 and lora["mfu"] is None  # no peak on a CPU
