"""The house: imports point down the layers, never up, and the torch-free layers stay so."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dmole_lab"

#: Layers from the bottom up: a module may import its own layer and the ones below it.
LAYERS = ["config", "store", "seeding", "analysis", "data", "training", "models", "probes",
          "experts", "dmole", "methods", "engine", "viz", "exercises", "cli", "__main__"]
RANK = {name: i for i, name in enumerate(LAYERS)}
RANK["seeding"] = RANK["store"]  # two independent utilities on one level

#: Modules a notebook or a widget loads: they must not pull torch in.
TORCH_FREE = ["dmole_lab.config", "dmole_lab.store", "dmole_lab.analysis.metrics",
              "dmole_lab.analysis.scoring", "dmole_lab.analysis.profiles",
              "dmole_lab.analysis.compare", "dmole_lab.analysis.usage",
              "dmole_lab.analysis.summaries", "dmole_lab.analysis.general",
              "dmole_lab.analysis.rescore", "dmole_lab.analysis.set_scores",
              "dmole_lab.dmole.allocation",
              "dmole_lab.viz.plots", "dmole_lab.viz.results", "dmole_lab.viz.report",
              "dmole_lab.viz.widgets", "dmole_lab.viz.export", "dmole_lab.viz.notebook_files",
              "dmole_lab.exercises"]


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every dmole_lab import in a file, at any depth."""
    mod = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "dmole_lab" or target.startswith("dmole_lab."):
                # "from dmole_lab.viz import plots" imports dmole_lab.viz.plots
                names = [f"{target}.{a.name}" for a in node.names] if target.count(".") < 1 \
                    else [target]
                out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("dmole_lab")]
    return out


def test_every_layer_is_known():
    layers = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
              if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())}
    assert layers - {"__init__"} <= set(RANK), sorted(layers - set(RANK))


def test_imports_point_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        src = _layer(here)
        if src == "__init__":
            continue
        for line, target in _imports(path):
            dst = _layer(target)
            if dst != "__init__" and RANK[dst] > RANK[src]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({src}) -> {target}")
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_the_library_never_calls_its_own_cli():
    callers = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
               if p.name not in ("cli.py", "__main__.py")
               and any(t == "dmole_lab.cli" for _, t in _imports(p))]
    assert callers == []


@pytest.mark.parametrize("module", TORCH_FREE)
def test_analysis_and_viz_modules_load_without_torch(module):
    code = (f"import sys, {module}; "
            "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent).stdout.strip()
    assert out == "", f"importing {module} imports {out}"
