"""The exercises' checks (dmole_lab/exercises.py) and their worked solutions (notebooks/solutions).

Every check accepts its right answer and rejects a wrong one: on the shipped results for the
exercises that read, on scratch runs made here from the shipped ones (and then changed, so the
check must follow the data) for those that train. Every solution file runs in seconds, its
checks say "right", and every exercise's section says how long the exercise takes.
"""

from __future__ import annotations

import json
import re
import runpy
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from dmole_lab import exercises
from dmole_lab.exercises import EXERCISES, check, right_answer
from dmole_lab.viz import results

SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"
#: Exercises whose right answer comes from the student's own training run.
TRAINING = ("01.4", "02.3", "02.4", "03.1", "03.4", "04.5", "05.3")
READING = [i for i in EXERCISES if i not in TRAINING]


def _as_student(right):
    """What a student would type for ``right``: one name of a set of tied names."""
    if isinstance(right, set):
        return sorted(right)[0]
    if isinstance(right, dict):
        return {k: _as_student(v) for k, v in right.items()}
    return right


def _wrong(right):
    """A wrong answer of the same form as ``right``."""
    if isinstance(right, bool):
        return not right
    if isinstance(right, int):
        return right + 1
    if isinstance(right, float):
        return right + 0.5 + abs(right)
    if isinstance(right, set):
        return "not-a-name"
    if isinstance(right, list):
        return right[:-1] if right else ["multitask"]
    if isinstance(right, dict):
        key = sorted(right)[0]
        return {**_as_student(right), key: _wrong(right[key])}
    raise TypeError(right)


@pytest.mark.parametrize("exercise_id", READING)
def test_each_check_accepts_the_right_answer_and_rejects_a_wrong_one(exercise_id, capsys):
    right = right_answer(exercise_id)
    assert check(exercise_id, _as_student(right)) is True
    assert capsys.readouterr().out.strip() == "right"
    assert check(exercise_id, _wrong(right)) is False
    assert capsys.readouterr().out.startswith("not quite: ")


def test_the_answers_on_the_shipped_results():
    """The shipped runs' answers, as the solutions quote them (a re-shipped run may move them;
    then the solutions' text needs the new numbers too)."""
    assert right_answer("01.1") == 8
    assert right_answer("01.2") == {"vision": {"grad_norm", "grad_norm_per_param"},
                                    "llm": {"snip"}}
    assert right_answer("01.3") == 15
    assert right_answer("01.5") == pytest.approx(-0.03, abs=0.01)
    assert right_answer("02.1") == [0, 1]
    assert right_answer("02.2") == ["grounding", "textcap", "count_mc", "ocr", "relation_cap",
                                    "color_mc", "arith_vqa", "color_vqa"]
    assert right_answer("02.5") == ["grounding", "textcap", "ocr", "relation_cap", "color_mc",
                                    "arith_vqa", "color_vqa"]
    assert right_answer("03.2") == ["textcap", "count_mc", "relation_cap", "color_mc"]
    assert right_answer("03.3") == pytest.approx(4.69, abs=0.01)
    assert right_answer("04.1") == []
    assert right_answer("04.2") == {"multitask"}
    assert right_answer("04.3")["kept"] == ["multitask"]
    assert right_answer("04.4") == {"Last": True, "MFT": False}
    assert right_answer("05.1") == {"(b) own experts only"}
    assert right_answer("05.2") == {"snip"}
    assert right_answer("05.4") == 20


@pytest.mark.parametrize("placeholder", [None, ...])
def test_a_placeholder_says_what_to_fill_in_without_reading_any_run(placeholder, tmp_path,
                                                                     capsys):
    for exercise_id in EXERCISES:
        assert check(exercise_id, placeholder, results_dir=tmp_path / "nothing",
                     runs_dir=tmp_path / "nothing") is False
        out = capsys.readouterr().out
        assert out.startswith(f"{exercise_id}: set `answer` to ") and EXERCISES[
            exercise_id].asks in out


def test_a_part_left_as_a_placeholder_is_not_right(capsys):
    assert check("04.4", {"Last": True, "MFT": None}) is False
    assert "MFT: not answered yet" in capsys.readouterr().out


def test_an_answer_of_the_wrong_form_is_told_the_expected_form(capsys):
    assert check("01.2", "snip") is False
    out = capsys.readouterr().out
    assert out.startswith("not quite: expected a dict") and '"vision"' in out
    assert check("01.1", "eight") is False
    assert "expected a number" in capsys.readouterr().out


def test_an_unknown_id_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown exercise '01.9'") as err:
        check("01.9", 1)
    assert all(i in str(err.value) for i in EXERCISES)


