"""The figures quoted in README.md, benchmarks/README.md and the notebooks' prose match what they
are quoted from: the shipped runs and tables in results/ (recomputed here from the stored score
matrices and manifests) and the benchmark results in benchmarks/results/*.json.

A quote is found by a regular expression over the document's prose (whitespace collapsed; for a
notebook its markdown cells only) and each captured number must equal the figure it quotes,
rounded as quoted: to as many decimals as the quote shows (half a unit of its last digit either
way, so both rounding conventions pass), or to the step a loose quote uses ("about 780 s").
If the prose changes, update the pattern with it. A figure that does not match its source is
marked xfail(strict=True) with the value it should have: fix the prose, then drop the mark.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
BENCH_RESULTS = ROOT / "benchmarks" / "results"
DOCS = {
    "README": ROOT / "README.md",
    "benchmarks/README": ROOT / "benchmarks" / "README.md",
    "nb01": ROOT / "notebooks" / "01_preliminary_study.py",
    "nb02": ROOT / "notebooks" / "02_allocation_heatmaps.py",
    "nb03": ROOT / "notebooks" / "03_curriculum_dynamics.py",
    "nb04": ROOT / "notebooks" / "04_forgetting_curves.py",
    "nb05": ROOT / "notebooks" / "05_what_holds.py",
    "sol05": ROOT / "notebooks" / "solutions" / "05_solutions.py",
}
#: The continual peers of the comparison (multi-task is the reference, dmole-v* are ablations).
PEERS = ("seq-ft", "seq-lora", "lwf", "ewc", "o-lora", "moelora", "mole", "mola", "branchlora")
#: How the prose names each peer.
PEER_LABELS = {"seq-ft": "sequential fine-tuning", "seq-lora": "sequential LoRA", "lwf": "LwF",
               "ewc": "EWC", "o-lora": "O-LoRA", "moelora": "MoELoRA", "mole": "MoLE",
               "mola": "MoLA", "branchlora": "BranchLoRA"}
NUM = r"[-+]?\d[\d,]*(?:\.\d+)?"


# ------------------------------------------------------------------------------ the prose
@functools.cache
def prose(doc: str) -> str:
    """A document's prose with whitespace collapsed (a notebook: its markdown cells)."""
    path = DOCS[doc]
    if path.suffix == ".py":
        import jupytext

        text = "\n".join(c.source for c in jupytext.read(path).cells
                         if c.cell_type == "markdown")
    else:
        text = path.read_text()
    return " ".join(text.split())


def pipe_table(doc: str, header_start: str) -> list[dict[str, str]]:
    """The rows of the markdown table of ``doc`` whose header line starts with
    ``header_start``, as {column: cell} (cells stripped of ** and spaces)."""
    lines = DOCS[doc].read_text().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith(header_start)), None)
    assert start is not None, f"{doc}: no table starting {header_start!r}"
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip().strip("*").strip()
                                    for c in ln.strip("|").split("|")))))
    return rows


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def _number(text: str) -> float:
    return float(text.replace(",", "").replace("%", "").replace("+", ""))


def close(text: str, actual: float, step: float | None = None) -> bool:
    """True when the quoted ``text`` is ``actual`` rounded as quoted (to the quote's decimals,
    or to ``step``)."""
    tol = step / 2 if step else 0.5 * 10 ** -_decimals(text)
    return abs(_number(text) - actual) <= tol + 1e-9


def check(pairs: list[tuple[str, object]], where: str, step: float | None = None) -> None:
    """Assert every (quoted text, actual) pair matches; strings must be equal."""
    wrong = [(q, a) for q, a in pairs
             if (q != a if isinstance(a, str) else not close(q, float(a), step))]
    assert not wrong, f"{where}: quoted vs actual: " + "; ".join(
        f"{q} vs {a if isinstance(a, str) else round(float(a), 4)}" for q, a in wrong)


def mean_std(text: str) -> tuple[str, str]:
    m = re.fullmatch(rf"({NUM}) \+- ({NUM})", text)
    assert m, f"not 'mean +- std': {text!r}"
    return m.group(1), m.group(2)


