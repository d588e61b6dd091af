#!/usr/bin/env bash
# `make test`: the project's tests, with a Docker engine for the containers provider.
#
# A Docker engine is started for the run (scripts/docker-engine.sh; an engine already running
# is used as it is) and the containers provider's images are built from local parts
# (scripts/build_images.py; skipped when they exist). Both are stopped or kept afterwards,
# whatever the outcome: the engine is stopped, and a container or network vmtest left
# behind, or a change to the machine's network settings, fails the run.
#
# The tests' stores live in a memory file system where there is one: Qdrant's local mode,
# SQLite and PostgreSQL sync every write, and a 20,000-point local Qdrant folder took 60 s to
# write on disk, 3 s in /dev/shm. Many tests run the suite in a fresh Python process: with
# PYTHONDONTWRITEBYTECODE set (as on some CI images) each of them compiled and
# assertion-rewrote every module again (about 1.1 s of a 5 s run), so it is unset here.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TEST_TMP=
if [ -d /dev/shm ] && [ -w /dev/shm ]; then TEST_TMP=/dev/shm/vmtest-tests; fi

status=0
finish() {
  bash scripts/docker-engine.sh stop || status=1
  [ -n "$TEST_TMP" ] && rm -rf "$TEST_TMP"
  exit $status
}
trap finish EXIT
trap 'status=130; exit' INT TERM

env_for_tests=()
engine=$(bash scripts/docker-engine.sh start)
if [ -n "$engine" ]; then
  env_for_tests+=("$engine")
  started=$(date +%s)
  if images=$(env "$engine" "$PYTHON" scripts/build_images.py) && [ -n "$images" ]; then
    env_for_tests+=("$images")
    echo "run-tests: container images ready in $(( $(date +%s) - started )) s" >&2
  fi
fi
if [ -n "$TEST_TMP" ]; then
  rm -rf "$TEST_TMP" && mkdir -p "$TEST_TMP"
  env_for_tests+=("TMPDIR=$TEST_TMP")
fi
env -u PYTHONDONTWRITEBYTECODE "${env_for_tests[@]}" "$PYTHON" -m pytest -n 2 --durations=25 "$@"
status=$?
