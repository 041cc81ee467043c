"""benchmarks/same_runs.py tells identical runs from runs whose predictions differ."""

import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import same_runs  # noqa: E402


def _fake_run(root: Path, prediction: str, seconds: float) -> Path:
    run = root / "dmole-abc"
    (run / "stages" / "00").mkdir(parents=True)
    (run / "manifest.json").write_text("{}")
    pd.DataFrame({"eval_task": ["ocr"], "metric": ["exact"], "value": [50.0],
                  "seconds": [seconds]}).to_parquet(run / "stages/00/scores.parquet")
    pd.DataFrame({"prediction": [prediction]}).to_parquet(run / "stages/00/predictions.parquet")
    return run


def test_same_runs_ignores_wall_time_and_catches_a_changed_prediction(tmp_path, capsys):
    _fake_run(tmp_path / "a", "7", seconds=1.0)
    _fake_run(tmp_path / "b", "7", seconds=2.5)  # only the time differs
    assert same_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "dmole-abc: identical (1 stages)" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "b")
    _fake_run(tmp_path / "b", "8", seconds=1.0)
    assert same_runs.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    assert "stage 00 predictions" in capsys.readouterr().out
