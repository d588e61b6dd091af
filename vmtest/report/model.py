"""The report document: one JSON-ready dict that the JSON and HTML writers share.

Its schema is ``vmtest/report/schema.json`` (versioned by ``schema_version``); docs/reports.md
describes every field.
"""

from __future__ import annotations

import datetime as _dt
import platform
from typing import Any

from vmtest import __version__
from vmtest.state import SessionState
from vmtest.stores.base import dist_version

SCHEMA_VERSION = 1
BAD = ("failed", "error")


def build_document(state: SessionState) -> dict[str, Any]:
    checks = list(state.results.values())
    failed = [c["name"] for c in checks if c["status"] in BAD]
    settings = state.settings
    return {
        "schema": "vmtest-report",
        "schema_version": SCHEMA_VERSION,
        "verdict": "failed" if failed else "passed",
        "faithful": not failed,
        "failed_checks": failed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": settings.seed,
        "settings": settings.public(),
        "tool": {
            "vmtest": __version__,
            "python": platform.python_version(),
            "pytest": dist_version("pytest"),
        },
        "source": state.inventories.get("source"),
        "target": state.inventories.get("target"),
        "checks": checks,
    }


def verdict_line(document: dict[str, Any]) -> str:
    checks = document["checks"]
    ran = [c for c in checks if c["status"] != "skipped"]
    skipped = len(checks) - len(ran)
    tail = f", {skipped} skipped" if skipped else ""
    if document["faithful"]:
        return f"FAITHFUL: all {len(ran)} checks passed{tail}"
    return (f"NOT FAITHFUL: {len(document['failed_checks'])} of {len(ran)} checks failed "
            f"({', '.join(document['failed_checks'])}){tail}")
