"""Every bad setting is refused before anything is written.

Every config key has a rule (:data:`dmole_lab.config.RULES`) checked when the config is built;
the CLI turns a bad value into exit status 2 with one line naming the key and what is allowed,
before a model is loaded or a folder created. The rules agree with the checks kept in the
modules that read the keys (defence in depth), and the names config restates (methods, tasks,
proxies, ...) agree with the registries they come from.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from dmole_lab.cli import main
from dmole_lab.config import (
    BRANCH_ROUTER_INPUTS,
    DTYPE_NAMES,
    GENERAL_SET_NAMES,
    METHOD_NAMES,
    MODULE_SELECTIONS,
    PROXY_NAMES,
    RULES,
    TASK_NAMES,
    ConfigError,
    RunConfig,
    allowed_keys,
    build_config,
    config_problems,
)

#: Bad values of every key, as typed on the command line. A key added to the config without an
#: entry here fails test_every_key_has_bad_values (and its CLI case below).
BAD: dict[str, list[str]] = {
    "method": ["magic", ""],
    "seed": ["-1", "4294967296", "1.5"],
    "runs_dir": ["", " "],
    "model.path": [""],
    "model.dtype": ["int8"],
    "model.device": ["tpu", "cuda:x", ""],
    "stream.tasks": ["", "caption,unicorn", "ocr,ocr"],
    "stream.n_train": ["0", "-1", "1.5"],
    "stream.n_test": ["0"],
    "stream.n_general": ["0"],
    "stream.general": ["mme", "general,general"],
    "stream.seed": ["-1"],
    "stream.file": ["no/such/stream.yaml", "README.md"],
    "model.shape": ["gpt-5", "internvl2"],
    "train.lr": ["0", "-1e-3", "nan", "inf", "fast"],
    "train.epochs": ["0"],
    "train.batch_size": ["0"],
    "train.warmup_ratio": ["-0.1", "1.5"],
    "train.weight_decay": ["-0.01"],
    "train.max_grad_norm": ["-1"],
    "train.max_steps": ["-1"],
    "train.mixed_precision": ["fp8", "bfloat16", ""],
    "train.grad_accum": ["0", "1.5", "99"],
    "train.grad_checkpointing": ["sometimes"],
    "lora.r": ["0"],
    "lora.alpha": ["0"],
    "lora.dropout": ["1", "-0.1"],
    "lora.modules": ["some"],
    "eval.batch_size": ["0"],
    "eval.max_new_tokens": ["0"],
    "eval.cider_scale": ["0"],
    "eval.general": ["maybe"],
    "probe.proxies": ["", "magic", "snip,snip"],
    "probe.batches": ["-1"],
    "probe.share": ["-0.01", "1.5"],
    "probe.sweep": ["0", "1,-2"],
    "probe.batch_size": ["-1"],
    "probe.record_training": ["maybe"],
    "probe.record_every": ["0"],
    "dmole.r": ["0"],
    "dmole.alpha": ["0"],
    "dmole.dropout": ["1.0"],
    "dmole.budget": ["0", "1.5", "-0.5"],
    "dmole.vision_floor": ["-0.1", "1.1"],
    "dmole.curriculum": ["magic"],
    "dmole.towers": ["neither"],
    "dmole.allocator": ["random"],
    "dmole.proxy": ["magic"],
    "dmole.router_hidden": ["0"],
    "dmole.router_quantile": ["0", "1.5"],
    "dmole.router_support": ["-0.1", "1.5"],
    "dmole.router_epochs": ["0"],
    "dmole.router_batch_size": ["-1"],
    "dmole.router_lr": ["0"],
    "dmole.router_output_bias": ["zero"],
    "dmole.routing": ["token"],
    "dmole.train_routing": ["all"],
    "dmole.rounding": ["down"],
    "lwf.weight": ["-1"],
    "lwf.temperature": ["0"],
    "ewc.weight": ["-1"],
    "ewc.decay": ["-0.5", "1.5"],
    "ewc.fisher_batches": ["0"],
    "olora.orth": ["-0.5"],
    "olora.l2": ["-1"],
    **{f"{s}.{k}": v for s in ("moelora", "mole", "mola") for k, v in {
        "experts": ["0"], "r": ["0"], "alpha": ["0"], "dropout": ["1"], "top_k": ["-1", "5"],
        "balance": ["-0.01"], "layer_experts": ["0", "1,-1"]}.items()},
    "branch.branches": ["0", "1"],  # 1: fewer than branch.top_k = 2
    "branch.top_k": ["0", "9"],
    "branch.r": ["0"],
    "branch.alpha": ["0"],
    "branch.dropout": ["1"],
    "branch.freeze": ["-1", "9"],
    "branch.train_trunk": ["maybe"],
    "branch.router_input": ["last"],
    "pretrain.vision_steps": ["0"],
    "pretrain.vision_lr": ["0"],
    "pretrain.vision_batch_size": ["0"],
    "pretrain.steps": ["0"],
    "pretrain.batch_size": ["0"],
    "pretrain.lr": ["-1"],
    "pretrain.n_samples": ["1"],
    "pretrain.out": [""],
}
BAD["mola.layer_experts"].append("1,4")  # entries below mola.top_k = 2

#: Keys with no invalid value (free-form text would go here). Empty: even paths refuse "".
NO_INVALID_VALUE: set[str] = set()

#: Words by which a message says what is allowed.
ALLOWED = re.compile(r"must be|must list|allowed|is not one of|expects")


def test_every_key_has_a_rule_and_bad_values():
    """No key without a rule in config, and none without bad values in :data:`BAD`."""
    keys = set(allowed_keys())
    assert set(RULES) == keys
    assert not NO_INVALID_VALUE - keys
    missing = keys - set(BAD) - NO_INVALID_VALUE
    assert not missing, f"list bad values for {sorted(missing)} in BAD"
    assert not set(BAD) - keys, "BAD names keys the config no longer has"


@pytest.mark.parametrize("key", allowed_keys())
def test_bad_value_exits_2_with_one_line_before_anything_is_written(key, tmp_path, capsys):
    """``dmole-lab run --KEY=BAD`` exits 2 with one line naming the key and what is allowed,
    and the runs folder stays empty (the config fails before any model load)."""
    if key in NO_INVALID_VALUE:
        pytest.skip("no invalid value")
    assert BAD.get(key), f"no bad value listed for {key}"
    runs = tmp_path / "runs"
    runs.mkdir()
    # a missing model folder: a value wrongly let through fails fast (naming the folder, not
    # the key) instead of training the default run
    guard = f"--model.path={tmp_path / 'no-model'}"
    for bad in BAD[key]:
        assert main(["run", f"--runs_dir={runs}", guard, f"--{key}={bad}"]) == 2, bad
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("dmole-lab run: error: "), captured.err
        assert key in lines[0] and ALLOWED.search(lines[0]), lines[0]
        assert captured.out == ""
        assert list(runs.iterdir()) == [], bad


@pytest.mark.parametrize("override, message", [
    # the four reported: each used to fail late, after a folder or a manifest was written
    ({"dmole.budget": "0"}, "dmole.budget must be a number in (0, 1], got 0.0"),
    ({"train.batch_size": "0"}, "train.batch_size must be an integer >= 1, got 0"),
    ({"stream.n_train": "0"}, "stream.n_train must be an integer >= 1, got 0"),
    ({"dmole.r": "0"}, "dmole.r must be an integer >= 1, got 0"),
    ({"mole.top_k": "5"}, "mole.top_k must be an integer in 0..mole.experts (= 4"),
    # rules that tie keys together
    ({"moelora.experts": "2", "moelora.top_k": "3"}, "moelora.top_k must be an integer in 0.."),
    ({"mola.top_k": "4", "mola.layer_experts": "2,4,6,8"},
     "mola.layer_experts must list integers >= max(1, mola.top_k) = 4, got '2,4,6,8'"),
    ({"branch.branches": "4", "branch.freeze": "5"},
     "branch.freeze must be an integer in 0..branch.branches (= 4), got 5"),
    ({"branch.branches": "1"}, "branch.top_k must be an integer in 1..branch.branches (= 1)"),
    # lists of names
    ({"stream.tasks": "ocr,ocr"}, "stream.tasks repeats ocr"),
    ({"stream.tasks": ""}, "stream.tasks is empty; allowed: at least one of caption"),
    ({"method": "magic"}, "unknown method 'magic'; allowed: branchlora, dmole"),
])
def test_bad_config_is_refused_when_built(override, message):
    """build_config raises one line that names the key, the value and the allowed range."""
    with pytest.raises(ConfigError) as err:
        build_config(overrides=override)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("command, key", [("run", "method"), ("compare", "seed")])
def test_config_keys_are_not_taken_for_abbreviated_options(command, key, tmp_path, capsys):
    """``--method=`` is the config key, not an abbreviation of ``run --methods`` (which ran
    the default method), and ``--seed`` is not ``compare --seeds``."""
    assert main([command, f"--runs_dir={tmp_path}", f"--{key}=-1"]) == 2
    err = capsys.readouterr().err
    assert ("unknown method '-1'" if key == "method" else "seed must be an integer") in err
    assert list(tmp_path.iterdir()) == []


def test_related_keys_may_be_overridden_together_in_any_order():
    """The config is checked once all overrides are in, so moving a cross-field pair together
    works whichever key comes first."""
    cfg = build_config(overrides={"branch.top_k": 10, "branch.branches": 16})
    assert (cfg.branch.top_k, cfg.branch.branches) == (10, 16)
    cfg = build_config(overrides={"mole.top_k": 6, "mole.experts": 8})
    assert cfg.mole.top_k == 6


def test_defaults_and_shipped_presets_pass():
    """The defaults and every shipped preset break no rule."""
    from dmole_lab.config import list_presets

    assert config_problems(RunConfig()) == []
    for name in list_presets():
        assert config_problems(build_config(name)) == [], name


def test_config_keys_listing_says_what_is_allowed(capsys):
    """``dmole-lab config --keys`` shows each key's allowed values."""
    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    assert "train.batch_size" in out and "[an integer >= 1]" in out
    assert "[a number in (0, 1]]" in out  # dmole.budget


