"""Shadow experiments for vector search, in the spirit of GitHub's Scientist.

Wrap an application's search call: the control (the source store's search) always runs and
its result, or its exception, is what the caller gets; on a sampled share of calls the
candidate (the target store's search) runs too, in random order with the control, both timed.
A candidate's exception is recorded, never raised. The two results are compared (by default:
the overlap of the hit ids at k, and the mean score change of the ids both returned); a
mismatch is published as one JSON line to a sink, and everything is counted in Prometheus
metrics::

    experiment = Experiment("search", control=old.search, candidate=new.search, share=0.1,
                            sink="reports/shadow.jsonl")
    hits = experiment.run(queries, 10)   # always old.search(queries, 10)

The candidate runs in the caller's thread: a sampled call takes as long as both searches.
When the control raises, the candidate still runs (its latency is recorded) but nothing is
compared: an outage of the source is not a difference between the stores.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from typing import IO, Any, Generic, TypeVar, cast

from vmtest.errors import ConfigError
from vmtest.live import need

__all__ = ["DEFAULT_THRESHOLD", "Comparison", "Experiment", "Observation", "compare_hits"]

T = TypeVar("T")
logger = logging.getLogger("vmtest.live")

#: A run is a mismatch when a query's overlap is below this: 1.0, any difference in the ids
#: returned (their order is not compared). Pass ``threshold=0.9`` to accept one id in ten.
DEFAULT_THRESHOLD = 1.0
#: Latency histogram buckets in seconds: embedded stores answer in well under a millisecond,
#: servers in a few; the default Prometheus buckets start at 5 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)


@dataclass
class Observation(Generic[T]):
    """One behaviour's outcome in one run: its value or its exception, and its duration."""

    name: str
    duration_s: float
    value: T | None = None
    exception: Exception | None = None

    def result(self) -> T:
        """The value, or raise the exception the behaviour raised."""
        if self.exception is not None:
            raise self.exception
        return self.value  # type: ignore[return-value]


@dataclass
class Comparison:
    """How far a candidate's result is from the control's.

    ``overlap`` is in [0, 1] (1: the same ids); ``score_delta`` is the mean absolute score
    change of the ids both returned (None when the hits carry no scores); ``queries`` has one
    entry per query of a batch: its index, overlap, score_delta and both sides' ids.
    """

    overlap: float
    score_delta: float | None = None
    queries: list[dict[str, Any]] = field(default_factory=list)


def _is_batch(result: Any) -> bool:
    return isinstance(result, list) and bool(result) and all(isinstance(r, list) for r in result)


def _hits(result: Any) -> list[list[Any]]:
    """A search result as one hit list per query: a list of lists is a batch (what
    VectorStore.search returns); any other sequence is the hits of one query."""
    if result is None:
        return []
    if hasattr(result, "tolist"):  # a numpy array of ids, one row per query
        result = result.tolist()
    if _is_batch(result):
        return list(result)
    if isinstance(result, (str, bytes)) or not isinstance(result, Sequence):
        raise TypeError(f"a search result is a list of hits, not {type(result).__name__}")
    return [list(result)]


def _hit(hit: Any) -> tuple[Any, float | None]:
    """(id, score) of one hit: an id; an (id, score) tuple; a mapping with "id" (and
    "score"); or an object with .id (and .score), as clients' scored points have."""
    if isinstance(hit, tuple) and len(hit) == 2 and _is_number(hit[1]):
        return hit[0], _score(hit[1])
    if isinstance(hit, Mapping):
        return hit["id"], _score(hit.get("score"))
    if not isinstance(hit, (str, bytes, int)) and hasattr(hit, "id"):
        return hit.id, _score(getattr(hit, "score", None))
    return hit, None


def _is_number(value: Any) -> bool:
    """A real number (numpy's too), not a bool."""
    return not isinstance(value, (bool, str, bytes)) and hasattr(value, "__float__")


def _score(value: Any) -> float | None:
    """A hit's score as a float; None when it has none, or a NaN or infinite one."""
    if not _is_number(value):
        return None
    score = float(value)
    return score if math.isfinite(score) else None


def _key(record_id: Any) -> Any:
    """An id as a hashable key that numpy integers and Python ints share."""
    try:
        return int(record_id) if hasattr(record_id, "__index__") else record_id
    except TypeError:
        return record_id


