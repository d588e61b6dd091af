"""The HTML report: one self-contained file (inline CSS and SVG, no script, no network) that a
person reads to sign off a cutover.

Top to bottom: the three verdicts (data fidelity, search quality, performance) and the
command that reproduces the run; the checks, each figure in plain words with what it means;
how records were matched; both inventories side by side (mapping fields the migration added
are not differences); the offending records of the checks that failed or warned; plots with
labelled axes and units; warnings the libraries raised.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

from vmtest.checks.result import CATEGORIES, category_of
from vmtest.report.model import VERDICT_TITLES, gate_line, verdict_line, verdict_lines
from vmtest.settings import DEFAULT_ID_FIELDS

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:15px}
.verdict{padding:10px 16px;border-radius:6px;color:#fff;font-size:17px;font-weight:700;
margin:0 0 6px}
.verdict.passed{background:#1f7a3a}.verdict.failed{background:#b3261e}
.verdict.warning{background:#9a6700}.verdict.not_checked{background:#5b6475}
.meta{color:#5b6475;font-size:12px;margin:8px 0 0}
table{border-collapse:collapse;width:100%;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #dde1e8;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
td.num{font-variant-numeric:tabular-nums}
.status{font-weight:700;text-transform:uppercase;font-size:12px;white-space:nowrap}
.status.passed{color:#1f7a3a}.status.failed,.status.error{color:#b3261e}
.status.warning,.status.skipped,.status.not_applicable{color:#9a6700}
tr.diff td{background:#fff4d6}
summary{cursor:pointer;color:#1f5fbf}
dl.figures{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:2px 10px}
dl.figures dt{font-weight:600}dl.figures dd{margin:0}
.term{color:#5b6475;font-size:12px}
code,pre{font-family:ui-monospace,Menlo,monospace;font-size:12px}
pre{background:#fff;border:1px solid #dde1e8;padding:8px;white-space:pre-wrap;word-break:break-all}
.plots{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;background:#fff;border:1px solid #dde1e8;padding:8px}
figcaption{font-size:12px;color:#5b6475;margin-top:4px;max-width:460px}
"""

