# bouncekeeper: `make run` starts the milter on defaults, `make test` runs the whole suite.
# Both set up everything first: Debian packages (when root), a virtualenv, the package.

# Debian's own Python when there is one: the milter runs as an unprivileged user ([milter] user), which
# must be able to run the venv's interpreter; a Python installed under /root (pyenv) is not readable by it.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# `make run` uses the development config (state under .state/, embedded Redis); CONFIG=path overrides.
CONFIG ?= contrib/dev.toml
# benchmarks/ appears once the first benchmark lands; ruff fails on a missing path.
LINT   := milter tests $(wildcard benchmarks)

.PHONY: all run test lint typecheck unit sysdeps venv clean bench

all: test

sysdeps:
	@scripts/sysdeps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $(STAMP)

venv: sysdeps $(STAMP)

run: venv
	$(BIN)/bouncekeeper $(if $(CONFIG),--config $(CONFIG)) milter

lint: venv
	$(BIN)/ruff check $(LINT)
	$(BIN)/ruff format --check $(LINT)

typecheck: venv
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: venv
	$(BIN)/pytest -q -m 'not mta'

test: venv lint typecheck
	$(BIN)/pytest -q

bench: venv
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
