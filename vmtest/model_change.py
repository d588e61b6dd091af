"""After a declared model change (--vmtest-source-model != --vmtest-target-model): the
target's vectors are checked against its documents' embeddings by the new model, and search
quality by known-item queries with each model. Reads from a Comparison; computes nothing the
record-by-record checks need."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

from vmtest.checks.reembed import KnownItem, known_item_query
from vmtest.checks.search import recall_at_k
from vmtest.embed import Embedder
from vmtest.knn import exact_topk
from vmtest.side import by_key

if TYPE_CHECKING:
    from vmtest.compare import Comparison


class ModelChange:
    """The two reads a model change needs, over the comparison's matched records."""

    def __init__(self, comparison: Comparison) -> None:
        self.comparison = comparison

    def _matched_sample(self, n: int, seed_offset: int) -> list[int]:
        """Positions (in the alignment) of up to n matched records with a document."""
        c = self.comparison
        al = c.alignment
        documents = c.source.documents
        with_doc = [i for i in by_key(al.keys) if documents[al.source_idx[i]]]
        rng = random.Random(c.settings.seed + seed_offset)
        return sorted(rng.sample(with_doc, min(n, len(with_doc))))

    def reembedded_vectors(self, embedder: Embedder) -> tuple[list[str], np.ndarray,
                                                             np.ndarray, int]:
        """(keys, the target model's embedding of each document, the target's vector,
        population) for every matched record with a document, or a seeded sample."""
        c = self.comparison
        al = c.alignment
        population = sum(1 for s in al.source_idx if c.source.documents[s])
        chosen = self._matched_sample(c.sample_size() if c.sampling else population, 2)
        keys = [al.keys[i] for i in chosen]
        documents = [str(c.source.documents[al.source_idx[i]]) for i in chosen]
        stored = c.target_side.vectors_at([al.target_idx[i] for i in chosen])
        expected = np.concatenate([embedder(documents[i:i + 256])
                                   for i in range(0, len(documents), 256)]) if documents \
            else np.zeros((0, 0), np.float32)
        return keys, expected, stored, population

    def known_items(self, target_embedder: Embedder, source_embedder: Embedder | None
                    ) -> list[KnownItem]:
        """Known-item queries from a seeded sample of documents, run on both stores."""
        c = self.comparison
        al = c.alignment
        chosen = self._matched_sample(c.settings.queries, 1)
        keys = [al.keys[i] for i in chosen]
        texts = [known_item_query(str(c.source.documents[al.source_idx[i]]))
                 for i in chosen]
        if not texts:
            return []
        k = c.settings.k
        target_queries = target_embedder(texts)
        target_hits = c.target_side.hits(target_queries, k)
        metric = c.target_inventory.metric or "cosine"
        base = c.target_vectors
        _, dist = exact_topk(base, target_queries, k, metric)
        index = c.target.first_index()
        recalls = [recall_at_k(hits, q, float(d[min(k, len(base)) - 1]), k, index, base, metric)
                   for hits, q, d in zip(target_hits, target_queries, dist, strict=True)]
        source_hits: list[list[str]] | list[None] = [None] * len(texts)
        if source_embedder is not None:
            source_hits = c.source_side.hits(source_embedder(texts), k)
        return [KnownItem(key, text, hits, recall, src) for key, text, hits, recall, src
                in zip(keys, texts, target_hits, recalls, source_hits, strict=True)]