# ------------------------------------------------------------ names restated in config
def test_restated_names_equal_their_registries():
    """The names config restates equal the registries of the higher layers."""
    from dmole_lab.data.tasks import GENERAL_SETS, TASKS
    from dmole_lab.methods import METHODS
    from dmole_lab.methods.branchlora import ROUTER_INPUTS
    from dmole_lab.models.loading import DTYPES
    from dmole_lab.probes.sensitivity import PROXIES

    assert set(METHOD_NAMES) == set(METHODS)
    assert TASK_NAMES == tuple(TASKS)
    assert GENERAL_SET_NAMES == tuple(GENERAL_SETS)
    assert PROXY_NAMES == tuple(PROXIES)
    assert DTYPE_NAMES == tuple(DTYPES)
    assert BRANCH_ROUTER_INPUTS == tuple(ROUTER_INPUTS)


def test_module_selections_are_those_the_anatomy_knows():
    """lora.modules' choices are exactly the selections Anatomy.select accepts."""
    from dmole_lab.models.anatomy import Anatomy

    anatomy = Anatomy.__new__(Anatomy)  # select() needs only the module list
    anatomy.modules = []
    for which in MODULE_SELECTIONS:
        assert anatomy.select(which) == []
    with pytest.raises(ValueError, match="allowed: all, candidates"):
        anatomy.select("some")


