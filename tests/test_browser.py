"""Every notebook in JupyterLab in headless Chromium, in smoke mode: it opens without the
unsaved-changes marker, runs without an error, every explorer renders as controls (not as
text), and one change of each explorer's first control replaces its figure. Latency figures
belong to benchmarks/bench_browser.py.

Needs the system's Chromium (``make test`` installs Debian's ``chromium``); set
``DMOLE_SKIP_BROWSER=1`` to leave these tests out on a machine without one.
"""

import os

import pytest

from dmole_lab.config import PROJECT_ROOT
from dmole_lab.viz import browser

NOTEBOOKS = sorted(p.name for p in (PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

pytestmark = pytest.mark.skipif(os.environ.get("DMOLE_SKIP_BROWSER") == "1",
                                reason="DMOLE_SKIP_BROWSER=1")


@pytest.fixture(scope="module")
def page():
    """One JupyterLab server (kernels in smoke mode) and one Chromium page for every notebook."""
    if browser.chromium_path() is None:
        pytest.fail("no Chromium: `make test` installs Debian's chromium (or set "
                    "DMOLE_SKIP_BROWSER=1)")
    with browser.lab_server({"DMOLE_SMOKE": "1"}) as server, browser.chromium() as pg:
        pg.lab = server
        yield pg


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_chromium(page, name):
    opened = {}
    browser.open_notebook(page, page.lab, f"notebooks/{name}", timeout_s=300, opened=opened)
    # opened and untouched, it has no unsaved changes (dmole_lab/viz/notebook_files.py)
    assert opened["dirty"] is False, name
    assert browser.error_outputs(page) == []
    census = browser.widget_census(page)
    assert census["explorers"] >= 1, census
    assert census["as_text"] == 0, census
    assert census["images"] >= 3, "a walkthrough draws its figures"
    counts = browser.explorer_controls(page)
    assert len(counts) == census["explorers"] and min(counts) >= 1, counts
    for e in range(len(counts)):
        assert browser.change_control(page, e, 0, timeout_ms=30_000) >= 0, (name, e)
        browser.settle(page)


def test_bench_browser_smoke(tmp_path):
    """benchmarks/bench_browser.py on one notebook in smoke mode: every control of its explorer
    is changed and the changes that show are timed."""
    import json
    import subprocess
    import sys

    if browser.chromium_path() is None:
        pytest.fail("no Chromium: `make test` installs Debian's chromium")
    out = tmp_path / "browser.json"
    # its own process: Playwright's sync API cannot start inside this module's open browser
    proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "benchmarks" / "bench_browser.py"),
                           "--notebooks", "03", "--smoke", "--repeats", "1", "--pause-ms", "50",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["explorers"]
    assert [(r["notebook"], r["explorer"]) for r in rows] == [("03_curriculum_dynamics.ipynb", 0)]
    # smoke mode's stages are a step or two long: one more step of smoothing may change
    # nothing on the page, so one of the three changes may go unseen
    assert rows[0]["changes"] == 3 and rows[0]["missed"] <= 1 and rows[0]["median_ms"] > 0
