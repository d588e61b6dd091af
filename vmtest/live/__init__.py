"""The live cutover: dual-write, sync generations, routing, shadow experiments, stages.

The modules here need the ``live`` extra (``pip install 'vmtest[live]'``); each imports its
packages through :func:`need`, so a missing one is a :class:`~vmtest.errors.MissingDriverError`
that says what to install, never an ImportError.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vmtest.errors import ConfigError, MissingDriverError


class MissingLiveDriverError(MissingDriverError):
    """A package of the ``live`` extra is not installed (a MissingDriverError whose message
    names what needs it rather than a store scheme)."""

    def __init__(self, module: str, purpose: str) -> None:
        ConfigError.__init__(
            self, f"{purpose} needs the Python package {module!r}, which is not installed",
            hint="pip install 'vmtest[live]'")


def need(module: str, purpose: str) -> ModuleType:
    """Import ``module`` for ``purpose`` ("sticky routing"), or raise MissingLiveDriverError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingLiveDriverError(module, purpose) from exc