# ------------------------------------------------------------------------------------------
# exercises that train: the check reads a run in the scratch folder


def _copy_run(name: str, dest: Path, dmole: dict | None = None) -> Path:
    """The light part of shipped run ``name`` at ``dest``, with dmole.* settings changed."""
    shutil.copytree(results.RESULTS_DIR / name, dest)
    if dmole:
        m = json.loads((dest / "manifest.json").read_text())
        m["config"]["dmole"].update(dmole)
        (dest / "manifest.json").write_text(json.dumps(m))
    return dest


def _edit_table(run: Path, name: str, edit) -> None:
    path = run / "tables" / f"{name}.parquet"
    edit(pd.read_parquet(path)).to_parquet(path)


@pytest.mark.parametrize("exercise_id", TRAINING)
def test_a_missing_run_gets_its_command(exercise_id, tmp_path, capsys):
    assert check(exercise_id, True if exercise_id in ("01.4", "02.3", "05.3") else 1.0,
                 runs_dir=tmp_path) is False
    out = capsys.readouterr().out
    assert out.startswith(f"{exercise_id}: this exercise reads your own")
    assert re.search(r"`(dmole-lab|python benchmarks/)[^`]*`", out)
    assert re.search(r"\d+ min on 2 CPU cores", out)
    assert "results/" not in re.search(r"`[^`]*`", out).group(0)  # never over the shipped runs


def test_02_3_follows_the_half_budget_run(tmp_path, capsys):
    run = _copy_run("dmole-tiny", tmp_path / "dmole-half", {"budget": 0.25})
    assert right_answer("02.3", runs_dir=tmp_path) is False  # same scores: not lower
    assert check("02.3", False, runs_dir=tmp_path) and not check("02.3", True, runs_dir=tmp_path)
    _edit_table(run, "metrics", lambda m: m.assign(value=m["value"] - 1.0))
    assert right_answer("02.3", runs_dir=tmp_path) is True


def test_02_4_reads_the_per_sample_run(tmp_path):
    run = _copy_run("dmole-tiny", tmp_path / "dmole-sample", {"routing": "sample"})
    assert right_answer("02.4", runs_dir=tmp_path) == pytest.approx(1.0)

    def misroute(r):  # half of the last stage's caption samples go to the base model
        last = (r["stage"] == r["stage"].max()) & (r["eval_task"] == "caption")
        extra = r[last].assign(routed="", active="", count=r.loc[last, "count"])
        return pd.concat([r, extra], ignore_index=True)

    _edit_table(run, "routing", misroute)
    share = right_answer("02.4", runs_dir=tmp_path)
    assert share < 1.0
    assert check("02.4", share, runs_dir=tmp_path) and not check("02.4", 1.0, runs_dir=tmp_path)


def test_03_1_says_where_the_ratios_went(tmp_path):
    run = _copy_run("dmole-tiny", tmp_path / "dmole-continual", {"curriculum": "continual"})
    assert right_answer("03.1", runs_dir=tmp_path) == {"grad_norm": {"same"},
                                                        "rel_update": {"same"}}

    def balance(d):  # the LLM's gradients shrink towards the vision tower's
        shrink = (d["quantity"] == "grad_norm") & (d["tower"] == "llm")
        return d.assign(value=d["value"].where(~shrink, d["value"] / 4))

    _edit_table(run, "dynamics", balance)
    answer = {"grad_norm": "closer", "rel_update": "same"}
    assert check("03.1", answer, runs_dir=tmp_path)
    assert not check("03.1", {**answer, "grad_norm": "same"}, runs_dir=tmp_path)


def test_03_4_judges_a_prediction_against_the_v3_run(tmp_path):
    run = _copy_run("dmole-tiny", tmp_path / "dmole-v3", {"curriculum": "none"})
    measured = right_answer("03.4", runs_dir=tmp_path)
    assert check("03.4", measured * 1.2, runs_dir=tmp_path)
    assert not check("03.4", measured * 1.4, runs_dir=tmp_path)
    _edit_table(run, "dynamics", lambda d: d.assign(
        value=d["value"].where((d["quantity"] != "rel_update") | (d["tower"] != "llm"),
                               d["value"] * 2)))
    assert right_answer("03.4", runs_dir=tmp_path) == pytest.approx(2 * measured)


def test_01_4_compares_single_seed_agreement_on_the_tasks_run(tmp_path):
    oracle = _copy_run("oracle-tiny", tmp_path / exercises.ORACLE_40 / "oracle-tiny")
    assert right_answer("01.4", runs_dir=tmp_path) is False  # the same run: no fall
    _edit_table(oracle, "oracle_ceiling", lambda c: c[c["task"].isin(["caption", "ocr"])]
                .assign(single=lambda x: x["single"] - 0.05))
    assert right_answer("01.4", runs_dir=tmp_path) is True
    assert check("01.4", True, runs_dir=tmp_path) and not check("01.4", False, runs_dir=tmp_path)


