"""Static HTML of the notebooks: each executed, every explorer shown as its default figure.

An explorer (:mod:`dmole_lab.viz.widgets`) is an ipywidgets panel: a page exported with its
widget views needs the widgets' JavaScript from a CDN, and even then its controls answer only
with a kernel behind them. So :func:`export_html` runs the notebook (kernel ``python3``, in the
notebook's own folder, so its relative paths hold), drops every widget view and the notebook's
widget state, and writes the page with nbconvert's JupyterLab template: each explorer then shows
its ``text/html`` fallback, its figure inline as base64 PNG, its notes and tables, and a line
saying that the controls need a kernel. The page loads no script from elsewhere: requirejs
(needed only by widget views) is left out, MathJax and mermaid only come when the notebook has
math or a mermaid diagram (these notebooks have neither).

``make html`` writes ``build/html/<name>.html`` for every numbered notebook::

    python -m dmole_lab.viz.export --out build/html notebooks/[0-9]*.ipynb [--smoke]

``--smoke`` (or ``DMOLE_SMOKE=1`` in the environment, which the kernel inherits) runs the
notebooks' smoke mode (a short recompute on a 3-task stream) instead of reading the stored runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# The JupyterLab template without requirejs (only widget views load modules with it), and with
# MathJax and mermaid only where the notebook needs them (resources.dmole_math/dmole_mermaid).
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.dmole_math -%}{{ super() }}{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}
{%- if resources.dmole_mermaid -%}{{ super() }}{%- endif -%}
{%- endblock html_head_js_mermaidjs -%}
"""


def strip_widgets(nb) -> tuple[int, int]:
    """Drop every widget view from ``nb``'s outputs and its widget state, in place.

    An output that has no ``text/html`` fallback beside its view (a progress bar, any widget
    that is not an explorer) is dropped whole: its text is the widget's repr when it was shown
    (a progress bar at 0%), and a closed bar is not shown in Jupyter either.
    Returns (views dropped, outputs dropped with them)."""
    views = gone = 0
    for cell in nb.cells:
        if "outputs" not in cell:
            continue
        kept = []
        for out in cell.outputs:
            data = out.get("data", {})
            if WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                views += 1
                if "text/html" not in data:
                    gone += 1
                    continue
            kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("widgets", None)
    return views, gone


def _needs(nb) -> dict[str, bool]:
    """Whether the page needs MathJax (TeX in markdown, LaTeX outputs) or mermaid."""
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    latex = any("text/latex" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    return {"dmole_math": latex or any(s in markdown for s in ("$", "\\(", "\\[")),
            "dmole_mermaid": "```mermaid" in markdown}


def export_html(notebook: str | Path, out_dir: str | Path, smoke: bool = False,
                timeout: int = 600, progress: bool = True) -> Path:
    """Execute ``notebook`` and write its static page ``out_dir/<name>.html``; returns its path.

    ``smoke`` runs the notebook's smoke mode (``DMOLE_SMOKE=1`` for the kernel); ``timeout`` is
    per cell, in seconds; ``progress`` prints one line when the page is written (its time, its
    explorers, the other widget views left out). A cell that raises stops the export with
    nbclient's ``CellExecutionError`` (the cell and its traceback)."""
    import jinja2
    import jupytext
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    path = Path(notebook)
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("[0-9]*.ipynb")) if path.parent.is_dir() \
            else []
        raise FileNotFoundError(f"no notebook {path}" + (
            f"; {path.parent} has: {', '.join(found)}" if found else ""))
    start = time.perf_counter()
    nb = jupytext.read(path)
    # The kernel inherits this process's environment (DMOLE_SMOKE, DMOLE_STREAM_FILE included).
    kernel = {"env": {**os.environ, "DMOLE_SMOKE": "1"}} if smoke else {}
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute(**kernel)
    views, gone = strip_widgets(nb)
    exporter = HTMLExporter(template_name="lab", template_file="dmole_static.html.j2",
                            extra_loaders=[jinja2.DictLoader({"dmole_static.html.j2": _TEMPLATE})])
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": path.stem},
                                                         **_needs(nb)})
    out = Path(out_dir) / f"{path.stem}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(out)  # no half-written page left behind by an interrupted export
    if progress:
        # progress bars (smoke mode recomputes) are the usual widget views with no fallback
        print(f"{path} -> {out}: {time.perf_counter() - start:.1f} s, "
              f"{views - gone} explorer(s)" + (f", {gone} other widget view(s) left out "
                                                "(e.g. progress bars)" if gone else "")
              + (", smoke mode" if smoke else ""), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Export every notebook given, one line per notebook with its time."""
    ap = argparse.ArgumentParser(prog="python -m dmole_lab.viz.export",
                                 description="Static HTML of executed notebooks: each explorer "
                                             "as its default figure (no kernel, no CDN).")
    ap.add_argument("notebooks", nargs="+", type=Path, help="notebooks (.ipynb or jupytext .py)")
    ap.add_argument("--out", type=Path, default=Path("build/html"), help="output folder")
    ap.add_argument("--smoke", action="store_true",
                    help="run the notebooks' smoke mode (as DMOLE_SMOKE=1 does)")
    args = ap.parse_args(argv)
    smoke = args.smoke or os.environ.get("DMOLE_SMOKE") == "1"
    for nb in args.notebooks:
        if not nb.is_file():
            ap.error(f"no notebook {nb}")
    total = time.perf_counter()
    for nb in args.notebooks:
        export_html(nb, args.out, smoke=smoke)
    print(f"{len(args.notebooks)} pages in {time.perf_counter() - total:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
