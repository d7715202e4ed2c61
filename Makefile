# Quick start: `make demo` and `make test`. Everything below installs what it needs itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DB ?= warehouse/labelgov.duckdb
PORT ?= 8501

.PHONY: demo test check lint audit serve bench browser clean screenshots

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "labelgov needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.runtime
	@test -f $(DB) || $(BIN)/labelgov demo --db $(DB) --no-serve
	$(BIN)/labelgov serve --db $(DB) --port $(PORT)

browser:
	@bash tests/install_browser.sh

# Static checks: ruff, then bandit over the shipped code (skipped checks are explained in pyproject.toml).
lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/bandit -c pyproject.toml -r queries governance dashboard -q
	@echo "bandit: no issues in queries/ governance/ dashboard/"

# Known vulnerabilities in the installed dependencies; says so in one line when no service can be reached.
audit: $(VENV)/.test
	$(BIN)/python .ci/audit_dependencies.py

check: lint audit

test: $(VENV)/.test browser check
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(VENV)/.test
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

screenshots: $(VENV)/.test browser
	$(BIN)/python -m pytest -q tests/test_browser.py -k every_page
	mkdir -p docs/screenshots && cp tests/artifacts/screenshots/*.png docs/screenshots/
