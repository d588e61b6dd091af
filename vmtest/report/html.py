"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network) that a
person reads to sign off a cutover.

Top to bottom: the verdict, the checks with measured figures against thresholds, both
inventories side by side with differences highlighted, the offending records and worst
queries of each check, and plots where a picture reads faster than a table (recall per query,
latency distributions of both sides, per-record vector error).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from vmtest.report.model import verdict_line

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.verdict{padding:18px 22px;border-radius:8px;color:#fff;font-size:20px;font-weight:700}
.verdict.passed{background:#1f7a3a}.verdict.failed{background:#b3261e}
.meta{color:#5b6475;font-size:12px;margin:8px 0 0}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #dde1e8;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num{font-variant-numeric:tabular-nums}
.status{font-weight:700;text-transform:uppercase;font-size:12px}
.status.passed{color:#1f7a3a}.status.failed,.status.error{color:#b3261e}
.status.warning,.status.skipped{color:#9a6700}
tr.diff td{background:#fff4d6}
code{font-family:ui-monospace,Menlo,monospace;font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;border:1px solid #dde1e8;padding:8px}
figcaption{font-size:12px;color:#5b6475;margin-top:4px}
"""

INVENTORY_ROWS = ("kind", "uri", "count", "dimension", "metric", "dtype", "index",
                  "payload_indexes", "metadata_types", "versions")


def _e(value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str, sort_keys=True)
    return html.escape("" if value is None else str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _e(value)


def render_html(document: dict[str, Any]) -> str:
    checks = document["checks"]
    verdict_class = "passed" if document["faithful"] else "failed"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>vmtest report: {_e(verdict_line(document))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>vmtest migration report</h1>",
        f"<div class='verdict {verdict_class}' id='verdict'>{_e(verdict_line(document))}</div>",
        f"<p class='meta'>source <code>{_e((document.get('source') or {}).get('uri'))}</code>"
        f" &rarr; target <code>{_e((document.get('target') or {}).get('uri'))}</code><br>"
        f"created {_e(document['created'])}, seed {_e(document['seed'])}, vmtest "
        f"{_e(document['tool']['vmtest'])}, pytest {_e(document['tool']['pytest'])}, "
        f"Python {_e(document['tool']['python'])}</p>",
        _checks_table(checks),
        _inventories(document.get("source"), document.get("target")),
        _plots(checks),
        _details(checks),
        "</main></body></html>",
    ]
    return "\n".join(parts)


def _checks_table(checks: Sequence[dict[str, Any]]) -> str:
    rows = []
    for c in checks:
        measured = "<br>".join(
            f"{_e(k)} = {_fmt(v)}" for k, v in c["figures"].items()
            if not isinstance(v, (dict, list))
        )
        thresholds = "<br>".join(f"{_e(k)} = {_fmt(v)}" for k, v in c["thresholds"].items())
        warnings = "".join(f"<br><em>warning: {_e(w)}</em>" for w in c.get("warnings") or [])
        rows.append(
            f"<tr><td class='status {_e(c['status'])}'>{_e(c['status'])}</td>"
            f"<td><b>{_e(c['name'])}</b></td><td>{_e(c['summary'])}{warnings}</td>"
            f"<td class='num'>{thresholds or '&ndash;'}</td>"
            f"<td class='num'>{measured or '&ndash;'}</td></tr>"
        )
    return ("<h2>Checks</h2><table id='checks'><thead><tr><th>status</th><th>check</th>"
            "<th>result</th><th>threshold</th><th>measured</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


def _inventories(source: dict[str, Any] | None, target: dict[str, Any] | None) -> str:
    if not source or not target:
        return "<h2>Inventories</h2><p>The inventory check did not run.</p>"
    rows = []
    for key in INVENTORY_ROWS:
        s, t = source.get(key), target.get(key)
        differs = key not in ("uri", "kind", "versions") and s != t
        rows.append(f"<tr class='{'diff' if differs else ''}'><th>{_e(key)}</th>"
                    f"<td><code>{_e(s)}</code></td><td><code>{_e(t)}</code></td></tr>")
    return ("<h2>Inventories</h2><table id='inventories'><thead><tr><th></th><th>source</th>"
            "<th>target</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _details(checks: Sequence[dict[str, Any]]) -> str:
    out = ["<h2>Offending records and worst queries</h2>"]
    any_rows = False
    for c in checks:
        if not c.get("offenders"):
            continue
        any_rows = True
        more = c["offending_total"] - len(c["offenders"])
        rows = "".join(
            f"<tr><td><code>{_e(o['id'])}</code></td><td>{_e(o['detail'])}</td></tr>"
            for o in c["offenders"]
        )
        tail = f"<tr><td colspan='2'>&hellip; and {more} more</td></tr>" if more > 0 else ""
        out.append(f"<h3>{_e(c['name'])} ({c['offending_total']} offending)</h3>"
                   f"<table class='offenders'><thead><tr><th>id</th><th>what differs</th></tr>"
                   f"</thead><tbody>{rows}{tail}</tbody></table>")
    if not any_rows:
        out.append("<p>None: no check listed an offending record.</p>")
    return "".join(out)


def _plots(checks: Sequence[dict[str, Any]]) -> str:
    figures = []
    for c in checks:
        ev = c.get("evidence") or {}
        if "target_recall" in ev:
            figures.append(_figure(
                f"{c['name']}: recall@k per query, sorted (target solid, source dashed)",
                [("target", sorted(ev["target_recall"]), "#b3261e", ""),
                 ("source", sorted(ev["source_recall"]), "#1f5fbf", "4 3")],
                y_max=1.0, y_label="recall",
            ))
        if "source_ms" in ev:
            figures.append(_figure(
                "latency per query, sorted (ms): source dashed, target solid",
                [("target", sorted(ev["target_ms"]), "#b3261e", ""),
                 ("source", sorted(ev["source_ms"]), "#1f5fbf", "4 3")],
                y_label="ms",
            ))
        if ev.get("abs_error"):
            figures.append(_figure(
                "vector error per record (max |delta|), quantiles",
                [("error", ev["abs_error"], "#6a3fb5", "")],
                y_label="|delta|",
            ))
    if not figures:
        return ""
    return "<h2>Plots</h2><div class='plots'>" + "".join(figures) + "</div>"


def _figure(caption: str, series: Sequence[tuple[str, Sequence[float], str, str]], *,
            y_max: float | None = None, y_label: str = "") -> str:
    """A small line chart as inline SVG: x is the rank in the sorted series."""
    width, height, pad = 460, 220, 40
    values = [v for _, ys, _, _ in series for v in ys]
    top = y_max if y_max is not None else (max(values) if values else 1.0)
    top = top or 1.0
    lines = []
    for _name, ys, colour, dash in series:
        if not ys:
            continue
        n = max(1, len(ys) - 1)
        pts = " ".join(
            f"{pad + (width - pad - 10) * i / n:.1f},"
            f"{height - pad - (height - pad - 10) * min(y, top) / top:.1f}"
            for i, y in enumerate(ys)
        )
        lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                     f"stroke-dasharray='{dash}' points='{pts}'/>")
    axes = (f"<line x1='{pad}' y1='{height - pad}' x2='{width - 10}' y2='{height - pad}' "
            f"stroke='#889'/><line x1='{pad}' y1='10' x2='{pad}' y2='{height - pad}' "
            f"stroke='#889'/><text x='4' y='16' font-size='11'>{_fmt(top)}</text>"
            f"<text x='4' y='{height - pad}' font-size='11'>0</text>"
            f"<text x='{pad}' y='{height - 12}' font-size='11'>{_e(y_label)} by rank "
            f"({max((len(s[1]) for s in series), default=0)} points)</text>")
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
           f"role='img' aria-label='{_e(caption)}'>{axes}{''.join(lines)}</svg>")
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"
