"""Example data that behaves like real embeddings.

Random Gaussian vectors in high dimension have no neighbourhood structure (every ANN engine
returns recall@10 near 0.1 on them), so a recall gate would be meaningless. :func:`clustered`
draws points around a few hundred centres with a spread that makes nearest neighbours
meaningful, and attaches metadata of every type a store may keep and a document per record.
"""

from __future__ import annotations

import numpy as np

from vmtest.stores.base import RecordBatch

TOPICS = ("billing", "shipping", "returns", "accounts", "security", "api", "pricing", "support")
WORDS = ("order", "invoice", "parcel", "refund", "login", "token", "plan", "ticket", "delay",
         "card", "address", "upgrade", "limit", "report", "export", "quota")


def clustered(
    n: int, dimension: int, *, seed: int = 0, clusters: int | None = None, spread: float = 0.35,
    id_prefix: str = "doc-",
) -> RecordBatch:
    """``n`` records of unit-norm clustered vectors (float32) with typed metadata and
    documents. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    k = clusters or max(2, min(256, n // 20))
    centres = rng.normal(size=(k, dimension)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    assignment = rng.integers(0, k, size=n)
    noise = rng.normal(size=(n, dimension)).astype(np.float32) * (spread / np.sqrt(dimension))
    vectors = centres[assignment] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{id_prefix}{i:06d}" for i in range(n)]
    metadatas = []
    documents: list[str | None] = []
    for i in range(n):
        topic = TOPICS[int(assignment[i]) % len(TOPICS)]
        words = rng.choice(WORDS, size=6)
        metadatas.append({
            "topic": topic,
            "cluster": int(assignment[i]),
            "score": round(float(rng.random()), 6),
            "published": bool(i % 3 == 0),
            "year": 2015 + int(i % 10),
            "lang": "en" if i % 5 else "de",
        })
        documents.append(f"{topic}: " + " ".join(str(w) for w in words) + f" (#{i})")
    return RecordBatch(ids=list(ids), vectors=vectors.astype(np.float32), metadatas=metadatas,
                       documents=documents)
