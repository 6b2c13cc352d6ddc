# Tuneyard: `make up` runs it, `make test` tests it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test lint schema check-compose clean

# The virtual environment of a developer's machine (both roles and the test tools), rebuilt when
# the dependencies change, at the tested versions of constraints.txt. torch is held there at the
# CPU build's version; an unconstrained one pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt client/pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Tuneyard needs $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]' -e ./client
	touch $@

# After changing a dependency in pyproject.toml: install it, check, and write the versions tested.
.PHONY: constraints
constraints:
	$(BIN)/pip install --quiet -e '.[dev]' -e ./client
	$(BIN)/pip check
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable \
	  | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' | grep -v '^tuneyard'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

up: $(VENV)/.installed
	$(BIN)/python infra/run_local.py

test: $(VENV)/.installed
	infra/system-deps.sh
	$(BIN)/python -m pytest

# ruff (lint and format), mypy with django-stubs, and import-linter's contracts (pyproject.toml).
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The API's contract, committed (a test fails when the code's schema differs): run after an API change.
schema: $(VENV)/.installed
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

check-compose:
	docker-compose -f docker-compose.yml config -q

clean:
	rm -rf var .pytest_cache

# The wheels a GPU check host lacks (Python 3.12, x86-64), into .whl/: see "GPU check" in the README.
.PHONY: gpu-wheels
gpu-wheels: $(VENV)/.installed
	$(BIN)/python infra/gpu_wheels.py
