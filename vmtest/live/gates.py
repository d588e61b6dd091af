"""The gates of a staged cutover, Argo-Rollouts style: measurements taken every ``interval``
until ``count`` of them are in, each one a judgement of the evidence the stage has, and a
gate outcome decided by limits on the failed, inconclusive and erroring measurements.

One measurement reads, where configured:

- **metrics** from Prometheus by PromQL over its HTTP API (``GET /api/v1/query``): each a
  query and a success condition on its value (``error rate < 0.01``, ``p99 < 0.5``, ``cache
  hit rate > 0.3``). A query that returns no data, or NaN (``0/0``: no request in its window),
  is *inconclusive*; a Prometheus that does not answer, or refuses the query, makes the
  measurement an *error* (it measured nothing);
- the **suite's report** (``reports/vmtest.json``): its ``verdict``, ``passed`` or ``failed``;
- the **shadow figures** (a JSON file whose top-level ``status`` is ``passed``, ``failed`` or
  ``warning``; a warning is inconclusive).

A measurement is *failed* when any part failed, else an *error* when a part could not be
read, else *inconclusive* when any part was, else *successful*. The gate (:class:`Tally`):

- **failed** as soon as failed measurements exceed ``failure_limit``;
- **inconclusive** as soon as inconclusive measurements exceed ``inconclusive_limit``;
- **error** as soon as consecutive erroring measurements exceed ``consecutive_error_limit``
  (an error is not a measurement: it does not count towards ``count``);
- **successful** once ``count`` measurements are in without any of the above.

Metrics are read only where the target serves reads (the live steps and ramp-down): before
that the target has no read traffic and every query would be empty.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vmtest.errors import ConfigError, one_line
from vmtest.live import need

__all__ = [
    "DEFAULT_CACHE_HIT_QUERY",
    "DEFAULT_ERROR_RATE_QUERY",
    "DEFAULT_P99_QUERY",
    "ERROR",
    "FAILED",
    "INCONCLUSIVE",
    "SUCCESSFUL",
    "Condition",
    "GateConfig",
    "Measurement",
    "MeasurementError",
    "PrometheusError",
    "Tally",
    "connect",
    "judge_counts",
    "judge_values",
    "measure",
    "probe",
    "query_prometheus",
]

#: A measurement's or a gate's outcome (Argo Rollouts' words).
SUCCESSFUL, FAILED, INCONCLUSIVE, ERROR = "successful", "failed", "inconclusive", "error"
#: Which outcome wins when the parts of one measurement disagree.
_PRECEDENCE = (FAILED, ERROR, INCONCLUSIVE, SUCCESSFUL)

#: The default queries assume the application exports ``app_requests_total{store, status}``
#: and the histogram ``app_request_seconds{store}`` (as tests/live_app.py does); give your own
#: with --error-rate-query, --p99-query and --cache-hit-query.
DEFAULT_ERROR_RATE_QUERY = (
    'sum(rate(app_requests_total{store="target",status="error"}[1m])) / '
    'sum(rate(app_requests_total{store="target"}[1m]))')
DEFAULT_P99_QUERY = (
    'histogram_quantile(0.99, sum(rate(app_request_seconds_bucket{store="target"}[1m])) '
    'by (le))')
DEFAULT_CACHE_HIT_QUERY = (
    'sum(rate(app_cache_requests_total{store="target",result="hit"}[1m])) / '
    'sum(rate(app_cache_requests_total{store="target"}[1m]))')

#: The seconds one Prometheus request may take before the measurement is an error.
PROMETHEUS_TIMEOUT_S = 5.0


class MeasurementError(Exception):
    """A piece of evidence could not be read: the measurement measured nothing."""


class PrometheusError(MeasurementError):
    """Prometheus did not answer, or refused a query."""


@dataclass(frozen=True)
class Condition:
    """A success condition on a query's value: ``value < threshold`` (``op`` "<") or
    ``value > threshold`` (">"). ``unit`` is printed after the figures ("s")."""

    name: str
    query: str
    op: str
    threshold: float
    unit: str = ""
    #: With it, ``query`` counts events (errors) and this query counts trials (requests)
    #: over the same window: the condition then decides on the exact (Clopper-Pearson)
    #: interval of the rate, not on its point value; straddling the threshold is
    #: inconclusive.
    trials_query: str | None = None
    confidence: float = 0.95

    def holds(self, value: float) -> bool:
        return value < self.threshold if self.op == "<" else value > self.threshold

    def words(self) -> str:
        return f"{self.name} {self.op} {self.threshold:g}{self.unit}"


@dataclass(frozen=True)
class GateConfig:
    """How every gate of a cutover measures and decides (recorded in the state at start)."""

    interval_s: float = 60.0
    count: int = 5
    failure_limit: int = 1
    inconclusive_limit: int = 1
    consecutive_error_limit: int = 4
    initial_delay_s: float = 0.0
    prometheus: str | None = None
    conditions: tuple[Condition, ...] = field(default_factory=tuple)
    suite_report: str | None = None
    shadow_report: str | None = None

    def __post_init__(self) -> None:
        for name in ("interval_s", "initial_delay_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"a gate's {name.removesuffix('_s').replace('_', '-')} is "
                                  f"a number of seconds >= 0, not {value!r}")
        if self.interval_s <= 0:
            raise ConfigError(f"a gate's interval is a number of seconds > 0, not "
                              f"{self.interval_s!r}", hint="e.g. --interval 60")
        if not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"a gate's count is a whole number >= 1, not {self.count!r}")
        for name in ("failure_limit", "inconclusive_limit", "consecutive_error_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"a gate's {name.replace('_', '-')} is a whole number >= 0, "
                                  f"not {value!r}")
        for c in self.conditions:
            if c.op not in ("<", ">") or not (isinstance(c.threshold, (int, float))
                                              and math.isfinite(c.threshold)):
                raise ConfigError(f"the condition on {c.name} is '< number' or '> number', "
                                  f"not {c.op} {c.threshold!r}")
        if self.conditions and not self.prometheus:
            raise ConfigError("metric conditions need a Prometheus to query",
                              hint="give --prometheus URL (e.g. http://127.0.0.1:9090)")

    def evidence(self, *, metrics: bool) -> list[str]:
        """What a gate reads: "metrics" (where ``metrics``: the target serves reads),
        "suite", "shadow"."""
        out = ["metrics"] if metrics and self.prometheus and self.conditions else []
        out += ["suite"] if self.suite_report else []
        out += ["shadow"] if self.shadow_report else []
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["conditions"] = [asdict(c) for c in self.conditions]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateConfig:
        data = dict(data)
        data["conditions"] = tuple(Condition(**c) for c in data.get("conditions") or ())
        return cls(**data)


@dataclass
class Measurement:
    """One measurement: its outcome, the figures read (by name), and why, in words."""

    outcome: str
    figures: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    time: float = 0.0

    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "every condition held"


# -- Prometheus --------------------------------------------------------------------------------


def query_prometheus(url: str, query: str, *, timeout_s: float = PROMETHEUS_TIMEOUT_S
                     ) -> list[float]:
    """The values of an instant query (``/api/v1/query``): one per series of a vector, the one
    of a scalar; ``[]`` when the query returns no data. Raises PrometheusError when Prometheus
    does not answer or refuses the query."""
    httpx = need("httpx", "the cutover's gates (vmtest.live.gates)")
    endpoint = url.rstrip("/") + "/api/v1/query"
    try:
        response = _client(url).get(endpoint, params={"query": query}, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PrometheusError(f"Prometheus at {url} did not answer "
                              f"({type(exc).__name__}: {one_line(str(exc), 160)})") from exc
    try:
        body = response.json()
    except ValueError:
        raise PrometheusError(f"Prometheus at {url} answered HTTP {response.status_code} "
                              "with something that is not JSON (is it Prometheus?)") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise PrometheusError(f"Prometheus at {url} refused the query {query!r}: "
                              f"{body.get('errorType', response.status_code)}: "
                              f"{one_line(str(body.get('error', '')), 200)}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [_number(result[1])]
    if kind == "vector":
        return [_number(series["value"][1]) for series in result or []]
    raise PrometheusError(f"the query {query!r} gives a {kind}; a gate needs an instant "
                          "vector or a scalar (a range vector needs rate(), sum(), ...)")


_clients: dict[str, Any] = {}


def _client(url: str) -> Any:
    """One HTTP client per Prometheus, kept for the process: a gate measures every interval,
    and a new client costs more than a query (its TLS context loads the CA bundle; a plain
    http:// URL needs none)."""
    client = _clients.get(url)
    if client is None:
        httpx = need("httpx", "the cutover's gates (vmtest.live.gates)")
        client = _clients[url] = httpx.Client(verify=not url.startswith("http://"))
    return client


def connect(config: GateConfig) -> None:
    """Make the HTTP client to Prometheus now (in a gate's initial delay), not in the first
    measurement's time."""
    if config.prometheus:
        _client(config.prometheus)


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def judge_values(condition: Condition, values: Sequence[float]) -> tuple[str, float | None, str]:
    """One condition over the values its query returned: (outcome, the figure, why). Every
    series must satisfy it; the figure is the worst value. No data, or NaN, is inconclusive."""
    if not values:
        return INCONCLUSIVE, None, f"{condition.name}: the query returned no data"
    if any(math.isnan(v) for v in values):
        return INCONCLUSIVE, None, (f"{condition.name}: NaN (no request in the query's "
                                    "window?)")
    worst = max(values) if condition.op == "<" else min(values)
    if all(condition.holds(v) for v in values):
        return SUCCESSFUL, worst, ""
    return FAILED, worst, (f"{condition.name} {worst:.4g}{condition.unit}, not "
                           f"{condition.op} {condition.threshold:g}{condition.unit}")


def judge_counts(condition: Condition, events: Sequence[float], trials: Sequence[float]
                 ) -> tuple[str, float | None, str]:
    """A rate condition on counts (``trials_query`` set): the exact interval on events /
    trials decides. Failed when the interval lies wholly on the wrong side of the threshold,
    successful when wholly on the right side, else inconclusive (more requests would decide).
    The figure is the observed rate."""
    from vmtest.checks.stats import clopper_pearson_interval

    k = round(sum(v for v in events if not math.isnan(v)))
    n = round(sum(v for v in trials if not math.isnan(v)))
    if n <= 0:
        return INCONCLUSIVE, None, f"{condition.name}: no request in the query's window"
    k = min(k, n)
    low, high = clopper_pearson_interval(k, n, condition.confidence)
    rate = k / n
    shown = (f"{condition.name} {rate:.4g} ({k} of {n}; {condition.confidence:.0%} interval "
             f"[{low:.4g}, {high:.4g}])")
    good = high < condition.threshold if condition.op == "<" else low > condition.threshold
    bad = low > condition.threshold if condition.op == "<" else high < condition.threshold
    if good:
        return SUCCESSFUL, rate, ""
    if bad:
        return FAILED, rate, f"{shown}, not {condition.op} {condition.threshold:g}"
    return INCONCLUSIVE, rate, (f"{shown} straddles {condition.threshold:g}: more requests "
                                "would decide")


def probe(config: GateConfig) -> None:
    """Check at ``vmtest cutover start`` that what the gates will read is there: Prometheus
    answers and accepts every query (their data may be empty now), the suite's report is a
    report. Raises ConfigError (a usage error: exit 4), having changed nothing."""
    if config.prometheus:
        if not config.prometheus.startswith(("http://", "https://")):
            raise ConfigError(f"--prometheus is an http:// or https:// URL, not "
                              f"{config.prometheus!r}", hint="e.g. http://127.0.0.1:9090")
        for condition in config.conditions:
            try:
                query_prometheus(config.prometheus, condition.query)
            except PrometheusError as exc:
                raise ConfigError(str(exc), hint="check --prometheus and the --*-query "
                                  "options; nothing was written") from None
    if config.suite_report:
        _read_suite(Path(config.suite_report), strict=True)


# -- reports -----------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MeasurementError(f"no {what} at {path}") from None
    except (OSError, ValueError) as exc:
        raise MeasurementError(f"the {what} at {path} cannot be read: "
                              f"{one_line(str(exc), 160)}") from None
    if not isinstance(data, dict):
        raise MeasurementError(f"the {what} at {path} is not a JSON object")
    return data


def _read_suite(path: Path, *, strict: bool = False) -> tuple[str, dict[str, Any], str]:
    """The suite's report: (outcome, figures, why). Its ``verdict`` (passed or failed) decides;
    the per-category verdicts are figures."""
    try:
        data = _read_json(path, "suite report")
    except MeasurementError as exc:
        if strict:
            raise ConfigError(str(exc), hint="run the suite first (pytest --source=... "
                              "--target=... writes reports/vmtest.json)") from None
        raise
    verdict = data.get("verdict")
    figures: dict[str, Any] = {"suite": verdict}
    for category, entry in (data.get("verdicts") or {}).items():
        if isinstance(entry, dict):
            figures[f"suite_{category}"] = entry.get("verdict")
    if verdict == "passed":
        return SUCCESSFUL, figures, ""
    if verdict == "failed":
        failed = data.get("failed_checks") or []
        return FAILED, figures, ("the suite's verdict is failed"
                                 + (f" ({', '.join(map(str, failed))})" if failed else ""))
    if strict:
        raise ConfigError(f"{path} holds no suite verdict (passed or failed)",
                          hint="give the JSON report the suite writes (--vmtest-json)")
    return INCONCLUSIVE, figures, f"the suite report at {path} holds no verdict"


def _read_shadow(path: Path) -> tuple[str, dict[str, Any], str]:
    """The shadow figures: a top-level ``status`` of passed, failed or warning (inconclusive),
    or, as ``vmtest shadow --json`` writes it, a ``verdict`` with the check's figures under
    ``check``; the top-level (and the check's) numbers are kept as figures."""
    data = _read_json(path, "shadow report")
    found = data.get("check")
    check: dict[str, Any] = found if isinstance(found, dict) else {}
    status = data.get("status", data.get("verdict", check.get("status")))
    figures: dict[str, Any] = {"shadow": status}
    for source in (check.get("figures") or {}, data):
        if isinstance(source, dict):
            figures.update({f"shadow_{k}": v for k, v in source.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
    summary = next((s for s in (data.get("summary"), check.get("summary"))
                    if isinstance(s, str) and s), "")
    why = f" ({one_line(summary, 160)})" if summary else ""
    if status == "passed":
        return SUCCESSFUL, figures, ""
    if status == "failed":
        return FAILED, figures, f"the shadow experiment failed{why}"
    if status == "warning":
        return INCONCLUSIVE, figures, f"the shadow experiment warned{why}"
    if status == "error":
        raise MeasurementError(f"the shadow experiment at {path} could not run{why}")
    return INCONCLUSIVE, figures, (f"the shadow report at {path} has no status passed, failed "
                                   f"or warning (found {status!r})")


# -- one measurement ---------------------------------------------------------------------------


def measure(config: GateConfig, *, metrics: bool, now: float) -> Measurement:
    """Read every piece of evidence the gate has (metrics only where ``metrics``) and judge
    them into one measurement taken at ``now`` (epoch seconds)."""
    outcomes: list[str] = []
    figures: dict[str, Any] = {}
    reasons: list[str] = []
    if metrics and config.prometheus:
        for condition in config.conditions:
            try:
                values = query_prometheus(config.prometheus, condition.query)
                trials = None if condition.trials_query is None else \
                    query_prometheus(config.prometheus, condition.trials_query)
            except PrometheusError as exc:
                outcomes.append(ERROR)
                reasons.append(f"{condition.name}: {exc}")
                figures[condition.name] = None
                continue
            outcome, figure, why = judge_values(condition, values) if trials is None \
                else judge_counts(condition, values, trials)
            outcomes.append(outcome)
            figures[condition.name] = figure
            if why:
                reasons.append(why)
    for path, reader in ((config.suite_report, _read_suite), (config.shadow_report,
                                                              _read_shadow)):
        if not path:
            continue
        try:
            outcome, found, why = reader(Path(path))
        except MeasurementError as exc:
            outcomes.append(ERROR)
            reasons.append(str(exc))
            continue
        outcomes.append(outcome)
        figures.update(found)
        if why:
            reasons.append(why)
    outcome = next((o for o in _PRECEDENCE if o in outcomes), SUCCESSFUL)
    figures = {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in figures.items()}  # +Inf (a p99 past the last bucket) as text
    return Measurement(outcome, figures, reasons, now)


# -- the gate's decision -----------------------------------------------------------------------


@dataclass
class Tally:
    """The counts of one gate attempt and the decision they lead to (:meth:`decision`)."""

    config: GateConfig
    measurements: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    consecutive_errors: int = 0

    def add(self, outcome: str) -> None:
        if outcome == ERROR:
            self.errors += 1
            self.consecutive_errors += 1
            return
        self.consecutive_errors = 0
        self.measurements += 1
        self.failed += outcome == FAILED
        self.inconclusive += outcome == INCONCLUSIVE

    def decision(self) -> str | None:
        """The gate's outcome once decided, else None (measure again)."""
        c = self.config
        if self.failed > c.failure_limit:
            return FAILED
        if self.consecutive_errors > c.consecutive_error_limit:
            return ERROR
        if self.inconclusive > c.inconclusive_limit:
            return INCONCLUSIVE
        if self.measurements >= c.count:
            return SUCCESSFUL
        return None

    def words(self) -> str:
        return (f"{self.measurements} of {self.config.count} measurements: {self.failed} "
                f"failed (limit {self.config.failure_limit}), {self.inconclusive} "
                f"inconclusive (limit {self.config.inconclusive_limit}), {self.errors} "
                "errors")

    def to_dict(self) -> dict[str, int]:
        return {"measurements": self.measurements, "failed": self.failed,
                "inconclusive": self.inconclusive, "errors": self.errors,
                "consecutive_errors": self.consecutive_errors}
