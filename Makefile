# Two entry points: `make demo` (main job on the embedded default) and `make test`.
# Both create the virtual environment on first use.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test browser pretrain bench lint notebooks lab html clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dmole_lab run --preset tiny --methods dmole,seq-lora --jobs 2

test: $(STAMP) browser
	$(PY) -m pytest

# The notebooks' browser tests drive the system's Chromium (Playwright cannot download its own
# browsers here): Debian's package, installed once. DMOLE_SKIP_BROWSER=1 skips it and them.
browser:
	@if [ "$$DMOLE_SKIP_BROWSER" = 1 ] || command -v chromium >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }; \
	else \
		echo "the browser tests need Chromium: install it (Debian: apt-get install chromium)" \
		     "or set DMOLE_SKIP_BROWSER=1" >&2; exit 1; \
	fi

pretrain: $(STAMP)
	$(PY) -m dmole_lab pretrain --preset tiny

bench: $(STAMP)
	$(PY) benchmarks/bench_demo.py

notebooks: $(STAMP)  # write each notebooks/*.ipynb from its reviewed .py source
	$(VENV)/bin/jupytext --quiet --sync notebooks/[0-9]*.py
	$(PY) -m dmole_lab.viz.notebook_files notebooks/[0-9]*.ipynb

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Static pages of the executed notebooks, readable without a kernel or a network: each
# explorer shows its default figure (dmole_lab/viz/export.py). DMOLE_SMOKE=1: smoke mode.
html: $(STAMP)
	$(PY) -m dmole_lab.viz.export --out build/html notebooks/[0-9]*.ipynb

lint: $(STAMP)
	$(VENV)/bin/ruff check dmole_lab tests benchmarks notebooks

clean:
	rm -rf $(VENV) runs
