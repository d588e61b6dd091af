"""Query latency of two stores: a warm-up, then rounds timed with a monotonic high-resolution
timer, the two stores interleaved query by query so a slow moment of the machine hits both
sides alike; more rounds while the gate's answer is inconclusive.

pytest-benchmark is not used: it times one callable per test and judges its statistics alone,
while this gate needs *paired* timings of two stores (the same query, back to back) and a
confidence interval on their ratio. docs/checks.md says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from vmtest.checks.result import CheckResult
from vmtest.checks.stats import INCONCLUSIVE
from vmtest.stores.base import VectorStore


def measure(
    source: VectorStore,
    target: VectorStore,
    queries: np.ndarray,
    k: int,
    *,
    rounds: int = 3,
    warmup: int = 1,
) -> tuple[list[float], list[float]]:
    """Per-query latencies in milliseconds: (source, target), ``rounds`` x len(queries) each."""
    timer = time.perf_counter
    for _ in range(warmup):
        for q in queries[: max(1, min(len(queries), 10))]:
            source.search(q[None, :], k)
            target.search(q[None, :], k)
    src: list[float] = []
    tgt: list[float] = []
    for _ in range(rounds):
        for q in queries:
            one = q[None, :]
            start = timer()
            source.search(one, k)
            src.append((timer() - start) * 1000)
            start = timer()
            target.search(one, k)
            tgt.append((timer() - start) * 1000)
    return src, tgt


#: Rounds timed before the first decision, added per further step, and the most in all.
FIRST_ROUNDS, MORE_ROUNDS, MAX_ROUNDS = 3, 3, 15
#: Time the latency gate may spend measuring before it answers (inconclusive, if it must).
MAX_SECONDS = 30.0


def measure_until_decided(
    source: VectorStore,
    target: VectorStore,
    queries: np.ndarray,
    k: int,
    judge: Callable[[list[float], list[float]], CheckResult],
    *,
    max_rounds: int = MAX_ROUNDS,
    max_seconds: float = MAX_SECONDS,
) -> CheckResult:
    """Time both stores and let ``judge`` decide; while its answer is inconclusive, time more
    rounds (up to ``max_rounds`` or ``max_seconds``) and ask again. The result says how many
    queries were timed; an answer still inconclusive at the end is a warning, not a failure."""
    started = time.perf_counter()
    src, tgt = measure(source, target, queries, k, rounds=FIRST_ROUNDS)
    rounds = FIRST_ROUNDS
    result = judge(src, tgt)
    while (result.figures.get("decision") == INCONCLUSIVE and rounds < max_rounds
           and time.perf_counter() - started < max_seconds):
        more_src, more_tgt = measure(source, target, queries, k, rounds=MORE_ROUNDS, warmup=0)
        src += more_src
        tgt += more_tgt
        rounds += MORE_ROUNDS
        result = judge(src, tgt)
    result.figures["rounds"] = rounds
    return result
