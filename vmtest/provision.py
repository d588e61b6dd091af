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
from collections.abc import Iterator
from pathlib import Path

from vmtest.errors import ConfigError, VmtestError
from vmtest.stores.base import Recipe


class ProvisionError(VmtestError):
    """A store of that kind cannot be provided here (no engine, unknown kind)."""


PROVIDERS = ("process", "containers")


def recipes() -> dict[str, Recipe]:
    """kind -> how to provide it, from every registered store class (each store declares its
    own kinds: stores/*.py, PROVISIONING). A kind declared twice is an error."""
    from vmtest.stores import registered_schemes, store_class

    table: dict[str, Recipe] = {}
    for scheme in registered_schemes():
        for recipe in store_class(scheme).PROVISIONING:
            if recipe.kind in table and table[recipe.kind] is not recipe:
                raise ConfigError(f"two stores declare the kind {recipe.kind!r}")
            table[recipe.kind] = recipe
    return table


def kinds(provider: str = "process", *, vectors: bool | None = True) -> list[str]:
    """The kinds a provider can provide (containers: those with a pinned image): of vector
    stores by default, of stores without vectors with ``vectors=False``, all with None."""
    return sorted(kind for kind, recipe in recipes().items()
                  if (provider == "process" or recipe.container is not None)
                  and (vectors is None or recipe.vectors == vectors))


def images() -> dict[str, str]:
    """kind -> the image the containers provider pins (the versions the process provider
    runs)."""
    return {kind: recipe.image for kind, recipe in recipes().items() if recipe.image}


@contextlib.contextmanager
def provision(kind: str, *, provider: str = "process", name: str = "vmtest") -> Iterator[str]:
    """A fresh, empty store of ``kind``; yields its URI and removes it afterwards."""
    if provider not in PROVIDERS:
        raise ProvisionError(f"no provider {provider!r}", hint="use one of: process, containers")
    table = recipes()
    recipe = table.get(kind)
    if recipe is None or (provider == "containers" and recipe.container is None):
        raise ProvisionError(
            f"the {provider} provider cannot provide a {kind!r} store",
            hint="kinds: " + ", ".join(kinds(provider)),
        )
    if provider == "containers":
        problem = docker_engine_problem()
        if problem is not None:
            raise ProvisionError(problem,
                                 hint="use --vmtest-provision=process, which needs no engine")
        assert recipe.container is not None and recipe.image is not None
        with recipe.container(recipe.image, name) as uri:
            yield uri
        return
    folder = Path(tempfile.mkdtemp(prefix=f"vmtest-{kind}-"))
    try:
        with recipe.process(folder, name) as uri:
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


__all__ = ["PROVIDERS", "ProvisionError", "docker_engine_problem", "images", "kinds",
           "provision", "recipes"]