def test_04_5_reads_the_routing_comparison(tmp_path):
    scores, runs = results.open_comparison("compare-tiny")
    tasks = runs["tasks"].iloc[0].split(",")
    scores = scores[scores["variant"] == "dmole"].assign(variant=exercises.SAMPLE_VARIANT)
    runs = runs[runs["variant"] == "dmole"].assign(variant=exercises.SAMPLE_VARIANT)
    out = tmp_path / exercises.COMPARE_ROUTING
    out.mkdir()
    forget = (scores["stage"] == len(tasks)) & (scores["eval_task"] == tasks[0])
    scores.assign(value=scores["value"].where(~forget, scores["value"] - 8.0)).to_parquet(
        out / "scores.parquet")
    runs.to_parquet(out / "runs.parquet")
    assert right_answer("04.5", runs_dir=tmp_path) == pytest.approx(-8.0 / (len(tasks) - 1))
    assert check("04.5", -1.0, runs_dir=tmp_path) and not check("04.5", 0.0, runs_dir=tmp_path)


def test_05_3_sets_the_combined_run_against_own_experts_only(tmp_path):
    scores, runs = results.open_comparison("plasticity-tiny")
    own = "dmole+dmole.train_routing=own"
    scores = scores[(scores["variant"] == own) & (scores["seed"] == 0)].assign(
        variant=exercises.COMBINED_VARIANT)
    runs = runs[(runs["variant"] == own) & (runs["seed"] == 0)].assign(
        variant=exercises.COMBINED_VARIANT)
    out = tmp_path / exercises.COMPARE_COMBINED
    out.mkdir()
    runs.to_parquet(out / "runs.parquet")
    scores.to_parquet(out / "scores.parquet")
    assert right_answer("05.3", runs_dir=tmp_path) is False  # the same scores: not higher
    learned = scores["stage"] >= 1
    scores.assign(value=scores["value"].where(~learned, scores["value"] + 5.0)).to_parquet(
        out / "scores.parquet")
    assert right_answer("05.3", runs_dir=tmp_path) is True
    assert check("05.3", True, runs_dir=tmp_path) and not check("05.3", False, runs_dir=tmp_path)


# ------------------------------------------------------------------------------------------
# the worked solutions

SOLUTION_FILES = sorted(SOLUTIONS.glob("0*_solutions.py"))


def test_there_is_a_solution_file_per_notebook():
    notebooks = sorted(p.name[:2] for p in SOLUTIONS.parent.glob("0*.py"))
    assert [p.name[:2] for p in SOLUTION_FILES] == notebooks
    assert sorted({i[:2] for i in EXERCISES}) == notebooks


@pytest.mark.parametrize("path", SOLUTION_FILES, ids=lambda p: p.stem)
def test_each_exercise_has_a_section_that_says_how_long_it_takes(path):
    text = path.read_text()
    headings = dict(re.findall(r"^# ## Exercise (\d\d\.\d): (.*)$", text, flags=re.M))
    assert sorted(headings) == [i for i in EXERCISES if i.startswith(path.name[:2])]
    for exercise_id, heading in headings.items():
        took = re.search(r"\((seconds|about [\d-]+ minutes on 2 CPU cores)", heading)
        assert took, f"{exercise_id}'s heading says no duration: {heading}"
        assert (took.group(1) == "seconds") == (exercise_id not in TRAINING), heading


@pytest.mark.parametrize("path", SOLUTION_FILES, ids=lambda p: p.stem)
def test_each_solution_runs_in_seconds_and_its_checks_say_right(path, tmp_path, monkeypatch):
    """Run with an empty scratch folder: the exercises that train print their command."""
    calls = []
    real = exercises.check

    def recording(exercise_id, answer, *args, **kwargs):
        calls.append((exercise_id, real(exercise_id, answer, *args, **kwargs)))
        return calls[-1][1]

    monkeypatch.setattr(exercises, "check", recording)
    monkeypatch.setattr(exercises, "RUNS_DIR", tmp_path)
    monkeypatch.setattr(results, "RUNS_DIR", tmp_path)
    monkeypatch.chdir(path.parent.parent)
    start = time.perf_counter()
    runpy.run_path(str(path), run_name="__main__")
    assert time.perf_counter() - start < 20
    mine = [i for i in READING if i.startswith(path.name[:2])]
    assert sorted(i for i, ok in calls if ok) == mine
    assert all(ok for _, ok in calls)
