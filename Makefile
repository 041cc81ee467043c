# Two entry points: `make demo` (main job on the embedded default) and `make test`.
# Both create the virtual environment on first use.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test pretrain bench lint notebooks lab clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dmole_lab run --preset tiny --methods dmole,seq-lora --jobs 2

test: $(STAMP)
	$(PY) -m pytest

pretrain: $(STAMP)
	$(PY) -m dmole_lab pretrain --preset tiny

bench: $(STAMP)
	$(PY) benchmarks/bench_demo.py

notebooks: $(STAMP)  # write each notebooks/*.ipynb from its reviewed .py source
	$(VENV)/bin/jupytext --quiet --sync notebooks/[0-9]*.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

lint: $(STAMP)
	$(VENV)/bin/ruff check dmole_lab tests benchmarks notebooks

clean:
	rm -rf $(VENV) runs
