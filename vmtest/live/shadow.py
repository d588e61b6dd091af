"""Shadow reads: replay an application's logged queries against the source and the target,
and warm the target up before it takes traffic.

The query log is JSON Lines, one object per query::

    {"vector": [0.12, -0.4, ...]}
    {"text": "refund for a late parcel", "filter": {"lang": "en"}, "k": 5, "user": "u-17"}

``vector`` or ``text`` (a text is embedded by an embedder, ``MODULE:CALLABLE``; with both,
the vector is searched and the text names the query), optional ``filter`` (equality on
metadata fields), ``k`` (else the run's k) and ``user``. Other fields (a timestamp, a request
id) are ignored. A line that breaks these rules is a usage error naming its line.

:func:`replay` runs each query three times, in a random order per query: twice on the source
(the control, whose agreement with itself is the noise floor) and once on the target (the
candidate); :func:`vmtest.checks.shadow.check_shadow` judges the outcomes. :func:`warm_up`
replays the most frequent queries against a store, round after round, until its p99 holds
still. Only numpy is needed: not the ``live`` extra.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.checks.result import CheckResult
from vmtest.checks.search import percentiles
from vmtest.checks.shadow import ShadowOutcome, check_shadow
from vmtest.checks.stats import bootstrap_interval
from vmtest.embed import Embedder, load_embedder
from vmtest.errors import ConfigError, one_line
from vmtest.matching import Matching
from vmtest.settings import Settings
from vmtest.side import Side
from vmtest.stores.base import VectorStore

__all__ = ["LoggedQuery", "QueryLog", "WarmUp", "load_query_log", "parse_query_log",
           "replay", "shadow", "warm_up"]

#: The options' defaults, declared once in Settings.
DEFAULTS = Settings()
#: A filter's values: equality on scalars, as VectorStore.search's ``where`` takes them.
SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class LoggedQuery:
    """One line of a query log (its vector is in :attr:`QueryLog.vectors`)."""

    line: int
    vector: tuple[float, ...] | None = None
    text: str | None = None
    filter: dict[str, Any] | None = None
    k: int | None = None
    user: str | None = None

    @property
    def label(self) -> str:
        """How a report names the query: its line, and its text or user when it has them."""
        label = f"line {self.line}"
        if self.text is not None:
            text = self.text if len(self.text) <= 40 else self.text[:37] + "..."
            label += f" {json.dumps(text, ensure_ascii=False)}"
        if self.filter:
            label += " where " + ", ".join(f"{k}={v!r}" for k, v in self.filter.items())
        return label + (f" (user {self.user})" if self.user is not None else "")

    @property
    def identity(self) -> tuple[Any, ...]:
        """Two log lines are the same query when they search the same vector (or text) with
        the same filter and k: what warm-up groups by."""
        what = ("vector", self.vector) if self.vector is not None else ("text", self.text)
        return (*what, json.dumps(self.filter, sort_keys=True, default=str), self.k)


@dataclass
class QueryLog:
    """A parsed query log: the queries in log order, and one vector per query (texts embedded
    once each)."""

    path: Path
    queries: list[LoggedQuery]
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def texts(self) -> list[LoggedQuery]:
        """The queries that need an embedder (a text and no vector)."""
        return [q for q in self.queries if q.vector is None]


def _problem(line: int, item: Any) -> str | LoggedQuery:
    """The query a log line holds, or what is wrong with it."""
    if not isinstance(item, dict):
        return f"line {line} is a JSON {type(item).__name__}, not an object such as " \
               '{"vector": [...]} or {"text": "..."}'
    vector = item.get("vector")
    text = item.get("text")
    if vector is None and text is None:
        return f'line {line} has neither "vector" nor "text"'
    if vector is not None:
        if not isinstance(vector, list) or not vector or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                for x in vector):
            return f'line {line}: "vector" must be a non-empty list of finite numbers'
        vector = tuple(float(x) for x in vector)
    if text is not None and (not isinstance(text, str) or not text.strip()):
        return f'line {line}: "text" must be a non-empty string'
    where = item.get("filter")
    if where is not None:
        if not isinstance(where, dict) or not where:
            return f'line {line}: "filter" must be an object of field: value (equality)'
        bad = [f for f, v in where.items() if not isinstance(v, SCALARS)]
        if bad:
            return (f'line {line}: "filter" field {bad[0]!r} must equal a string, number or '
                    f"boolean, not {json.dumps(where[bad[0]])}")
    k = item.get("k")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        return f'line {line}: "k" must be a whole number >= 1, not {json.dumps(k)}'
    user = item.get("user")
    if user is not None and (isinstance(user, bool) or not isinstance(user, (str, int))):
        return f'line {line}: "user" must be a string or a whole number'
    return LoggedQuery(line=line, vector=vector, text=text, filter=where or None, k=k,
                       user=None if user is None else str(user))


def parse_query_log(path: Path, *, flag: str | None = "--query-log") -> list[LoggedQuery]:
    """The queries of a log file, checked line by line; a bad line raises ConfigError naming
    it (the message begins with ``flag=PATH``, unless ``flag`` is None). Blank lines are
    skipped."""
    path = Path(path)
    where = f"{flag}={path}: " if flag else ""
    if not path.is_file():
        raise ConfigError(f"{where}no such file", hint="a JSON Lines file, one query a line")
    queries: list[LoggedQuery] = []
    dimension: tuple[int, int] | None = None  # (its size, the line that set it)
    try:
        with path.open(encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    item = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{where}line {number} is not JSON ({exc.msg} at "
                                      f"column {exc.colno})") from None
                query = _problem(number, item)
                if isinstance(query, str):
                    raise ConfigError(f"{where}{query}")
                if query.vector is not None:
                    if dimension is None:
                        dimension = (len(query.vector), number)
                    elif len(query.vector) != dimension[0]:
                        raise ConfigError(
                            f"{where}line {number} has a vector of {len(query.vector)} "
                            f"numbers, line {dimension[1]} one of {dimension[0]}")
                queries.append(query)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None
    except OSError as exc:
        raise ConfigError(f"{where}cannot be read ({exc.strerror})") from None
    if not queries:
        raise ConfigError(f"{where}holds no query",
                          hint='one JSON object a line: {"vector": [...]} or {"text": "..."}')
    return queries


def load_query_log(path: Path, embedder: str | Callable[[list[str]], Any] | None = None, *,
                   flag: str = "--query-log", embedder_flag: str = "--embedder") -> QueryLog:
    """Parse a query log and give every query a vector: its own, or its text embedded by
    ``embedder`` (``MODULE:CALLABLE``, or the callable itself; each distinct text once). Text
    queries and no embedder, or embeddings of another dimension than the log's vectors,
    raise ConfigError."""
    queries = parse_query_log(path, flag=flag)
    where = f"{flag}={path}: "
    texts = [q for q in queries if q.vector is None]
    embedded: dict[str, np.ndarray] = {}
    if texts:
        if embedder is None:
            raise ConfigError(
                f"{where}line {texts[0].line}"
                + (f" and {len(texts) - 1} more hold text queries" if len(texts) > 1
                   else " holds a text query") + " but no embedder was given",
                hint=f"add {embedder_flag}=MODULE:CALLABLE (the model that made the source's "
                "vectors, e.g. vmtest.embed:minilm)")
        embed = load_embedder(embedder) if isinstance(embedder, str) else \
            embedder if isinstance(embedder, Embedder) else \
            Embedder(getattr(embedder, "__name__", "the embedder"), embedder)
        distinct = list(dict.fromkeys(str(q.text) for q in texts))
        embedded = dict(zip(distinct, embed(distinct), strict=True))
    logged = next((q for q in queries if q.vector is not None), None)
    made = next(iter(embedded.values()), None)
    if logged is not None and logged.vector is not None and made is not None \
            and len(made) != len(logged.vector):
        raise ConfigError(f"{where}the embedder's vectors have {len(made)} dimensions and "
                          f"the logged vectors (line {logged.line}) {len(logged.vector)}",
                          hint="embed with the model that made the logged vectors")
    vectors = np.asarray([q.vector if q.vector is not None else embedded[str(q.text)]
                          for q in queries], dtype=np.float32)
    return QueryLog(Path(path), queries, vectors)


# -- replaying ---------------------------------------------------------------------------------

def _timed(side: Side, vector: np.ndarray, k: int, where: dict[str, Any] | None
           ) -> tuple[list[str] | None, float, str | None]:
    """One search as record keys, its duration in ms (the store's call alone) and its error:
    a search that raises is an answer of its own, never the end of the run."""
    start = time.perf_counter()
    try:
        rows = side.store.search(vector[None, :], k, where=where)
    except Exception as exc:
        return None, (time.perf_counter() - start) * 1000, \
            one_line(f"{type(exc).__name__}: {exc}", 200)
    elapsed = (time.perf_counter() - start) * 1000
    return side.keys_of(rows[:1])[0] if rows else [], elapsed, None


def replay(source: Side, target: Side, log: QueryLog, *, k: int, seed: int = 0,
           measure_distances: bool = True,
           progress: Callable[[int], Any] | None = None) -> list[ShadowOutcome]:
    """Each logged query three times: twice on the source, once on the target, the three
    calls in a random order per query (seeded), so a slow moment of the machine or a cache
    warmed by the previous call favours no side. The two source runs are told apart by time:
    ``control`` is the first. With ``measure_distances`` the mean distance of each run's hits
    to the query is taken with the source's vectors and metric (VectorStore.search returns
    ids only, so the stores' own scores are not compared)."""
    for side in (source, target):
        dimension = side.inventory.dimension
        if dimension is not None and log.dimension and dimension != log.dimension:
            raise ConfigError(f"the query log's vectors have {log.dimension} dimensions and "
                              f"the {side.name}'s {dimension}",
                              hint="log the vectors the source is searched with (or embed "
                              "the texts with the source's model)")
    for side in (source, target):
        side.key_by_native_id  # noqa: B018 - each store read once before any call is timed
    rng = random.Random(seed)
    outcomes: list[ShadowOutcome] = []
    for i, query in enumerate(log.queries):
        vector = log.vectors[i]
        kk = query.k or k
        position = rng.randrange(3)  # where the candidate's call falls among the three
        runs: list[tuple[list[str] | None, float, str | None]] = []
        candidate: tuple[list[str] | None, float, str | None] = (None, 0.0, None)
        for slot in range(3):
            if slot == position:
                candidate = _timed(target, vector, kk, query.filter)
            else:
                runs.append(_timed(source, vector, kk, query.filter))
        (control, control_ms, control_error), (again, again_ms, again_error) = runs
        outcomes.append(ShadowOutcome(
            label=query.label, k=kk, control=control, control_again=again,
            candidate=candidate[0], control_ms=control_ms, control_again_ms=again_ms,
            candidate_ms=candidate[1], control_error=control_error,
            control_again_error=again_error, candidate_error=candidate[2]))
        if progress is not None:
            progress(1)
    if measure_distances:
        _measure_distances(source, log, outcomes)
    return outcomes


def _measure_distances(source: Side, log: QueryLog, outcomes: list[ShadowOutcome]) -> None:
    """The mean distance of each run's hits to its query, with the source's vectors (read
    once for every key any run returned) and metric; hits the source does not hold are left
    out."""
    from vmtest.knn import distances

    metric = source.inventory.metric or "l2"
    index = source.snapshot.first_index()
    wanted = sorted({index[key] for o in outcomes
                     for keys in (o.control, o.control_again, o.candidate) if keys
                     for key in keys if key in index})
    if not wanted:
        return
    vectors = source.vectors_at(wanted)
    row_of = {row: i for i, row in enumerate(wanted)}
    for query_vector, outcome in zip(log.vectors, outcomes, strict=True):
        for name in ("control", "control_again", "candidate"):
            keys = getattr(outcome, name)
            rows = [row_of[index[key]] for key in keys or () if key in index]
            if rows:
                found = distances(query_vector[None, :], vectors[rows], metric)[0]
                setattr(outcome, f"{name}_distance", float(np.mean(found)))


def shadow(source: VectorStore, target: VectorStore, log: QueryLog, *, k: int = DEFAULTS.k,
           tolerance: float = DEFAULTS.shadow_tolerance,
           max_error_rate: float = DEFAULTS.shadow_max_error_rate,
           confidence: float = DEFAULTS.confidence, seed: int = DEFAULTS.seed,
           matching: Matching | None = None, batch_size: int = DEFAULTS.batch_size,
           progress: Callable[[int], Any] | None = None) -> CheckResult:
    """Replay the log on two opened stores and judge it (the ``vmtest shadow`` command): each
    store is read once, ids and metadata only, to know every record's key (``matching``: the
    suite's rules, ``original_id`` and ``__id__`` recognised)."""
    matching = matching or Matching()
    sides = [Side(store, matching, name=name, batch_size=batch_size, with_vectors=False)
             for store, name in ((source, "source"), (target, "target"))]
    try:
        outcomes = replay(sides[0], sides[1], log, k=k, seed=seed, progress=progress)
    finally:
        for side in sides:
            side.close()
    return check_shadow(outcomes, k=k, tolerance=tolerance, max_error_rate=max_error_rate,
                        confidence=confidence, seed=seed)


# -- warming up --------------------------------------------------------------------------------

#: Warm-up: how many of the most frequent distinct queries a round replays, the fewest calls
#: a round makes (a p99 needs some), the rounds before stability is judged (the first is the
#: cold one and never a reference), and the bounds.
WARM_TOP, WARM_MIN_CALLS, WARM_MIN_ROUNDS = 100, 50, 3
WARM_MAX_ROUNDS, WARM_MAX_SECONDS = 20, 60.0


@dataclass
class WarmUp:
    """What a warm-up did: each round's timings (ms), whether the p99 held still, and why it
    stopped."""

    rounds_ms: list[list[float]]
    stable: bool
    reason: str
    seconds: float
    distinct: int
    errors: int = 0

    @property
    def rounds(self) -> int:
        return len(self.rounds_ms)

    @property
    def p99s(self) -> list[float]:
        return [percentiles(r)["p99_ms"] for r in self.rounds_ms]

    @property
    def cold_p99_ms(self) -> float:
        return self.p99s[0] if self.rounds_ms else 0.0

    @property
    def warm_p99_ms(self) -> float:
        return self.p99s[-1] if self.rounds_ms else 0.0

    def line(self) -> str:
        state = "stable" if self.stable else "not stable"
        calls = len(self.rounds_ms[0]) if self.rounds_ms else 0
        return (f"warm-up: cold p99 {self.cold_p99_ms:.2f} ms, warm p99 {self.warm_p99_ms:.2f} "
                f"ms after {self.rounds} rounds of {calls} calls ({self.distinct} distinct "
                f"queries, {self.seconds:.1f} s); {state}: {self.reason}")

    def to_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "stable": self.stable, "reason": self.reason,
                "seconds": round(self.seconds, 3), "distinct_queries": self.distinct,
                "errors": self.errors, "cold_p99_ms": self.cold_p99_ms,
                "warm_p99_ms": self.warm_p99_ms, "p99_ms_by_round": self.p99s}


