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

.PHONY: install repro exp test test-fast bench sweep compare push clean-venv docs tables docs-images prune

install: $(STAMP)

# torch first, pinned, so nothing resolves a multi-GB CUDA build; then the exact lock (complete, so pip need
# not resolve it: --no-deps, and `pip check` fails the install if it ever is not); then pairtune itself.
# pip compiles bytecode on one core: --no-compile, and pairtune.precompile compiles it on every core beside
# numba's cache for UMAP/HDBSCAN (docs/performance.md, "First run").
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check --no-compile
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(BIN)/python -P src/pairtune/precompile.py --only torch & $(PIP) --no-deps -r requirements.lock && wait $$!
	$(PIP) --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check -q
	$(BIN)/python -m pairtune.precompile
	touch $(STAMP)

# Plain `dvc repro`. WARM=1 runs it through pairtune.warm (opt-in): one process imports torch and
# sentence-transformers once and each stage runs in a fork of it (~6 s less per stage that embeds or trains;
# outputs byte-identical). Linux only, and a fork inherits the native threads the imports started, so it is
# not the default (docs/performance.md, "Warm stages").
WARM ?=
DVC := $(if $(filter 1,$(WARM)),$(BIN)/python -m pairtune.warm dvc,$(BIN)/dvc)
repro: $(STAMP)
	$(RUN) $(DVC) repro

# After a method leaves train.methods (or any stage leaves dvc.yaml): delete the outputs, dvc.lock entry and
# .gitignore lines DVC keeps for it (pairtune.prune; docs/methods.md).
prune: $(STAMP)
	$(RUN) $(BIN)/python -m pairtune.prune

# One experiment: make exp EXP="-S train.lora.r=16" (any `dvc exp run` arguments); WARM=1 as above.
exp: $(STAMP)
	$(RUN) $(DVC) exp run $(EXP)

# Two workers, one test file each at a time: the DVC pipeline tests are bound by single-threaded process
# start-up (imports), so they overlap well with the rest on 2 cores (conftest puts them first).
# Then the suite again as on the other CPU kind (AVX2 only, no AVX-512 or native bf16: bench/run.py's caps),
# so a tolerance that holds on one kind only fails here, not on a teammate's machine. The DVC workflow tests
# (pipeline marker) run once: they test DVC's bookkeeping, and their numerics are the unit tests'.
AVX2_CAPS := ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
test: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)
	$(RUN) $(AVX2_CAPS) $(BIN)/python -m pytest -n 2 --dist loadfile -m "not pipeline" $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(RUN) $(BIN)/python -m pytest -m "not slow and not pipeline" $(PYTEST_ARGS)

# LoRA sweep as DVC experiments: learning rate x rank on query/value, and learning rate with adapters on every
# attention and feed-forward linear. Each experiment trains and evaluates LoRA only (target evaluate@lora; the
# rest of the pipeline is unchanged by these params): `dvc exp apply <name>` + `make repro` to keep one.
SWEEP_LR ?= 5e-4,1e-3,2e-3
sweep: $(STAMP)
	$(RUN) $(BIN)/dvc exp run --queue -S 'train.lora.lr=$(SWEEP_LR)' -S 'train.lora.r=8,16' evaluate@lora
	$(RUN) $(BIN)/dvc exp run --queue -S 'train.lora.lr=$(SWEEP_LR)' \
	  -S 'train.lora.target_modules=[all_linear]' evaluate@lora
	$(RUN) $(BIN)/dvc queue start --jobs 1
	@while $(RUN) $(BIN)/dvc queue status | grep -qE 'Queued|Running'; do sleep 10; done
	$(RUN) $(BIN)/dvc queue status
	$(MAKE) --no-print-directory compare

# The experiments table narrowed to what a sweep compares: changed params and metrics, without the creation
# time, queue state, AUC interval and changed-dependency (path) columns (those stay in the files: dvc metrics diff);
# per model its AUC, Spearman, chosen lr, training seconds and size (COMPARE_ALL=1: every metric column). A
# one-param sweep fits a 160-column terminal (docs/dvc.md, "Compare experiments"). With many methods,
# COMPARE_METHODS='lora dora' keeps those models' columns (and the base's); COMPARE_DROP='.*full\.' hides more.
COMPARE_DROP ?=
COMPARE_ALL ?=
COMPARE_METHODS ?=
space := $(subst ,, )
COMPARE_MODEL_COLS := auc|rho|cohens_d|f1|fp|margin|purity|lr|search_s|trial_steps_share|trials|train_s|mb
COMPARE_BRIEF := $(if $(COMPARE_ALL),,|[a-z0-9_]+\.(cohens_d|f1|fp|margin|purity|search_s|trial_steps_share|trials)$$)
COMPARE_ONLY := $(if $(strip $(COMPARE_METHODS)),|(?!(base|$(subst $(space),|,$(strip $(COMPARE_METHODS))))\.)[a-z0-9_]+\.($(COMPARE_MODEL_COLS))$$)
compare: $(STAMP)
	$(RUN) $(BIN)/dvc exp show --no-pager --only-changed --drop 'Created|State|Executor|.*auc_(low|high)|.*/.*|dvclive$(COMPARE_BRIEF)$(COMPARE_ONLY)$(if $(COMPARE_DROP),|$(COMPARE_DROP))'

# Models, adapter, data and the run-cache, with the objects of every run recorded here (DVC pushes only the
# workspace's), so a teammate's `dvc repro --pull` of any setting already run restores it instead of training.
# REMOTE=name pushes to another DVC remote than the default.
REMOTE ?=
push: $(STAMP)
	$(RUN) $(BIN)/dvc push --run-cache $(if $(REMOTE),-r $(REMOTE))
	$(RUN) $(BIN)/python -m pairtune.share $(if $(REMOTE),-r $(REMOTE))

bench: $(STAMP)
	$(RUN) $(BIN)/python bench/run.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)

# The result tables in README.md and docs/ (between <!-- table: NAME --> markers), regenerated from the files they
# report on (metrics/, plots/, bench/*.json, params.yaml); `make tables CHECK=1` only checks (the tests do too).
tables: $(STAMP)
	$(RUN) $(BIN)/python -m pairtune.doctables $(if $(CHECK),--check)

# The docs site, offline, into site/ (open site/index.html). --strict: a broken link or anchor fails the build.
docs: $(STAMP)
	$(RUN) NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict
	@echo "docs: open site/index.html (search: python -m http.server -d site)"

# The pictures in README and docs: the report's charts, and a screenshot of the report's top (headless
# Chromium: apt-get install chromium). Rerun after `make repro` when the report changed.
CHROMIUM ?= chromium
docs-images: $(STAMP)
	$(RUN) $(BIN)/python -m pairtune.doctables --images
	$(CHROMIUM) --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
	  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir=$$(mktemp -d) \
	  --window-size=1200,1000 --screenshot=$(CURDIR)/docs/img/report.png file://$(CURDIR)/plots/report.html
