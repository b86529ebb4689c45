# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when it is
# missing and install the project (editable, with test extras) into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: help install demo test test-fast lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its test extras

demo: $(STAMP)  ## run the system on a small synthetic archive (the embedded default)
	$(BIN)/mura demo --out $(DEMO_OUT)

test: $(STAMP)  ## the whole test suite, slow tests included (what CI runs)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the test suite without the tests marked slow
	$(BIN)/python -m pytest -m 'not slow'

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:  ## remove build outputs and the demo folder (keeps .venv)
	rm -rf $(DEMO_OUT) build dist *.egg-info .pytest_cache .ruff_cache
