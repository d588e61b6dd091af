"""The HTML page of a ``vmtest sync`` run: its verdict, each generation (with the mismatches
it found as a plot: the lag closing, or not), and every mismatch still outstanding with its
kind, when it was first seen and how long it has lasted."""

from __future__ import annotations

from typing import Any

from vmtest.report.html import CSS, _chart, _e, _fmt

NO_FEED = "both stores' digests, every generation"
KIND_WORDS = {"missing": "missing on the target", "extra": "extra on the target",
              "content": "content differs"}


def sync_verdict_line(document: dict[str, Any]) -> str:
    generations = document["generations"]
    last = generations[-1] if generations else None
    if document["converged"]:
        return (f"SYNC: CONVERGED after {len(generations)} generation(s): the last began after "
                "writes-off and found no mismatch")
    if last is not None and not document["outstanding"]:
        return (f"SYNC: CAUGHT UP: generation {last['number']} found no mismatch (writes were "
                "not declared off: --until-converged waits for that)")
    left = document["outstanding"]
    if last is not None and left and last["mismatches"] == len(left) and \
            last["copied"] + last["deleted"] == last["mismatches"]:
        return (f"SYNC: REPAIRED, NOT YET VERIFIED: generation {last['number']} copied "
                f"{last['copied']} and deleted {last['deleted']} records; the next generation "
                "checks that they landed (--generations, or --until-converged)")
    extras = all(m["kind"] == "extra" for m in left)
    return (f"SYNC: NOT CAUGHT UP: {len(left)} mismatch(es) outstanding after the last "
            "generation" + (" (records the source no longer has: --delete-extra deletes them)"
                            if extras else ""))


def render_sync_html(document: dict[str, Any]) -> str:
    generations = document["generations"]
    good = document["converged"] or (generations and not document["outstanding"])
    rows = "".join(
        f"<tr><td>{g['number']}</td><td>{_e(g['how'])}</td><td>{_fmt(g['checked'])}</td>"
        + "".join(f"<td>{_fmt(g['found'].get(kind, 0))}</td>" for kind in KIND_WORDS)
        + f"<td>{_fmt(g['copied'])}</td><td>{_fmt(g['deleted'])}</td>"
        f"<td>{_fmt(g['listed'])}</td><td>{g['seconds']:.2f}</td>"
        f"<td>{g['oldest_s']:.1f}</td><td>{_fmt(g['writes_off'])}</td></tr>"
        for g in generations)
    table = (
        "<h2>Generations</h2><table><thead><tr><th>#</th><th>by</th><th>keys checked</th>"
        + "".join(f"<th>{_e(w)}</th>" for w in KIND_WORDS.values())
        + "<th>copied</th><th>deleted</th><th>extras listed</th><th>seconds</th>"
        "<th>oldest mismatch (s)</th><th>writes off</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>")
    plot = _chart(
        "Mismatches found by each generation (the lag): it must reach 0 after writes-off",
        [("mismatches", [(float(g["number"]), float(g["mismatches"])) for g in generations],
          "#7b3fa0", "")], x_label="generation", y_label="mismatches found") \
        if len(generations) > 1 else ""
    outstanding = document["outstanding"]
    left = ("<h2>Outstanding mismatches</h2><table><thead><tr><th>key</th><th>kind</th>"
            "<th>first seen</th><th>lasted (s)</th></tr></thead><tbody>" + "".join(
                f"<tr><td><code>{_e(m['key'])}</code></td><td>{_e(KIND_WORDS[m['kind']])}"
                f"</td><td>{_e(_when(m['first_seen']))}</td><td>{m['lasted_s']:.1f}</td></tr>"
                for m in outstanding[:500]) + "</tbody></table>"
            + (f"<p>and {len(outstanding) - 500} more (JSON report)</p>"
               if len(outstanding) > 500 else "")) if outstanding else \
        "<h2>Outstanding mismatches</h2><p>none</p>"
    return "\n".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>vmtest sync: {_e(sync_verdict_line(document))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>vmtest sync report</h1>",
        f"<div class='verdict {'passed' if good else 'failed'}' id='gate'>"
        f"{_e(sync_verdict_line(document))}</div>",
        f"<p class='meta'>source <code>{_e(document['source'])}</code> &rarr; target "
        f"<code>{_e(document['target'])}</code><br>changes read by: "
        f"{_e(document['feed'] or NO_FEED)}; "
        f"{document['seconds']:.1f} s</p>",
        table, plot, left, "</main></body></html>"])


def _when(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")
