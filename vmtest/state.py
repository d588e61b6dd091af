"""What the plugin keeps for a session, in ``config.stash`` (never private attributes)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from vmtest.compare import Comparison
from vmtest.settings import Settings


@dataclass
class SessionState:
    settings: Settings
    comparison: Comparison | None = None
    #: nodeid -> the check's JSON-ready result, collected from reports (also under xdist).
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    inventories: dict[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    #: The command line that reproduces this run (for the reports).
    command: str = ""
    #: Warnings the database libraries raised while vmtest read the stores: reported, never
    #: turned into a check's error (a team's ``filterwarnings = error`` included).
    library_warnings: list[str] = field(default_factory=list)
    #: What the session started (provisioned stores, servers), closed at unconfigure.
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


STATE = pytest.StashKey[SessionState]()


def state_of(config: pytest.Config) -> SessionState:
    return config.stash[STATE]
