"""Smoke run of benchmarks/bench_formats_scale.py: a tiny LLaVA file, in one process, writes
the figures it reports."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_formats_scale.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_formats_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_formats_scale_smoke(tmp_path):
    out = tmp_path / "formats_scale.json"
    rc = _bench().main(["--sizes", "200", "--epoch-records", "32", "--image-pool", "20",
                        "--batch", "8", "--in-process", "--workdir", str(tmp_path / "work"),
                        "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert set(r) >= {"settings", "generation", "file", "in_memory", "growth", "comparison"}
    assert r["settings"]["sizes"] == [200] and not r["settings"]["isolated_processes"]
    assert r["generation"]["pool_images"] == 20
    assert len(list((tmp_path / "work" / "images").glob("*.png"))) == 20
    for row in (r["file"][0], r["in_memory"][0]):
        assert row["n"] == row["samples"] == 200
        assert row["load_seconds"] > 0 and row["first_batch_seconds"] > 0
        assert row["rss_hwm_after_load_mb"] >= row["rss_hwm_baseline_mb"] > 0
        assert row["traced_peak_mb"] >= row["traced_retained_mb"] >= 0
        ep = row["epoch"]
        assert ep["records"] == 32 and ep["batches"] == 4 and ep["samples_per_s"] > 0
    assert r["file"][0]["arrow_bytes"] > 0 and r["file"][0]["encode_seconds"] > 0
    # the lazy view holds text rows only; the in-memory list holds every image as an array
    assert r["file"][0]["traced_retained_mb"] < r["in_memory"][0]["traced_retained_mb"]
    cmp = r["comparison"][0]
    assert cmp["n"] == 200 and cmp["in_memory"]["extrapolated"] is False
