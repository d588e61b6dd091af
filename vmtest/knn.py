"""Exact nearest neighbours by brute force, chunked so memory stays bounded.

Distances are returned in "smaller is closer" form for every metric: ``l2`` gives the
Euclidean distance, ``cosine`` gives 1 - cosine similarity, ``ip`` gives the negated inner
product, ``l1`` the Manhattan distance.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

#: Rows of the base matrix scored at once (bounds memory to queries x CHUNK floats).
CHUNK = 65536


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return v / norms


def distances(queries: np.ndarray, base: np.ndarray, metric: str) -> np.ndarray:
    """The (len(queries), len(base)) distance matrix for one chunk."""
    q = np.asarray(queries, dtype=np.float32)
    b = np.asarray(base, dtype=np.float32)
    if metric == "cosine":
        return 1.0 - normalise(q) @ normalise(b).T
    if metric == "ip":
        return -(q @ b.T)
    if metric == "l2":
        sq = (q * q).sum(1)[:, None] - 2.0 * (q @ b.T) + (b * b).sum(1)[None, :]
        return np.sqrt(np.maximum(sq, 0.0))
    if metric == "l1":
        return np.abs(q[:, None, :] - b[None, :, :]).sum(-1)
    raise ValueError(f"unknown metric {metric!r}")


def exact_topk(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str, *, chunk: int = CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``base`` and distances of the ``k`` nearest rows to each query."""
    n = len(base)
    k = min(k, n)
    nq = len(queries)
    best_d = np.full((nq, k), np.inf, dtype=np.float64)
    best_i = np.full((nq, k), -1, dtype=np.int64)
    if metric == "l1":
        chunk = max(1, min(chunk, 4096))
    for start in range(0, n, chunk):
        d = distances(queries, base[start : start + chunk], metric).astype(np.float64)
        kk = min(k, d.shape[1])
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        cand_d = np.concatenate([best_d, np.take_along_axis(d, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
        best_d = np.take_along_axis(cand_d, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    return best_i, best_d


def data_digest(base: Any, queries: np.ndarray, k: int, metric: str,
                chunk: int = 65_536) -> str:
    """A digest of everything exact ground truth depends on: every base vector (read in
    chunks, so an on-disk base stays on disk), the queries, k and the metric."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{len(base)}:{k}:{metric}:".encode())
    for start in range(0, len(base), chunk):
        h.update(np.ascontiguousarray(base[start:start + chunk], dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(queries, dtype=np.float32).tobytes())
    return h.hexdigest()


def cached_truth(cache: Path | None, base: Any, queries: np.ndarray, k: int, metric: str
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_topk`, reused from ``cache`` (a folder) when the same data and queries
    were seen before. Reading the digest costs one pass over the vectors; the brute force it
    saves costs len(queries) of them."""
    if cache is None:
        return exact_topk(base, queries, k, metric)
    path = Path(cache) / f"truth-{data_digest(base, queries, k, metric)}.npz"
    if path.exists():
        with np.load(path) as found:
            return found["indices"], found["distances"]
    indices, dist = exact_topk(base, queries, k, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npz")
    np.savez(partial, indices=indices, distances=dist)
    partial.replace(path)  # atomic: a concurrent or interrupted run never reads half a file
    return indices, dist
