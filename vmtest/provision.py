"""Provisioning: a fresh, empty, real store of a kind, for a test or for the runner, torn
down afterwards.

Two providers:

- ``process`` (the default): embedded stores in a temporary folder, and local servers started
  as child processes on 127.0.0.1 and a free port (Chroma's ``chroma run``).
- ``containers``: testcontainers-python with pinned image tags, for machines with a Docker
  engine. Where none is reachable it raises :class:`ProvisionError` saying so. ``images``
  replaces the pinned image of a kind (a private registry's, or one built by
  scripts/build_images.py); an image that is neither on the engine nor pullable is refused
  in seconds. Every container is labelled as vmtest's (host and process): one left by a
  process that is gone (killed) is removed by the next run, and Ryuk, testcontainers' own
  reaper, is used only where its image is on the engine (it cannot be pulled everywhere).

Both are context managers yielding the store's URI; leaving them always stops what they
started, also when a test fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from vmtest.errors import ConfigError, VmtestError
from vmtest.libwarnings import captured
from vmtest.stores.base import Recipe


class ProvisionError(VmtestError):
    """A store of that kind cannot be provided here (no engine, unknown kind)."""


PROVIDERS = ("process", "containers")
#: The label every container of vmtest carries: "HOST:PID" of the process that started it.
OWNER_LABEL = "org.vmtest.owner"
#: Seconds the engine may take to answer, an image check or a pull included.
ENGINE_TIMEOUT_S = 20

C = TypeVar("C")


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
def provision(kind: str, *, provider: str = "process", name: str = "vmtest",
              images: Mapping[str, str] | None = None) -> Iterator[str]:
    """A fresh, empty store of ``kind``; yields its URI and removes it afterwards.
    ``images`` (containers): kind -> the image to run instead of the pinned one."""
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
        assert recipe.container is not None and recipe.image is not None
        image = (images or {}).get(kind, recipe.image)
        _ready_for(kind, image)
        with contextlib.ExitStack() as stack:
            try:
                uri = stack.enter_context(_warnings_held(recipe.container(image, name)))
            except Exception as exc:  # the engine's, testcontainers' or the wait's own
                raise ProvisionError(
                    f"the {kind} container ({image}) did not start: "
                    f"{type(exc).__name__}: {_first_line(exc)}",
                    hint=f"the container is removed; `docker run {image}` shows its log "
                    "(--vmtest-provision=process needs no engine)") from None
            yield uri
        return
    folder = Path(tempfile.mkdtemp(prefix=f"vmtest-{kind}-"))
    try:
        with recipe.process(folder, name) as uri:
            yield uri
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _warnings_held(container: AbstractContextManager[str]) -> Iterator[str]:
    """Start and stop a container with testcontainers' own warnings (deprecation notes about
    its wait strategies) recorded, never raised: a project's ``-W error`` must not turn them
    into a container that "did not start". testcontainers also opens Docker clients it never
    closes (in reference cycles): they are collected here, while warnings are held, not in
    whatever test the garbage collector happens to run next ("unclosed socket")."""
    noted: list[str] = []
    with captured(noted):
        try:
            uri = container.__enter__()
        finally:
            gc.collect()
    try:
        yield uri
    except BaseException:
        with captured(noted):
            try:
                if not container.__exit__(*sys.exc_info()):
                    raise
            finally:
                gc.collect()
    else:
        with captured(noted):
            container.__exit__(None, None, None)
            gc.collect()


def ours(container: C) -> C:
    """A testcontainers container labelled as this process's (stores' recipes wrap theirs)."""
    container.with_kwargs(labels={OWNER_LABEL: _owner()})  # type: ignore[attr-defined]
    return container


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _first_line(exc: BaseException) -> str:
    """The line of an error worth printing (docker's APIError says it in ``explanation``)."""
    text = getattr(exc, "explanation", None) or str(exc)
    return (str(text).strip().splitlines() or [""])[0][:300]


def _ready_for(kind: str, image: str) -> None:
    """Raise ProvisionError unless an engine answers and has ``image`` or can pull it; remove
    what a killed vmtest process left; use Ryuk only where its image is on the engine."""
    problem = docker_engine_problem()
    if problem is not None:
        raise ProvisionError(problem, hint="use --vmtest-provision=process, which needs no engine")
    import docker
    from testcontainers.core.config import testcontainers_config

    client = docker.from_env(timeout=ENGINE_TIMEOUT_S)
    try:
        _sweep(client)
        if not _has_image(client, image):
            try:
                client.images.pull(image)
            except Exception as exc:
                raise ProvisionError(
                    f"the {kind} image {image} is not on this Docker engine and cannot be "
                    f"pulled ({type(exc).__name__}: {_first_line(exc)})",
                    hint=f"build it (python scripts/build_images.py {kind}) or name one that "
                    f"exists: --vmtest-container-image={kind}=IMAGE") from None
        if not testcontainers_config.ryuk_disabled and \
                not _has_image(client, testcontainers_config.ryuk_image):
            testcontainers_config.ryuk_disabled = True
    finally:
        client.close()


def _has_image(client: Any, image: str) -> bool:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def orphans(client: Any) -> list[Any]:
    """The containers of vmtest processes of this host that are gone (killed before they
    could remove them)."""
    host = socket.gethostname()
    found = []
    for container in client.containers.list(all=True, filters={"label": OWNER_LABEL}):
        owner_host, _, pid = container.labels.get(OWNER_LABEL, "").rpartition(":")
        if owner_host == host and pid.isdigit() and not _alive(int(pid)):
            found.append(container)
    return found


def _sweep(client: Any) -> None:
    for container in orphans(client):
        container.remove(force=True, v=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


__all__ = ["OWNER_LABEL", "PROVIDERS", "ProvisionError", "docker_engine_problem", "images",
           "kinds", "orphans", "ours", "provision", "recipes"]
