# Two entry points a fresh machine with Python 3.11 needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint typecheck unit bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

demo: setup
	rm -rf demo-out
	$(BIN)/m365guard demo --out demo-out

lint: setup
	$(BIN)/ruff check m365guard tests bench

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -n 2

test: lint typecheck unit

bench: setup
	$(BIN)/python bench/emulator.py
	$(BIN)/python bench/rules.py
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/scan.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