# ------------------------------------------------ config rules agree with the code's checks
def _set(cfg, key: str, value):
    head, _, rest = key.partition(".")
    if not rest:
        return replace(cfg, **{head: value})
    return replace(cfg, **{head: _set(getattr(cfg, head), rest, value)})


def _small_stream(cfg):
    from dmole_lab.config import StreamConfig

    s = cfg.stream
    return StreamConfig(tasks=("ocr",), n_train=s.n_train, n_test=s.n_test,
                        n_general=s.n_general, general=s.general)


def _code_checks():
    """(key, values, check(cfg)): the check a module runs on the key, to compare with config's
    rule value by value (each list crosses the boundary of the allowed range)."""
    import torch

    from dmole_lab.data.stream import build_stream, validate_tasks
    from dmole_lab.dmole.allocation import expert_count, round_count, split_budget
    from dmole_lab.dmole.router import Router, train_autoencoder
    from dmole_lab.engine.probe_stream import probe_plan
    from dmole_lab.experts import AdapterShape
    from dmole_lab.methods.branchlora import check_branch_config
    from dmole_lab.methods.mixture import check_mixture
    from dmole_lab.probes.recorders import TowerDynamics
    from dmole_lab.probes.sensitivity import check_proxies

    z = torch.rand(12, 4)
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    small = {"stream.n_train": 1, "stream.n_test": 1, "stream.n_general": 1}
    rows = []
    for section in ("moelora", "mole", "mola"):
        def mix(c, section=section):
            check_mixture(getattr(c, section), section)
        rows += [(f"{section}.experts", [0, 1, 2, 4], mix),
                 (f"{section}.r", [0, 1], mix),
                 (f"{section}.alpha", [-1.0, 0.0, 1e-3], mix),
                 (f"{section}.dropout", [-0.1, 0.0, 0.99, 1.0], mix),
                 (f"{section}.balance", [-0.01, 0.0, 1.0], mix),
                 (f"{section}.top_k", [-1, 0, 1, 2, 4, 5, 8, 9], mix),
                 (f"{section}.layer_experts", [(), (1, 4), (2, 2), (0,), (2, 4, 6, 8)], mix)]
    branch = lambda c: check_branch_config(c.branch)  # noqa: E731
    rows += [(f"branch.{k}", v, branch) for k, v in {
        "branches": [0, 1, 2, 8], "top_k": [0, 1, 8, 9], "freeze": [-1, 0, 8, 9],
        "r": [0, 1], "alpha": [0.0, 0.5], "dropout": [-0.1, 0.0, 1.0],
        "router_input": ["summary", "first", "last"]}.items()]
    for section in ("dmole", "lora"):  # D-MoLE's experts; the LoRA peers' adapters
        def expert(c, section=section):
            AdapterShape.of(getattr(c, section), section)
        rows += [(f"{section}.r", [0, 1], expert), (f"{section}.alpha", [0.0, 0.1], expert),
                 (f"{section}.dropout", [-0.1, 0.0, 0.5, 1.0], expert)]
    d = lambda c: split_budget(1.0, 1.0, 4, 4, c.dmole.budget, c.dmole.vision_floor,  # noqa: E731
                               c.dmole.curriculum, [], c.dmole.towers, c.dmole.rounding)
    rows += [("dmole.budget", [-0.5, 0.0, 1e-6, 0.5, 1.0, 1.5],
              lambda c: expert_count(10, c.dmole.budget)),
             ("dmole.budget", [0.0, 0.5, 1.5], d),
             ("dmole.vision_floor", [-0.1, 0.0, 1.0, 1.1], d),
             ("dmole.curriculum", ["current", "continual", "none", "magic"], d),
             ("dmole.towers", ["both", "llm", "vision", "neither"], d),
             ("dmole.rounding", ["half_up", "half_even", "down"],
              lambda c: round_count(2.5, c.dmole.rounding)),
             ("dmole.router_quantile", [0.0, 0.5, 1.0, 1.5],
              lambda c: train_autoencoder(z, 4, max_epochs=1, quantile=c.dmole.router_quantile)),
             ("dmole.router_output_bias", ["mean", "default", "zero"],
              lambda c: train_autoencoder(z, 4, max_epochs=1,
                                          output_bias=c.dmole.router_output_bias)),
             ("dmole.routing", ["batch", "sample", "token"],
              lambda c: Router(c.dmole.router_support, c.dmole.routing)),
             ("dmole.train_routing", ["voters", "batch", "own", "all"],
              lambda c: Router(training=c.dmole.train_routing)),
             ("stream.tasks", [(), ("ocr",), ("ocr", "caption"), ("ocr", "nope")],
              lambda c: validate_tasks(c.stream.tasks)),
             ("probe.proxies", [(), ("snip",), ("magic",)],
              lambda c: check_proxies(c.probe.proxies)),
             ("probe.sweep", [(0,), (1, 2), (-1, 4)], probe_plan),
             ("probe.batches", [-1, 0, 3], probe_plan),
             ("probe.batch_size", [-1, 0, 2], probe_plan),
             ("probe.record_every", [0, 1, 3],
              lambda c: TowerDynamics(frozen, None, c.probe.record_every))]
    for key in small:
        rows.append((key, [0, 1], lambda c, key=key: build_stream(
            _small_stream(_set(c, key, getattr(c.stream, key.split(".")[1]))), progress=False)))
    rows.append(("stream.general", [(), ("pope",), ("general", "pope"), ("mme",)],
                 lambda c: build_stream(_small_stream(c), progress=False)))
    return rows, small