def compare_hits(control: Any, candidate: Any) -> Comparison:
    """The default comparison of two search results: per query, overlap@k
    ``|ids_c ∩ ids_t| / k`` with k the longer of the two hit lists (a query both sides answer
    with nothing overlaps fully), and the mean absolute score delta of the shared ids when the
    hits carry scores. The run's overlap is the mean over its queries."""
    rows: list[dict[str, Any]] = []
    deltas: list[float] = []
    nothing: list[Any] = []
    for index, (c_hits, t_hits) in enumerate(zip_longest(_hits(control), _hits(candidate),
                                                          fillvalue=nothing)):
        c = [_hit(h) for h in c_hits]
        t = [_hit(h) for h in t_hits]
        c_scores = {_key(i): s for i, s in c}
        t_scores = {_key(i): s for i, s in t}
        k = max(len(c_scores), len(t_scores))
        shared = c_scores.keys() & t_scores.keys()
        overlap = len(shared) / k if k else 1.0
        query_deltas = [abs(c_scores[i] - t_scores[i]) for i in shared  # type: ignore[operator]
                        if c_scores[i] is not None and t_scores[i] is not None]
        deltas.extend(query_deltas)
        rows.append({
            "query": index,
            "overlap": overlap,
            "score_delta": sum(query_deltas) / len(query_deltas) if query_deltas else None,
            "control": [i for i, _ in c],
            "candidate": [i for i, _ in t],
        })
    overlap = sum(r["overlap"] for r in rows) / len(rows) if rows else 1.0
    return Comparison(overlap, sum(deltas) / len(deltas) if deltas else None, rows)


def _as_comparison(value: Any) -> Comparison:
    """What a compare function returned, as a Comparison: a Comparison, a bool (True: the
    same) or a number (the overlap)."""
    if isinstance(value, Comparison):
        return value
    if isinstance(value, bool):
        return Comparison(1.0 if value else 0.0)
    if _is_number(value):
        return Comparison(float(value))
    raise TypeError(f"a compare function returns a Comparison, a bool or a number, not "
                    f"{type(value).__name__}")


class _Metrics:
    """The experiment metrics of one Prometheus registry, shared by every Experiment that
    counts into it (labelled by experiment name); a registry refuses a name twice."""

    _by_registry: weakref.WeakKeyDictionary[Any, _Metrics] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, registry: Any) -> None:
        prom = need("prometheus_client", "experiment metrics (vmtest.live.experiment)")
        label = ["experiment"]
        self.runs = prom.Counter(
            "vmtest_experiment_runs", "Calls of the experiment (the control runs on each).",
            label, registry=registry)
        self.candidate_runs = prom.Counter(
            "vmtest_experiment_candidate_runs", "Calls on which the candidate ran too.",
            label, registry=registry)
        self.mismatches = prom.Counter(
            "vmtest_experiment_mismatches", "Calls whose candidate result differed from the "
            "control's (overlap below the threshold).", label, registry=registry)
        self.candidate_errors = prom.Counter(
            "vmtest_experiment_candidate_errors", "Calls on which the candidate raised.",
            label, registry=registry)
        self.control_seconds = prom.Histogram(
            "vmtest_experiment_control_seconds", "Duration of the control, in seconds.",
            label, registry=registry, buckets=LATENCY_BUCKETS)
        self.candidate_seconds = prom.Histogram(
            "vmtest_experiment_candidate_seconds", "Duration of the candidate, in seconds.",
            label, registry=registry, buckets=LATENCY_BUCKETS)

    def start(self, name: str) -> None:
        """Create the experiment's series at 0, so that a dashboard's rate() sees the first
        mismatch or error as a change rather than as a series appearing."""
        for metric in (self.runs, self.candidate_runs, self.mismatches, self.candidate_errors,
                       self.control_seconds, self.candidate_seconds):
            metric.labels(name)

    @classmethod
    def of(cls, registry: Any) -> _Metrics:
        with cls._lock:
            metrics = cls._by_registry.get(registry)
            if metrics is None:
                metrics = cls._by_registry[registry] = cls(registry)
            return metrics


Sink = str | os.PathLike[str] | IO[str] | Callable[[str], Any]


