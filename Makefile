# Kestrel: `make run` starts the app, `make test` runs the whole suite.
# Both check the Debian packages they need first (installing them when run as
# root, else stopping with the command to run), then create .venv and install
# the pinned requirements on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
ARGS ?=
PYTEST_ARGS ?=
# The suite runs in TEST_WORKERS processes (pytest-xdist; a test module and its browser
# server stay in one). The tests spend much of their time in one Python thread or waiting
# on a page, so two of them keep two cores busy. TEST_WORKERS=0: one process.
# Modules are handed out longest first, in the order tests/conftest.py collects them
# (--no-loadscope-reorder keeps xdist from reordering them by their number of tests).
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Debian packages: python3-venv makes .venv; the suite also needs Chromium (browser
# tests), a font Chromium renders with, and the local Fashion-MNIST files.
RUN_PACKAGES := python3-venv
# nodejs and npm install the browser demo's onnxruntime-web (web/package.json). NodeSource's
# nodejs bundles npm and conflicts with Debian's npm, so npm is asked for only when missing.
NPM_PACKAGE := $(if $(shell command -v npm 2>/dev/null),,npm)
TEST_PACKAGES := $(RUN_PACKAGES) chromium fonts-dejavu-core dataset-fashion-mnist nodejs $(NPM_PACKAGE) postgresql

.PHONY: run test test-fast lint format bench demo-models clean system system-run web

system-run:
	@sh scripts/system-packages.sh $(RUN_PACKAGES)

system:
	@sh scripts/system-packages.sh $(TEST_PACKAGES)

$(BIN)/python: | system-run
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: system-run $(VENV)/.runtime
	$(BIN)/streamlit run app.py --server.port $(PORT) $(ARGS)

# The browser demo export copies onnxruntime-web from web/node_modules: the exact versions
# of web/package-lock.json, installed with `npm ci`.
web: web/node_modules/.installed

web/node_modules/.installed: web/package.json web/package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: sudo apt-get install -y --no-install-recommends nodejs npm" >&2; exit 1; }
	cd web && npm ci --no-audit --no-fund
	touch $@

# pytest exits 5 when it collects no test; that is a failure here, like any non-zero
# (said out loud so a later `|| true` or exit-code filter does not let it through).
test: system $(VENV)/.dev web
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; fi; exit $$rc

# The quick tiers (lib and pages, a few minutes); tests/slow and tests/e2e are left out.
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest $(XDIST) tests/unit tests/app

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.dev
	$(BIN)/python -m bench

demo-models: $(VENV)/.runtime
	$(BIN)/python -m lib.demo_models

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
