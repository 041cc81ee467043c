"""Smoke run of benchmarks/bench_plan_memory.py: one shape at one layer per tower; the plan's
estimate against the measured peak of a training step."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_plan_memory.py"


def test_bench_plan_memory_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_plan_memory", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "plan_memory.json"
    assert mod.main(["--shapes", "internvl2-2b", "--methods", "dmole", "--layers", "1,1",
                     "--batch", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["measured_peak_mb"] > 100 and row["rss_peak_mb"] >= row["measured_peak_mb"] / 2
    assert 0.8 <= row["estimate_over_measured"] <= 1.2
