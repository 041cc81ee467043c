"""The notebooks as a student meets them: JupyterLab on 127.0.0.1, driven in headless Chromium.

:func:`lab_server` starts a JupyterLab server on a free local port (its own config and data
folders, a random token, the given environment for the kernels). :func:`open_notebook` opens a
notebook in Chromium (Playwright, with the system's ``chromium``: a browser cannot be
downloaded here), runs every cell and waits for the kernel. :func:`explorer_changes` then
changes each control of each explorer on the page (the widgets of
:mod:`dmole_lab.viz.widgets`, found by their ``dmole-explorer`` class) and times, in the page
itself, the span from the input event to the moment what the explorer shows (its figure, its
notes and tables) has changed: what the student waits for, kernel and browser included.

Used by ``tests/test_browser.py`` (every notebook runs clean and its widgets answer) and
``benchmarks/bench_browser.py`` (the latency of every explorer).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from dmole_lab.config import PROJECT_ROOT

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The system's Chromium executable, or None (``DMOLE_CHROMIUM`` overrides the search)."""
    if os.environ.get("DMOLE_CHROMIUM"):
        return os.environ["DMOLE_CHROMIUM"]
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabServer:
    """A running JupyterLab server: where it listens and its token."""

    url: str
    token: str
    process: subprocess.Popen
    log: Path

    def notebook_url(self, path: str) -> str:
        """The address that opens ``path`` (e.g. ``notebooks/01_x.ipynb``) in JupyterLab."""
        return f"{self.url}/lab/tree/{path}?token={self.token}&reset"


@contextlib.contextmanager
def lab_server(env: dict[str, str] | None = None, notebooks: Path = PROJECT_ROOT / "notebooks",
               timeout: float = 90.0) -> Iterator[LabServer]:
    """JupyterLab on 127.0.0.1 serving a copy of the ``notebooks`` folder (running and saving
    them leaves the project's files as they were); kernels get ``env`` on top of this
    process's environment.

    The server gets its own config, settings and runtime folders, so a user's JupyterLab
    settings (and its workspace of open tabs) play no part; it is stopped on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="dmole-lab-"))
    root = tmp / "root"
    shutil.copytree(notebooks, root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    port, token = _free_port(), secrets.token_hex(16)
    # Every cell rendered, not only those in view (JupyterLab 4 windows long notebooks), so
    # the page holds every output and widget of the notebook.
    # No news or update prompts over the page either.
    # Nothing saved behind the test's back either (it serves a copy, see below).
    for folder, name, value in [
            ("notebook-extension", "tracker", '{"windowingMode": "none"}'),
            ("docmanager-extension", "plugin", '{"autosave": false}'),
            ("apputils-extension", "notification",
             '{"fetchNews": "false", "checkForUpdates": false}')]:
        settings = tmp / "settings" / "@jupyterlab" / folder
        settings.mkdir(parents=True, exist_ok=True)
        (settings / f"{name}.jupyterlab-settings").write_text(value)
    full_env = {**os.environ, **(env or {}), "JUPYTER_CONFIG_DIR": str(tmp / "config"),
                "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
                "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
                "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces")}
    log = tmp / "lab.log"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI machines run as root
        cmd.append("--allow-root")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=root)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}: "
                                   f"{log.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"JupyterLab did not listen within {timeout} s; see {log}")
            time.sleep(0.2)
        yield LabServer(f"http://127.0.0.1:{port}", token, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium page (Playwright driving the system's browser)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise FileNotFoundError("no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) +
                                "); install Debian's `chromium` or set DMOLE_CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


_CELLS_DONE = """() => {
  const prompts = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt')];
  return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


def open_notebook(page, server: LabServer, path: str, timeout_s: float = 600.0,
                  opened: dict | None = None) -> float:
    """Open ``path`` in JupyterLab, run all its cells and wait until every code cell has run;
    returns the seconds that took. ``opened``, if given, receives what the reader saw once the
    kernel had connected and before anything ran: ``dirty`` (the tab's unsaved-changes
    marker)."""
    page.goto(server.notebook_url(path))
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=120_000)
    # the kernel has connected (before that, "Run All Cells" is dropped)
    page.get_by_text("| Idle").first.wait_for(timeout=120_000)
    if opened is not None:
        # JupyterLab writes the kernel's language_info on connecting, a moment after "Idle"
        page.wait_for_timeout(1000)
        opened["dirty"] = page.locator(".jp-mod-dirty").count() > 0
    start = time.perf_counter()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.wait_for_function(_CELLS_DONE, timeout=timeout_s * 1000, polling=500)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']",
                           timeout=timeout_s * 1000)
    return time.perf_counter() - start


