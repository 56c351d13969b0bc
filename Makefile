# One venv. `make demo` installs only what `gensched simulate` needs (the core package: no torch,
# no Ray); `make test` installs the rest (test and workloads extras) and the tools the tests drive
# (.tools/bin, scripts/install-tools.sh), then runs the suite. Both work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: core setup demo tools test lint crds clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The operator and the simulator: pydantic, numpy, kopf, kubernetes, prometheus clients, pyyaml.
$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

# Everything the tests use, including the torch + Ray Serve workloads.
$(VENV)/.full-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,workloads]"
	@touch $@ $(VENV)/.core-installed

core: $(VENV)/.core-installed
setup: $(VENV)/.full-installed

## 1st README command: install the core and run the main job (no cluster, no torch, no Ray).
demo: core
	$(BIN)/gensched simulate

tools: setup
	PYTHON=$(BIN)/python bash scripts/install-tools.sh --prometheus

## 2nd README command: the whole test suite (installs what it needs first). PYTEST_ARGS narrows it.
test: tools
	$(BIN)/ruff check operator tests benchmarks workloads
	$(BIN)/python -m pytest -q -ra $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check operator tests benchmarks workloads

crds: core
	$(BIN)/gensched crds

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache
