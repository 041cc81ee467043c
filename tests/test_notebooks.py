"""Every notebook is in sync with its jupytext pair, has the course's structure, and runs on a
stream file (its smoke-mode run in a browser: tests/test_browser.py)."""

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_pair_is_in_sync(path):
    ipynb = path.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} missing: run `make notebooks`"
    assert _cells(jupytext.read(path)) == _cells(jupytext.read(ipynb)), (
        f"{ipynb.name} differs from {path.name}: run `make notebooks`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_the_course_structure(path):
    """Parameters first (CI's smoke mode sets them), then a Summary and Exercises. Running it in
    smoke mode is tests/test_browser.py's job (in JupyterLab, in Chromium) and the stream-file
    test's below (nbclient)."""
    nb = jupytext.read(path)
    assert "parameters" in nb.cells[[c.cell_type for c in nb.cells].index("code")].metadata.get(
        "tags", []), "the first code cell must be tagged `parameters`"
    assert any("## Summary" in c.source for c in nb.cells)
    assert any("## Exercises" in c.source for c in nb.cells)


@pytest.fixture(scope="session")
def smoke_stream_file(tmp_path_factory):
    """The smoke preset's stream exported as files (what a user's own data looks like)."""
    from dmole_lab.config import build_config
    from dmole_lab.data.export import export_stream

    return export_stream(build_config("smoke", {}).stream, tmp_path_factory.mktemp("stream"),
                         progress=False)


#: One notebook per recompute path a notebook owns: results.open_or_run (02; 03 is the same),
#: the comparison sweep (04). 01 calls probe_stream and continual.run with the same overrides,
#: both run on stream files in tests/test_stream_runs.py.
STREAM_FILE_NOTEBOOKS = [p for p in NOTEBOOKS if p.stem.startswith(("02", "04"))]


@pytest.mark.parametrize("path", STREAM_FILE_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_stream_file(path, smoke_stream_file, monkeypatch):
    """DMOLE_STREAM_FILE recomputes the notebook on a stream file with no other change."""
    from nbclient import NotebookClient

    monkeypatch.setenv("DMOLE_SMOKE", "1")
    monkeypatch.setenv("DMOLE_STREAM_FILE", str(smoke_stream_file))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = jupytext.read(path)
    nb.cells.append(nbformat_cell(
        "import json\nprint(json.dumps({'stream_file': OVERRIDES.get('stream.file'), "
        "'recompute': RECOMPUTE}))"))
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors
    last = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    assert f'"stream_file": "{smoke_stream_file}"' in last and '"recompute": true' in last


def nbformat_cell(source: str):
    import nbformat

    return nbformat.v4.new_code_cell(source)


def test_every_notebook_holds_the_kernels_language_info(tmp_path):
    """JupyterLab marks a notebook as changed on opening unless it already holds the kernel's
    language_info; ``make notebooks`` writes it, and keeps the file otherwise as it was."""
    import json

    from dmole_lab.viz.notebook_files import kernel_language_info, stamp_language_info

    info = kernel_language_info()
    for path in NOTEBOOKS:
        held = json.loads(path.with_suffix(".ipynb").read_text())["metadata"]["language_info"]
        assert held["name"] == "python" and held["version"][:5] == info["version"][:5], path
    nb = tmp_path / "a.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {"kernelspec": {"name": "python3"}},
                              "nbformat": 4, "nbformat_minor": 5}))
    assert stamp_language_info([nb], info) == [nb]
    stamped = json.loads(nb.read_text())
    assert stamped["metadata"] == {"kernelspec": {"name": "python3"}, "language_info": info}
    assert stamp_language_info([nb], info) == []  # already there: the file is left alone
    with pytest.raises(ValueError, match="not a notebook"):
        stamp_language_info([tmp_path / "a.py"], info)
