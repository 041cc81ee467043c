"""Right-or-wrong checks for the notebooks' exercises: ``check("01.2", answer)``.

``check`` prints "right" or "not quite: <hint>" and returns a bool. It recomputes the right
answer from the stored runs every time it is called, so it follows the data: the shipped runs in
``results/`` for exercises that only read, the student's own run under ``runs/`` for exercises
that train (if that run is missing, the check prints the command that makes it and how long it
takes). Nothing here is a hard-coded answer. Torch-free, like everything else a notebook
imports. Worked solutions: ``notebooks/solutions/``.

Answers are plain Python values: a number, a name, a list (any order), or a dict of those for
exercises with several parts. ``None`` or ``...`` means "not answered yet".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dmole_lab.viz import results

#: A probe batch count whose per-layer profiles rank the layers like the largest stored count
#: at this mean Spearman correlation (over tasks, in each tower) counts as "stable" (01.1).
STABLE_SPEARMAN = 0.95
#: A method "learns" a task when the task's score rises this many points over its zero-shot
#: score, as in benchmarks/bench_demo.py (``learned_margin``) (04.3).
LEARNED_MARGIN = 10.0
#: A median ratio whose distance from 1 (on a log scale) changes by less than this share has
#: not moved: two runs of one config on two machines differ by about that much (03.1).
SAME_BAND = 0.10
#: Support share at which an earlier task's experts count as "on most of the time" (02.5).
MOST = 0.5

#: Where the exercises that train write (the scratch folder; never ``results/``).
RUNS_DIR = results.RUNS_DIR
#: Output folder of 01.4's oracle (``--results-dir``), under the runs folder.
ORACLE_40 = "oracle-steps40"
#: Output folder of 04.5's comparison (``--out``), under the runs folder.
COMPARE_ROUTING = "compare-routing"
SAMPLE_VARIANT = "dmole+dmole.routing=sample"
#: 01.4's command: the oracle with half the steps and two seeds, into the scratch folder
#: (without ``--results-dir`` and ``--json`` it would overwrite the shipped results).
ORACLE_40_COMMAND = (f"python benchmarks/bench_proxy_oracle.py --preset tiny --steps 40 "
                     f"--seeds 2 --results-dir runs/{ORACLE_40} "
                     f"--json runs/{ORACLE_40}/proxy_oracle.json")
#: Output folder of 05.3's comparison (``--out``), under the runs folder.
COMPARE_COMBINED = "compare-combined"
COMBINED_VARIANT = "dmole+dmole.train_routing=own+dmole.vision_floor=0"
#: 05.3's command: D-MoLE without the routing mismatch and without the vision floor, seed 0.
COMPARE_COMBINED_COMMAND = (f"dmole-lab compare --preset tiny --methods {COMBINED_VARIANT} "
                            f"--seeds 0 --out runs/{COMPARE_COMBINED}")
#: 04.5's command: D-MoLE with per-sample routing at three seeds, tables under runs/.
COMPARE_ROUTING_COMMAND = (f"dmole-lab compare --preset tiny --methods {SAMPLE_VARIANT} "
                           f"--seeds 0,1,2 --out runs/{COMPARE_ROUTING}")


def _is_placeholder(answer) -> bool:
    """None or ``...``: not answered yet."""
    return answer is None or answer is Ellipsis


class MissingRun(LookupError):
    """An exercise that trains was checked before its run exists."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: what ``answer`` should hold, how to get the right answer from the stored
    runs, and how to compare (``judge`` returns None when right, else a hint)."""

    id: str
    asks: str
    solve: Callable[[_Data], Any]
    judge: Callable[[Any, Any], str | None]


@dataclass(frozen=True)
class _Data:
    """Where the stored runs are: the shipped ones and the scratch folder of the student's."""

    results_dir: Path
    runs_dir: Path

    def run(self, name: str):
        return results.open_run(name, self.results_dir)

    def find(self, settings: dict, command: str, minutes: str):
        """The student's run with ``settings`` (shipped or local), else MissingRun."""
        found = results.find_runs(settings, (self.results_dir, self.runs_dir))
        if not found:
            raise MissingRun(f"this exercise reads your own run, and there is none in "
                             f"{self.runs_dir} yet: from the project folder run `{command}` "
                             f"({minutes} on 2 CPU cores), then run this cell again")
        return found[0]


