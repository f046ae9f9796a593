# `make demo` and `make test` set everything up on a fresh machine (Python 3.11, no network beyond PyPI).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test browser docs lint bench clean

# `make bench BENCH_ARGS=--compare-keras` also runs the tutorial's Keras code (installs .venv-keras once).

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/imgclf demo

test: $(BIN)/.installed browser
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/python -m pytest

# Debian's Chromium for the browser tests, installed when missing (root or sudo), else one line saying what to do.
browser:
	@scripts/install_chromium.sh

# The documentation site on http://127.0.0.1:8000/, rebuilt as the docs and docstrings change.
docs: $(BIN)/.installed
	$(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

bench: $(BIN)/.installed
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-keras runs .pytest_cache site
