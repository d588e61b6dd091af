"""Query latency of two stores, measured the way pytest-benchmark does (a warm-up, then
rounds, a monotonic high-resolution timer), with the two stores interleaved query by query so
a slow moment of the machine hits both sides alike."""

from __future__ import annotations

import time

import numpy as np

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
