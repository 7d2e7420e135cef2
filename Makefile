# Two entry points: `make train` (the main job) and `make test` (lint, then the whole suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: train test test-fast deps lint install dev data bench docs mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# torch first, pinned: a range alone would pull a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

data: install
	$(BIN)/digitlab data fetch

train: data
	$(BIN)/digitlab train --report

# ruff (lint and format) and mypy, configured in pyproject.toml
lint: dev
	$(BIN)/ruff check src tests benchmarks docs/hooks
	$(BIN)/ruff format --check src tests benchmarks docs/hooks
	$(BIN)/mypy src

# the Debian packages the suite uses (chromium, Fashion-MNIST, PostgreSQL, npm): installed when run as
# root with apt, else one line naming the command to run
deps:
	@tools/system-deps.sh

test: deps lint data
	$(BIN)/python -m pytest -q

# the inner loop, under 2 minutes: no lint, slow runs, browsers, database servers or Ray clusters (make test runs
# everything)
test-fast: data
	$(BIN)/python -m pytest -q -m "not slow and not browser and not postgres and not ray"

# the documentation site (mkdocs.yml) into site/; --strict: a warning (a broken link, a docstring
# mkdocstrings cannot read, a results file no page shows) stops the build
docs: dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# how strong the tests are: cosmic-ray's mutants of the modules that decide answers, a seeded sample of each
# module's, against the fast tests that cover it (not part of make test: CPU for the best part of an hour)
mutation: dev data
	nice -n 15 $(BIN)/python benchmarks/mutation.py

bench: install data
	$(BIN)/python benchmarks/seed_recipe.py

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info
