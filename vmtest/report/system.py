"""The report of a system run (``vmtest check --system=FILE.toml``): one verdict over the
parts (the vector index, the document store, the chat history), each part's verdict and
failed checks, its own reports (JSON, HTML, JUnit XML) named, and its whole JSON document
embedded, so that one JSON and one self-contained HTML page are what a person signs off."""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

from vmtest import __version__, dist_version
from vmtest.report.html import CSS, _checks_table, _details, _e
from vmtest.report.model import verdict_line, verdict_lines

SCHEMA = "vmtest-system-report"
SCHEMA_VERSION = 1


def part_entry(name: str, source: str, target: str, code: int,
               document: dict[str, Any] | None, reports: dict[str, Path]) -> dict[str, Any]:
    """One part as the system report holds it: its verdict is its run's exit code."""
    document = document or {}
    return {
        "name": name, "verdict": "passed" if code == 0 else "failed", "exit_code": code,
        "source": source, "target": target,
        "failed_checks": list(document.get("failed_checks") or []),
        "verdicts": {k: v["verdict"] for k, v in (document.get("verdicts") or {}).items()},
        "reports": {kind: path.name for kind, path in reports.items() if path.exists()},
        "report": document or None,
    }


def system_document(system: Path, parts: list[dict[str, Any]], command: str) -> dict[str, Any]:
    failed = [p["name"] for p in parts if p["verdict"] != "passed"]
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "system": str(system),
        "verdict": "failed" if failed else "passed",
        "failed_parts": failed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "tool": {"vmtest": __version__, "python": platform.python_version(),
                 "pytest": dist_version("pytest")},
        "parts": parts,
    }


def _outcome(part: dict[str, Any]) -> str:
    """A part's result in a few words: what failed, or its verdicts."""
    if part["failed_checks"]:
        return f"{', '.join(part['failed_checks'])} failed"
    if part["verdict"] != "passed":
        return (f"exit {part['exit_code']} with no failed check (no check gave a verdict, or "
                "a test outside the suite failed: its own report)")
    return verdict_line(part["report"]) if part["report"] else "passed"


def system_gate_line(document: dict[str, Any]) -> str:
    """The one go/no-go line over the whole system: what the exit code says."""
    names = [p["name"] for p in document["parts"]]
    if document["verdict"] == "passed":
        return f"SYSTEM GATE: PASSED (exit 0): every part passed ({', '.join(names)})"
    failed = [f"{p['name']} ({', '.join(p['failed_checks']) or 'exit ' + str(p['exit_code'])})"
              for p in document["parts"] if p["verdict"] != "passed"]
    return f"SYSTEM GATE: FAILED (exit 1): {'; '.join(failed)} failed"


def system_lines(document: dict[str, Any]) -> list[str]:
    """The terminal block: one line per part, then the gate."""
    lines = [f"vmtest system {document['system']}: {len(document['parts'])} parts"]
    lines += [f"  {p['verdict'].upper():<7} {p['name']:<14} {_outcome(p)}"
              for p in document["parts"]]
    return [*lines, system_gate_line(document)]


def render_system_html(document: dict[str, Any]) -> str:
    """One self-contained page: the gate, a table of the parts with links to their own
    reports, then each part's verdicts, checks and offending records."""
    rows = []
    for p in document["parts"]:
        links = " ".join(f"<a href='{_e(name)}'>{_e(kind)}</a>"
                         for kind, name in p["reports"].items())
        rows.append(f"<tr id='row-{_e(p['name'])}'><td class='status {_e(p['verdict'])}'>"
                    f"{_e(p['verdict'])}</td><td><a href='#part-{_e(p['name'])}'>"
                    f"<b>{_e(p['name'])}</b></a></td><td><code>{_e(p['source'])}</code> &rarr; "
                    f"<code>{_e(p['target'])}</code></td><td>{_e(_outcome(p))}</td>"
                    f"<td>{links or '&ndash;'}</td></tr>")
    gate = "passed" if document["verdict"] == "passed" else "failed"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>vmtest system report: {_e(system_gate_line(document))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>vmtest system report: <code>{_e(document['system'])}</code></h1>",
        f"<div class='verdict {gate}' id='gate'>{_e(system_gate_line(document))}</div>",
        f"<p class='meta'>created {_e(document['created'])}, vmtest "
        f"{_e(document['tool']['vmtest'])}, pytest {_e(document['tool']['pytest'])}, Python "
        f"{_e(document['tool']['python'])}</p>",
        f"<h2>Reproduce this run</h2><pre id='command'>{_e(document['command'])}</pre>",
        "<h2>Parts</h2><table id='parts'><thead><tr><th>status</th><th>part</th>"
        "<th>source &rarr; target</th><th>result</th><th>its reports</th></tr></thead>"
        "<tbody>" + "".join(rows) + "</tbody></table>",
        *(_part_section(p) for p in document["parts"]),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _part_section(part: dict[str, Any]) -> str:
    report = part["report"]
    head = (f"<section id='part-{_e(part['name'])}'><h2>{_e(part['name'])}: "
            f"{_e(part['verdict'].upper())}</h2>")
    if not report:
        return head + f"<p>{_e(_outcome(part))}</p></section>"
    return "".join([
        head,
        *(f"<div class='verdict {_e(word)}'>{_e(text)}</div>"
          for text, word in verdict_lines(report)),
        f"<p class='meta'>command <code>{_e(report.get('command'))}</code></p>",
        _checks_table(report["checks"], prefix=f"{part['name']}-"),
        _details(report["checks"]),
        "</section>",
    ])
