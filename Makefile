# One venv for everything; tools the tests drive go to .tools/bin (scripts/install-tools.sh).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo tools test lint crds clean

$(BIN)/gensched: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,workloads]"
	@touch $@

setup: $(BIN)/gensched

## 1st README command: set up and run the main job (no cluster needed).
demo: setup
	$(BIN)/gensched simulate

tools: setup
	PYTHON=$(BIN)/python bash scripts/install-tools.sh --prometheus

## 2nd README command: the whole test suite (installs what it needs first).
test: tools
	$(BIN)/ruff check operator tests benchmarks workloads
	$(BIN)/python -m pytest -q -ra

lint: setup
	$(BIN)/ruff check operator tests benchmarks workloads

crds: setup
	$(BIN)/gensched crds

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
