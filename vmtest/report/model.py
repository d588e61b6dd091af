"""The report document: one JSON-ready dict that the JSON and HTML writers share.

Its schema is ``vmtest/report/schema.json`` (versioned by ``schema_version``); docs/reports.md
describes every field.
"""

from __future__ import annotations

import datetime as _dt
import platform
from typing import TYPE_CHECKING, Any

from vmtest import __version__, dist_version
from vmtest.checks.result import (
    CATEGORIES,
    FIDELITY,
    NOT_APPLICABLE,
    PERFORMANCE,
    SEARCH,
    category_of,
)

if TYPE_CHECKING:
    from vmtest.state import SessionState

SCHEMA_VERSION = 2
BAD = ("failed", "error")

#: How each verdict is named in the banner, and its words for a good and a bad outcome.
VERDICT_TITLES = {
    FIDELITY: ("DATA FIDELITY", "FAITHFUL", "NOT FAITHFUL"),
    SEARCH: ("SEARCH QUALITY", "PASSED", "FAILED"),
    PERFORMANCE: ("PERFORMANCE", "PASSED", "FAILED"),
}


def verdicts(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One verdict per category (data fidelity, search quality, performance): failed when a
    check of it failed or errored, else warning when one warned (an inconclusive latency
    gate, an index difference), else passed; "not checked" when none of its checks ran."""
    out: dict[str, dict[str, Any]] = {}
    for category in CATEGORIES:
        mine = [c for c in checks if (c.get("category") or category_of(c["name"])) == category]
        by = {status: [c["name"] for c in mine if c["status"] == status]
              for status in ("failed", "error", "warning", "passed", NOT_APPLICABLE, "skipped")}
        if by["failed"] or by["error"]:
            word = "failed"
        elif by["warning"]:
            word = "warning"
        elif by["passed"]:
            word = "passed"
        else:
            word = "not_checked"
        out[category] = {"verdict": word, "failed": by["failed"] + by["error"],
                         "warned": by["warning"], "passed": by["passed"],
                         "not_applicable": by[NOT_APPLICABLE], "skipped": by["skipped"]}
    return out


def build_document(state: SessionState) -> dict[str, Any]:
    checks = list(state.results.values())
    failed = [c["name"] for c in checks if c["status"] in BAD]
    settings = state.settings
    by_category = verdicts(checks)
    return {
        "schema": "vmtest-report",
        "schema_version": SCHEMA_VERSION,
        "verdict": "failed" if failed else "passed",
        "faithful": by_category[FIDELITY]["verdict"] in ("passed", "warning"),
        "verdicts": by_category,
        "failed_checks": failed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "seed": settings.seed,
        "settings": settings.public(),
        "command": state.command,
        "tool": {
            "vmtest": __version__,
            "python": platform.python_version(),
            "pytest": dist_version("pytest"),
        },
        "source": state.inventories.get("source"),
        "target": state.inventories.get("target"),
        "library_warnings": list(state.library_warnings),
        "checks": checks,
    }


def verdict_lines(document: dict[str, Any]) -> list[tuple[str, str]]:
    """The banner: one line per verdict, each with its outcome (passed, warning, failed,
    not_checked), data fidelity first."""
    by_category = document.get("verdicts") or verdicts(document["checks"])
    lines = []
    for category in CATEGORIES:
        v = by_category[category]
        title, good, bad = VERDICT_TITLES[category]
        word = v["verdict"]
        if word == "failed":
            text = f"{title}: {bad} ({', '.join(v['failed'])} failed)"
        elif word == "not_checked":
            text = f"{title}: not checked"
        else:
            count = len(v["passed"]) + len(v["warned"])
            text = f"{title}: {good} ({count} check{'s' if count != 1 else ''} passed"
            if v["warned"]:
                text += f", {len(v['warned'])} with a WARNING: {', '.join(v['warned'])}"
            text += ")"
        if v["not_applicable"]:
            text += f"; not applicable: {', '.join(v['not_applicable'])}"
        if v["skipped"]:
            text += f"; skipped: {', '.join(v['skipped'])}"
        lines.append((text, word))
    return lines


def gate_line(document: dict[str, Any]) -> str:
    """The one go/no-go line, what the exit code says."""
    if document.get("verdict") == "passed":
        return "CUT-OVER GATE: PASSED (exit 0): no check failed"
    failed = document.get("failed_checks") or []
    return f"CUT-OVER GATE: FAILED (exit 1): {', '.join(failed)} failed"


def verdict_line(document: dict[str, Any]) -> str:
    """The verdicts on one line (a page title, the last line of a merge)."""
    return " | ".join(text.split(" (")[0] for text, _ in verdict_lines(document))