class Experiment(Generic[T]):
    """A shadow experiment: ``run(*args, **kwargs)`` calls ``control`` and returns its
    result; on a ``share`` of calls (sampled with ``seed``) it calls ``candidate`` too.

    ``compare(control_value, candidate_value)`` returns a :class:`Comparison`, a bool or an
    overlap (default :func:`compare_hits`); a run whose overlap (for a batch: any query's) is
    below ``threshold`` is a mismatch. ``sink`` receives one JSON line per mismatch and per
    candidate error: a path (appended to and flushed), a text stream, or a callable given the
    line. ``metrics``: True counts into a new Prometheus CollectorRegistry
    (``experiment.registry``), a registry counts into that one, False counts nowhere.
    """

    def __init__(self, name: str, control: Callable[..., T], candidate: Callable[..., Any], *,
                 share: float = 1.0, compare: Callable[[Any, Any], Any] | None = None,
                 threshold: float = DEFAULT_THRESHOLD, sink: Sink | None = None,
                 metrics: Any = True, seed: int | None = None) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError(f"an experiment needs a name, not {name!r}",
                              hint="name it after the call it shadows, e.g. 'search'")
        for what, value in (("share", share), ("threshold", threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                    math.isfinite(value) and 0 <= value <= 1):
                raise ConfigError(f"an experiment's {what} is a number from 0 to 1, not "
                                  f"{value!r}", hint="e.g. share=0.1 runs the candidate on "
                                  "one call in ten")
        self.name = name
        self.control = control
        self.candidate = candidate
        self.share = float(share)
        self.compare: Callable[[Any, Any], Any] = compare or compare_hits
        self.threshold = float(threshold)
        self.sink = sink
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sink_lock = threading.Lock()
        self.registry: Any = None
        self._metrics: _Metrics | None = None
        if metrics is not False and metrics is not None:
            if metrics is True:
                prom = need("prometheus_client", "experiment metrics (vmtest.live.experiment)")
                metrics = prom.CollectorRegistry()
            self.registry = metrics
            self._metrics = _Metrics.of(metrics)
            self._metrics.start(name)
        self._counts = dict.fromkeys(
            ("runs", "candidate_runs", "compared", "mismatches", "candidate_errors",
             "control_errors", "compare_errors", "publish_errors"), 0)
        self._overlap_sum = 0.0
        self._delta_sum = 0.0
        self._delta_n = 0
        self._control_s = 0.0
        self._candidate_s = 0.0

    # -- running ---------------------------------------------------------------------------

    def run(self, *args: Any, **kwargs: Any) -> T:
        """Call the control (and, if sampled, the candidate) with these arguments; return the
        control's result or raise its exception."""
        with self._lock:
            self._counts["runs"] += 1
            run = self._counts["runs"]
            sampled = self.share > 0 and self._rng.random() < self.share
            candidate_first = sampled and self._rng.random() < 0.5
        if self._metrics:
            self._metrics.runs.labels(self.name).inc()
        if not sampled:
            control = self._observe("control", self.control, args, kwargs)
            self._account(control, None)
            return control.result()
        if candidate_first:
            candidate = self._observe("candidate", self.candidate, args, kwargs)
            control = self._observe("control", self.control, args, kwargs)
        else:
            control = self._observe("control", self.control, args, kwargs)
            candidate = self._observe("candidate", self.candidate, args, kwargs)
        self._account(control, candidate)
        self._judge(run, control, candidate, candidate_first)
        return control.result()

    __call__ = run

    @staticmethod
    def _observe(name: str, behaviour: Callable[..., Any], args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Observation[Any]:
        start = time.perf_counter()
        try:
            value = behaviour(*args, **kwargs)
        except Exception as exc:  # recorded: the control's is raised again by run()
            return Observation(name, time.perf_counter() - start, exception=exc)
        return Observation(name, time.perf_counter() - start, value=value)

    def _account(self, control: Observation[Any], candidate: Observation[Any] | None) -> None:
        with self._lock:
            self._control_s += control.duration_s
            self._counts["control_errors"] += control.exception is not None
            if candidate is not None:
                self._counts["candidate_runs"] += 1
                self._candidate_s += candidate.duration_s
                self._counts["candidate_errors"] += candidate.exception is not None
        if self._metrics:
            self._metrics.control_seconds.labels(self.name).observe(control.duration_s)
            if candidate is not None:
                self._metrics.candidate_runs.labels(self.name).inc()
                self._metrics.candidate_seconds.labels(self.name).observe(candidate.duration_s)
                if candidate.exception is not None:
                    self._metrics.candidate_errors.labels(self.name).inc()

    def _judge(self, run: int, control: Observation[Any], candidate: Observation[Any],
               candidate_first: bool) -> None:
        line: dict[str, Any] = {
            "experiment": self.name, "run": run,
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            "control_s": control.duration_s, "candidate_s": candidate.duration_s,
            "candidate_first": candidate_first,
        }
        if candidate.exception is not None:
            self._publish({"event": "candidate_error", **line, **_error(candidate.exception)})
            return
        if control.exception is not None:
            return
        try:
            comparison = _as_comparison(self.compare(control.value, candidate.value))
        except Exception as exc:  # a faulty compare must not break the caller's call
            with self._lock:
                self._counts["compare_errors"] += 1
            self._publish({"event": "compare_error", **line, **_error(exc)})
            return
        below = [q for q in comparison.queries if q["overlap"] < self.threshold]
        mismatch = comparison.overlap < self.threshold or bool(below)
        with self._lock:
            self._counts["compared"] += 1
            self._counts["mismatches"] += mismatch
            self._overlap_sum += comparison.overlap
            if comparison.score_delta is not None:
                self._delta_sum += comparison.score_delta
                self._delta_n += 1
        if not mismatch:
            return
        if self._metrics:
            self._metrics.mismatches.labels(self.name).inc()
        self._publish({"event": "mismatch", **line, "overlap": comparison.overlap,
                       "score_delta": comparison.score_delta, "threshold": self.threshold,
                       "queries": below})

    # -- publishing ------------------------------------------------------------------------

    def _publish(self, record: dict[str, Any]) -> None:
        """One JSON line to the sink, flushed. A sink that fails is counted and logged, never
        raised: the experiment must not break the call it shadows."""
        if self.sink is None:
            return
        try:
            text = json.dumps(record, default=_jsonable, allow_nan=False)
            with self._sink_lock:
                if isinstance(self.sink, (str, os.PathLike)):
                    with open(self.sink, "a", encoding="utf-8") as handle:
                        handle.write(text + "\n")
                        handle.flush()
                elif hasattr(self.sink, "write"):
                    stream = cast(IO[str], self.sink)
                    stream.write(text + "\n")
                    stream.flush()
                else:
                    cast(Callable[[str], Any], self.sink)(text)
        except Exception as exc:
            with self._lock:
                self._counts["publish_errors"] += 1
            logger.warning("experiment %s could not publish to its sink: %s", self.name, exc)

    # -- results ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """The counts so far, the mean overlap and score delta of the compared runs, the mean
        durations, and the mismatch rate with its exact 95% interval (Clopper-Pearson)."""
        from vmtest.checks.stats import clopper_pearson_interval

        with self._lock:
            counts = dict(self._counts)
            overlap_sum, delta_sum, delta_n = self._overlap_sum, self._delta_sum, self._delta_n
            control_s, candidate_s = self._control_s, self._candidate_s
        compared = counts["compared"]
        return {
            "experiment": self.name,
            "share": self.share,
            "threshold": self.threshold,
            **counts,
            "overlap_mean": overlap_sum / compared if compared else None,
            "score_delta_mean": delta_sum / delta_n if delta_n else None,
            "mismatch_rate": counts["mismatches"] / compared if compared else None,
            "mismatch_rate_interval": (list(clopper_pearson_interval(counts["mismatches"],
                                                                     compared))
                                       if compared else None),
            "control_seconds_mean": control_s / counts["runs"] if counts["runs"] else None,
            "candidate_seconds_mean": (candidate_s / counts["candidate_runs"]
                                       if counts["candidate_runs"] else None),
        }


def _error(exc: BaseException) -> dict[str, str]:
    return {"error_type": type(exc).__name__, "error": str(exc)[:400]}


def _jsonable(value: Any) -> Any:
    """Ids and scores as JSON: numpy integers and floats as numbers, anything else as text."""
    if hasattr(value, "__index__"):
        return int(value)
    if hasattr(value, "__float__"):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)
