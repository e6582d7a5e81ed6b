# One target per habit. Each installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench fuzz clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,fast]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/kproxy demo

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff format --check kproxy tests bench
	$(BIN)/ruff check kproxy tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -n 2

bench: $(STAMP)
	$(BIN)/python -m bench

fuzz: $(STAMP)
	$(BIN)/pip install --quiet atheris
	$(BIN)/python -m tests.fuzz --seconds $${FUZZ_SECONDS:-60}

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
