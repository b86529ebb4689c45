# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when it is
# missing and install the project (editable, with test extras) into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out

.PHONY: help install demo test test-fast fuzz lint clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# pip's own chatter (index warnings, build-backend notes) goes to $(LOG); its end is shown
# when an install fails
LOG    := $(VENV)/install.log
PIP     = $(BIN)/python -m pip install --progress-bar off

$(BIN)/python:
	@echo "creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) --upgrade pip > $(LOG) 2>&1 || { tail -n 30 $(LOG); exit 1; }

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "installing the project with its test extras into $(VENV) (2-3 minutes the first time; log: $(LOG))"
	@$(PIP) -e '.[test]' >> $(LOG) 2>&1 || { echo "pip install failed; the end of $(LOG):"; tail -n 30 $(LOG); exit 1; }
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its test extras

demo: $(STAMP)  ## run the system on a small synthetic archive (the embedded default)
	$(BIN)/mura demo --out $(DEMO_OUT)

test: $(STAMP)  ## the whole test suite, slow tests included (what CI runs)
	$(BIN)/python -m pytest

test-fast: $(STAMP)  ## the test suite without the tests marked slow
	$(BIN)/python -m pytest -m 'not slow'

# the long fuzzing run: FUZZ_EXAMPLES mutated inputs per target (make test runs a short one)
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)  ## fuzz the decoders and listers long (FUZZ_EXAMPLES=20000 per target)
	MURA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/fuzz -q -p no:cacheprovider \
		-o timeout=0 --hypothesis-show-statistics

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:  ## remove build outputs and the demo folder (keeps .venv)
	rm -rf $(DEMO_OUT) build dist *.egg-info .pytest_cache .ruff_cache
