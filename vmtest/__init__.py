"""vmtest: prove, with evidence, that a vector-database migration is faithful.

The library part (stores, checks, migration runner, reports) imports without pytest;
the pytest plugin lives in :mod:`vmtest.plugin`.

PYTEST_DONT_REWRITE: `vmtest check` and `vmtest demo` import this package before they hand
over to pytest, which would otherwise warn that it cannot rewrite the plugin's asserts (an
error, and a traceback, under a project's ``filterwarnings = error``). vmtest's code does not
rely on rewritten asserts.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "dist_version"]


def dist_version(name: str) -> str:
    """The installed version of a distribution, or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