# ------------------------------------------------------------------------ what is quoted
class Shipped:
    """The shipped tables and benchmark results, loaded once, with the figures derived from
    them the way the library derives them."""

    @functools.cached_property
    def comparison(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        folder = RESULTS / "compare-tiny"
        return (pd.read_parquet(folder / "scores.parquet"),
                pd.read_parquet(folder / "runs.parquet"))

    @functools.cached_property
    def per_run(self) -> pd.DataFrame:
        """Every run's metrics (BWT divisor T-1, forgetting "first"), from its score matrix."""
        from dmole_lab.analysis.compare import run_metrics

        return run_metrics(*self.comparison)

    @functools.cached_property
    def table(self) -> pd.DataFrame:
        """Mean and std over seeds per variant, recomputed (columns (metric, mean|std))."""
        from dmole_lab.analysis.compare import method_table

        runs = self.comparison[1]
        return method_table(self.per_run, order=list(dict.fromkeys(runs.variant)))

    def mean(self, variant: str, metric: str) -> float:
        return float(self.table.loc[variant, (metric, "mean")])

    def std(self, variant: str, metric: str) -> float:
        return float(self.table.loc[variant, (metric, "std")])

    def seed(self, variant: str, seed: int, metric: str) -> float:
        r = self.per_run
        return float(r[(r.variant == variant) & (r.seed == seed)][metric].iloc[0])

    def per_seed(self, variants, metric: str) -> pd.DataFrame:
        """seed x variant table of one metric."""
        r = self.per_run[self.per_run.variant.isin(variants)]
        return r.pivot(index="seed", columns="variant", values=metric)

    @functools.cached_property
    def tasks(self) -> list[str]:
        return self.comparison[1].tasks.iloc[0].split(",")

    def matrices(self, variant: str) -> list[np.ndarray]:
        from dmole_lab.analysis.metrics import matrix_from_scores

        scores, runs = self.comparison
        return [matrix_from_scores(scores[(scores.variant == variant) & (scores.seed == s)],
                                   self.tasks) for s in sorted(runs[runs.variant == variant].seed)]

    def manifests(self, variant: str) -> list[dict]:
        runs = self.comparison[1]
        runs = runs[runs.variant == variant].sort_values("seed")
        return [json.loads((RESULTS / "compare-tiny" / "runs" / r / "manifest.json").read_text())
                for r in runs.run]

    def run(self, name: str):
        from dmole_lab.store import RunStore

        return RunStore(RESULTS / name)

    def metric(self, name: str, metric: str) -> float:
        """A metric of a shipped run, recomputed from its score matrix (T-1, "first")."""
        from dmole_lab.analysis.metrics import summary

        return float(summary(self.matrix(name))[metric])

    def matrix(self, name: str) -> np.ndarray:
        from dmole_lab.analysis.metrics import matrix_from_scores

        store = self.run(name)
        sm = store.summary("score_matrix")
        return matrix_from_scores(sm[sm.eval_task != "general"], store.manifest()["tasks"])

    def general(self, name: str) -> tuple[float, float]:
        """(zero-shot, after the last stage) score of the general set of a shipped run."""
        sm = self.run(name).summary("score_matrix")
        g = sm[sm.eval_task == "general"].sort_values("stage").value
        return float(g.iloc[0]), float(g.iloc[-1])

    def ratio(self, name: str, quantity: str) -> pd.DataFrame:
        """Per task: median and last LLM / vision ratio of a shipped run's recorded dynamics."""
        return _ratio(name, quantity)

    def stages(self, name: str, key: str) -> list:
        m = self.run(name).manifest()
        return [s[key] for k, s in m["stages"].items() if int(k) >= 1]

    def bench(self, name: str) -> dict:
        return _bench(name)


@functools.cache
def _ratio(name: str, quantity: str) -> pd.DataFrame:
    from dmole_lab.analysis.profiles import tower_ratio
    from dmole_lab.store import RunStore

    return tower_ratio(RunStore(RESULTS / name).summary("dynamics"), quantity).set_index("task")


@functools.cache
def _bench(name: str) -> dict:
    return json.loads((BENCH_RESULTS / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def shipped() -> Shipped:
    return Shipped()


# ---------------------------------------------------------------- the comparison table
BENCH_TABLE = pipe_table("benchmarks/README", "| variant | AVG | Last | BWT | Forgetting |")
COLUMNS = {"params / task": "params_per_task", "training s": "training_seconds"}


def test_the_shipped_comparison_table_is_the_one_its_score_matrices_give(shipped):
    from dmole_lab.analysis.compare import format_table, markdown

    table = pd.read_parquet(RESULTS / "compare-tiny" / "table.parquet").set_index("variant")
    assert table.index.tolist() == shipped.table.index.tolist()
    for metric, stat in shipped.table.columns:
        col = f"{metric}_{stat}" if stat else metric
        np.testing.assert_allclose(table[col], shipped.table[(metric, stat)], rtol=1e-9,
                                   err_msg=col)
    md = (RESULTS / "compare-tiny" / "table.md").read_text()
    assert markdown(format_table(shipped.table)) in md


def test_the_benchmarks_readme_lists_every_shipped_variant(shipped):
    assert [r["variant"].split(" (")[0] for r in BENCH_TABLE] == shipped.table.index.tolist()


@pytest.mark.parametrize("row", BENCH_TABLE, ids=lambda r: r["variant"].split(" (")[0])
def test_comparison_table_in_benchmarks_readme(row, shipped):
    variant = row["variant"].split(" (")[0]
    pairs = []
    for col, cell in row.items():
        if col == "variant":
            continue
        if col == "seeds":
            pairs.append((cell, float(shipped.table.loc[variant, ("seeds", "")])))
        elif col in COLUMNS:  # the mean only
            pairs.append((cell, shipped.mean(variant, COLUMNS[col])))
        else:
            m, s = mean_std(cell)
            pairs += [(m, shipped.mean(variant, col)), (s, shipped.std(variant, col))]
    check(pairs, f"benchmarks/README.md comparison table, {variant}")


# --------------------------------------------------------------------- the seeds table
SEEDS_TABLE = pipe_table("benchmarks/README", "| variant | AVG | Last | BWT | MFT | router")


@pytest.mark.parametrize("row", SEEDS_TABLE, ids=lambda r: r["variant"])
def test_dmole_against_seq_lora_over_seeds_table(row, shipped):
    variant = {"D-MoLE (batch routing)": "dmole", "sequential LoRA": "seq-lora"}[row["variant"]]
    pairs = []
    for col in ("AVG", "Last", "BWT", "MFT"):
        m, s = mean_std(row[col])
        pairs += [(m, shipped.mean(variant, col)), (s, shipped.std(variant, col))]
    runs = shipped.comparison[1]
    acc = runs[runs.variant == variant].router_accuracy
    if row["router accuracy"] == "-":
        assert acc.isna().all()
    else:
        m, s = mean_std(row["router accuracy"])
        pairs += [(m, acc.mean()), (s, acc.std())]
    pairs.append((row["params / task"], shipped.mean(variant, "params_per_task")))
    check(pairs, f"benchmarks/README.md seeds table, {variant}")


# ------------------------------------------------------------------- the per-task table
PER_TASK = pipe_table("benchmarks/README", "| task | caption | grounding |")
PER_TASK_CELLS = [(r["task"], t) for r in PER_TASK for t in r if t != "task"]
#: Quoted cells that do not match the shipped runs: {(row, task): the actual figure}.
PER_TASK_WRONG: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("row, task", [
    pytest.param(r, t, marks=pytest.mark.xfail(
        strict=True, reason=f"benchmarks/README.md quotes another figure; shipped: "
                            f"{PER_TASK_WRONG[(r, t)]}"))
    if (r, t) in PER_TASK_WRONG else (r, t) for r, t in PER_TASK_CELLS],
    ids=[f"{r}-{t}" for r, t in PER_TASK_CELLS])
def test_per_task_own_stage_scores_and_joins(row, task, shipped):
    """a[t, t] of every task, mean over the three seeds, and the share of its training
    batches an earlier task's experts joined (D-MoLE's manifests)."""
    cell = next(r for r in PER_TASK if r["task"] == row)[task]
    t = shipped.tasks.index(task)
    if row == "earlier experts on":
        actual = 100 * np.mean([m["stages"][str(t + 1)]["train_batches_with_earlier_expert"]
                                for m in shipped.manifests("dmole")])
    else:
        variant = {"D-MoLE": "dmole", "sequential LoRA": "seq-lora"}[row]
        actual = np.mean([A[t + 1, t] for A in shipped.matrices(variant)])
    check([(cell, actual)], f"benchmarks/README.md per-task table, {row} {task}")


def _profiles(name: str) -> pd.DataFrame:
    """grad_norm layer profiles of a shipped probe at its own K+1."""
    from dmole_lab.analysis.profiles import layer_profiles

    run = Shipped().run(name)
    return layer_profiles(run.summary("sensitivity"), "grad_norm",
                          run.manifest()["probe_batches"])


def _peaks(s: Shipped) -> tuple:
    """How many tasks peak at the LLM's most common peak layer, the one that does not, its
    peak layer, and its score at that common layer as a share of its peak."""
    llm = _profiles("probe-tiny").query("tower == 'llm'").pivot(
        index="task", columns="layer", values="score")
    peak = llm.idxmax(axis=1)
    common = int(peak.mode().iloc[0])
    other = peak[peak != common]
    assert len(other) == 1, other  # the sentence names one exception
    task = other.index[0]
    return (int((peak == common).sum()), len(peak), common, task, int(other.iloc[0]),
            llm.loc[task, common] / llm.loc[task].max())


def _first_vision_layer(s: Shipped) -> tuple:
    """The largest score of a deeper vision layer as a share of layer 0's, over all tasks."""
    vision = _profiles("probe-tiny").query("tower == 'vision'").pivot(
        index="task", columns="layer", values="score")
    assert (vision.idxmax(axis=1) == 0).all()  # "the first vision layer dominates"
    return (vision.drop(columns=0).div(vision[0], axis=0).max().max(),)


def _smollm2_llm(s: Shipped) -> tuple:
    """SmolLM2's peak layers, the least share of its peak any task keeps at layer 3, and the
    tasks' mean pairwise Spearman in the LLM."""
    from dmole_lab.analysis.profiles import mean_offdiagonal, task_correlations

    prof = _profiles("probe-smollm2")
    llm = prof.query("tower == 'llm'").pivot(index="task", columns="layer", values="score")
    peaks = sorted(set(llm.idxmax(axis=1).astype(int)))
    assert peaks == [3, 7, 12], peaks  # "(layer 3, 7 or 12)"
    share = llm.div(llm.max(axis=1), axis=0)
    return (share[3].min(), 3, mean_offdiagonal(task_correlations(prof, "llm")))


def _vision_expert_layers(s: Shipped) -> tuple:
    """The vision layers D-MoLE's experts sit in for every task, the task with one beyond
    them and that layer; and whether every task takes all of LLM layer 0's modules."""
    alloc = s.run("dmole-tiny").summary("allocation")
    vision = alloc[alloc.tower == "vision"].groupby("task")["layer"].max()
    common = int(vision.mode().iloc[0])
    beyond = vision[vision > common]
    assert len(beyond) == 1, beyond
    llm0 = alloc[(alloc.tower == "llm") & (alloc.layer == 0)].groupby("task")["module"].nunique()
    return (int(alloc[alloc.tower == "vision"].layer.min()), common, beyond.index[0],
            int(beyond.iloc[0]), {4: "four"}.get(int(llm0.min()), str(llm0.min())))


def _lora_modules(s: Shipped) -> tuple:
    """Sequential LoRA's rank and the linear modules it adapts per tower (from the model)."""
    import collections

    from dmole_lab.config import build_config
    from dmole_lab.models.anatomy import anatomy_of
    from dmole_lab.models.loading import load_model

    cfg = build_config("tiny", {})
    picked = anatomy_of(load_model(cfg.model)[0]).select(cfg.lora.modules)
    towers = collections.Counter(m.tower for m in picked)
    return cfg.lora.r, towers["vision"], towers["llm"]


def _learned_cells(s: Shipped, variant: str, margin: float = 10.0) -> tuple[int, int]:
    """(cells learned in their own stage, cells) over the seeds of a variant of the comparison."""
    from dmole_lab.analysis.metrics import learned_in_own_stage

    ms = s.matrices(variant)
    return sum(learned_in_own_stage(A, margin) for A in ms), sum(A.shape[1] for A in ms)


def _own_gain(s: Shipped, variant: str, seed: int, task: str) -> float:
    """a[i, i] - b_i of one task at one seed of the comparison."""
    A = s.matrices(variant)[seed]
    i = s.tasks.index(task)
    return float(A[i + 1, i] - A[0, i])


def _swept(variant: str, metric: str) -> tuple[float, float]:
    """(before, after) of a variant's mean in benchmarks/results/compare_sweeps.json."""
    v = _bench("compare_sweeps")["variants"][variant]
    return v[f"{metric} before"], v[f"{metric} after"]


def _before_gains(variant: str, task: str) -> tuple[float, float]:
    """Lowest and highest a[i, i] - b_i of a task over the seeds of the comparison that
    compare_sweeps.json read as "before" (a git revision of results/compare-tiny)."""
    from dmole_lab.analysis.metrics import matrix_from_scores
    from dmole_lab.viz.results import committed_comparison

    rev, name = _bench("compare_sweeps")["before"].split(":results/")
    try:
        scores, runs = committed_comparison(name, rev)
    except LookupError as e:  # a shallow clone lacks the revision; a full one must have it
        pytest.skip(str(e))
    gains = []
    for r in runs[runs.variant == variant].itertuples():
        tasks = r.tasks.split(",")
        A = matrix_from_scores(scores[(scores.variant == variant) & (scores.seed == r.seed)],
                               tasks)
        i = tasks.index(task)
        gains.append(A[i + 1, i] - A[0, i])
    return min(gains), max(gains)


def _own_stage(s: Shipped, name: str) -> pd.Series:
    """Each task's score right after its own stage (the diagonal), by task."""
    a = s.matrix(name)
    tasks = s.run(name).manifest()["tasks"]
    return pd.Series([a[i + 1, i] for i in range(len(tasks))], index=tasks)


def _continual_split(s: Shipped) -> tuple:
    """The range of k_V the `continual` curriculum gives the tasks after the first, and the
    tasks it gives a vision majority."""
    cur = s.run("dmole-tiny").summary("curriculum")
    cont = cur[cur.curriculum == "continual"].set_index("task").reindex(
        s.run("dmole-tiny").manifest()["tasks"])
    later = cont.iloc[1:]
    floor = int(cont["k_vision"].iloc[0])
    assert (later["k_vision"] > floor).all()  # "every task after the first more than the floor"
    budget = int((cont["k_vision"] + cont["k_llm"]).iloc[0])
    majority = later[later["k_vision"] > later["k_llm"]].index
    return (later["k_vision"].min(), later["k_vision"].max(), budget, ", ".join(majority))


def _reliability(s: Shipped) -> pd.DataFrame:
    """grad_norm's stability and oracle agreement per batch count (rows) and tower."""
    r = s.run("proxy-reliability-tiny").summary("reliability")
    return r[r.proxy == "grad_norm"].set_index(["tower", "batches"])


def _reliability_quote(s: Shipped) -> tuple:
    r = _reliability(s)
    for tower in ("vision", "llm"):  # "stays where it was at every batch count"
        assert np.ptp(r.loc[tower, "oracle"]) < 0.06, r.loc[tower, "oracle"]
    return (r.loc[("llm", 1), "stability"], r.loc[("llm", 2), "stability"],
            r.loc[("llm", 32), "stability"], r.loc[("vision", 1), "stability"],
            r.loc[("vision", 32), "stability"], r.loc["vision", "oracle"].mean(),
            r.loc["llm", "oracle"].mean(), r.loc["llm", "oracle"].min(),
            r.loc["llm", "oracle"].max())


# ------------------------------------------------------------------------ notebook 05
@functools.cache
def _switches() -> pd.DataFrame:
    """Per-run metrics of the shipped plasticity switches, with their join shares."""
    from dmole_lab.analysis.compare import run_metrics
    from dmole_lab.analysis.plasticity import labelled

    scores, runs = (pd.read_parquet(RESULTS / "plasticity-tiny" / f"{n}.parquet")
                    for n in ("scores", "runs"))
    return labelled(run_metrics(scores, runs)).merge(
        labelled(runs)[["variant", "seed", "train_join_share"]], on=["variant", "seed"])


def _switch(label: str, metric: str) -> float:
    d = _switches()
    return float(d[d.variant == label][metric].mean())


def _effect(label: str, metric: str) -> tuple[float, float]:
    from dmole_lab.analysis.plasticity import paired_effects

    e = paired_effects(_switches())
    row = e[(e.variant == label) & (e.metric == metric)].iloc[0]
    return float(row.effect), float(row.se)


def _seeds_ahead(label: str, other: str, metric: str) -> tuple[int, int]:
    """(seeds at which switch ``label`` is above ``other``, seeds both have)."""
    d = _switches().pivot(index="seed", columns="variant", values=metric)[[label, other]].dropna()
    return int((d[label] > d[other]).sum()), len(d)

def _layer(name: str) -> pd.DataFrame:
    return Shipped().run("layer-scores-tiny").summary(name)


def _pooled(score: str) -> tuple[float, float]:
    p = _layer("agreement_pooled").set_index(["score_name", "tower"])["mean"]
    return float(p[(score, "vision")]), float(p[(score, "llm")])


def _excess(tower: str, factor: str) -> float:
    e = _layer("layer_zero_excess")
    return float(e[(e.tower == tower) & (e.factor == factor)]["ratio"].mean())


def _oracle_spread() -> tuple:
    """Per tower: the seed std of a layer's gain and the spread of the layers' mean gains."""
    o = Shipped().run("oracle-tiny").summary("oracle")
    g = o.groupby(["task", "tower", "layer"])["gain"].agg(["mean", "std"]).reset_index()
    out = {}
    for tower, d in g.groupby("tower"):
        out[tower] = (float(d["std"].mean()), float(d.groupby("task")["mean"].std().mean()))
    return out["vision"][0], out["vision"][1], out["llm"][1], out["llm"][0]


def _ceiling(column: str, tower: str) -> float:
    c = Shipped().run("oracle-tiny").summary("oracle_ceiling")
    return float(c[c.tower == tower][column].mean())


def _oracle_best_early(s: Shipped) -> tuple:
    from dmole_lab.analysis.profiles import oracle_profiles

    prof = oracle_profiles(s.run("oracle-tiny").summary("oracle"), "gain")
    v = prof[prof.tower == "vision"]
    best = v.loc[v.groupby("task")["gain"].idxmax(), "layer"]
    return int((best <= 1).sum()), len(best)



def _vision_oracle(name: str) -> pd.DataFrame:
    """A table of the 36-seed vision oracle (bench_oracle_agreement.py --ship)."""
    return Shipped().run("oracle-vision-tiny").summary(name)


def _vision_curve(seeds: int, column: str = "split_half") -> float:
    c = _vision_oracle("agreement")
    return float(c.loc[c.seeds == seeds, column].iloc[0])


def _vision_curve_range(low: int, high: int, column: str = "split_half") -> tuple:
    c = _vision_oracle("agreement")
    c = c[c.seeds.between(low, high)][column]
    return float(c.min()), float(c.max())


def _vision_proxy(seeds: int, proxy: str = "grad_norm") -> float:
    p = _vision_oracle("proxy_by_seeds")
    return float(p[(p.seeds == seeds) & (p.proxy == proxy)]["spearman"].iloc[0])


def _vision_ceiling_extremes() -> tuple:
    """Lowest and highest per-task split-half agreement at all seeds, with the tasks."""
    c = _vision_oracle("oracle_ceiling").set_index("task")["spearman"].round(2)
    low, high = c.min(), c.max()
    return (low, ", ".join(c[c == low].index), high, ", ".join(c[c == high].index))


def _scores_vs_vision36(*names: str, column: str = "mean") -> tuple:
    from dmole_lab.analysis.profiles import oracle_profiles, score_agreement

    scores = _layer("scores")
    _, pooled = score_agreement(scores[scores.tower == "vision"],
                                oracle_profiles(_vision_oracle("oracle"), "gain"))
    p = pooled.set_index("score_name")
    return tuple(float(p.loc[n, c]) for n in names for c in
                 ((column,) if column != "both" else ("mean", "std")))


def _vision36_best_layers() -> tuple:
    """Tasks whose 36-seed oracle puts layer 0 first, layer 0 or 1 first; tasks; and the
    tasks whose proxy (grad_norm) puts layer 0 first."""
    from dmole_lab.analysis.profiles import oracle_profiles

    v = oracle_profiles(_vision_oracle("oracle"), "gain")
    best = v.loc[v.groupby("task")["gain"].idxmax(), "layer"]
    g = _layer("scores").query("score_name == 'grad_norm' and tower == 'vision'")
    proxy_best = g.loc[g.groupby("task")["score"].idxmax(), "layer"]
    return (int((best == 0).sum()), len(best), int((best <= 1).sum()),
            int((proxy_best == 0).sum()))


def _vision_single_extreme(pick) -> tuple:
    """(agreement, task) of the task whose single seeds agree least (pick=min) or most."""
    r1 = _vision_oracle("oracle_ceiling").set_index("task")["single"]
    task = r1.idxmin() if pick is min else r1.idxmax()
    return float(r1[task]), task


def _first_seeds(curve: pd.DataFrame, target: float) -> int:
    """The smallest seed count whose split-half agreement reaches ``target``."""
    return int(curve[curve.split_half >= target].seeds.min())


def _spearman_brown(seeds: int) -> float:
    """Spearman-Brown's agreement of two means of seeds / 2 seeds each, from every task's
    single-seed agreement at all seeds, mean over tasks (solution 05.4)."""
    r1 = _vision_oracle("oracle_ceiling")["single"]
    k = seeds // 2
    return float((k * r1 / (1 + (k - 1) * r1)).mean())


def _span(rows: pd.DataFrame, proxy: str, column: str = "oracle") -> tuple[float, float]:
    v = rows[rows.proxy == proxy][column]
    return float(v.min()), float(v.max())

def _probe_share(s: Shipped) -> tuple:
    return (100 * sum(s.stages("dmole-tiny", "probe_seconds"))
            / sum(s.stages("dmole-tiny", "train_seconds")),)


def _general_retention(s: Shipped) -> tuple:
    others = [v for v in s.table.index if v not in ("dmole",) and not v.startswith("dmole-")]
    return (s.mean("dmole", "Retention"), min(s.mean(v, "Retention") for v in others),
            max(s.mean(v, "Retention") for v in others))


def _resid_flattens(s: Shipped) -> None:
    from dmole_lab.analysis.profiles import factor_scores

    f = factor_scores(_layer("factors"))
    f = f[(f.tower == "vision") & (f.score_name == "grad_norm*resid_rms")]
    w = f.pivot(index="task", columns="layer", values="score")
    ratio = (w[0] / w.drop(columns=0).mean(axis=1)).mean()
    assert ratio < 2.0, ratio  # "removes most of the peak" (5.3 before)
    return ()


# ------------------------------------------------------------------- the quoted sentences
@dataclass(frozen=True)
class Quote:
    """Numbers captured by ``pattern`` in ``doc`` against ``actual(shipped)`` (one value per
    group, in order); ``step``: the rounding of a loose quote ("about 780")."""

    id: str
    doc: str
    pattern: str
    actual: Callable[[Shipped], tuple]
    step: float | None = None
    wrong: str | None = None  # the reason of a known mismatch (xfail, strict)


def _continual_last_per_seed(s: Shipped) -> tuple[pd.Series, pd.Series]:
    last = s.per_seed(("dmole", *PEERS), "Last")
    return last["dmole"], last[list(PEERS)].max(axis=1)


def _claims_best_last_at_every_seed(s: Shipped) -> tuple:
    dmole, best_peer = _continual_last_per_seed(s)
    assert (dmole > best_peer).all()  # the claim itself
    return (s.mean("dmole", "Last"), max(s.mean(p, "Last") for p in PEERS))


def _speed(s: Shipped, i: int) -> tuple:
    r = s.bench("dmole_speed")["runs"][i]
    d, q = r["dmole"], r["seq-lora"]
    return (d["train_seconds"], d["setup_seconds"], d["probe_seconds"], d["router_seconds"],
            d["training_seconds"], q["training_seconds"],
            d["training_seconds"] / q["training_seconds"])


def _router_row(s: Shipped, batch: int, lr: float, bias: str) -> dict:
    return next(r for r in s.bench("router")["rows"] if r["normalise"] == "parts"
                and r["batch"] == batch and r["lr"] == lr and r["output_bias"] == bias)


def _dmole_gradient_ratio_below_seq_lora(s: Shipped) -> tuple:
    d, q = s.ratio("dmole-tiny", "grad_norm"), s.ratio("seq-lora-tiny", "grad_norm")
    below = [t for t in s.run("dmole-tiny").manifest()["tasks"]
             if d.loc[t, "median"] < q.loc[t, "median"]]
    return (str(len(below)), ", ".join(below))


def _demo_walls(s: Shipped, variant: str = "current") -> list[float]:
    """make demo's wall times in the last side-by-side pair: the code as it is ("current") or
    the revision before adapter dropout was turned off in the tiny preset."""
    return s.bench("bench_demo_dropout_off")["variants"][variant]["wall_seconds"]


def _seeds_json(s: Shipped, variant: str, metric: str) -> pd.Series:
    runs = pd.DataFrame(s.bench("seeds")["runs"])
    return runs[runs.variant == variant][metric]


QUOTES = [
    # ------------------------------------------------------------------------ README.md
    Quote("readme-seq-lora-demo", "README",
          rf"MFT ({NUM}) against a zero-shot mean of ({NUM})\) and forgotten by the end "
          rf"\(BWT ({NUM}), Last ({NUM})\); the general set \(held-out object listing\) falls "
          rf"from ({NUM}) to ({NUM})",
          lambda s: (s.metric("seq-lora-tiny", "MFT"), s.matrix("seq-lora-tiny")[0].mean(),
                     s.metric("seq-lora-tiny", "BWT"), s.metric("seq-lora-tiny", "Last"),
                     *s.general("seq-lora-tiny"))),
    Quote("readme-demo-minutes", "README",
          rf"It takes about ({NUM}) minutes on a 2-core AMD EPYC machine \(({NUM}) s in two runs, "
          rf"against ({NUM})-({NUM}) s for the code before",
          lambda s: (np.median(_demo_walls(s)) / 60, np.median(_demo_walls(s)),
                     min(_demo_walls(s, "ffff40a")), max(_demo_walls(s, "ffff40a")))),
    Quote("readme-parallel", "README", rf"side by side takes ({NUM}) of the time",
          lambda s: (np.median([r["parallel"] / r["serial"]
                                for r in s.bench("parallel")["rounds"]]),)),
    Quote("readme-dmole-params", "README",
          rf"({NUM}) trainable parameters per task against sequential LoRA's ({NUM})",
          lambda s: (s.mean("dmole", "params_per_task"), s.mean("seq-lora", "params_per_task"))),
    Quote("readme-dmole-three-seeds", "README",
          rf"BWT ({NUM}) \+- ({NUM}) against ({NUM}) \+- ({NUM}), Last ({NUM}) \+- ({NUM}) "
          rf"against ({NUM}) \+- ({NUM}), AVG ({NUM}) \+- ({NUM}) against ({NUM}) \+- ({NUM})",
          lambda s: tuple(f(v, m) for m in ("BWT", "Last", "AVG") for v in ("dmole", "seq-lora")
                          for f in (s.mean, s.std))),
    Quote("readme-dmole-mft", "README", rf"\(MFT ({NUM}) against ({NUM})\): its experts",
          lambda s: (s.mean("dmole", "MFT"), s.mean("seq-lora", "MFT"))),
    Quote("readme-dmole-speed", "README",
          rf"time is ({NUM}) of sequential LoRA's.{{0,120}}?of which ({NUM})% is the "
          r"zero-cost probe",
          lambda s: (s.bench("dmole_speed")["wall_ratio_dmole_over_seq_lora"],
                     s.bench("dmole_speed")["probe_share_pct"])),
    Quote("readme-nb01-gradient-ratio", "README",
          rf"the LLM's gradient norm is ({NUM})-({NUM}) times the vision tower's \(median per "
          rf"task\), and the proxies agree only loosely with the oracle \(Spearman about "
          rf"({NUM}) in vision, about ({NUM}) in the LLM",
          lambda s: (s.ratio("seq-lora-tiny", "grad_norm")["median"].min(),
                     s.ratio("seq-lora-tiny", "grad_norm")["median"].max(),
                     *(_number(s.bench("proxy_oracle")["spearman_proxy_vs_oracle"][f"{t}/"
                       "grad_norm"].split(" +- ")[0]) for t in ("vision", "llm")))),
    Quote("readme-nb04", "README",
          rf"at every seed \(({NUM}) against at most ({NUM})\) and zero BWT, but its AVG lead "
          rf"over BranchLoRA \(({NUM}) against ({NUM})\) is within the spread. Its LLM-only "
          rf"ablation v1 beats it \(AVG ({NUM})\)",
          lambda s: (*_claims_best_last_at_every_seed(s), s.mean("dmole", "AVG"),
                     s.mean("branchlora", "AVG"), s.mean("dmole-v1", "AVG"))),
    # ------------------------------------------------------------- benchmarks/README.md
    Quote("bench-recorders", "benchmarks/README",
          rf"({NUM}) ms per step without, ({NUM}) ms with; paired A/B overhead ({NUM})% "
          rf"\(median of per-round ratios\), time inside the recorder's hooks ({NUM}) ms per "
          rf"step = ({NUM})% of the step",
          lambda s: tuple(s.bench("recorders")[k] for k in (
              "median_step_ms_without", "median_step_ms_with", "ab_overhead_pct_paired",
              "hook_ms_per_step", "hook_share_of_step_pct"))),
    Quote("bench-proxy-vision-share", "benchmarks/README",
          rf"vision share rho_V \(({NUM})-({NUM})\) and the oracle's \(({NUM})-({NUM})\) rank "
          rf"the nine tasks with Spearman ({NUM})",
          lambda s: (min(s.bench("proxy_oracle")["vision_share"]["proxy grad_norm (rho_V)"]
                         .values()),
                     max(s.bench("proxy_oracle")["vision_share"]["proxy grad_norm (rho_V)"]
                         .values()),
                     min(s.bench("proxy_oracle")["vision_share"]["oracle"].values()),
                     max(s.bench("proxy_oracle")["vision_share"]["oracle"].values()),
                     s.bench("proxy_oracle")["vision_share_spearman_over_tasks"])),
    Quote("bench-router-overfit", "benchmarks/README",
          rf"go further on false accepts \(({NUM})-({NUM})\) but overfit \(their own "
          rf"autoencoder accepts only ({NUM})-({NUM})%",
          lambda s: (_router_row(s, 64, 0.003, "mean")["false_accept"],
                     _router_row(s, 64, 0.001, "mean")["false_accept"],
                     100 * _router_row(s, 64, 0.003, "mean")["own_accept"],
                     100 * _router_row(s, 64, 0.001, "mean")["own_accept"])),
    Quote("bench-earlier-router-fit", "benchmarks/README",
          rf"D-MoLE AVG ({NUM}) \+- ({NUM}), Last ({NUM}) \+- ({NUM}), BWT ({NUM}) \+- ({NUM}), "
          rf"router accuracy ({NUM}) \+- ({NUM}) \(per-sample routing",
          lambda s: tuple(f(_seeds_json(s, "dmole", m))
                          for m in ("AVG", "Last", "BWT", "router_accuracy")
                          for f in (np.mean, lambda x: x.std()))),
    Quote("bench-earlier-router-fit-sample", "benchmarks/README",
          rf"\(per-sample routing: AVG ({NUM}) \+- ({NUM}), BWT {NUM} \+- {NUM}, router accuracy "
          rf"({NUM}); `results/seeds.json`",
          lambda s: (*(f(_seeds_json(s, "dmole+dmole.routing=sample", "AVG"))
                       for f in (np.mean, lambda x: x.std())),
                     _seeds_json(s, "dmole+dmole.routing=sample", "router_accuracy").mean())),
    Quote("bench-earlier-router-fit-sample-bwt", "benchmarks/README",
          rf"\(per-sample routing: AVG {NUM} \+- {NUM}, BWT ({NUM}) \+- ({NUM}), router accuracy",
          lambda s: tuple(f(_seeds_json(s, "dmole+dmole.routing=sample", "BWT"))
                          for f in (np.mean, lambda x: x.std()))),
    Quote("bench-dmole-bwt-mft", "benchmarks/README",
          rf"\(BWT ({NUM}) against ({NUM})\). What it does not show is the paper's gain in "
          rf"plasticity: D-MoLE learns each task far less well in its own stage \(MFT ({NUM}) "
          rf"against ({NUM})\), so its AVG is only ({NUM}) points above sequential LoRA's, while "
          rf"its Last is ({NUM}) points higher",
          lambda s: (s.mean("dmole", "BWT"), s.mean("seq-lora", "BWT"), s.mean("dmole", "MFT"),
                     s.mean("seq-lora", "MFT"),
                     s.mean("dmole", "AVG") - s.mean("seq-lora", "AVG"),
                     s.mean("dmole", "Last") - s.mean("seq-lora", "Last"))),
    Quote("bench-caption-seeds", "benchmarks/README",
          rf"caption scored ({NUM}) in seed 0 against ({NUM})-({NUM}) in seeds 1-2",
          lambda s: (lambda c: (c[0], min(c[1:]), max(c[1:])))(
              [A[1, 0] for A in s.matrices("dmole")])),
    *[Quote(f"bench-speed-seed{i}", "benchmarks/README",
            rf"\| {i} \| ({NUM}) s \| ({NUM}) s \(({NUM}) s, ({NUM}) s\) \| ({NUM}) s \| "
            rf"({NUM}) s \| ({NUM}) \|", functools.partial(_speed, i=i)) for i in range(3)],
    Quote("bench-speed-summary", "benchmarks/README",
          rf"Probing is ({NUM})% of D-MoLE's training time \(median; paper ({NUM})%, aim <= "
          rf"({NUM})%: met\). D-MoLE / sequential LoRA: median of the pairs ({NUM}), and ({NUM}) "
          rf"with each method timed as the sum over stages of its fastest repeat \(paper ({NUM})",
          lambda s: (s.bench("dmole_speed")["probe_share_pct"],
                     s.bench("dmole_speed")["paper"]["probe_share_pct"],
                     s.bench("dmole_speed")["targets"]["probe_share_pct"],
                     np.median(s.bench("dmole_speed")["wall_ratio_per_pair"]),
                     s.bench("dmole_speed")["wall_ratio_stage_minima"],
                     s.bench("dmole_speed")["paper"]["wall_ratio_dmole_over_seq_lora"])),
    Quote("bench-speed-loop-and-router", "benchmarks/README",
          rf"training loop alone is ({NUM})-({NUM}) of sequential LoRA's .{{0,300}}? is the "
          rf"other ({NUM})%",
          lambda s: (lambda rs: (min(d["train_seconds"] / q["training_seconds"] for d, q in rs),
                                 max(d["train_seconds"] / q["training_seconds"] for d, q in rs),
                                 100 * np.median([d["router_seconds"] / d["training_seconds"]
                                                  for d, _ in rs])))(
              [(r["dmole"], r["seq-lora"]) for r in s.bench("dmole_speed")["runs"]])),
    Quote("bench-parallel", "benchmarks/README",
          rf"({NUM}) s one after the other against ({NUM}) s side by side, then ({NUM}) s against "
          rf"({NUM}) s: ratio ({NUM}) and ({NUM}), median ({NUM})",
          lambda s: (lambda r: (r[0]["serial"], r[0]["parallel"], r[1]["serial"],
                                r[1]["parallel"], r[0]["ratio"], r[1]["ratio"],
                                np.median([x["parallel"] / x["serial"] for x in r])))(
              s.bench("parallel")["rounds"])),
    Quote("bench-compare-last-batch", "benchmarks/README",
          rf"in one call: ({NUM}) runs took ({NUM}) min of wall time "
          rf"\(`benchmarks/results/compare.json`",
          lambda s: (s.bench("compare")["runs"], s.bench("compare")["wall_seconds"] / 60)),
    Quote("bench-compare-training-range", "benchmarks/README",
          rf"One run trains for ({NUM})-({NUM}) s \(O-LoRA about",
          lambda s: (min(s.mean(v, "training_seconds") for v in s.table.index if v != "o-lora"),
                     max(s.mean(v, "training_seconds") for v in s.table.index if v != "o-lora"))),
    Quote("bench-compare-training-olora", "benchmarks/README",
          rf"\(O-LoRA about ({NUM}) s: its orthogonality term\)",
          lambda s: (s.mean("o-lora", "training_seconds"),), step=10),
    Quote("bench-compare-training-sum", "benchmarks/README",
          rf"the 45 runs sum to ({NUM}) s of training",
          lambda s: (s.comparison[1].training_seconds.sum(),)),
    Quote("bench-general-zero-shot", "benchmarks/README",
          rf"its zero-shot score is ({NUM})",
          lambda s: (s.comparison[1].general_zero_shot.iloc[0],)),
    Quote("bench-claim-bwt", "benchmarks/README",
          rf"D-MoLE's BWT holds\*\*: ({NUM}) against ({NUM}) \(BranchLoRA\) to ({NUM}) \(EWC\)",
          lambda s: (s.mean("dmole", "BWT"), max(s.mean(p, "BWT") for p in PEERS),
                     min(s.mean(p, "BWT") for p in PEERS))),
    Quote("bench-claim-last", "benchmarks/README",
          rf"Its Last ranking holds\*\*: ({NUM}) against at most ({NUM}) among the continual "
          rf"peers, at every seed \(({NUM})-({NUM}) against a best peer of ({NUM})-({NUM})\)",
          lambda s: (*_claims_best_last_at_every_seed(s),
                     *(f(x) for x in _continual_last_per_seed(s) for f in (min, max)))),
    Quote("bench-claim-avg", "benchmarks/README",
          rf"({NUM}) \+- ({NUM}) against BranchLoRA's ({NUM}) \+- ({NUM}) and EWC's ({NUM}) \+- "
          rf"({NUM}). D-MoLE is first among the continual peers at seeds 0 and 1 \(at seed 0, "
          rf"({NUM}) against BranchLoRA's ({NUM})\), but fourth at seed 2, below BranchLoRA, EWC "
          rf"and MoELoRA",
          lambda s: (*(f(v, "AVG") for v in ("dmole", "branchlora", "ewc")
                       for f in (s.mean, s.std)),
                     s.seed("dmole", 0, "AVG"), s.seed("branchlora", 0, "AVG"))),
    Quote("bench-claim-ablations", "benchmarks/README",
          rf"on AVG \(({NUM}) against ({NUM})\) and Last \(({NUM}) against ({NUM})\). v3 \(no "
          rf"curriculum\) is below on the mean too \(({NUM}), ({NUM})\), so v3, not v4, is the "
          rf"worse of the two. Both are below on Last at every seed but above on AVG at seed 2. v1 "
          rf"\(LLM only\) is better than the full method \(({NUM}), ({NUM})\), on both at every "
          rf"seed. The worst is v2 \(vision only\), which learns almost nothing \(({NUM})\)",
          lambda s: (s.mean("dmole-v4", "AVG"), s.mean("dmole", "AVG"), s.mean("dmole-v4", "Last"),
                     s.mean("dmole", "Last"), s.mean("dmole-v3", "AVG"),
                     s.mean("dmole-v3", "Last"), s.mean("dmole-v1", "AVG"),
                     s.mean("dmole-v1", "Last"), s.mean("dmole-v2", "AVG"))),
    Quote("bench-claim-branchlora", "benchmarks/README",
          rf"AVG ({NUM}) against ({NUM}), Last ({NUM}) against ({NUM}), BWT ({NUM}) against "
          rf"({NUM}), with ({NUM})x the parameters per task",
          lambda s: (*(s.mean(v, m) for m in ("AVG", "Last", "BWT")
                       for v in ("branchlora", "moelora")),
                     s.mean("branchlora", "params_per_task")
                     / s.mean("moelora", "params_per_task"))),
    Quote("bench-seq-lora-across-cpus", "benchmarks/README",
          rf"the seed-0 sequential-LoRA run equals the shipped `results/seq-lora-tiny` \(same "
          rf"score matrices; AVG ({NUM}) there, ({NUM}) in the sweep\)",
          lambda s: (s.metric("seq-lora-tiny", "AVG"), s.seed("seq-lora", 0, "AVG"))),
    # ------------------------------------------------------------------------ notebook 01
    Quote("nb01-candidates", "nb01",
          rf"attention q, k, v and o of every layer: ({NUM}) per tower",
          lambda s: tuple({len(g) for _, g in s.run("probe-tiny").summary("sensitivity")
                           .drop_duplicates("module").groupby("tower")})),
    Quote("nb01-peaks", "nb01",
          rf"(\d) of (\d) tasks peak at LLM layer (\d) and (\w+) at layer (\d) \(with layer 0 at "
          rf"({NUM}) of its peak\)", _peaks),
    Quote("nb01-first-vision-layer", "nb01", rf"every deeper one scores at most ({NUM}) of it",
          _first_vision_layer),
    Quote("nb01-smollm2", "nb01",
          rf"every task keeps at least ({NUM}) of its peak at layer (\d+), and the tasks' LLM "
          rf"profiles are almost identical \(mean pairwise Spearman ({NUM})\)", _smollm2_llm),
    Quote("nb01-proxy-spread", "nb01",
          rf"with a spread over tasks \(std ({NUM})-({NUM})\) larger than the mean",
          lambda s: (lambda p: (p["std"].min(), p["std"].max()))(
              s.run("oracle-tiny").summary("proxy_vs_oracle_pooled")), 0.1),
    Quote("nb01-probe-batches", "nb01",
          rf"agreement between probes rises from ({NUM}) with one batch and ({NUM}) with "
          rf"D-MoLE's two to ({NUM}) with 32 \(vision: ({NUM}) to ({NUM})\).{{0,200}}?about "
          rf"({NUM}) in the vision tower and about ({NUM}) in the LLM \(between ({NUM}) and "
          rf"({NUM}) for `grad_norm`\)", _reliability_quote),
    Quote("nb01-gradient-ratio", "nb01",
          rf"the median LLM / vision ratio per task runs from about ({NUM}) \((\w+)\) to about "
          rf"({NUM}) \((\w+)\). The relative updates are closer: at the end of each stage the "
          rf"LLM's LoRA has moved its weights ({NUM}) to ({NUM}) times",
          lambda s: (lambda g, u: (g["median"].min(), g["median"].idxmin(), g["median"].max(),
                                   g["median"].idxmax(), u["last"].min(), u["last"].max()))(
              s.ratio("seq-lora-tiny", "grad_norm"), s.ratio("seq-lora-tiny", "rel_update"))),
    Quote("nb01-summary-ratios", "nb01",
          rf"the LLM's gradients \(({NUM}) to ({NUM}) times, median per task\) and relative "
          rf"updates \(({NUM}) to ({NUM}) times\)",
          lambda s: (lambda g, u: (g["median"].min(), g["median"].max(), u["last"].min(),
                                   u["last"].max()))(
              s.ratio("seq-lora-tiny", "grad_norm"), s.ratio("seq-lora-tiny", "rel_update"))),
    Quote("nb01-conflict", "nb01",
          rf"\(mean pairwise Spearman about ({NUM}) in both towers\), well below the agreement of "
          rf"the oracle with itself in the LLM \(({NUM}); in the vision tower only ({NUM}),",
          lambda s: (np.mean(list(s.bench("proxy_oracle")["task_profile_mean_pairwise_spearman"]
                                  ["oracle"].values())),
                     s.bench("proxy_oracle")["oracle_seed_agreement"]["llm"],
                     s.bench("proxy_oracle")["oracle_seed_agreement"]["vision"])),
    Quote("nb01-proxy-conflict", "nb01",
          rf"The proxy sees it in the LLM \(pairwise Spearman about ({NUM})\) but hardly in the "
          rf"vision tower \(about ({NUM}):",
          lambda s: tuple(s.bench("proxy_oracle")["task_profile_mean_pairwise_spearman"]
                          ["proxy grad_norm"][t] for t in ("llm", "vision"))),
    Quote("nb01-proxy-vs-oracle", "nb01",
          rf"Spearman about ({NUM}) in the vision tower and about ({NUM}) in the LLM",
          lambda s: tuple(_number(s.bench("proxy_oracle")["spearman_proxy_vs_oracle"]
                                  [f"{t}/grad_norm"].split(" +- ")[0])
                          for t in ("vision", "llm"))),
    Quote("nb01-vision-shares", "nb01",
          rf"\(proxy rho_V ({NUM})-({NUM})%, oracle vision share ({NUM})-({NUM})%\).{{0,200}}?"
          rf"the Spearman between rho_V and the oracle's vision share is about ({NUM})",
          lambda s: (lambda v: (100 * min(v["proxy grad_norm (rho_V)"].values()),
                                100 * max(v["proxy grad_norm (rho_V)"].values()),
                                100 * min(v["oracle"].values()), 100 * max(v["oracle"].values()),
                                s.bench("proxy_oracle")["vision_share_spearman_over_tasks"]))(
              s.bench("proxy_oracle")["vision_share"])),
    # ------------------------------------------------------------------------ notebook 02
    Quote("nb02-expert-layers", "nb02",
          r"The vision experts sit in the early layers (\d)-(\d) for every task \((\w+) also "
          r"takes one in layer (\d)\).{0,160}?In the LLM every task takes all (\w+) modules of "
          r"layer 0", _vision_expert_layers),
    Quote("nb02-lora-modules", "nb02",
          rf"\(rank ({NUM}) on all ({NUM}) vision and ({NUM}) LLM linear modules\)", _lora_modules),
    Quote("nb02-own-stage", "nb02",
          rf"\(grounding, color_mc and arith_vqa score ({NUM}) right after their stage; "
          rf"relation_cap ({NUM}), below its zero-shot ({NUM})\)",
          lambda s: (lambda d: (d[["grounding", "color_mc", "arith_vqa"]].max(),
                                d["relation_cap"],
                                s.matrix("dmole-tiny")[0, s.run("dmole-tiny").manifest()["tasks"]
                                                          .index("relation_cap")]))(
              _own_stage(s, "dmole-tiny"))),
    Quote("nb02-split", "nb02",
          rf"rho_V, the vision share of the gradient, stays between ({NUM}) and ({NUM}) for every "
          rf"task, so the 0.25 floor decides: every task gets k_V = ({NUM}) vision experts and "
          rf"k_L = ({NUM}) LLM experts out of B = ({NUM}).",
          lambda s: (min(s.stages("dmole-tiny", "rho_vision")),
                     max(s.stages("dmole-tiny", "rho_vision")),
                     *(lambda kv, kl: (kv, kl, kv + kl))(
                         *(set(s.stages("dmole-tiny", k)).pop() for k in ("k_vision", "k_llm"))))),
    Quote("nb02-params", "nb02",
          rf"Each task trains ({NUM}) parameters \(rank-(\d+) experts on (\d+) attention "
          rf"modules\), ({NUM})% of sequential LoRA's ({NUM}) ",
          lambda s: (lambda d, q: (d, s.run("dmole-tiny").manifest()["config"]["dmole"]["r"],
                                   set(s.stages("dmole-tiny", "k_vision")).pop()
                                   + set(s.stages("dmole-tiny", "k_llm")).pop(), 100 * d / q, q))(
              set(s.stages("dmole-tiny", "expert_params")).pop(),
              set(s.stages("seq-lora-tiny", "trainable_params")).pop())),
    Quote("nb02-votes", "nb02", rf"per sample about ({NUM}) of the votes go to",
          lambda s: (_router_row(s, 0, 0.003, "mean")["vote_accuracy"],)),
    Quote("nb02-bwt-seed0", "nb02",
          rf"\(BWT ({NUM}), against about ({NUM}) for sequential LoRA\)",
          lambda s: (s.metric("dmole-tiny", "BWT"), s.metric("seq-lora-tiny", "BWT"))),
    # ------------------------------------------------------------------------ notebook 03
    Quote("nb03-continual", "nb03",
          rf"more than the floor \(({NUM}) to ({NUM}) of ({NUM}) vision experts\), and "
          rf"([\w, ]+) a vision majority", lambda s: (lambda a, b, c, names: (
              a, b, c, names.replace(", color_vqa", " and color_vqa")))(*_continual_split(s))),
    Quote("nb03-split", "nb03",
          rf"rho_V is ({NUM}) to ({NUM}), below the 0.25 floor for every task, so `current` gives "
          rf"every task the floor: ({NUM}) vision and ({NUM}) LLM experts",
          lambda s: (min(s.stages("dmole-tiny", "rho_vision")),
                     max(s.stages("dmole-tiny", "rho_vision")),
                     *(set(s.stages("dmole-tiny", k)).pop() for k in ("k_vision", "k_llm")))),
    Quote("nb03-gradient-ratios", "nb03",
          rf"below sequential LoRA's on (\w+) of the nine tasks \(([\w, ]+)\) and above it on "
          rf"the other seven \(for `count_mc` about ({NUM}) against ({NUM})\); the median over "
          rf"tasks is more than twice sequential LoRA's \(({NUM}) against ({NUM})\)",
          lambda s: ((lambda n, names: ({"2": "two", "4": "four"}.get(n, n), names))(
              *_dmole_gradient_ratio_below_seq_lora(s))
              + (s.ratio("dmole-tiny", "grad_norm").loc["count_mc", "median"],
                 s.ratio("seq-lora-tiny", "grad_norm").loc["count_mc", "median"],
                 s.ratio("dmole-tiny", "grad_norm")["median"].median(),
                 s.ratio("seq-lora-tiny", "grad_norm")["median"].median()))),
    Quote("nb03-update-ratios", "nb03",
          rf"unbalanced under both methods \(ratios ({NUM}) to ({NUM}) per task\)",
          lambda s: (lambda r: (min(x.min() for x in r), max(x.max() for x in r)))(
              [s.ratio(n, "rel_update")["median"] for n in ("dmole-tiny", "seq-lora-tiny")])),
    Quote("nb03-summary-share", "nb03", rf"the gradient share is ({NUM})-({NUM})%",
          lambda s: (100 * min(s.stages("dmole-tiny", "rho_vision")),
                     100 * max(s.stages("dmole-tiny", "rho_vision")))),
    # ------------------------------------------------------------------------ notebook 04
    Quote("nb04-multitask", "nb04",
          rf"AVG ({NUM}) and Last ({NUM}), against at most ({NUM}) and ({NUM}) for D-MoLE and "
          rf"the continual peers \(ablation v1, below, reaches ({NUM}) and ({NUM})\). It is the "
          rf"only method whose earlier tasks improve \(BWT ({NUM})\)",
          lambda s: (s.mean("multitask", "AVG"), s.mean("multitask", "Last"),
                     max(s.mean(v, "AVG") for v in ("dmole", *PEERS)),
                     max(s.mean(v, "Last") for v in ("dmole", *PEERS)),
                     s.mean("dmole-v1", "AVG"), s.mean("dmole-v1", "Last"),
                     s.mean("multitask", "BWT"))),
    Quote("nb04-forgets-nothing", "nb04",
          rf"Its BWT is ({NUM}): .{{0,90}}?Every continual peer is between ({NUM}) \(BranchLoRA\) "
          rf"and ({NUM}) \(EWC\). D-MoLE ends with a higher Last than every continual peer, "
          rf"({NUM}) against ({NUM})-({NUM}), and does so at every seed.",
          lambda s: (s.mean("dmole", "BWT"), max(s.mean(p, "BWT") for p in PEERS),
                     min(s.mean(p, "BWT") for p in PEERS),
                     *_claims_best_last_at_every_seed(s)[:1],
                     min(s.mean(p, "Last") for p in PEERS),
                     max(s.mean(p, "Last") for p in PEERS))),
    Quote("nb04-avg", "nb04",
          rf"D-MoLE ({NUM}) \+- ({NUM}), BranchLoRA ({NUM}), EWC ({NUM}), the rest "
          rf"({NUM})-({NUM}). D-MoLE is ahead of every continual peer at seeds 0 and 1, but at "
          rf"seed 2 BranchLoRA \(({NUM})\), EWC \(({NUM})\) and, narrowly, MoELoRA \(({NUM})\) "
          rf"are ahead of it \(({NUM})\). D-MoLE learns each task least well in its own stage: "
          rf"MFT ({NUM}) against ({NUM})-({NUM}) for the continual peers.",
          lambda s: (s.mean("dmole", "AVG"), s.std("dmole", "AVG"),
                     s.mean("branchlora", "AVG"), s.mean("ewc", "AVG"),
                     min(s.mean(p, "AVG") for p in PEERS if p not in ("branchlora", "ewc")),
                     max(s.mean(p, "AVG") for p in PEERS if p not in ("branchlora", "ewc")),
                     s.seed("branchlora", 2, "AVG"), s.seed("ewc", 2, "AVG"),
                     s.seed("moelora", 2, "AVG"), s.seed("dmole", 2, "AVG"),
                     s.mean("dmole", "MFT"), min(s.mean(p, "MFT") for p in PEERS),
                     max(s.mean(p, "MFT") for p in PEERS))),
    Quote("nb04-ablations", "nb04",
          rf"AVG ({NUM}), Last ({NUM}) against ({NUM}) and ({NUM}). Layer selection by "
          rf"sensitivity pays. - v3 \(no curriculum\) is below it on the mean "
          rf"\(({NUM}), ({NUM})\).{{0,160}}?v1 \(experts only in the LLM\) is the best D-MoLE: "
          rf"AVG ({NUM}), Last ({NUM})",
          lambda s: (s.mean("dmole-v4", "AVG"), s.mean("dmole-v4", "Last"),
                     s.mean("dmole", "AVG"), s.mean("dmole", "Last"),
                     s.mean("dmole-v3", "AVG"), s.mean("dmole-v3", "Last"),
                     s.mean("dmole-v1", "AVG"), s.mean("dmole-v1", "Last"))),
    Quote("nb04-rho-v", "nb04", rf"\(rho_V ({NUM})-({NUM}), notebook 01\)",
          lambda s: (min(s.bench("proxy_oracle")["vision_share"]["proxy grad_norm (rho_V)"]
                         .values()),
                     max(s.bench("proxy_oracle")["vision_share"]["proxy grad_norm (rho_V)"]
                         .values()))),
    Quote("nb04-branchlora", "nb04",
          rf"AVG ({NUM}) against ({NUM}), Last ({NUM}) against ({NUM}), BWT ({NUM}) against "
          rf"({NUM}). But it trains more parameters per task \(({NUM})k against ({NUM})k\), its "
          rf"task selector is right for ({NUM})% of the samples",
          lambda s: (*(s.mean(v, m) for m in ("AVG", "Last", "BWT")
                       for v in ("branchlora", "moelora")),
                     s.mean("branchlora", "params_per_task") / 1000,
                     s.mean("moelora", "params_per_task") / 1000,
                     100 * s.comparison[1].query("variant == 'branchlora'")
                     .router_accuracy.mean())),
    Quote("nb04-lwf", "nb04", rf"LwF lowers forgetting by learning less \(MFT ({NUM})\)",
          lambda s: (s.mean("lwf", "MFT"),)),
    Quote("nb04-general", "nb04",
          rf"The held-out set falls from ({NUM}) to ({NUM})-({NUM}) for every method, multi-task "
          rf"and D-MoLE included \(v2: ({NUM})\)",
          lambda s: (s.comparison[1].general_zero_shot.iloc[0],
                     min(s.mean(v, "General") for v in s.table.index if v != "dmole-v2"),
                     max(s.mean(v, "General") for v in s.table.index if v != "dmole-v2"),
                     s.mean("dmole-v2", "General"))),
    # ------------------------------------------------------------------------ notebook 05
    Quote("nb05-ratio", "nb05",
          rf"the LLM's gradient norm is ({NUM})-({NUM}) times the vision tower's, median per task",
          lambda s: (s.ratio("seq-lora-tiny", "grad_norm")["median"].min(),
                     s.ratio("seq-lora-tiny", "grad_norm")["median"].max())),
    Quote("nb05-alike", "nb05",
          rf"\(mean pairwise Spearman ({NUM}) in vision, ({NUM}) in the LLM\).{{0,120}}?nearly "
          rf"one profile \(({NUM}) and ({NUM})\)",
          lambda s: (*(s.bench("proxy_oracle")["task_profile_mean_pairwise_spearman"]["oracle"][t]
                       for t in ("vision", "llm")),
                     *(s.bench("proxy_oracle")["task_profile_mean_pairwise_spearman"]
                       ["proxy grad_norm"][t] for t in ("vision", "llm")))),
    Quote("nb05-probe-share", "nb05", rf"Probing costs about 1.5% of training time.\*\* Yes: "
          rf"({NUM})%", _probe_share),
    Quote("nb05-bwt", "nb05",
          rf"Yes: ({NUM}) against ({NUM}); every continual peer lies between ({NUM}) and ({NUM})",
          lambda s: (s.mean("dmole", "BWT"), s.mean("o-lora", "BWT"),
                     max(s.mean(v, "BWT") for v in PEERS), min(s.mean(v, "BWT") for v in PEERS))),
    Quote("nb05-lead", "nb05",
          rf"Last, yes: ({NUM}) over O-LoRA and ({NUM}) over the best continual peer, ([^.]+)\. "
          rf"AVG only within the spread: ({NUM}) over O-LoRA, ({NUM}) over BranchLoRA",
          lambda s: (s.mean("dmole", "Last") - s.mean("o-lora", "Last"),
                     s.mean("dmole", "Last") - max(s.mean(v, "Last") for v in PEERS),
                     PEER_LABELS[max(PEERS, key=lambda v: s.mean(v, "Last"))],
                     s.mean("dmole", "AVG") - s.mean("o-lora", "AVG"),
                     s.mean("dmole", "AVG") - s.mean("branchlora", "AVG"))),
    Quote("nb05-general", "nb05",
          rf"keeps ({NUM})% of its zero-shot score under D-MoLE, ({NUM})-({NUM})% under the others",
          _general_retention),
    Quote("nb05-v1", "nb05", rf"\(AVG ({NUM}) against ({NUM})\), and v2",
          lambda s: (s.mean("dmole-v1", "AVG"), s.mean("dmole", "AVG"))),
    Quote("nb05-mft", "nb05", rf"\(MFT ({NUM}) against ({NUM}) for sequential LoRA\)",
          lambda s: (s.mean("dmole", "MFT"), s.mean("seq-lora", "MFT"))),
    Quote("nb05-oracle", "nb05",
          rf"its two halves agree at ({NUM}) \(mean over tasks; single seeds at ({NUM})\)\. The "
          rf"vision tower's cannot: its halves agree at only ({NUM}) \(single seeds ({NUM})\)",
          lambda s: (_ceiling("spearman", "llm"), _ceiling("single", "llm"),
                     _ceiling("spearman", "vision"), _ceiling("single", "vision"))),
    Quote("nb05-oracle-more-seeds", "nb05",
          rf"the halves agree at ({NUM}) with twelve seeds, ({NUM})-({NUM}) from 20 to 34, and "
          rf"({NUM}) with all 36 \(18 a half\), while single seeds stay at ({NUM})-({NUM}) "
          rf"whatever their number\. Per task, the 36-seed halves agree at ({NUM}) "
          rf"\(([a-z_, ]+)\) to ({NUM}) \(([a-z_, ]+)\)\. Cost: the (\d+) new",
          lambda s: (_vision_curve(12), *_vision_curve_range(20, 34), _vision_curve(36),
                     *_vision_curve_range(2, 36, "single"), *_vision_ceiling_extremes(),
                     9 * 30)),
    Quote("nb05-oracle-proxy-36", "nb05",
          rf"`grad_norm`'s Spearman is ({NUM}) against the first six seeds and ({NUM}) against "
          rf"all 36\.", lambda s: (_vision_proxy(6), _vision_proxy(36))),
    Quote("nb05-scores-36", "nb05",
          rf"oracle: `grad_norm` ({NUM}), `grad_norm/weight_norm` ({NUM}), `fisher` ({NUM}), "
          rf"`cka_transform` ({NUM}), and taking the layer-0 peak out still hurts "
          rf"\(`grad_norm\*resid_rms` ({NUM}), `grad_norm:layer_z` ({NUM})\)",
          lambda s: _scores_vs_vision36("grad_norm", "grad_norm/weight_norm", "fisher",
                                        "cka_transform", "grad_norm*resid_rms",
                                        "grad_norm:layer_z")),
    Quote("nb05-best-36", "nb05",
          r"best vision layer is layer 0 for (\d) of the (\d) tasks and layer 0 or 1 for (\d), "
          r"while the proxy puts layer 0 first for all (nine)",
          lambda s: (lambda b: (*b[:3], {9: "nine"}.get(b[3], str(b[3]))))(
              _vision36_best_layers())),
    Quote("nb05-summary-oracle", "nb05",
          rf"their halves agree at ({NUM}) only with 36 seeds\..{{0,80}}?puts layer 0 first for "
          rf"(\d) of (\d) tasks",
          lambda s: (_vision_curve(36), *_vision36_best_layers()[:2])),
    Quote("bench-oracle-36", "benchmarks/README",
          rf"The two halves \(18 seeds each\) agree at ({NUM})\. They climb from ({NUM}) at "
          rf"twelve seeds to ({NUM})-({NUM}) between 20 and 34 seeds; single seeds stay at "
          rf"({NUM})-({NUM}) whatever their number\. Per task the 36-seed halves agree at "
          rf"({NUM}) \(([a-z_, ]+)\) to ({NUM}) \(([a-z_, ]+)\)\..{{0,40}}?Seeds 6-35 are "
          rf"(\d+) runs.{{0,600}}?`grad_norm`'s Spearman with the oracle is ({NUM}) at six "
          rf"seeds and ({NUM}) at 36",
          lambda s: (_vision_curve(36), _vision_curve(12), *_vision_curve_range(20, 34),
                     *_vision_curve_range(2, 36, "single"), *_vision_ceiling_extremes(),
                     9 * 30, _vision_proxy(6), _vision_proxy(36))),
    Quote("readme-nb05-routing", "README",
          rf"earlier tasks' experts join ({NUM})% of a new task's training batches and are off "
          rf"when it is tested\. Without it D-MoLE's MFT rises from ({NUM}) to ({NUM}) and its "
          rf"AVG from ({NUM}) to ({NUM})\.",
          lambda s: (100 * _switch("D-MoLE", "train_join_share"), _switch("D-MoLE", "MFT"),
                     _switch("(b) own experts only", "MFT"), _switch("D-MoLE", "AVG"),
                     _switch("(b) own experts only", "AVG"))),
    Quote("readme-oracle-36", "README",
          rf"the vision layers need 36 seeds before two halves of them agree at ({NUM})\)",
          lambda s: (_vision_curve(36),)),
    Quote("sol05-seeds", "sol05",
          rf"\*\*Answer: (\d+) seeds\*\* \((\d+) a half; ({NUM})\), and the halves pass "
          rf"({NUM}) only at (\d+)\. Fed each task's single-seed agreement at 36 seeds "
          rf"\(({NUM}) for ([a-z_]+) to ({NUM}) for ([a-z_]+)\), Spearman-Brown predicts ({NUM}) "
          rf"at 10 seeds and ({NUM}) at 12",
          lambda s: (lambda c, lo, hi: (_first_seeds(c, 0.75), _first_seeds(c, 0.75) // 2,
                                        _vision_curve(_first_seeds(c, 0.75)), 0.8,
                                        _first_seeds(c, 0.8), *lo, *hi,
                                        _spearman_brown(10), _spearman_brown(12)))(
              _vision_oracle("agreement"), _vision_single_extreme(min),
              _vision_single_extreme(max))),
    Quote("bench-reliability-others", "benchmarks/README",
          rf"`fisher` ({NUM})-({NUM}) and `snip` ({NUM})-({NUM}) in the LLM\).{{0,200}}?"
          rf"`grad_norm` read after K\+1 = 2 batches agrees at ({NUM})\.",
          lambda s: (lambda r: (*_span(r, "fisher"), *_span(r, "snip"), _vision_proxy(36)))(
              pd.DataFrame(s.bench("proxy_reliability")["rows"]).query("tower == 'llm'"))),
    Quote("bench-rss-over-malloc", "benchmarks/README",
          rf"The RSS peak is ({NUM})-({NUM})% above the allocated peak",
          lambda s: (lambda r: (100 * (min(r) - 1), 100 * (max(r) - 1)))(
              [row["rss_peak_mb"] / row["measured_peak_mb"]
               for row in s.bench("plan_memory")["rows"]])),
    Quote("bench-reliability-time", "benchmarks/README",
          rf"bench_proxy_reliability\.py --seeds 5 # about ({NUM}) s on 2 cores",
          lambda s: (s.bench("proxy_reliability")["probe_seconds"],), step=10),
    Quote("bench-oracle-cost", "benchmarks/README",
          r"so the JSON's `cost` counts (\d+) of (\d+) parts timed",
          lambda s: (lambda c: (c["parts_timed"], c["parts"]))(
              s.bench("oracle_agreement")["cost"])),
    Quote("bench-scores-36", "benchmarks/README",
          rf"`grad_norm` ({NUM}) \+- ({NUM}), `grad_norm/weight_norm` ({NUM}) \+- ({NUM}), "
          rf"`fisher` ({NUM}) \+- ({NUM}), `cka_transform` ({NUM}) \+- ({NUM}), "
          rf"`grad_norm\*resid_rms` ({NUM}) \+- ({NUM})\.",
          lambda s: _scores_vs_vision36("grad_norm", "grad_norm/weight_norm", "fisher",
                                        "cka_transform", "grad_norm*resid_rms", column="both")),
    Quote("nb05-oracle-spread", "nb05",
          rf"\(std ({NUM}), mean over layers and tasks\) as much as the six layers' mean gains "
          rf"differ from each other \(std ({NUM})\); in the LLM the layers differ \(({NUM})\) "
          rf"more than a seed moves them \(({NUM})\)", lambda s: _oracle_spread()),
    Quote("nb05-reliability", "nb05",
          rf"\(LLM: ({NUM}) between probes at D-MoLE's two batches, ({NUM}) at 32\).{{0,120}}?"
          rf"about ({NUM})-({NUM}) in the vision tower and ({NUM})-({NUM}) in the LLM",
          lambda s: (lambda r: (r.loc[("llm", 2), "stability"], r.loc[("llm", 32), "stability"],
                                r.loc["vision", "oracle"].min(), r.loc["vision", "oracle"].max(),
                                r.loc["llm", "oracle"].min(), r.loc["llm", "oracle"].max()))(
              _reliability(s))),
    Quote("nb05-layer0", "nb05",
          rf"Layer 0's gradient norm is ({NUM}) times the other vision layers' and ({NUM}) times "
          rf"the other LLM layers'.{{0,120}}?\(({NUM})-({NUM})\); the gradient reaching layer "
          rf"0's outputs is what differs \(({NUM}) and ({NUM}) times\).{{0,120}}?has ({NUM}) of "
          rf"the RMS.{{0,300}}?as large as elsewhere \(({NUM})\)",
          lambda s: (_excess("vision", "grad_norm"), _excess("llm", "grad_norm"),
                     min(_excess(t, f) for t in ("vision", "llm")
                         for f in ("weight_norm", "input_rms", "norm_gain")),
                     max(_excess(t, f) for t in ("vision", "llm")
                         for f in ("weight_norm", "input_rms", "norm_gain")),
                     _excess("vision", "grad_out_rms"), _excess("llm", "grad_out_rms"),
                     _excess("vision", "resid_rms"), _excess("llm", "resid_rms"))),
    Quote("nb05-resid-flattens", "nb05", r"Multiplying it back \(`grad_norm\*resid_rms`\) "
          r"removes most of the peak", _resid_flattens),
    Quote("nb05-scores", "nb05",
          rf"\(`grad_norm` ({NUM}) in vision and ({NUM}) in the LLM here.{{0,150}}?"
          rf"`grad_norm/weight_norm` \(({NUM}), ({NUM})\) and `snip` \(({NUM}), ({NUM})\)"
          rf".{{0,200}}?\(`grad_norm\*resid_rms` ({NUM}), `grad_norm:layer_z` ({NUM})\)"
          rf".{{0,200}}?`cka_transform` follows the oracle in vision \(({NUM})\) and goes "
          rf"against it in the LLM \(({NUM})\), `cka_change` the reverse \(({NUM}), ({NUM})\)",
          lambda s: (*_pooled("grad_norm"), *_pooled("grad_norm/weight_norm"), *_pooled("snip"),
                     _pooled("grad_norm*resid_rms")[0], _pooled("grad_norm:layer_z")[0],
                     *_pooled("cka_transform"), *_pooled("cka_change"))),
    Quote("nb05-best-early", "nb05", r"is layer 0 or 1 for (\d) of the (\d) tasks",
          _oracle_best_early),
    Quote("nb05-params", "nb05",
          rf"rank-8 attention experts per task \(({NUM}) parameters\).{{0,120}}?\(({NUM})\)\. "
          rf"The switch raises the expert\s+rank to 18 \(alpha / r kept at 2\): ({NUM}) parameters",
          lambda s: tuple(_switch(v, "params_per_task") for v in
                          ("D-MoLE", "sequential LoRA", "(a) capacity"))),
    Quote("nb05-own", "nb05",
          rf"experts join ({NUM})% of a new task's training batches.{{0,200}}?MFT rises from "
          rf"({NUM}) to ({NUM}) \(({NUM}) \+- ({NUM}), higher at every seed\), still ({NUM}) "
          rf"points short of sequential LoRA's ({NUM}), and AVG from ({NUM}) to ({NUM})"
          rf".{{0,200}}?cuts the joins "
          rf"to ({NUM})% of batches and buys a third as much \(MFT ({NUM}) \+- ({NUM})\)",
          lambda s: (100 * _switch("D-MoLE", "train_join_share"), _switch("D-MoLE", "MFT"),
                     _switch("(b) own experts only", "MFT"),
                     *_effect("(b) own experts only", "MFT"),
                     _switch("sequential LoRA", "MFT") - _switch("(b) own experts only", "MFT"),
                     _switch("sequential LoRA", "MFT"), _switch("D-MoLE", "AVG"),
                     _switch("(b) own experts only", "AVG"),
                     100 * _switch("(b) support over the batch", "train_join_share"),
                     *_effect("(b) support over the batch", "MFT"))),
    Quote("nb05-small-causes", "nb05",
          rf"\(rank 18\) lowers MFT by ({NUM}) \+- ({NUM}), behind at every seed.{{0,120}}?No "
          rf"vision floor adds ({NUM}) \+- ({NUM}) \(the 0.1 floor ({NUM}) \+- ({NUM})\)"
          rf".{{0,120}}?lowers MFT by ({NUM}) \+- ({NUM})",
          lambda s: (-_effect("(a) capacity", "MFT")[0], _effect("(a) capacity", "MFT")[1],
                     *_effect("(d) vision floor 0", "MFT"),
                     *_effect("(d) vision floor 0.1", "MFT"),
                     -_effect("(c) learning rate x2", "MFT")[0],
                     _effect("(c) learning rate x2", "MFT")[1])),
    Quote("bench-learned-cells", "benchmarks/README",
          rf"sequential LoRA learns ({NUM}) of the ({NUM}) \(task, seed\) cells in their own stage "
          rf"\(grounding at seed 2 gains only ({NUM}) points\), D-MoLE ({NUM})\.",
          lambda s: (*_learned_cells(s, "seq-lora"), _own_gain(s, "seq-lora", 2, "grounding"),
                     _learned_cells(s, "dmole")[0])),
    Quote("bench-dropout-sweeps", "benchmarks/README",
          rf"Sequential LoRA still forgets \(BWT ({NUM}) -> ({NUM})\).{{0,200}}?learns ({NUM}) "
          rf"of its ({NUM}) \(task, seed\) cells in their own stage, against ({NUM}) of ({NUM}) "
          rf"before: grounding at seed 2 gains ({NUM}) points \(({NUM}) of 48 boxes\), where "
          rf"before it gained ({NUM})-({NUM})\..{{0,300}}?v4's AVG \(({NUM}) -> ({NUM})\), v1's "
          rf"Last \(({NUM}) -> ({NUM})\), and O-LoRA's BWT \(({NUM}) -> ({NUM})\).{{0,120}}?"
          rf"D-MoLE's Last goes from ({NUM}) to ({NUM}), and v1 stays above the full method "
          rf"\(AVG ({NUM}) against ({NUM})\)",
          lambda s: (*_swept("seq-lora", "BWT"), *_learned_cells(s, "seq-lora"),
                     *(x * _swept("seq-lora", "seeds")[0] for x in (
                         _swept("seq-lora", "learned")[0], len(s.tasks))),
                     _own_gain(s, "seq-lora", 2, "grounding"),
                     _own_gain(s, "seq-lora", 2, "grounding") * 48 / 100,
                     *_before_gains("seq-lora", "grounding"),
                     *_swept("dmole-v4", "AVG"), *_swept("dmole-v1", "Last"),
                     *_swept("o-lora", "BWT"), *_swept("dmole", "Last"),
                     s.mean("dmole-v1", "AVG"), s.mean("dmole", "AVG"))),
    Quote("nb05-v1-after", "nb05",
          rf"full method's AVG is ({NUM}), above default v1's ({NUM}) on the mean and at ({NUM}) "
          rf"of the ({NUM}) seeds.{{0,120}}?"
          rf"reaches MFT ({NUM}) and AVG ({NUM}) \(({NUM})-({NUM}) over the seeds\), above "
          rf"sequential LoRA's MFT \(({NUM})\) and above even multi-task's AVG in notebook 04 "
          rf"\(({NUM})\).{{0,200}}?by ({NUM}) AVG",
          lambda s: (_switch("(b) own experts only", "AVG"), _switch("v1 (LLM only)", "AVG"),
                     *_seeds_ahead("(b) own experts only", "v1 (LLM only)", "AVG"),
                     _switch("v1, own experts only", "MFT"), _switch("v1, own experts only", "AVG"),
                     _switches().query("variant == 'v1, own experts only'")["AVG"].min(),
                     _switches().query("variant == 'v1, own experts only'")["AVG"].max(),
                     _switch("sequential LoRA", "MFT"), s.mean("multitask", "AVG"),
                     _switch("v1, own experts only", "AVG")
                     - _switch("(b) own experts only", "AVG"))),
]


@pytest.mark.parametrize("quote", [
    pytest.param(q, marks=pytest.mark.xfail(strict=True, reason=q.wrong)) if q.wrong else q
    for q in QUOTES], ids=[q.id for q in QUOTES])
def test_quoted_figure_matches_its_source(quote, shipped):
    m = re.search(quote.pattern, prose(quote.doc))
    assert m, f"{quote.doc}: no quote matching {quote.pattern!r} (prose changed? update it)"
    actual = quote.actual(shipped)
    assert len(actual) == len(m.groups()), "one actual figure per quoted number"
    check(list(zip(m.groups(), actual)), f"{quote.doc} ({quote.id})", quote.step)


def test_every_quoted_pattern_is_unique():
    """Each pattern finds its quote once, so it checks the sentence it names."""
    for q in QUOTES:
        assert len(re.findall(q.pattern, prose(q.doc))) == 1, q.id


# ------------------------------------------------- tables quoted from benchmark JSONs
PROXY_TABLE = pipe_table("benchmarks/README", "| Spearman over layers")


@pytest.mark.parametrize("row", PROXY_TABLE, ids=lambda r: r[next(iter(r))].split(" (")[0])
def test_proxy_oracle_table(row, shipped):
    first, vision, llm = list(row.values())
    res = shipped.bench("proxy_oracle")
    if first.startswith("`"):  # a proxy: "mean +- std" strings as the JSON stores them
        proxy = first.strip("`").split("`")[0]
        got = [res["spearman_proxy_vs_oracle"][f"{t}/{proxy}"] for t in ("vision", "llm")]
        assert [vision, llm] == got, first
    else:
        if first.startswith("oracle, even seeds' mean"):
            src = res["oracle_seed_agreement"]
        elif first.startswith("oracle, single seeds"):
            src = res["oracle_single_seed_agreement"]
        elif first.endswith("proxy `grad_norm`"):
            src = res["task_profile_mean_pairwise_spearman"]["proxy grad_norm"]
        else:
            assert first.endswith(", oracle"), first
            src = res["task_profile_mean_pairwise_spearman"]["oracle"]
        check([(vision, src["vision"]), (llm, src["llm"])], f"proxy-oracle table, {first}")


ROUTER_TABLE = pipe_table("benchmarks/README", "| batch | lr | output bias")


@pytest.mark.parametrize("row", ROUTER_TABLE,
                         ids=lambda r: f"{r['batch']}-{r['lr']}-{r['output bias starts at'][:8]}")
def test_router_fit_table(row, shipped):
    batch = 0 if row["batch"] == "full" else int(row["batch"])
    bias = "mean" if "mean" in row["output bias starts at"] else "default"
    r = _router_row(shipped, batch, float(row["lr"]), bias)
    fit = re.match(rf"({NUM}) s", row["fit"]).group(1)
    pairs = [(row["vote accuracy"], r["vote_accuracy"]),
             (row["batch accuracy"], r["batch_accuracy"]), (row["own accept"], r["own_accept"]),
             (row["false accept"], r["false_accept"]), (fit, r["fit_seconds"])]
    stops = re.search(rf"stops after ~({NUM}) epochs", row["fit"])
    if stops:  # early stopping: the mean over the nine autoencoders
        pairs.append((stops.group(1), r["mean_epochs"]))
    else:
        assert r["mean_epochs"] == 200, "every fit ran its 200 epochs"
    check(pairs, f"router table, batch {row['batch']}, lr {row['lr']}, {bias}")


def test_shipped_dmole_run_is_the_comparison_seed_0_run(shipped):
    """benchmarks/README.md: "the seed-0 D-MoLE run equals the shipped results/dmole-tiny"."""
    assert "equals the shipped `results/dmole-tiny`" in prose("benchmarks/README")
    runs = shipped.comparison[1]
    name = runs[(runs.variant == "dmole") & (runs.seed == 0)].run.iloc[0]
    seed0 = shipped.run(f"compare-tiny/runs/{name}").summary("score_matrix")
    pd.testing.assert_frame_equal(seed0, shipped.run("dmole-tiny").summary("score_matrix"))


def test_allocation_explorer_update_time_quoted_in_readme(shipped):
    """README.md quotes bench_widgets.py's medians for notebook 02's allocation explorer, to
    the nearest 10 ms."""
    m = re.search(r"the curriculum \(about (\d+) ms for the allocation and (\d+) ms for the "
                  r"whole update with its figure", prose("README"))
    assert m, "README.md no longer quotes the allocation explorer's update time"
    alloc = shipped.bench("widgets")["explorers"]["allocation"]
    assert int(m.group(1)) == round(alloc["allocation_only"]["median_ms"], -1)
    assert int(m.group(2)) == round(alloc["median_ms"], -1)


LAYER_TABLE = pipe_table("benchmarks/README", "| Spearman with the oracle, mean +- std over 9")


@pytest.mark.parametrize("row", LAYER_TABLE, ids=lambda r: r[next(iter(r))])
def test_layer_scores_table(row, shipped):
    name, vision, llm = list(row.values())
    got = shipped.bench("layer_scores")["spearman_with_oracle"]
    assert [vision, llm] == [got[f"{t}/{name.strip('`')}"] for t in ("vision", "llm")]


PLASTICITY_TABLE = pipe_table("benchmarks/README", "| variant | MFT | AVG | training batches")


@pytest.mark.parametrize("row", PLASTICITY_TABLE, ids=lambda r: r["variant"])
def test_plasticity_table(row, shipped):
    label = row["variant"].replace(" (rank 18)", "")
    pairs = [(row["MFT"], _switch(label, "MFT")), (row["AVG"], _switch(label, "AVG"))]
    if row["training batches joined"]:
        pairs.append((row["training batches joined"],
                      100 * _switch(label, "train_join_share")))
    if row["MFT vs default"]:
        effect, se = mean_std(row["MFT vs default"])
        pairs += list(zip((effect, se), _effect(label, "MFT")))
    check(pairs, f"plasticity table, {label}")


RELIABILITY_TABLE = pipe_table("benchmarks/README", "| K+1 | stability, LLM |")


def test_proxy_reliability_table(shipped):
    rows = pd.DataFrame(shipped.bench("proxy_reliability")["rows"])
    g = rows[rows.proxy == "grad_norm"].set_index(["batches", "tower"])
    assert [int(r["K+1"]) for r in RELIABILITY_TABLE] == sorted(set(rows.batches))
    pairs = []
    for row in RELIABILITY_TABLE:
        b = int(row["K+1"])
        pairs += [(row[f"{what}, {label}"], g.loc[(b, tower), column])
                  for what, column in (("stability", "stability"), ("vs oracle", "oracle"))
                  for label, tower in (("LLM", "llm"), ("vision", "vision"))]
    check(pairs, "proxy reliability table")


AGREEMENT_TABLE = pipe_table("benchmarks/README", "| seeds | split-half |")


def test_oracle_agreement_table(shipped):
    result = shipped.bench("oracle_agreement")
    proxy = {r["seeds"]: r["grad_norm"] for r in result["proxy_vs_oracle"]["by_seeds"]}
    rows = {str(r["seeds"]): r for r in result["agreement"]}
    assert [r["seeds"] for r in AGREEMENT_TABLE] == list(rows), "one table row per seed count"
    pairs = []
    for row in AGREEMENT_TABLE:
        r = rows[row["seeds"]]
        pairs += [(row["split-half"], r["split_half"]), (row["single seeds"], r["single"]),
                  (row["grad_norm vs oracle"], proxy[r["seeds"]])]
    check(pairs, "oracle agreement table")
    # the shipped run the notebook draws is the same oracle as the benchmark's JSON
    curve = _vision_oracle("agreement")
    assert curve["split_half"].round(3).tolist() == [r["split_half"] for r in rows.values()]
    # its per-task table at all seeds is the curve's last point, task by task
    ceiling = _vision_oracle("oracle_ceiling")
    assert set(ceiling.seeds_per_half) == {int(curve.seeds.max()) // 2}
    assert ceiling["spearman"].mean() == pytest.approx(curve["split_half"].iloc[-1])
    assert ceiling["single"].mean() == pytest.approx(curve["single"].iloc[-1])
