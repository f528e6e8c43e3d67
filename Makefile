# The two commands of the README:
#   make chat   set everything up (first time only) and start the terminal assistant
#   make test   set everything up (first time only) and run the whole test suite
# Both are idempotent: set-up re-runs only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edge-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup chat test bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first, pinned: the CPU build; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	@# llama-cpp-python compiles from source the first time (about 7 minutes on 2 cores); pip caches the wheel.
	$(BIN)/python -m pip install -e ".[all]"
	@touch $(STAMP)

setup: $(STAMP)

chat: setup
	$(BIN)/edge chat

test: setup
	@EDGE_RUN_SLOW=1 $(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; rc=0; fi; exit $$rc

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cache .pytest_cache