def error_outputs(page) -> list[str]:
    """Texts of the error outputs (tracebacks) on the page."""
    return page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'],"
                        " .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']"
                        ).all_inner_texts()


def widget_census(page) -> dict[str, int]:
    """How many explorers, rendered controls, images, and widget views left as text (a widget
    whose JavaScript did not load prints its repr) the page shows."""
    return page.evaluate("""() => ({
      explorers: document.querySelectorAll('.dmole-explorer').length,
      controls: document.querySelectorAll(
        '.dmole-explorer select, .dmole-explorer .widget-slider, .dmole-explorer button').length,
      images: document.querySelectorAll('.jp-OutputArea-output img').length,
      as_text: [...document.querySelectorAll('.jp-OutputArea-output pre')].filter(
        e => /(VBox|HBox|Dropdown|IntSlider|FloatSlider)\\(/.test(e.textContent)).length,
    })""")


# In-page: change control ``c`` of explorer ``e`` and resolve with the milliseconds until what
# the explorer shows (its figure, its notes and tables) has finished changing: the last change
# (a new figure counts once it has loaded) followed by QUIET ms without another, so that a note
# arriving before its figure does not stop the clock early; -1 if nothing changed within
# ``timeout`` ms.
_CHANGE = """async ([e, c, timeout]) => {
  const ex = document.querySelectorAll('.dmole-explorer')[e];
  const controls = [...ex.querySelectorAll('select, .widget-slider, .widget-toggle-buttons')];
  const ctl = controls[c];
  const figure = () => ex.querySelector('img');
  // what the explorer shows: its figure, and its notes and tables (some controls change only
  // a table, e.g. a metric convention)
  const view = () => (figure() ? figure().src : '') + [...ex.querySelectorAll(
    '.widget-html-content')].map(h => h.innerHTML).join('');
  let seen = view(), last = null;
  const QUIET = 250;
  const t0 = performance.now();
  if (ctl.tagName === 'SELECT' && ctl.multiple) {
    const opts = [...ctl.options];
    const off = opts.find(o => !o.selected) || opts[opts.length - 1];
    off.selected = !off.selected;
    ctl.dispatchEvent(new Event('change', {bubbles: true}));
  } else if (ctl.tagName === 'SELECT') {
    ctl.selectedIndex = (ctl.selectedIndex + 1) % ctl.options.length;
    ctl.dispatchEvent(new Event('change', {bubbles: true}));
  } else if (ctl.classList.contains('widget-slider')) {
    const handle = ctl.querySelector('.noUi-handle');
    handle.focus();
    for (const type of ['keydown', 'keyup'])
      handle.dispatchEvent(new KeyboardEvent(type, {key: 'ArrowRight', bubbles: true}));
  } else {
    const off = [...ctl.querySelectorAll('button')].find(b => !b.classList.contains('mod-active'));
    off.click();
  }
  return await new Promise(resolve => {
    const mark = () => {
      const v = view();
      if (v === seen) return;
      seen = v;
      const img = figure();
      if (img && !img.complete) img.onload = () => { last = performance.now(); };
      else last = performance.now();
    };
    const obs = new MutationObserver(mark);
    obs.observe(ex, {subtree: true, childList: true, attributes: true, characterData: true,
                     attributeFilter: ['src']});
    const finish = value => { obs.disconnect(); clearInterval(poll); resolve(value); };
    const poll = setInterval(() => {
      const now = performance.now();
      const loaded = !figure() || figure().complete;
      if (last !== null && loaded && now - last >= QUIET) finish(last - t0);
      else if (now - t0 > timeout) finish(last === null ? -1 : last - t0);
    }, 10);
  });
}"""


def explorer_controls(page) -> list[int]:
    """Per explorer on the page, how many controls :func:`change_control` can drive."""
    return page.evaluate("""() => [...document.querySelectorAll('.dmole-explorer')].map(
      ex => ex.querySelectorAll('select, .widget-slider, .widget-toggle-buttons').length)""")


def change_control(page, explorer: int, control: int, timeout_ms: int = 10_000) -> float:
    """Change one control (next option, one slider step, another toggle) and return the
    milliseconds until the explorer's view changed (-1: not within ``timeout_ms``)."""
    return float(page.evaluate(_CHANGE, [explorer, control, timeout_ms]))


def settle(page, ms: int = 300) -> None:
    """Let pending kernel messages land before the next change."""
    page.wait_for_timeout(ms)
