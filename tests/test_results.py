"""Shipped runs: opening, finding by settings, the command that makes a missing one."""

import pytest

from dmole_lab.analysis.summaries import headline
from dmole_lab.viz import results


def test_find_runs_matches_dotted_settings_on_complete_runs(tmp_path, stored_run):
    stored_run(tmp_path / "dmole-a", budget=0.5)
    stored_run(tmp_path / "dmole-b", budget=0.25)
    found = results.find_runs({"method": "dmole", "dmole.budget": 0.25}, (tmp_path,))
    assert [s.root.name for s in found] == ["dmole-b"]
    assert results.find_runs({"dmole.nope": 1}, (tmp_path,)) == []
    assert results.find_runs({"dmole.budget": 0.5}, (tmp_path / "missing",)) == []
    assert headline(found[0]) == {"AVG": 40.0, "Last": 35.0, "BWT": -2.5}


def test_run_command_spells_the_overrides():
    cmd = results.run_command("tiny", {"method": "dmole", "dmole.budget": 0.25})
    assert cmd == "dmole-lab run --preset tiny --method=dmole --dmole.budget=0.25"


def test_open_or_run_opens_the_shipped_run_without_training():
    store = results.open_or_run("seq-lora-tiny", "seq-lora")
    assert store.root.name == "seq-lora-tiny" and store.manifest()["status"] == "complete"
    with pytest.raises(FileNotFoundError, match="no stored run 'nope'"):
        results.open_or_run("nope", "dmole")


def test_shipped_comparison_carries_the_light_folder_of_every_run_in_its_table():
    """A fresh clone resumes the sweep from these folders (bench_compare --resume-from)."""
    from dmole_lab.store import RunStore

    scores, runs = results.open_comparison("compare-tiny")
    root = results.RESULTS_DIR / "compare-tiny" / "runs"
    assert sorted(p.name for p in root.iterdir()) == sorted(runs.run)
    for name in runs.run:
        store = RunStore(root / name)
        assert store.manifest()["status"] == "complete"
        assert len(store.summary("score_matrix")) > 0
