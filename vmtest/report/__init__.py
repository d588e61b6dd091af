"""Reports for sign-off: a JSON document for machines, a self-contained HTML page for people.
JUnit XML comes from pytest's own ``--junitxml``, fed by each check's properties."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmtest.checks.result import CATEGORIES, category_of
from vmtest.report.html import render_html
from vmtest.report.model import build_document, gate_line, verdict_lines

if TYPE_CHECKING:
    from vmtest.state import SessionState

__all__ = ["build_document", "document_lines", "render_html", "summary_lines",
           "write_document", "write_reports"]


def write_reports(state: SessionState, *, rootdir: Path) -> list[str]:
    """Write the JSON and HTML reports the settings ask for; return their paths."""
    return write_document(build_document(state), json_path=state.settings.vmtest_json,
                          html_path=state.settings.vmtest_html, rootdir=rootdir)


def write_document(document: dict[str, Any], *, json_path: Path | None,
                   html_path: Path | None, rootdir: Path,
                   render: Callable[[dict[str, Any]], str] = render_html) -> list[str]:
    """The one writer of both reports (a run's, a merge's, a sync's with its own
    ``render``): relative paths under ``rootdir``, folders made as needed; a None path is
    skipped. Returns the paths written."""
    written = []
    for path, text in (
        (json_path,
         lambda: json.dumps(json_safe(document), indent=2, default=str, allow_nan=False)),
        (html_path, lambda: render(document)),
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
    """The terminal block: the three verdicts, each check's key figure, the reports written."""
    document = build_document(state)
    return document_lines(document) + [(f"  report: {path}", {}) for path in state.written]


_COLOURS = {"passed": "green", "warning": "yellow", "not_checked": "yellow", "failed": "red",
            "error": "red", "skipped": "yellow", "not_applicable": "yellow"}


def document_lines(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The verdicts, then every check with its status and summary, grouped by verdict."""
    gate = "passed" if document.get("verdict") == "passed" else "failed"
    out: list[tuple[str, dict[str, Any]]] = [(gate_line(document), {_COLOURS[gate]: True,
                                                                     "bold": True})]
    out += [(text, {_COLOURS[word]: True, "bold": True})
            for text, word in verdict_lines(document)]
    for check in sorted(document["checks"], key=lambda c: CATEGORIES.index(
            c.get("category") or category_of(c["name"]))):
        status = check["status"]
        label = "N/A" if status == "not_applicable" else status.upper()
        out.append((f"  {label:<8} {check['name']:<18} {check['summary']}",
                    {_COLOURS.get(status, "red"): True}))
        out.extend((f"  {'':<8} {'':<18} WARNING: {w}", {"yellow": True})
                   for w in check.get("warnings") or [] if w not in check["summary"])
    out.extend((f"  library warning (not a check result): {w}", {"yellow": True})
               for w in document.get("library_warnings") or [])
    return out