def test_config_rules_agree_with_the_checks_in_the_code():
    """For each value, config refuses it exactly when the module that reads the key does.
    Known, deliberate differences (config is stricter): repeated names in stream.general and
    probe.proxies (the code would silently drop or double them), and model.device values
    torch parses but the project does not run on (mps, meta, ...)."""
    rows, small = _code_checks()
    base = build_config(overrides=small)
    disagree = []
    for key, values, check in rows:
        for value in values:
            cfg = _set(base, key, value)
            config_ok = not config_problems(cfg)
            try:
                check(cfg)
                code_ok = True
            except (ValueError, ConfigError):
                code_ok = False
            if config_ok != code_ok:
                disagree.append(f"{key}={value!r}: config {'accepts' if config_ok else 'refuses'}"
                                f", code {'accepts' if code_ok else 'refuses'}")
    assert not disagree, "\n".join(disagree)


# ------------------------------------------------------------- the order of a run's checks
def test_run_refuses_a_bad_config_built_in_code_before_writing(smoke_overrides, tmp_path):
    """``run`` checks the config itself: configs made with dataclasses.replace skip
    build_config."""
    from dmole_lab.engine import continual

    cfg = build_config(overrides=smoke_overrides)
    bad = replace(cfg, train=replace(cfg.train, batch_size=0))
    with pytest.raises(ConfigError, match="train.batch_size must be an integer >= 1, got 0"):
        continual.run(bad, progress=False)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("problem, fragment", [
    ("missing", "does not exist"),
    ("unknown architecture", "model_type 'bert' has no anatomy map"),
    ("no weights", "has no weight files"),
])
def test_model_folder_is_checked_before_any_folder_exists(problem, fragment, micro_model_dir,
                                                          tmp_path, capsys):
    """A missing or unusable model folder exits 2 before the run folder exists."""
    import shutil

    model = tmp_path / "model"
    if problem != "missing":
        shutil.copytree(micro_model_dir, model)
    if problem == "unknown architecture":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    if problem == "no weights":
        for f in model.glob("*.safetensors"):
            f.unlink()
    runs = tmp_path / "runs"
    assert main(["run", "--quiet", f"--runs_dir={runs}", f"--model.path={model}"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.splitlines()) == 1
    assert not runs.exists()


def test_a_run_that_fails_before_it_starts_leaves_no_folder(smoke_overrides, monkeypatch,
                                                             tmp_path, capsys):
    """The folder is made (and locked) before the model loads, but the manifest only once
    the run starts; a failure in between removes the folder again."""
    from dmole_lab.engine import continual
    from dmole_lab.models.loading import ModelLoadError

    def broken(cfg):
        raise ModelLoadError("could not load the checkpoint: simulated")

    monkeypatch.setattr(continual, "load_model", broken)
    argv = [f"--{k}={v}" for k, v in smoke_overrides.items()]
    assert main(["run", "--quiet", *argv]) == 2
    assert "simulated" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_every_run_of_methods_is_checked_before_the_first_starts(smoke_overrides, tmp_path,
                                                                capsys):
    """``run --methods`` checks every run before the first one writes anything."""
    argv = [f"--{k}={v}" for k, v in smoke_overrides.items()]
    missing = tmp_path / "no-model"
    assert main(["run", "--quiet", "--methods", "seq-lora,dmole", *argv,
                 f"--model.path={missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
