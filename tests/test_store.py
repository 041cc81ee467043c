import json

import pandas as pd
import pytest
import torch

from dmole_lab.config import RunConfig, apply_overrides
from dmole_lab.store import RunStore, write_json


def test_manifest_first_and_stage_lifecycle(tmp_path):
    cfg = RunConfig()
    store = RunStore.for_config(cfg, tmp_path)
    m = store.manifest()
    assert m["config_hash"] and m["status"] == "running" and "torch" in m["versions"]
    assert not store.stage_done(0)
    store.finish_stage(0, {"scores": pd.DataFrame({"stage": [0], "value": [1.0]})},
                       state={"w": torch.ones(2)}, info={"task": None})
    assert store.stage_done(0)
    assert torch.equal(store.stage_state(0)["w"], torch.ones(2))
    assert store.table("scores")["value"].tolist() == [1.0]
    # reopening the same config keeps what was done
    again = RunStore.for_config(cfg, tmp_path)
    assert again.stage_done(0)


def test_files_without_manifest_mark_do_not_count(tmp_path):
    store = RunStore.for_config(RunConfig(), tmp_path)
    d = store.stage_dir(1)
    d.mkdir(parents=True)
    pd.DataFrame({"stage": [1], "value": [2.0]}).to_parquet(d / "scores.parquet")
    assert not store.stage_done(1)
    with pytest.raises(FileNotFoundError, match="no finished stage"):
        store.table("scores")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_run_names_differ_by_seed(tmp_path):
    a = RunStore.run_name(RunConfig())
    b = RunStore.run_name(apply_overrides(RunConfig(), {"seed": 5}))
    assert a != b and a.startswith("seq-lora-")
