"""The static export (``make html``): every explorer as its figure, no widget JavaScript."""

import base64
import re

import nbformat
import pytest

from dmole_lab.viz.export import WIDGET_STATE, WIDGET_VIEW, export_html, strip_widgets
from dmole_lab.viz.widgets import NEEDS_KERNEL, AllocationExplorer

TASKS = ["shallow", "deep", "also_shallow"]
DYNAMICS = """[{"stage": s, "task": f"t{s}", "step": k, "tower": tower, "quantity": "grad_norm",
          "value": 1.0 + k} for s in (1, 2) for k in range(4) for tower in ("vision", "llm")]"""
IMG = re.compile(r'<img alt="(\w+) figure" src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def test_an_explorer_offers_its_widget_view_and_a_static_fallback(shaped_sensitivity_table):
    from IPython.core.formatters import DisplayFormatter

    ex = AllocationExplorer(shaped_sensitivity_table, TASKS, r=2)
    # what display(ex) and ex as a cell's last expression both send
    bundle, _ = DisplayFormatter().format(ex)
    assert bundle[WIDGET_VIEW]["model_id"] == ex.widget.model_id
    static = bundle["text/html"]
    assert NEEDS_KERNEL in static and "budget = 0.5, vision floor = 0.25" in static
    assert [m[0] for m in IMG.findall(static)] == ["AllocationExplorer"]
    assert base64.b64decode(IMG.search(static)[2]) == ex.output.value
    assert ex.note.value in static  # the note under the figure, as it reads now
    ex.fraction.value = 0.25
    assert "budget = 0.25" in ex._repr_mimebundle_()["text/html"]


def test_strip_widgets_keeps_fallbacks_and_drops_bare_views():
    """An explorer's view leaves its fallback; a progress bar's (no text/html) goes whole."""
    nb = nbformat.v4.new_notebook(metadata={"widgets": {WIDGET_STATE: {"state": {}}}})
    view = {WIDGET_VIEW: {"model_id": "x"}, "text/plain": "HBox()"}
    nb.cells = [nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("stream", text="hello"),
        nbformat.v4.new_output("display_data", data={**view, "text/html": "<p>ok</p>"}),
        nbformat.v4.new_output("display_data", data=view)])]
    assert strip_widgets(nb) == (2, 1)
    assert "widgets" not in nb.metadata
    assert [o.get("text") or o.data for o in nb.cells[0].outputs] == [
        "hello", {"text/plain": "HBox()", "text/html": "<p>ok</p>"}]


def test_export_shows_every_explorer_as_its_figure(tmp_path, shaped_sensitivity_table, capsys):
    """A tiny notebook (one explorer shown with display(), one as the last expression, a
    progress bar), run in its own folder (it reads a relative path) in smoke mode."""
    shaped_sensitivity_table.to_parquet(tmp_path / "sens.parquet")
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_markdown_cell("# Two explorers"), nbformat.v4.new_code_cell(
        "import os\nimport pandas as pd\nfrom IPython.display import display\n"
        "from dmole_lab.viz.widgets import AllocationExplorer, DynamicsExplorer\n"
        "from tqdm.auto import tqdm\n"
        "print('smoke', os.environ.get('DMOLE_SMOKE'))\n"
        "for _ in tqdm(range(2), desc='a progress bar'): pass\n"
        f"display(AllocationExplorer(pd.read_parquet('sens.parquet'), {TASKS!r}, r=2))"),
        nbformat.v4.new_code_cell(f"DynamicsExplorer(pd.DataFrame({DYNAMICS}), smooth=1)")]
    nbformat.write(nb, tmp_path / "tiny.ipynb")

    out = export_html(tmp_path / "tiny.ipynb", tmp_path / "html", smoke=True)
    assert re.search(r"tiny.html: [\d.]+ s, 2 explorer\(s\), 1 other widget view\(s\) left out "
                     r"\(e.g. progress bars\), smoke mode", capsys.readouterr().out)
    page = out.read_text(encoding="utf-8")
    assert out == tmp_path / "html" / "tiny.html"
    assert [m[0] for m in IMG.findall(page)] == ["AllocationExplorer", "DynamicsExplorer"]
    assert all(base64.b64decode(m[1]).startswith(b"\x89PNG") for m in IMG.findall(page))
    assert page.count(NEEDS_KERNEL) == 2
    assert "allocation of 3 tasks recomputed in" in page  # the allocation explorer's note
    assert "smoke 1" in page and "a progress bar:" not in page  # its repr, "desc: 0%|..."
    # no widget view or state, nothing fetched from elsewhere (no CDN, no widget manager)
    for absent in (WIDGET_VIEW, WIDGET_STATE, "html-manager", "jupyter-widgets", 'src="http',
                   "require.js", "mathjax"):
        assert absent not in page, absent


def test_a_missing_notebook_is_a_clear_error(tmp_path):
    (tmp_path / "01_here.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no notebook .*02_gone.ipynb; .* has: 01_here"):
        export_html(tmp_path / "02_gone.ipynb", tmp_path / "html")

