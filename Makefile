# ecod-jobs: the two set-up commands are `make demo` and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help venv test lint demo screenshots bench slurm-up slurm-down clean

help:
	@echo "make demo   - run the demo batch on the embedded PostgreSQL"
	@echo "make screenshots - the README's docs/img/*.png, from the demo batch (headless Chromium)"
	@echo "make test   - lint and run the whole test suite (starts SLURM when root)"
	@echo "make lint   - ruff and snakemake --lint"
	@echo "make bench  - benchmarks vs baselines (bench/results/latest.md), about 10 min"

$(STAMP): pyproject.toml hatch_build.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# the README's install: hatchling's editable install is a path entry, so Snakemake
	# finds our plugins (it looks for them with pkgutil over sys.path)
	$(PY) -m pip install --quiet -e ".[dev,demo]"
	touch $(STAMP)

venv: $(STAMP)

# snakemake --lint exits 1 on any lint, and the chunk rule keeps one on purpose
# (README, Testing); scripts/lint_workflow.py fails on any other, or if that one goes.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) scripts/lint_workflow.py

slurm-up:
	scripts/slurm-cluster up

slurm-down:
	scripts/slurm-cluster down

# SLURM tests need root to start the single-node cluster; as another user they
# skip (or fail under CI=true) unless a cluster is already up. The module tests
# need Lmod (scripts/module-system installs Debian's, as root).
test: $(STAMP) lint
	@if [ "$$(id -u)" = 0 ]; then scripts/slurm-cluster up && scripts/browser-deps && scripts/module-system; \
	else echo "not root: not starting SLURM (scripts/slurm-cluster up needs root)"; fi
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks, not tests: nothing asserts a speed. Needs PostgreSQL at
# $$ECOD_BENCH_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres)
# and, for the SLURM measurement, the cluster (started here when root).
bench: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then scripts/slurm-cluster up; fi
	$(PY) -m bench $(BENCH_ARGS)

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/demo

# The README's screenshots: make demo on a database of its own, photographed by
# Debian's headless Chromium (scripts/browser-deps installs it, as root).
screenshots: $(STAMP)
	scripts/browser-deps
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) .ecod_jobs .snakemake results .pytest_cache .ruff_cache test-artifacts
