"""Reports for sign-off: a JSON document for machines, a self-contained HTML page for people.
JUnit XML comes from pytest's own ``--junitxml``, fed by each check's properties."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vmtest.report.html import render_html
from vmtest.report.model import build_document, verdict_line
from vmtest.state import SessionState

__all__ = ["build_document", "render_html", "summary_lines", "write_reports"]


def write_reports(state: SessionState, *, rootdir: Path) -> list[str]:
    """Write the JSON and HTML reports the settings ask for; return their paths."""
    document = build_document(state)
    written = []
    for path, text in (
        (state.settings.vmtest_json,
         lambda: json.dumps(json_safe(document), indent=2, default=str, allow_nan=False)),
        (state.settings.vmtest_html, lambda: render_html(document)),
    ):
        if path is None:
            continue
        full = path if path.is_absolute() else rootdir / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_text(text(), encoding="utf-8")
        written.append(str(full))
    return written


def json_safe(value: Any) -> Any:
    """The document with NaN and infinities spelled as strings (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def summary_lines(state: SessionState) -> list[tuple[str, dict[str, Any]]]:
    """The terminal block: the verdict, each check's key figure, the reports written."""
    document = build_document(state)
    good = document["faithful"]
    out: list[tuple[str, dict[str, Any]]] = [
        (verdict_line(document), {"green": good, "red": not good, "bold": True})
    ]
    for check in document["checks"]:
        status = check["status"].upper()
        colour = {"PASSED": "green", "WARNING": "yellow", "SKIPPED": "yellow"}.get(status, "red")
        out.append((f"  {status:<8} {check['name']:<18} {check['summary']}", {colour: True}))
    for path in state.written:
        out.append((f"  report: {path}", {}))
    return out
