"""The search comparison: the same queries on both stores, scored against exact ground truth.

Queries come from ``--vmtest-query-file`` or a seeded sample of the source's own vectors; the
ground truth is a brute-force top-k over the source's vectors (:mod:`vmtest.knn`), cached on
disk by content.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from vmtest.checks.search import QueryOutcome, score_queries
from vmtest.errors import ConfigError
from vmtest.knn import cached_truth
from vmtest.queries import load_query_file
from vmtest.settings import Settings
from vmtest.side import Side, by_key


@dataclass
class QuerySet:
    labels: list[str]
    vectors: np.ndarray


class SearchComparison:
    """Queries, filter values and each query's outcome on two sides."""

    def __init__(self, source: Side, target: Side, settings: Settings) -> None:
        self.source = source
        self.target = target
        self.settings = settings

    @property
    def metric(self) -> str:
        """The source's metric: ground truth is computed under it."""
        metric = self.source.inventory.metric
        if metric is None:
            raise ConfigError(
                f"the source {self.source.store.uri} does not say its metric, so exact "
                "ground truth cannot be computed",
                hint="give it in the URI: ?metric=cosine (or l2, ip)",
            )
        return metric

    @cached_property
    def queries(self) -> QuerySet:
        """The query vectors: from --vmtest-query-file, else a seeded sample of the source's
        own."""
        dimension = self.source.inventory.dimension
        if self.settings.query_file is not None:
            vectors = load_query_file(self.settings.query_file)
            if dimension is not None and vectors.shape[1] != dimension:
                raise ConfigError(
                    f"--vmtest-query-file={self.settings.query_file} holds {vectors.shape[1]}-"
                    f"dimensional vectors; the source has {dimension}",
                )
            return QuerySet([f"query {i}" for i in range(len(vectors))], vectors)
        snap = self.source.snapshot
        rng = random.Random(self.settings.seed + 1)
        rows = sorted(rng.sample(by_key(snap.keys), min(self.settings.queries, len(snap))))
        return QuerySet([snap.keys[r] for r in rows], self.source.vectors[rows])

    def filter_values(self, field: str, limit: int = 5) -> list[object]:
        """The most common scalar values of a metadata field in the source."""
        counts: dict[object, int] = {}
        for meta in self.source.snapshot.metadatas:
            value = meta.get(field)
            if isinstance(value, (str, int, float, bool)):
                counts[value] = counts.get(value, 0) + 1
        if not counts:
            raise ConfigError(f"--vmtest-filter-field={field}: no source record has a scalar "
                              f"value in {field!r}")
        return sorted(counts, key=lambda v: (-counts[v], str(v)))[:limit]

    def outcomes(self, where: dict | None = None,
                 queries: QuerySet | None = None) -> list[QueryOutcome]:
        """Each query run on both stores, scored against exact ground truth (over the source
        records that satisfy ``where``)."""
        qs = queries or self.queries
        metric = self.metric
        snap, base = self.source.snapshot, self.source.vectors
        rows = np.arange(len(snap))
        if where:
            rows = np.array([i for i, m in enumerate(snap.metadatas)
                             if all(m.get(f) == v for f, v in where.items())], dtype=np.int64)
        if not len(rows) or not len(qs.labels):
            return []
        subset = base if where is None else base[rows]
        k = self.settings.k
        idx, dist = cached_truth(self.settings.truth_cache, subset, qs.vectors, k, metric)
        truth = [[snap.keys[rows[j]] for j in row if j >= 0] for row in idx]
        kth = np.array([d[len(t) - 1] if t else 0.0 for d, t in zip(dist, truth, strict=True)])
        return score_queries(
            qs.labels, qs.vectors, truth, kth,
            self.source.hits(qs.vectors, k, where), self.target.hits(qs.vectors, k, where),
            k, snap.first_index(), base, metric,
        )
