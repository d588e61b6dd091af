"""Provisioning: a fresh, empty, real store of a kind, for a test or for the runner, torn
down afterwards.

Two providers:

- ``process`` (the default): embedded stores in a temporary folder, and local servers started
  as child processes on 127.0.0.1 and a free port (Chroma's ``chroma run``).
- ``containers``: testcontainers-python with pinned image tags, for machines with a Docker
  engine. Where none is reachable it raises :class:`ProvisionError` saying so.

Both are context managers yielding the store's URI; leaving them always stops what they
started, also when a test fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from vmtest.errors import VmtestError
from vmtest.servers import ChromaServer, PostgresServer, QdrantServer


class ProvisionError(VmtestError):
    """A store of that kind cannot be provided here (no engine, unknown kind)."""


#: Image tags the containers provider pins (the versions the process provider runs).
IMAGES = {
    "qdrant-server": "qdrant/qdrant:v1.16.3",
    "chroma-server": "chromadb/chroma:1.5.9",
    "pgvector": "pgvector/pgvector:0.8.1-pg18",
}

Provide = Callable[[Path, str], contextlib.AbstractContextManager[str]]


def _local(template: str) -> Provide:
    @contextlib.contextmanager
    def provide(folder: Path, name: str) -> Iterator[str]:
        yield template.format(dir=folder, name=name)

    return provide


@contextlib.contextmanager
def _chroma_server(folder: Path, name: str) -> Iterator[str]:
    with ChromaServer(folder / "chroma-server") as server:
        yield server.uri(name)


@contextlib.contextmanager
def _postgres(folder: Path, name: str) -> Iterator[str]:
    with PostgresServer(folder / "postgres") as server:
        yield server.uri(name)


@contextlib.contextmanager
def _qdrant_server(folder: Path, name: str) -> Iterator[str]:
    with QdrantServer(folder / "qdrant-server") as server:
        yield server.uri(name)


PROCESS: dict[str, Provide] = {
    "chroma": _local("chroma://{dir}/chroma?collection={name}"),
    "qdrant": _local("qdrant://{dir}/qdrant?collection={name}"),
    "milvus": _local("milvus://{dir}/milvus.db?collection={name}"),
    "qdrant-edge": _local("qdrant-edge://{dir}/qdrant-edge"),
    "lancedb": _local("lancedb://{dir}/lancedb?table={name}"),
    "jsonl": _local("jsonl://{dir}/{name}.jsonl"),
    "parquet": _local("parquet://{dir}/{name}"),
    "chroma-server": _chroma_server,
    "qdrant-server": _qdrant_server,
    "pgvector": _postgres,
}

PROVIDERS = ("process", "containers")


def kinds(provider: str = "process") -> list[str]:
    return sorted(PROCESS) if provider == "process" else sorted(IMAGES)


@contextlib.contextmanager
def provision(kind: str, *, provider: str = "process", name: str = "vmtest") -> Iterator[str]:
    """A fresh, empty store of ``kind``; yields its URI and removes it afterwards."""
    if provider == "containers":
        with _container(kind, name) as uri:
            yield uri
        return
    if provider != "process":
        raise ProvisionError(f"no provider {provider!r}", hint="use one of: process, containers")
    if kind not in PROCESS:
        raise ProvisionError(
            f"the process provider cannot provide a {kind!r} store",
            hint="kinds: " + ", ".join(sorted(PROCESS)),
        )
    folder = Path(tempfile.mkdtemp(prefix=f"vmtest-{kind}-"))
    try:
        with PROCESS[kind](folder, name) as uri:
            yield uri
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def docker_engine_problem() -> str | None:
    """Why no Docker engine can be used here (None when one answers)."""
    try:
        import docker
    except ImportError:
        return "the docker package is not installed (pip install 'vmtest[containers]')"
    host = os.environ.get("DOCKER_HOST")
    if not host and not Path("/var/run/docker.sock").exists():
        return "no Docker engine is reachable (DOCKER_HOST is not set and " \
            "/var/run/docker.sock does not exist)"
    client = None
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:
        return f"no Docker engine is reachable ({type(exc).__name__}: {exc})"
    finally:
        if client is not None:
            client.close()
    return None


@contextlib.contextmanager
def _container(kind: str, name: str) -> Iterator[str]:
    if kind not in IMAGES:
        raise ProvisionError(
            f"the containers provider cannot provide a {kind!r} store",
            hint="kinds: " + ", ".join(sorted(IMAGES)),
        )
    problem = docker_engine_problem()
    if problem is not None:
        raise ProvisionError(problem, hint="use --vmtest-provision=process, which needs no engine")
    if kind == "qdrant-server":
        from testcontainers.community.qdrant import QdrantContainer

        with QdrantContainer(image=IMAGES[kind]) as qdrant:
            yield (f"qdrant://{qdrant.get_container_host_ip()}:{qdrant.exposed_rest_port}"
                   f"?collection={name}")
    elif kind == "pgvector":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(IMAGES[kind], username="postgres", password="postgres",
                               dbname="postgres") as pg:
            yield (f"postgresql://postgres:postgres@{pg.get_container_host_ip()}:"
                   f"{pg.get_exposed_port(5432)}/postgres?table={name}")
    else:
        from testcontainers.community.chroma import ChromaContainer

        with ChromaContainer(image=IMAGES[kind]) as chroma:
            config = chroma.get_config()
            yield f"chroma://{config['host']}:{config['port']}?collection={name}"


__all__ = ["IMAGES", "PROVIDERS", "ProvisionError", "docker_engine_problem",
           "kinds", "provision"]