#: Each figure a check reports, in plain words: (label, what it means, unit).
TERMS: dict[str, tuple[str, str, str]] = {
    "matched": ("matched", "records found in both stores under the same id", "records"),
    "missing": ("missing", "source records the target does not hold", "records"),
    "extra": ("extra", "target records the source does not hold", "records"),
    "source_duplicates": ("duplicated ids (source)", "ids held by more than one source "
                          "record", "ids"),
    "target_duplicates": ("duplicated ids (target)", "ids held by more than one target "
                          "record", "ids"),
    "matched_through": ("matched through", "how a target record names the source record it "
                        "copies", ""),
    "compared": ("compared", "matched records this check compared", "records"),
    "mismatched": ("mismatched", "compared records that differ beyond the tolerance",
                   "records"),
    "verified_by_digest": ("verified by digest", "records whose checksum (id, metadata with "
                           "types, document, vector on a grid finer than the tolerance) was "
                           "equal on both sides", "records"),
    "compared_one_by_one": ("compared one by one", "records without an equal checksum, "
                            "compared value by value", "records"),
    "digest_grid": ("digest grid", "the step vectors were rounded to before checksumming, "
                    "finer than the tolerance (exact bits: compared as stored)", ""),
    "compared_as": ("vectors compared", "raw values, or both sides normalised to unit length "
                    "(the cosine metric sees only directions)", ""),
    "max_abs_error": ("largest difference", "the largest |source - target| of any element",
                      ""),
    "mean_abs_error": ("mean difference", "the mean, over the records compared one by one, "
                       "of each record's largest element difference", ""),
    "p99_abs_error": ("99th percentile difference", "99% of records differ by at most this",
                      ""),
    "nan_mismatches": ("NaN on one side", "records with NaN on one side only", "records"),
    "population": ("population", "records the sample was drawn from", "records"),
    "mismatch_rate_upper": ("mismatch rate, upper bound", "with the stated confidence, at most "
                            "this share of all records differs", ""),
    "fields_affected": ("fields affected", "metadata fields that differ, with how many records",
                        ""),
    "with_document": ("with a document", "compared records that have a document", "records"),
    "queries": ("queries", "query vectors run on both stores", ""),
    "k": ("k", "results per query", ""),
    "target_recall": ("target recall@k", "share of the exact top-k the target returns", ""),
    "target_recall_ci_low": ("target recall, CI low", "lower end of its confidence interval",
                             ""),
    "target_recall_ci_high": ("target recall, CI high", "upper end of its confidence interval",
                              ""),
    "source_recall": ("source recall@k", "the same for the source: its own approximate index",
                      ""),
    "agreement": ("agreement", "overlap of the two stores' top-k lists", ""),
    "min_query_recall": ("worst query's recall", "the lowest recall of any one query", ""),
    "queries_below_floor": ("queries below the floor",
                            "queries under --vmtest-min-query-recall", ""),
    "queries_regressed": ("queries regressed", "queries below the floor that the source "
                          "answered above it", ""),
    "floats_rounded": ("floats rounded", "records whose only differences are floats the target "
                       "rounded within its store's declared rounding", "records"),
    "float_rounding_ulps": ("largest float rounding", "units in the last place", "ulps"),
    "filter": ("filter", "the metadata restriction the queries ran under", ""),
    "pairs": ("pairs", "random pairs of matched records whose distance was taken on each side",
              ""),
    "moved": ("pairs moved", "pairs whose distance changed by more than the max pair change",
              "pairs"),
    "moved_share": ("share moved", "moved pairs / pairs", ""),
    "moved_share_ci_low": ("share moved, CI low", "lower end of its exact confidence interval",
                           ""),
    "moved_share_ci_high": ("share moved, CI high", "upper end of its exact confidence "
                            "interval", ""),
    "median_change": ("median change", "median relative change of a pair's distance", ""),
    "p99_change": ("99th percentile change", "99% of pairs changed by at most this", ""),
    "ks_statistic": ("KS statistic", "largest gap between the two distance distributions "
                     "(secondary)", ""),
    "source_median_distance": ("source median distance", "typical distance between two "
                               "records in the source", ""),
    "target_median_distance": ("target median distance", "the same in the target", ""),
    "source_metric": ("source metric", "", ""), "target_metric": ("target metric", "", ""),
    "decision": ("decision", "pass, fail or inconclusive: from the confidence interval against "
                 "the threshold", ""),
    "source_p50_ms": ("source p50", "median query time on the source", "ms"),
    "source_p95_ms": ("source p95", "95% of source queries are faster", "ms"),
    "source_p99_ms": ("source p99", "99% of source queries are faster", "ms"),
    "target_p50_ms": ("target p50", "median query time on the target", "ms"),
    "target_p95_ms": ("target p95", "95% of target queries are faster", "ms"),
    "target_p99_ms": ("target p99", "99% of target queries are faster", "ms"),
    "p99_ratio": ("p99 ratio", "target p99 / source p99", "x"),
    "p99_ratio_ci_low": ("p99 ratio, CI low", "bootstrap confidence interval, lower end", "x"),
    "p99_ratio_ci_high": ("p99 ratio, CI high", "bootstrap confidence interval, upper end",
                          "x"),
    "p99_gap_ms": ("p99 gap", "target p99 - source p99", "ms"),
    "p99_gap_ci_low_ms": ("p99 gap, CI low", "bootstrap confidence interval, lower end "
                          "(negative: the target is faster)", "ms"),
    "p99_gap_ci_high_ms": ("p99 gap, CI high", "bootstrap confidence interval, upper end",
                           "ms"),
    "target_p99_ci_low_ms": ("target p99, CI low", "", "ms"),
    "target_p99_ci_high_ms": ("target p99, CI high", "", "ms"),
    "samples": ("timed queries", "queries timed on each side (interleaved)", ""),
    "rounds": ("rounds", "passes over the query set", ""),
    "differences": ("differences", "index settings that differ", ""),
    "source_index": ("source index", "", ""), "target_index": ("target index", "", ""),
}

