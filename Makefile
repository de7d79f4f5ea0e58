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

# `make install`: the production install, apart from the test rig: a venv in PREFIX with the package (not
# editable, no test extras), its man page and docs. Debian packages: only pymilter's build needs.
PREFIX ?= /opt/bouncekeeper

.PHONY: all run test lint typecheck unit sysdeps venv clean bench install

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

# floor_milter.py is not a benchmark but the milter postfix_throughput.py starts (it needs a socket).
BENCHMARKS := $(filter-out benchmarks/floor_milter.py,$(wildcard benchmarks/*.py))

bench: venv
	for b in $(BENCHMARKS); do $(BIN)/python $$b || exit 1; done

install:
	scripts/sysdeps.sh --runtime
	$(PYTHON) -m venv $(PREFIX)
	$(PREFIX)/bin/pip install -q --upgrade pip
	$(PREFIX)/bin/pip install -q .
	@# An upgrade from a checkout of the same version number: replace the package's files all the same.
	$(PREFIX)/bin/pip install -q --no-deps --force-reinstall .
	install -d $(PREFIX)/share/man/man1 $(PREFIX)/share/doc
	$(PREFIX)/bin/bouncekeeper --config /dev/null man > $(PREFIX)/share/man/man1/bouncekeeper.1
	install -m 0644 LICENSE docs/*.md $(PREFIX)/share/doc/
	@echo "installed: $(PREFIX)/bin/bouncekeeper; next: docs/operator-guide.md"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