def most_frequent(log: QueryLog, top: int = WARM_TOP) -> list[int]:
    """The positions (one per distinct query) of the ``top`` most frequent queries of the
    log, most frequent first; ties in log order."""
    counts: Counter[tuple[Any, ...]] = Counter()
    first: dict[tuple[Any, ...], int] = {}
    for i, query in enumerate(log.queries):
        counts[query.identity] += 1
        first.setdefault(query.identity, i)
    ranked = sorted(first, key=lambda ident: (-counts[ident], first[ident]))
    return [first[ident] for ident in ranked[:top]]


def p99_interval(timings_ms: list[float], *, confidence: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """A percentile-bootstrap interval on the p99 of one round's timings."""
    samples = np.asarray(timings_ms, dtype=np.float64)
    return bootstrap_interval(lambda idx: np.percentile(samples[idx], 99, axis=1),
                              len(samples), confidence=confidence, seed=seed)


def warm_up(store: VectorStore, log: QueryLog, *, k: int, top: int = WARM_TOP,
            min_calls: int = WARM_MIN_CALLS, max_rounds: int = WARM_MAX_ROUNDS,
            max_seconds: float = WARM_MAX_SECONDS, confidence: float = 0.95, seed: int = 0,
            timer: Callable[[], float] = time.perf_counter) -> WarmUp:
    """Replay the ``top`` most frequent logged queries against ``store``, round after round,
    until its p99 latency holds still.

    A round calls the chosen queries in turn (most frequent first, cycling until at least
    ``min_calls`` calls). Round 1 is the cold one. From round 3 on, the p99 is **stable**
    when this round's p99 lies within the percentile-bootstrap interval (``confidence``) of
    the previous round's p99: one more round would not tell them apart. Otherwise it goes on,
    up to ``max_rounds`` rounds or ``max_seconds`` (checked between rounds: a round begun is
    finished). A search that raises is counted and timed like any other."""
    chosen = most_frequent(log, top)
    calls = [chosen[i % len(chosen)] for i in range(max(len(chosen), min_calls))]
    started = timer()
    rounds: list[list[float]] = []
    errors = 0
    while True:
        timings: list[float] = []
        for position in calls:
            query = log.queries[position]
            start = timer()
            try:
                store.search(log.vectors[position][None, :], query.k or k, where=query.filter)
            except Exception:
                errors += 1
            timings.append((timer() - start) * 1000)
        rounds.append(timings)
        elapsed = timer() - started
        if len(rounds) >= WARM_MIN_ROUNDS:
            low, high = p99_interval(rounds[-2], confidence=confidence, seed=seed + len(rounds))
            p99 = percentiles(timings)["p99_ms"]
            if low <= p99 <= high:
                return WarmUp(rounds, True, f"round {len(rounds)}'s p99 {p99:.2f} ms lies "
                              f"within the {confidence:.0%} interval of round "
                              f"{len(rounds) - 1}'s ({low:.2f}-{high:.2f} ms)", elapsed,
                              len(chosen), errors)
        if len(rounds) >= max_rounds:
            return WarmUp(rounds, False, f"stopped at the most rounds ({max_rounds})",
                          elapsed, len(chosen), errors)
        if elapsed >= max_seconds:
            return WarmUp(rounds, False, f"stopped at the time bound ({max_seconds:g} s)",
                          elapsed, len(chosen), errors)


def summary_lines(result: CheckResult) -> list[str]:
    """The figures of a shadow check as a person reads them in a terminal."""
    f = result.figures
    k = f.get("k")

    def show(value: Any, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        (f"overlap@{k}", f"control vs control {show(f.get('overlap_noise_floor'))} (noise "
         f"floor), control vs candidate {show(f.get('overlap'))}, drop "
         f"{show(f.get('overlap_drop'))} (CI {show(f.get('overlap_drop_ci_low'))}-"
         f"{show(f.get('overlap_drop_ci_high'))})"),
        ("RBO (p=0.9)", f"control vs control {show(f.get('rbo_noise_floor'))}, control vs "
         f"candidate {show(f.get('rbo'))}"),
        ("hit distance", f"candidate - control {show(f.get('distance_delta'), '+.4f')} "
         f"(control vs control {show(f.get('distance_delta_noise'), '+.4f')}; the source's "
         "vectors and metric)"),
        ("errors", f"source {f.get('source_errors')}, target {f.get('candidate_errors')}"),
        ("latency ms", f"source p50 {show(f.get('source_p50_ms'), '.2f')} p95 "
         f"{show(f.get('source_p95_ms'), '.2f')} p99 {show(f.get('source_p99_ms'), '.2f')}; "
         f"target p50 {show(f.get('target_p50_ms'), '.2f')} p95 "
         f"{show(f.get('target_p95_ms'), '.2f')} p99 {show(f.get('target_p99_ms'), '.2f')}"),
    ]
    lines = [f"shadow reads: {f.get('queries')} logged queries, {f.get('compared')} compared, "
             f"k={k}"]
    lines += [f"  {label:<14} {text}" for label, text in rows]
    if result.offenders:
        lines.append("  worst queries:")
        lines += [f"    {o.id}: {o.detail}" for o in result.offenders[:10]]
    lines += [f"  warning: {w}" for w in result.warnings]
    return lines


def verdict_line(result: CheckResult) -> str:
    """SHADOW READS: PASSED / PASSED WITH A WARNING / FAILED, and why."""
    status = {"passed": "PASSED", "warning": "PASSED WITH A WARNING",
              "failed": "FAILED"}.get(result.status, result.status.upper())
    return f"SHADOW READS: {status} - {result.summary}"


def document(result: CheckResult, warm: WarmUp | None, *, source: str, target: str,
             query_log: Path) -> dict[str, Any]:
    """What ``vmtest shadow --json`` writes."""
    return {"kind": "vmtest-shadow", "source": source, "target": target,
            "query_log": str(query_log), "verdict": result.status,
            "check": result.to_dict(), "warm_up": warm.to_dict() if warm else None}

