"""The HTML page of a staged cutover (``vmtest cutover status --html PATH``): where it stands,
who has read and write authority at each stage, the flag's percentage over time, each gate
metric against its threshold, the rollback and how long it took, and the whole timeline."""

from __future__ import annotations

from typing import Any

from vmtest.live.stages import (
    COMPLETE,
    PAUSED,
    ROLLED_BACK,
    CutoverConfig,
    authority,
    authority_words,
    headline,
    positions,
)
from vmtest.report.html import BLUE, CSS, RED, _chart, _e, _fmt

_CLASS = {COMPLETE: "passed", ROLLED_BACK: "failed", PAUSED: "warning"}


def render_cutover_html(state: dict[str, Any]) -> str:
    config = CutoverConfig.from_dict(state["config"])
    timeline = state["timeline"]
    t0 = timeline[0]["time"] if timeline else 0.0
    verdict = _CLASS.get(state["status"], "not_checked")
    return "\n".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>vmtest cutover: {_e(headline(state))}</title>",
        f"<style>{CSS}</style></head><body><main>",
        "<h1>vmtest cutover</h1>",
        f"<div class='verdict {verdict}' id='gate'>{_e(headline(state))}</div>",
        _meta(state, config),
        _rollback(state),
        _stages(state, config, t0),
        "<h2>Traffic and gates</h2><div class='plots'>", _flag_chart(timeline, t0),
        *_metric_charts(timeline, config, t0), "</div>",
        _timeline(timeline, t0),
        "</main></body></html>"])


def _meta(state: dict[str, Any], config: CutoverConfig) -> str:
    gate = config.gate
    conditions = ", ".join(c.words() for c in gate.conditions) or "none"
    return (f"<p class='meta'>flag file <code>{_e(config.flag_file)}</code> (key "
            f"<code>{_e(config.flag_key)}</code>); source <code>{_e(config.source or 'not given')}"
            f"</code> &rarr; target <code>{_e(config.target or 'not given')}</code><br>"
            f"steps {_e(', '.join(f'{s:g}%' for s in config.steps))}; every gate: "
            f"{gate.count} measurements every {gate.interval_s:g} s (initial delay "
            f"{gate.initial_delay_s:g} s), failure-limit {gate.failure_limit}, "
            f"inconclusive-limit {gate.inconclusive_limit}, consecutive-error-limit "
            f"{gate.consecutive_error_limit}<br>metrics: {_e(conditions)}"
            + (f" from <code>{_e(gate.prometheus)}</code>" if gate.prometheus else "")
            + (f"; suite report <code>{_e(gate.suite_report)}</code>"
               if gate.suite_report else "")
            + (f"; shadow report <code>{_e(gate.shadow_report)}</code>"
               if gate.shadow_report else "")
            + f"<br>started {_e(state['created'])}, updated {_e(state['updated'])}</p>")


def _rollback(state: dict[str, Any]) -> str:
    rb = state.get("rollback")
    if not rb:
        return ""
    rows = [("kind", rb.get("kind")), ("reason", rb.get("reason")),
            ("from", rb.get("from")), ("flag at 0%", rb.get("at")),
            ("after the first failed measurement (s)", rb.get("seconds_after_first_failure")),
            ("budget: interval x failure-limit (s)", rb.get("budget_after_first_failure_s")),
            ("after the last good measurement (s)", rb.get("seconds_after_last_good")),
            ("budget: interval x (failure-limit + 1) (s)", rb.get("budget_after_onset_s")),
            ("after it was asked for (s)", rb.get("seconds_after_request")),
            ("figures", rb.get("figures") or None)]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows
                   if v is not None)
    return f"<h2>Rollback</h2><table><tbody>{body}</tbody></table>"


