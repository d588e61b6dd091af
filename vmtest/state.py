"""What the plugin keeps for a session, in ``config.stash`` (never private attributes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from vmtest.settings import Settings


@dataclass
class SessionState:
    settings: Settings
    #: nodeid -> the check's JSON-ready result, collected from reports (also under xdist).
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    inventories: dict[str, Any] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    #: The command line that reproduces this run (for the reports).
    command: str = ""
    #: Warnings the database libraries raised while vmtest read the stores: reported, never
    #: turned into a check's error (a team's ``filterwarnings = error`` included).
    library_warnings: list[str] = field(default_factory=list)
    #: (exit code, message) of the error that stopped the run (a store that cannot be
    #: opened, a server that died mid-run): a usage error, not a verdict.
    stopped_by: tuple[int, str] | None = None
    #: Whether every check was skipped or not applicable (no verdict: not exit 0).
    no_verdict: bool = False


STATE = pytest.StashKey[SessionState]()
#: A check's result (JSON-ready), stashed on its test item by the vmtest_check fixture.
RESULT_KEY = pytest.StashKey[dict[str, Any]]()


def state_of(config: pytest.Config) -> SessionState:
    return config.stash[STATE]
