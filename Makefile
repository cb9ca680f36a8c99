# Two commands do all set-up on a fresh machine (Python 3.11+, git, make):
#   make repro   create .venv if missing, install the locked stack, run the DVC pipeline
#   make test    create .venv if missing, install the locked stack, run the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands call `python`: run DVC with the venv first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1
PYTEST_ARGS ?=

.PHONY: install repro test test-fast bench sweep push clean-venv

install: $(STAMP)

# torch first, pinned, so nothing resolves a multi-GB CUDA build; then the exact lock; then pairtune itself.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

repro: $(STAMP)
	$(RUN) $(BIN)/dvc repro

# Two workers, one test file each at a time: the DVC pipeline tests are bound by single-threaded process
# start-up (imports), so they overlap well with the rest on 2 cores (conftest puts them first).
test: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -m "not slow and not pipeline" $(PYTEST_ARGS)

# Queue a LoRA sweep over learning rate and rank as DVC experiments, run them, and show the table.
sweep: $(STAMP)
	$(RUN) $(BIN)/dvc exp run --queue -S 'train.lora.lr=1e-4,2e-4,5e-4' -S 'train.lora.r=4,8,16'
	$(RUN) $(BIN)/dvc queue start --jobs 1
	$(RUN) $(BIN)/dvc queue status
	@echo "when the queue is done: dvc exp show --only-changed"

# Models, adapter, data and the run-cache (so a teammate's repro of a setting already run restores it).
push: $(STAMP)
	$(RUN) $(BIN)/dvc push --run-cache

bench: $(STAMP)
	$(RUN) $(BIN)/python bench/run.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