INVENTORY_ROWS = ("kind", "uri", "count", "dimension", "metric", "dtype", "index",
                  "payload_indexes", "metadata_types", "versions")
#: Figures not worth a line of their own (shown elsewhere, or bookkeeping).
HIDDEN = {"source_model", "target_model", "sampled", "confidence"}


def _e(value: Any) -> str:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, default=str, sort_keys=True)
    return html.escape("" if value is None else str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return _e(", ".join(f"{k}: {v}" for k, v in value.items()))
    return _e(value)


def render_html(document: dict[str, Any]) -> str:
    checks = document["checks"]
    mapping = _mapping_fields(document.get("settings") or {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>vmtest report: {_e(verdict_line(document))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>vmtest migration report</h1>",
        "<section id='verdict'>",
        f"<div class='verdict {_gate_class(document)}' id='gate'>{_e(gate_line(document))}"
        "</div>",
        *(f"<div class='verdict {_e(word)}'>{_e(text)}</div>"
          for text, word in verdict_lines(document)),
        "</section>",
        f"<p class='meta'>source <code>{_e((document.get('source') or {}).get('uri'))}</code>"
        f" &rarr; target <code>{_e((document.get('target') or {}).get('uri'))}</code><br>"
        f"created {_e(document['created'])}, seed {_e(document['seed'])}, vmtest "
        f"{_e(document['tool']['vmtest'])}, pytest {_e(document['tool']['pytest'])}, "
        f"Python {_e(document['tool']['python'])}</p>",
        _command(document),
        _checks_table(checks),
        _matching(checks, mapping),
        _inventories(document.get("source"), document.get("target"), mapping),
        _details(checks),
        _plots(checks),
        _library_warnings(document.get("library_warnings") or []),
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _gate_class(document: dict[str, Any]) -> str:
    return "passed" if document.get("verdict") == "passed" else "failed"


def _mapping_fields(settings: dict[str, Any]) -> set[str]:
    """Payload fields a migration adds to carry ids and documents: never differences."""
    fields = set(DEFAULT_ID_FIELDS)
    for name in ("id_field", "document_field"):
        if settings.get(name):
            fields.add(str(settings[name]))
    return fields


def _command(document: dict[str, Any]) -> str:
    command = document.get("command")
    if not command:
        return ""
    return ("<h2>Reproduce this run</h2><pre id='command'>" + _e(command) + "</pre>")


def _figures(figures: dict[str, Any]) -> str:
    rows = []
    for key, value in figures.items():
        if key in HIDDEN or value is None or value == "" or isinstance(value, list):
            continue
        label, meaning, unit = TERMS.get(key, (key.replace("_", " "), "", ""))
        shown = _fmt(value) + (f" {unit}" if unit and not isinstance(value, (str, dict))
                               else "")
        if key == "digest_grid" and value == 0:
            shown = "0 (exact bits)"
        rows.append(f"<dt>{_e(label)}</dt><dd>{shown}"
                    + (f" <span class='term'>&mdash; {_e(meaning)}</span>" if meaning else "")
                    + "</dd>")
    return "<dl class='figures'>" + "".join(rows) + "</dl>" if rows else "&ndash;"


def _folded(check: dict[str, Any]) -> str:
    """The figures: shown open under a check that failed or warned, folded under the others
    (a click opens them; no script)."""
    figures = _figures(check["figures"])
    if figures == "&ndash;":
        return figures
    shown = " open" if check["status"] in ("failed", "warning", "error") else ""
    return f"<details{shown}><summary>figures</summary>{figures}</details>"


def _checks_table(checks: Sequence[dict[str, Any]], prefix: str = "") -> str:
    """The checks of each verdict; ``prefix`` keeps the element ids apart where one page
    holds several runs (a system report)."""
    out = []
    for category in CATEGORIES:
        mine = [c for c in checks if (c.get("category") or category_of(c["name"])) == category]
        if not mine:
            continue
        rows = []
        for c in mine:
            status = c["status"]
            label = "not applicable" if status == "not_applicable" else status
            thresholds = "<br>".join(f"{_e(k.replace('_', ' '))}: {_fmt(v)}"
                                     for k, v in c["thresholds"].items())
            warnings = "".join(f"<br><em>warning: {_e(w)}</em>" for w in c.get("warnings") or []
                               if w not in c["summary"])
            rows.append(
                f"<tr id='check-{_e(prefix + c['name'])}'>"
                f"<td class='status {_e(status)}'>{_e(label)}</td>"
                f"<td><b>{_e(c['name'])}</b></td><td>{_e(c['summary'])}{warnings}</td>"
                f"<td class='num'>{thresholds or '&ndash;'}</td>"
                f"<td class='num'>{_folded(c)}</td></tr>")
        out.append(f"<h2>{_e(VERDICT_TITLES[category][0].capitalize())}</h2>"
                   f"<table class='checks' id='checks-{_e(prefix + category)}'><thead><tr>"
                   "<th>status</th>"
                   "<th>check</th><th>result</th><th>threshold</th><th>measured</th></tr>"
                   "</thead><tbody>" + "".join(rows) + "</tbody></table>")
    return "".join(out)


def _matching(checks: Sequence[dict[str, Any]], mapping: set[str]) -> str:
    ids = next((c for c in checks if c["name"] == "ids"), None)
    if ids is None:
        return ""
    through = ids["figures"].get("matched_through")
    matched = ids["figures"].get("matched", 0)
    text = f"{_fmt(matched)} records matched"
    if through:
        text += f" through {_e(through)}"
    return (f"<h2>How records were matched</h2><p id='matching'>{text}. Payload fields that "
            f"carry ids and documents ({_e(', '.join(sorted(mapping)))}) are mapping fields: "
            "they are not compared as metadata.</p>")


def _inventories(source: dict[str, Any] | None, target: dict[str, Any] | None,
                 mapping: set[str]) -> str:
    if not source or not target:
        return "<h2>Inventories</h2><p>The inventory check did not run.</p>"
    rows = []
    for key in INVENTORY_ROWS:
        s, t = source.get(key), target.get(key)
        if key == "metadata_types":
            s = {k: v for k, v in (s or {}).items() if k not in mapping}
            t = {k: v for k, v in (t or {}).items() if k not in mapping}
        differs = key not in ("uri", "kind", "versions") and s != t
        if key == "index":  # as the schema check compares: settings both sides name
            s_, t_ = s or {}, t or {}
            differs = any(s_.get(k) != t_.get(k) for k in s_.keys() & t_.keys()) or \
                s_.get("quantization") != t_.get("quantization")
        rows.append(f"<tr class='{'diff' if differs else ''}'><th>{_e(key)}</th>"
                    f"<td><code>{_e(s)}</code></td><td><code>{_e(t)}</code></td></tr>")
    return ("<h2>Inventories</h2><p class='term'>Rows that differ are highlighted; mapping "
            "fields are left out of the metadata types; index settings only one store names "
            "(its own tuning knobs) are not differences.</p><table id='inventories'><thead><tr>"
            "<th></th><th>source</th><th>target</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _details(checks: Sequence[dict[str, Any]]) -> str:
    out = ["<h2>Offending records and worst queries</h2>"]
    any_rows = False
    for c in checks:
        if not c.get("offenders") or c["status"] not in ("failed", "warning", "error"):
            continue
        any_rows = True
        more = c["offending_total"] - len(c["offenders"])
        rows = "".join(
            f"<tr><td><code>{_e(o['id'])}</code></td><td>{_e(o['detail'])}</td></tr>"
            for o in c["offenders"]
        )
        tail = f"<tr><td colspan='2'>&hellip; and {more:,} more</td></tr>" if more > 0 else ""
        out.append(f"<h3>{_e(c['name'])} ({c['offending_total']:,} offending)</h3>"
                   f"<table class='offenders'><thead><tr><th>id</th><th>what differs</th></tr>"
                   f"</thead><tbody>{rows}{tail}</tbody></table>")
    if not any_rows:
        out.append("<p>None: no check that failed or warned listed a record.</p>")
    return "".join(out)


def _library_warnings(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    return ("<h2>Warnings from the libraries</h2><p class='term'>Raised by the database "
            "drivers while vmtest read the stores; recorded, not turned into check errors."
            "</p><ul>" + "".join(f"<li><code>{_e(w)}</code></li>" for w in lines) + "</ul>")


# -- plots ----------------------------------------------------------------------------------

BLUE, RED, PURPLE = "#1f5fbf", "#b3261e", "#6a3fb5"


def _plots(checks: Sequence[dict[str, Any]]) -> str:
    figures = []
    for c in checks:
        ev = c.get("evidence") or {}
        if ev.get("target_recall"):
            n = len(ev["target_recall"])
            figures.append(_chart(
                f"{c['name']}: recall@k of each query, worst first ({n} queries). Solid red: "
                "target; dashed blue: source; where they agree one line hides the other.",
                [("target", _ranked(ev["target_recall"]), RED, ""),
                 ("source", _ranked(ev["source_recall"]), BLUE, "5 3")],
                x_label="queries, worst to best (share)", y_label="recall@k",
                y_range=(0.0, 1.0)))
        if ev.get("source_ms"):
            figures.append(_chart(
                f"latency: share of queries answered within a time ({len(ev['source_ms'])} "
                "per side). Solid red: target; dashed blue: source. A curve further right is "
                "slower.",
                [("target", _cdf(ev["target_ms"]), RED, ""),
                 ("source", _cdf(ev["source_ms"]), BLUE, "5 3")],
                x_label="query time (ms)", y_label="share of queries", y_range=(0.0, 1.0)))
        if ev.get("abs_error") and c["status"] != "passed":
            figures.append(_chart(
                f"{c['name']}: largest element difference per record, as a share of the "
                "records that differ",
                [("error", _cdf(ev["abs_error"]), PURPLE, "")],
                x_label="largest |source - target| in a record", y_label="share of records",
                y_range=(0.0, 1.0)))
        if ev.get("source_distances"):
            figures.append(_scatter(
                "drift: each dot is a pair of records, its distance in the source against "
                "its distance in the target. A faithful copy lies on the diagonal.",
                ev["source_distances"], ev["target_distances"],
                x_label=f"source distance ({c['figures'].get('source_metric', '')})",
                y_label=f"target distance ({c['figures'].get('target_metric', '')})"))
    if not figures:
        return ""
    return "<h2>Plots</h2><div class='plots'>" + "".join(figures) + "</div>"


def _ranked(values: Sequence[float]) -> list[tuple[float, float]]:
    ys = sorted(values)
    n = max(1, len(ys) - 1)
    return [(i / n, y) for i, y in enumerate(ys)]


def _cdf(values: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    xs = sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v))
    if not xs:
        return []
    step = max(1, len(xs) // points)
    out = [(x, (i + 1) / len(xs)) for i, x in enumerate(xs) if i % step == 0 or i == len(xs) - 1]
    return out


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw),
               default=magnitude * 10)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


_W, _H, _L, _B, _T, _R = 470, 250, 58, 44, 12, 14


Range = tuple[float, float]


def _scales(xr: Range, yr: Range) -> tuple[Any, Any]:
    """Data to pixel coordinates, x and y, inside the plot's margins."""
    def sx(x: float) -> float:
        return _L + (_W - _L - _R) * (x - xr[0]) / ((xr[1] - xr[0]) or 1)

    def sy(y: float) -> float:
        return _H - _B - (_H - _B - _T) * (y - yr[0]) / ((yr[1] - yr[0]) or 1)

    return sx, sy


def _frame(caption: str, xr: Range, yr: Range, x_label: str, y_label: str, body: str) -> str:
    sx, sy = _scales(xr, yr)
    grid = []
    for x in _ticks(*xr):
        grid.append(f"<line x1='{sx(x):.1f}' y1='{_T}' x2='{sx(x):.1f}' y2='{_H - _B}' "
                    f"stroke='#e3e6ec'/><text x='{sx(x):.1f}' y='{_H - _B + 14}' font-size='10' "
                    f"text-anchor='middle'>{_tick(x)}</text>")
    for y in _ticks(*yr):
        grid.append(f"<line x1='{_L}' y1='{sy(y):.1f}' x2='{_W - _R}' y2='{sy(y):.1f}' "
                    f"stroke='#e3e6ec'/><text x='{_L - 4}' y='{sy(y) + 3:.1f}' font-size='10' "
                    f"text-anchor='end'>{_tick(y)}</text>")
    axes = (f"<line x1='{_L}' y1='{_H - _B}' x2='{_W - _R}' y2='{_H - _B}' stroke='#556'/>"
            f"<line x1='{_L}' y1='{_T}' x2='{_L}' y2='{_H - _B}' stroke='#556'/>"
            f"<text x='{(_L + _W - _R) / 2}' y='{_H - 8}' font-size='11' "
            f"text-anchor='middle'>{_e(x_label)}</text>"
            f"<text transform='translate(12,{(_T + _H - _B) / 2}) rotate(-90)' font-size='11' "
            f"text-anchor='middle'>{_e(y_label)}</text>")
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H}' role='img' "
           f"aria-label='{_e(caption)}'>{''.join(grid)}{axes}{body}</svg>")
    return f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>"


def _tick(value: float) -> str:
    return f"{value:.3g}"


def _chart(caption: str, series: Sequence[tuple[str, list[tuple[float, float]], str, str]], *,
           x_label: str, y_label: str, y_range: tuple[float, float] | None = None) -> str:
    points = [p for _, pts, _, _ in series for p in pts]
    if not points:
        return ""
    xr = (min(min(x for x, _ in points), 0.0), max(x for x, _ in points))
    yr = y_range or (min(0.0, min(y for _, y in points)), max(y for _, y in points))
    sx, sy = _scales(xr, yr)
    lines = []
    for _name, pts, colour, dash in series:
        if pts:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            lines.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                         f"stroke-dasharray='{dash}' points='{path}'/>")
    return _frame(caption, xr, yr, x_label, y_label, "".join(lines))


def _scatter(caption: str, xs: Sequence[float], ys: Sequence[float], *, x_label: str,
             y_label: str) -> str:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=False)
             if math.isfinite(x) and math.isfinite(y)]
    if not pairs:
        return ""
    low = min(0.0, *(min(p) for p in pairs))
    high = max(max(p) for p in pairs)
    r = (low, high)
    sx, sy = _scales(r, r)
    dots = "".join(f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='1.6' "
                   f"fill='{PURPLE}' fill-opacity='0.5'/>" for x, y in pairs)
    diagonal = (f"<line x1='{sx(low):.1f}' y1='{sy(low):.1f}' x2='{sx(high):.1f}' "
                f"y2='{sy(high):.1f}' stroke='#889' stroke-dasharray='4 3'/>")
    return _frame(caption, r, r, x_label, y_label, diagonal + dots)