# ---------------------------------------------------------------------------------------------
# judges: (answer, right) -> None when right, else a hint that does not give the answer away


def _number(answer) -> float:
    if isinstance(answer, bool) or not isinstance(answer, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a number, got {answer!r}")
    return float(answer)


def _exact_int(what: str):
    def judge(answer, right):
        a = _number(answer)
        if a == right:
            return None
        return f"{what}: your {a:g} is too {'high' if a > right else 'low'}"
    return judge


def _close(what: str, tol: float, relative: bool = False):
    def judge(answer, right):
        a = _number(answer)
        if abs(a - right) <= (tol * abs(right) if relative else tol):
            return None
        allowed = f"{100 * tol:.0f}%" if relative else f"{tol:g}"
        return (f"{what}: your {a:.3g} is too {'high' if a > right else 'low'} "
                f"(the check allows +- {allowed})")
    return judge


def _choice(what: str):
    """``right`` is a set of equally right names (ties)."""
    def judge(answer, right):
        if not isinstance(answer, str):
            raise TypeError(f"expected a name (a string), got {answer!r}")
        if answer.strip().lower() in {r.lower() for r in right}:
            return None
        return f"{what}: not {answer!r}"
    return judge


def _same_set(what: str):
    """Same elements in any order; ints if the right answer holds ints, else names."""
    def judge(answer, right):
        if isinstance(answer, str):
            answer = [answer]
        if isinstance(answer, dict) or not hasattr(answer, "__iter__"):
            raise TypeError(f"expected a list, got {answer!r}")
        want = set(right)
        ints = bool(want) and all(isinstance(r, (int, np.integer)) for r in want)
        try:
            got = {int(a) for a in answer} if ints else {str(a).strip() for a in answer}
        except (TypeError, ValueError):
            raise TypeError(f"expected a list of {'ints' if ints else 'names'}, got "
                            f"{answer!r}") from None
        if got == want:
            return None
        extra, missing = sorted(got - want, key=str), len(want - got)
        parts = []
        if extra:
            parts.append(f"{', '.join(map(str, extra))} {'does' if len(extra) == 1 else 'do'}"
                         " not belong")
        if missing:
            parts.append(f"{missing} missing")
        return f"{what}: " + "; ".join(parts)
    return judge


def _yes_no(answer) -> bool:
    if isinstance(answer, (bool, np.bool_)):
        return bool(answer)
    if isinstance(answer, str) and answer.strip().lower() in {"yes", "no", "true", "false"}:
        return answer.strip().lower() in {"yes", "true"}
    raise TypeError(f"expected True or False, got {answer!r}")


def _boolean(what: str):
    def judge(answer, right):
        if _yes_no(answer) == right:
            return None
        return f"{what}: look again at the numbers"
    return judge


def _parts(**judges):
    """A dict answer whose keys are ``judges``' names, each judged by its own judge."""
    def judge(answer, right):
        if not isinstance(answer, dict):
            raise TypeError(f"expected a dict with keys {sorted(judges)}, got {answer!r}")
        missing = sorted(set(judges) - set(answer))
        if missing:
            raise TypeError(f"the answer lacks the key(s) {missing}; expected {sorted(judges)}")
        hints = []
        for key, part in judges.items():
            if _is_placeholder(answer[key]):
                hints.append(f"{key}: not answered yet")
            elif (hint := part(answer[key], right[key])) is not None:
                hints.append(hint)
        return "; ".join(hints) if hints else None
    return judge


# ---------------------------------------------------------------------------------------------
# notebook 01: the preliminary study


def _probe(d: _Data):
    probe = d.run("probe-tiny")
    m = probe.manifest()
    return probe.summary("sensitivity"), m["probe_batches"], m["tasks"], m


def solve_01_1(d: _Data) -> int:
    """Smallest stored probe batch count whose grad_norm layer profiles rank the layers like the
    largest count's, at mean Spearman >= STABLE_SPEARMAN over tasks, in both towers."""
    from scipy.stats import spearmanr

    from dmole_lab.analysis.profiles import layer_profiles

    table, _, _, _ = _probe(d)
    counts = sorted(set(table["batches"]))
    ref = layer_profiles(table, "grad_norm", counts[-1])
    for n in counts:
        both = layer_profiles(table, "grad_norm", n).merge(ref, on=["task", "tower", "layer"])
        rho = pd.Series({key: spearmanr(g["score_x"], g["score_y"]).statistic
                         for key, g in both.groupby(["task", "tower"])})
        if (rho.groupby(level=1).mean() >= STABLE_SPEARMAN).all():
            return int(n)
    return int(counts[-1])


def solve_01_2(d: _Data) -> dict[str, set[str]]:
    """Per tower, the proxies (ties included) whose task profiles are least alike at K+1
    batches: the lowest mean off-diagonal Spearman between tasks."""
    from dmole_lab.analysis.profiles import (
        TOWERS,
        layer_profiles,
        mean_offdiagonal,
        task_correlations,
    )

    table, k1, tasks, _ = _probe(d)
    out = {}
    for tower in TOWERS:
        alike = {p: mean_offdiagonal(task_correlations(layer_profiles(table, p, k1), tower,
                                                       tasks))
                 for p in sorted(set(table["proxy"]))}
        low = min(alike.values())
        out[tower] = {p for p, v in alike.items() if v <= low + 1e-9}
    return out


def solve_01_3(d: _Data) -> int:
    """Vision experts over the whole stream without the floor (vision_floor = 0), from the
    probe's grad_norm scores at K+1 batches and the stored D-MoLE run's budget."""
    from dmole_lab.dmole.allocation import curriculum_splits

    table, k1, tasks, _ = _probe(d)
    _, _, _, s = _dmole(d)
    splits = curriculum_splits(table, tasks, modes=("current",), batches=k1,
                               fraction=s["budget"], vision_floor=0.0)
    return int(splits["k_vision"].sum())


def solve_01_4(d: _Data) -> bool:
    """Does the agreement between single oracle seeds (mean Spearman over pairs of seeds, over
    tasks and towers) fall from the shipped 80-step oracle to the student's 40-step one, on
    the tasks the student ran?"""
    root = d.runs_dir / ORACLE_40
    if not (root / "oracle-tiny" / "manifest.json").is_file():
        raise MissingRun(
            f"this exercise reads your own oracle run, and there is none in {root} yet: from "
            f"the project folder run `{ORACLE_40_COMMAND}` (about 6 min on 2 CPU cores), "
            "then run this cell again")
    new = results.open_run("oracle-tiny", root).summary("oracle_ceiling")
    old = d.run("oracle-tiny").summary("oracle_ceiling")
    old = old[old["task"].isin(set(new["task"]))]
    single = "single" if "single" in new else "spearman"  # two seeds: the same number
    return bool(new[single].mean() < old["single"].mean())


def solve_01_5(d: _Data) -> float:
    """Spearman over tasks between sequential LoRA's median LLM / vision gradient-norm ratio
    and the oracle's vision share."""
    from scipy.stats import spearmanr

    from dmole_lab.analysis.profiles import oracle_profiles, tower_ratio, vision_share

    ratio = tower_ratio(d.run("seq-lora-tiny").summary("dynamics"), "grad_norm")
    share = vision_share(oracle_profiles(d.run("oracle-tiny").summary("oracle")))
    ratio = ratio.set_index("task")["median"]
    common = [t for t in ratio.index if t in share.index]
    return float(spearmanr(ratio[common], share[common]).statistic)


# ---------------------------------------------------------------------------------------------
# notebook 02: allocation heatmaps


def _dmole(d: _Data):
    run = d.run("dmole-tiny")
    m = run.manifest()
    return run, m, m["tasks"], m["config"]["dmole"]


def _allocation_kwargs(m: dict, s: dict) -> dict:
    return {"fraction": s["budget"], "vision_floor": s["vision_floor"],
            "curriculum": s["curriculum"], "towers": s["towers"],
            "allocator": s["allocator"], "seed": m["seed"]}


def solve_02_1(d: _Data) -> list[int]:
    """The vision layers that hold any expert when the vision floor is 0."""
    from dmole_lab.dmole.allocation import allocate_stream, allocation_table

    run, m, tasks, s = _dmole(d)
    kw = {**_allocation_kwargs(m, s), "vision_floor": 0.0}
    alloc = allocation_table(allocate_stream(run.summary("sensitivity"), tasks, **kw))
    return sorted(int(x) for x in set(alloc.loc[alloc["tower"] == "vision", "layer"]))


def solve_02_2(d: _Data) -> list[str]:
    """Tasks that get more vision experts under the ``continual`` curriculum than under
    ``current`` (same budget and floor as the stored run)."""
    from dmole_lab.dmole.allocation import curriculum_splits

    run, m, tasks, s = _dmole(d)
    splits = curriculum_splits(run.summary("sensitivity"), tasks,
                               modes=("current", "continual"), fraction=s["budget"],
                               vision_floor=s["vision_floor"], seed=m["seed"])
    k = splits.pivot(index="task", columns="curriculum", values="k_vision")
    return [t for t in tasks if k.loc[t, "continual"] > k.loc[t, "current"]]


def _dmole_settings(d: _Data, **changes) -> dict:
    """Config keys that pick a D-MoLE run like the stored one but for ``changes``."""
    _, m, tasks, s = _dmole(d)
    keys = ("budget", "vision_floor", "curriculum", "towers", "allocator", "routing")
    return {"method": "dmole", "seed": m["seed"], "stream.tasks": tasks,
            "stream.n_train": m["config"]["stream"]["n_train"],
            **{f"dmole.{k}": s.get(k, "batch" if k == "routing" else None) for k in keys},
            **{f"dmole.{k}": v for k, v in changes.items()}}


def command_for(settings: dict, preset: str = "tiny") -> str:
    """The ``dmole-lab run`` command of a D-MoLE run that differs from the stored one in the
    dmole.* keys of ``settings`` that differ from the defaults."""
    from dmole_lab.config import build_config, to_dict

    defaults = to_dict(build_config(preset, {"method": "dmole"}))["dmole"]
    changed = {k: v for k, v in settings.items()
               if k.startswith("dmole.") and defaults.get(k.removeprefix("dmole.")) != v}
    return results.run_command(preset, {"method": "dmole", **changed})


def _find_dmole(d: _Data, minutes: str, **changes):
    settings = _dmole_settings(d, **changes)
    return d.find(settings, command_for(settings), minutes)


def solve_02_3(d: _Data) -> bool:
    """Is the half-budget run's Last lower than the stored run's (budget 0.5)?"""
    from dmole_lab.analysis.summaries import headline

    run, _, _, s = _dmole(d)
    half = _find_dmole(d, "about 2-3 min", budget=round(s["budget"] / 2, 4))
    return bool(headline(half)["Last"] < headline(run)["Last"])


def solve_02_4(d: _Data) -> float:
    """Per-sample routing: the share of the learned tasks' test samples routed to their own
    task after the last stage."""
    from dmole_lab.analysis import usage

    run = _find_dmole(d, "about 2-3 min", routing="sample")
    return usage.router_accuracy(run.summary("routing"), run.manifest()["tasks"])


def solve_02_5(d: _Data) -> list[str]:
    """Tasks that trained with an earlier task's experts on in at least half of their
    training batches."""
    run, _, tasks, _ = _dmole(d)
    joined = run.summary("train_routing")
    share = (joined["joined"] != "").groupby(joined["task"]).mean()
    return [t for t in tasks if share.get(t, 0.0) >= MOST]


# ---------------------------------------------------------------------------------------------
# notebook 03: the curriculum and the towers' dynamics


def _median_ratio(run, quantity: str) -> float:
    from dmole_lab.analysis.profiles import tower_ratio

    return float(tower_ratio(run.summary("dynamics"), quantity)["median"].median())


def direction(before: float, after: float, band: float = SAME_BAND) -> str:
    """Whether a ratio moved "closer" to 1, "farther" from it, or stayed the "same": its
    distance |log ratio| changed by more than ``band`` (relative), or not."""
    d0, d1 = abs(math.log(before)), abs(math.log(after))
    return "closer" if d1 < (1 - band) * d0 else "farther" if d1 > (1 + band) * d0 else "same"


def solve_03_1(d: _Data) -> dict[str, set[str]]:
    """Per quantity, where the median over tasks of the LLM / vision ratio went from the stored
    ``current`` run to the student's ``continual`` run (:func:`direction`)."""
    run, _, _, _ = _dmole(d)
    cont = _find_dmole(d, "about 2-3 min", curriculum="continual")
    return {q: {direction(_median_ratio(run, q), _median_ratio(cont, q))}
            for q in ("grad_norm", "rel_update")}


def solve_03_2(d: _Data) -> list[str]:
    """Tasks that lose the most vision experts when the floor goes from the stored run's to 0
    (``current`` curriculum)."""
    from dmole_lab.dmole.allocation import curriculum_splits

    run, m, tasks, s = _dmole(d)
    sens = run.summary("sensitivity")
    kv = {}
    for floor in (s["vision_floor"], 0.0):
        sp = curriculum_splits(sens, tasks, modes=("current",), fraction=s["budget"],
                               vision_floor=floor, seed=m["seed"])
        kv[floor] = sp.set_index("task")["k_vision"]
    loss = kv[s["vision_floor"]] - kv[0.0]
    return [t for t in tasks if loss[t] == loss.max()]


def solve_03_3(d: _Data) -> float:
    """Median over tasks of D-MoLE's LLM / vision gradient-norm ratio divided by
    sqrt(k_L / k_V), the task's recorded expert counts."""
    from dmole_lab.analysis.profiles import tower_ratio

    run, m, _, _ = _dmole(d)
    ratio = tower_ratio(run.summary("dynamics"), "grad_norm").set_index("task")["median"]
    k = pd.DataFrame([s for key, s in m["stages"].items() if int(key) >= 1]).set_index("task")
    return float((ratio / np.sqrt(k["k_llm"] / k["k_vision"]).reindex(ratio.index)).median())


def solve_03_4(d: _Data) -> float:
    """Median over tasks of the LLM / vision relative-update ratio of ablation v3 (curriculum
    ``none``)."""
    run = _find_dmole(d, "about 2-3 min", curriculum="none")
    return _median_ratio(run, "rel_update")


# ---------------------------------------------------------------------------------------------
# notebook 04: forgetting curves


def _comparison(d: _Data):
    scores, runs = results.open_comparison("compare-tiny", d.results_dir)
    return scores, runs, runs["tasks"].iloc[0].split(",")


def solve_04_1(d: _Data) -> list[str]:
    """Variants whose rank by mean BWT differs between the divisors T-1 and T."""
    from dmole_lab.analysis.compare import run_metrics

    scores, runs, _ = _comparison(d)
    ranks = {div: run_metrics(scores, runs, bwt_divisor=div).groupby("variant")["BWT"].mean()
             .rank(method="min") for div in ("T-1", "T")}
    return sorted(v for v in ranks["T"].index if ranks["T"][v] != ranks["T-1"][v])


def solve_04_2(d: _Data) -> set[str]:
    """The variant(s) whose mean forgetting grows most from "first" to "max"."""
    from dmole_lab.analysis.compare import run_metrics

    scores, runs, _ = _comparison(d)
    f = {mode: run_metrics(scores, runs, forgetting_mode=mode).groupby("variant")
         ["Forgetting"].mean() for mode in ("first", "max")}
    grow = f["max"] - f["first"]
    return set(grow.index[grow >= grow.max() - 1e-9])


def solve_04_3(d: _Data, task: str = "grounding") -> dict[str, list[str]]:
    """Variants that ever learn ``task`` (seed-mean score >= zero-shot + LEARNED_MARGIN at some
    stage from its own on) and those that keep it (the same at the last stage)."""
    scores, _, tasks = _comparison(d)
    curve = (scores[scores["eval_task"] == task].groupby(["variant", "stage"])["value"].mean()
             .unstack("stage"))
    own, last = tasks.index(task) + 1, len(tasks)
    bar = curve[0] + LEARNED_MARGIN
    learned = curve.loc[:, own:].max(axis=1) >= bar
    kept = curve[last] >= bar
    return {"learned": sorted(curve.index[learned]), "kept": sorted(curve.index[kept])}


def solve_04_4(d: _Data) -> dict[str, bool]:
    """Is multi-task's seed-mean Last (MFT) at least every other variant's?"""
    from dmole_lab.analysis.compare import run_metrics

    scores, runs, _ = _comparison(d)
    mean = run_metrics(scores, runs).groupby("variant")[["Last", "MFT"]].mean()
    return {k: bool(mean.loc["multitask", k] >= mean[k].drop("multitask").max())
            for k in ("Last", "MFT")}


def _student_comparison(d: _Data, folder: str, command: str, minutes: str) -> pd.DataFrame:
    """Per-run metrics of the comparison the student wrote to ``runs/<folder>``;
    :class:`MissingRun` with ``command`` and its time if there is none yet."""
    from dmole_lab.analysis.compare import run_metrics

    try:
        scores, runs = results.open_comparison(folder, d.runs_dir)
    except FileNotFoundError:
        raise MissingRun(
            f"this exercise reads your own comparison, and there is none in "
            f"{d.runs_dir / folder} yet: from the project folder run `{command}` ({minutes}), "
            "then run this cell again") from None
    return run_metrics(scores, runs)


def solve_04_5(d: _Data) -> float:
    """Mean BWT over seeds of D-MoLE with per-sample routing, from the student's comparison."""
    per_run = _student_comparison(d, COMPARE_ROUTING, COMPARE_ROUTING_COMMAND,
                                  "about 7 min on 2 CPU cores; `--seeds 0` alone: about 3 min")
    mine = per_run[per_run["variant"] == SAMPLE_VARIANT]
    if mine.empty:
        raise MissingRun(f"no {SAMPLE_VARIANT} run in {d.runs_dir / COMPARE_ROUTING}: run "
                         f"`{COMPARE_ROUTING_COMMAND}`")
    return float(mine["BWT"].mean())


# ---------------------------------------------------------------------------------------------
# notebook 05: what holds


def _switches(d: _Data) -> pd.DataFrame:
    """Per-run metrics of the shipped plasticity switches, variants as switch labels."""
    from dmole_lab.analysis.compare import run_metrics
    from dmole_lab.analysis.plasticity import labelled

    return labelled(run_metrics(*results.open_comparison("plasticity-tiny", d.results_dir)))


def solve_05_1(d: _Data) -> set[str]:
    """The switch of a candidate cause ("(a)".."(d)") with the largest mean paired MFT effect."""
    from dmole_lab.analysis.plasticity import paired_effects

    e = paired_effects(_switches(d), metrics=("MFT",))
    e = e[e["variant"].str.startswith("(")]
    return set(e.loc[e["effect"] >= e["effect"].max() - 1e-9, "variant"])


def solve_05_2(d: _Data) -> set[str]:
    """The layer score with the highest mean Spearman with the oracle in the LLM."""
    pooled = results.open_run("layer-scores-tiny", d.results_dir).summary("agreement_pooled")
    llm = pooled[pooled["tower"] == "llm"]
    return set(llm.loc[llm["mean"] >= llm["mean"].max() - 1e-9, "score_name"])


def solve_05_3(d: _Data) -> bool:
    """Does the student's combined run (own experts only, no vision floor) have a higher AVG
    than the shipped own-experts-only run at seed 0?"""
    mine = _student_comparison(d, COMPARE_COMBINED, COMPARE_COMBINED_COMMAND,
                               "about 3 min on 2 CPU cores")
    mine = mine[(mine["variant"] == COMBINED_VARIANT) & (mine["seed"] == 0)]
    if mine.empty:
        raise MissingRun(f"no {COMBINED_VARIANT} run at seed 0 in "
                         f"{d.runs_dir / COMPARE_COMBINED}: run `{COMPARE_COMBINED_COMMAND}`")
    shipped = _switches(d)
    own = shipped[(shipped["variant"] == "(b) own experts only") & (shipped["seed"] == 0)]
    return bool(float(mine["AVG"].iloc[0]) > float(own["AVG"].iloc[0]))


#: The agreement of two halves of the oracle's seeds that exercise 05.4 asks about.
SEEDS_TARGET = 0.75


def solve_05_4(d: _Data) -> int:
    """The smallest seed count at which the 36-seed vision oracle's two halves agree at
    :data:`SEEDS_TARGET` or more (benchmarks/bench_oracle_agreement.py)."""
    curve = results.open_run("oracle-vision-tiny", d.results_dir).summary("agreement")
    return int(curve.loc[curve["split_half"] >= SEEDS_TARGET, "seeds"].min())


# ---------------------------------------------------------------------------------------------

EXERCISES: dict[str, Exercise] = {e.id: e for e in (
    Exercise("01.1", "an int: the smallest stored probe batch count (1, 2, 4, 8 or 16) at which "
             "both towers' mean Spearman with the 16-batch profiles reaches 0.95",
             solve_01_1, _exact_int("the first stable batch count")),
    Exercise("01.2", 'a dict {"vision": proxy, "llm": proxy}: per tower, the proxy whose task '
             "profiles are least alike at K+1 batches", solve_01_2,
             _parts(vision=_choice("vision"), llm=_choice("llm"))),
    Exercise("01.3", "an int: vision experts over all nine tasks without the floor",
             solve_01_3, _exact_int("the vision experts of the stream")),
    Exercise("01.4", "True or False: does the agreement between single oracle seeds fall "
             "with 40 steps?", solve_01_4, _boolean("the mean single-seed Spearman")),
    Exercise("01.5", "a float: the Spearman correlation over tasks between the median "
             "gradient-norm ratio and the oracle's vision share", solve_01_5,
             _close("the Spearman correlation", 0.05)),
    Exercise("02.1", "a list of ints: the vision layers that hold an expert of any task when "
             "the vision floor is 0", solve_02_1, _same_set("the vision layers")),
    Exercise("02.2", "a list of task names: the tasks that get more vision experts under "
             "`continual` than under `current`", solve_02_2, _same_set("the tasks")),
    Exercise("02.3", "True or False: is the half-budget run's Last lower than the stored run's?",
             solve_02_3, _boolean("compare the two runs' Last")),
    Exercise("02.4", "a float: the share of test samples routed to their own task after the "
             "last stage, with per-sample routing", solve_02_4,
             _close("the per-sample router accuracy", 0.02)),
    Exercise("02.5", "a list of task names: the tasks that trained with an earlier task's "
             "experts on in at least half of their batches", solve_02_5,
             _same_set("the tasks")),
    Exercise("03.1", 'a dict {"grad_norm": ..., "rel_update": ...}, each "closer", "same" or '
             '"farther": where `continual` moved the median LLM / vision ratio, against 1',
             solve_03_1, _parts(grad_norm=_choice("grad_norm"),
                                rel_update=_choice("rel_update"))),
    Exercise("03.2", "a list of task names: the tasks that lose the most vision experts when "
             "the floor goes to 0", solve_03_2, _same_set("the tasks")),
    Exercise("03.3", "a float: the median over tasks of D-MoLE's gradient-norm ratio divided "
             "by sqrt(k_L / k_V)", solve_03_3, _close("the normalised median", 0.02, True)),
    Exercise("03.4", "a float: your prediction of v3's median LLM / vision relative-update "
             "ratio", solve_03_4, _close("your prediction", 0.25, True)),
    Exercise("04.1", "a list of variant names (possibly empty): the variants whose BWT rank "
             "changes with the divisor T", solve_04_1, _same_set("the variants")),
    Exercise("04.2", "a variant name: the one whose forgetting grows most from 'first' to "
             "'max'", solve_04_2, _choice("the variant")),
    Exercise("04.3", 'a dict {"learned": [...], "kept": [...]} of variant names', solve_04_3,
             _parts(learned=_same_set("learned"), kept=_same_set("kept"))),
    Exercise("04.4", 'a dict {"Last": bool, "MFT": bool}: is multi-task an upper bound on each?',
             solve_04_4, _parts(Last=_boolean("Last"), MFT=_boolean("MFT"))),
    Exercise("04.5", "a float: D-MoLE's mean BWT over seeds with per-sample routing",
             solve_04_5, _close("the mean BWT", 0.1)),
    Exercise("05.1", 'a switch label such as "(c) learning rate x2": the candidate cause whose '
             "switch raises MFT the most", solve_05_1, _choice("the switch")),
    Exercise("05.2", 'a score name such as "snip": the layer score that agrees best with the '
             "oracle in the LLM", solve_05_2, _choice("the layer score")),
    Exercise("05.3", "True or False: does dropping the vision floor as well raise AVG over own "
             "experts only (seed 0)?", solve_05_3, _boolean("compare the two runs' AVG")),
    Exercise("05.4", "an int: the smallest number of seeds at which the vision oracle's two "
             f"halves agree at {SEEDS_TARGET} or more", solve_05_4,
             _exact_int("the first seed count at the target")),
)}


def _exercise(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        raise ValueError(f"unknown exercise {exercise_id!r}; valid ids: {', '.join(EXERCISES)}")
    return EXERCISES[exercise_id]


def right_answer(exercise_id: str, results_dir: Path | None = None,
                 runs_dir: Path | None = None):
    """The right answer of ``exercise_id``, computed now from the stored runs (raises
    :class:`MissingRun` for an exercise that trains, before its run exists)."""
    ex = _exercise(exercise_id)
    return ex.solve(_Data(Path(results_dir or results.RESULTS_DIR), Path(runs_dir or RUNS_DIR)))


def check(exercise_id: str, answer, results_dir: Path | None = None,
          runs_dir: Path | None = None) -> bool:
    """Print "right" or "not quite: <hint>" for ``answer`` to exercise ``exercise_id`` and
    return whether it is right. A placeholder (None, ...) prints what to fill in; an exercise
    that trains prints the command to run if its run is missing. Unknown id: ValueError naming
    the valid ids."""
    ex = _exercise(exercise_id)
    if _is_placeholder(answer):
        print(f"{exercise_id}: set `answer` to {ex.asks}, then run this cell again")
        return False
    try:
        right = right_answer(exercise_id, results_dir, runs_dir)
    except MissingRun as e:
        print(f"{exercise_id}: {e}")
        return False
    try:
        hint = ex.judge(answer, right)
    except TypeError as e:
        print(f"not quite: {e}; `answer` should be {ex.asks}")
        return False
    print("right" if hint is None else f"not quite: {hint}")
    return hint is None


__all__ = ["EXERCISES", "MissingRun", "check", "command_for", "direction", "right_answer"]
