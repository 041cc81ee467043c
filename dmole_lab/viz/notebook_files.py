"""The notebooks' ``.ipynb`` files as JupyterLab expects to find them.

When a kernel connects, JupyterLab writes the kernel's ``language_info`` into the notebook's
metadata; if the file does not already hold exactly that, the notebook is marked as changed
(the unsaved-changes dot on its tab) before the reader has touched it. ``make notebooks``
therefore writes the ``language_info`` of the project environment's kernel into every
``.ipynb`` after jupytext has synced it from its ``.py`` source (jupytext keeps it on later
syncs). A Python of another patch release still marks the notebook as changed on opening.

``python -m dmole_lab.viz.notebook_files notebooks/*.ipynb``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def kernel_language_info() -> dict:
    """The ``language_info`` this environment's Python kernel (ipykernel) reports."""
    from ipykernel.ipkernel import IPythonKernel

    return dict(IPythonKernel.language_info)


def stamp_language_info(paths: list[Path], info: dict | None = None) -> list[Path]:
    """Write ``info`` (default: :func:`kernel_language_info`) as the ``language_info`` of
    every notebook in ``paths`` that does not already hold it; returns the files changed."""
    info = kernel_language_info() if info is None else info
    changed = []
    for path in map(Path, paths):
        if path.suffix != ".ipynb":
            raise ValueError(f"{path} is not a notebook (.ipynb)")
        nb = json.loads(path.read_text())
        if nb.get("metadata", {}).get("language_info") == info:
            continue
        nb.setdefault("metadata", {})["language_info"] = info
        # the layout jupytext and JupyterLab write: one-space indent, a final newline
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        changed.append(path)
    return changed


if __name__ == "__main__":
    for p in stamp_language_info(sys.argv[1:]):
        print(f"language_info written to {p}")