def _stages(state: dict[str, Any], config: CutoverConfig, t0: float) -> str:
    entered: dict[tuple[str, Any], float] = {}
    gates: dict[tuple[str, Any], str] = {}
    for e in state["timeline"]:
        key = (e["stage"], e["step"])
        if e["event"] in ("start", "enter"):
            entered.setdefault(key, e["time"] - t0)
        if e["event"] == "gate":
            gates[key] = e.get("outcome", "")
    rows = []
    for i, p in enumerate(positions(config.steps)):
        key = (p.stage, p.step)
        here = " class='diff'" if i == state["position"] and state["stage"] != ROLLED_BACK \
            else ""
        rows.append(
            f"<tr{here}><td>{_e(p.words())}</td>"
            f"<td class='num'>{p.percent:g}%</td>"
            f"<td>{_e(authority_words(authority(p.stage, p.percent)))}</td>"
            f"<td class='num'>{_when(entered.get(key))}</td>"
            f"<td><span class='status {_outcome_class(gates.get(key))}'>"
            f"{_e(gates.get(key, ''))}</span></td></tr>")
    return ("<h2>Stages: read and write authority</h2><table><thead><tr><th>stage</th>"
            "<th>flag</th><th>authority</th><th>entered (s)</th><th>gate</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _outcome_class(outcome: str | None) -> str:
    return {"successful": "passed", "failed": "failed", "inconclusive": "warning",
            "error": "error"}.get(outcome or "", "")


def _when(seconds: float | None) -> str:
    return "" if seconds is None else f"+{seconds:.1f}"


def _flag_chart(timeline: list[dict[str, Any]], t0: float) -> str:
    points: list[tuple[float, float]] = []
    for e in timeline:
        if e.get("flag") is None:
            continue
        x = e["time"] - t0
        if points:
            points.append((x, points[-1][1]))  # a step: the old value until the change
        points.append((x, float(e["flag"])))
    if timeline and points:
        points.append((timeline[-1]["time"] - t0, points[-1][1]))
    return _chart("Share of keys the flag routes to the target", [
        ("flag", points, BLUE, "")], x_label="seconds since start", y_label="percent",
        y_range=(0.0, 100.0))


def _metric_charts(timeline: list[dict[str, Any]], config: CutoverConfig,
                   t0: float) -> list[str]:
    out = []
    end = timeline[-1]["time"] - t0 if timeline else 1.0
    for condition in config.gate.conditions:
        points = [(e["time"] - t0, float(e["figures"][condition.name]))
                  for e in timeline if e["event"] == "measurement"
                  and isinstance((e.get("figures") or {}).get(condition.name), (int, float))]
        if not points:
            continue
        limit = [(0.0, condition.threshold), (end, condition.threshold)]
        out.append(_chart(f"{condition.name} at each measurement; dashed: the threshold "
                          f"({condition.words()})",
                          [(condition.name, points, BLUE, ""),
                           ("threshold", limit, RED, "5 4")],
                          x_label="seconds since start",
                          y_label=condition.name + (f" ({condition.unit})"
                                                    if condition.unit else "")))
    return out


def _timeline(timeline: list[dict[str, Any]], t0: float) -> str:
    rows = "".join(
        f"<tr><td>{_e(e['at'])}</td><td class='num'>{_when(e['time'] - t0)}</td>"
        f"<td>{_e(e['event'])}</td><td>{_e(e['stage'])}</td>"
        f"<td class='num'>{e['percent']:g}%</td>"
        f"<td>{_e(e.get('attempt') or '')}{_e('#' + str(e['n']) if e.get('n') else '')}</td>"
        f"<td><span class='status {_outcome_class(e.get('outcome'))}'>"
        f"{_e(e.get('outcome') or '')}</span></td>"
        f"<td>{_fmt(e.get('figures') or '')}</td><td>{_e(e.get('reason') or '')}</td></tr>"
        for e in timeline)
    return ("<h2>Timeline</h2><table><thead><tr><th>time (UTC)</th><th>s</th><th>event</th>"
            "<th>stage</th><th>flag</th><th>attempt</th><th>outcome</th><th>figures</th>"
            f"<th>reason</th></tr></thead><tbody>{rows}</tbody></table>")
