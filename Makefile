# `make demo` and `make test` set everything up on a fresh machine (Python 3.11, no network beyond PyPI).
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/imgclf demo

test: $(BIN)/.installed
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/seed_cnn.py

clean:
	rm -rf $(VENV) runs .pytest_cache
