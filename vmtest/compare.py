"""The comparison behind the suite: two opened stores, read once, matched by key.

:class:`Comparison` reads lazily and caches what it read, so each check in the suite costs
only its own arithmetic. With ``sample`` it reads ids, metadata and documents of every
record, and the vectors of a seeded random sample of matched records only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from vmtest.checks.stats import sample_size_for
from vmtest.errors import StoreUnreachableError
from vmtest.matching import Alignment, Matching, Snapshot, align, read_snapshot
from vmtest.settings import Settings
from vmtest.stores.base import Inventory, VectorStore


@dataclass
class VectorPairs:
    keys: list[str]
    source: np.ndarray
    target: np.ndarray
    population: int


class Comparison:
    def __init__(self, source: VectorStore, target: VectorStore, settings: Settings) -> None:
        self.source_store = source
        self.target_store = target
        self.settings = settings
        self.matching = Matching(settings.id_field, settings.document_field)

    @cached_property
    def source_inventory(self) -> Inventory:
        return self.source_store.describe()

    @cached_property
    def target_inventory(self) -> Inventory:
        return self.target_store.describe()

    @property
    def sampling(self) -> bool:
        return self.settings.sample is not None

    @cached_property
    def source(self) -> Snapshot:
        return read_snapshot(self.source_store, self.matching,
                             batch_size=self.settings.batch_size, with_vectors=not self.sampling)

    @cached_property
    def target(self) -> Snapshot:
        return read_snapshot(self.target_store, self.matching,
                             batch_size=self.settings.batch_size, with_vectors=not self.sampling)

    @cached_property
    def alignment(self) -> Alignment:
        return align(self.source, self.target)

    @property
    def metric(self) -> str | None:
        """The metric vectors are compared under: the shared one, if both sides say."""
        s, t = self.source_inventory.metric, self.target_inventory.metric
        return s if s == t or t is None else None

    def sample_size(self) -> int:
        sample = self.settings.sample
        if sample == "auto":
            return sample_size_for(self.settings.max_mismatch_rate, self.settings.confidence)
        return int(sample or 0)

    @cached_property
    def vector_pairs(self) -> VectorPairs:
        al = self.alignment
        if not self.sampling:
            assert self.source.vectors is not None and self.target.vectors is not None
            return VectorPairs(
                keys=al.keys,
                source=self.source.vectors[al.source_idx],
                target=self.target.vectors[al.target_idx],
                population=al.matched,
            )
        rng = random.Random(self.settings.seed)
        n = min(self.sample_size(), al.matched)
        chosen = sorted(rng.sample(range(al.matched), n))
        keys = [al.keys[i] for i in chosen]
        src_native = [self.source.native_ids[al.source_idx[i]] for i in chosen]
        tgt_native = [self.target.native_ids[al.target_idx[i]] for i in chosen]
        return VectorPairs(
            keys=keys,
            source=_fetch_in_order(self.source_store, src_native),
            target=_fetch_in_order(self.target_store, tgt_native),
            population=al.matched,
        )

    def matched_metadata(self) -> tuple[list[str], list[dict], list[dict]]:
        al = self.alignment
        return (
            al.keys,
            [self.source.metadatas[i] for i in al.source_idx],
            [self.target.metadatas[i] for i in al.target_idx],
        )

    def matched_documents(self) -> tuple[list[str], list[str | None], list[str | None]]:
        al = self.alignment
        return (
            al.keys,
            [self.source.documents[i] for i in al.source_idx],
            [self.target.documents[i] for i in al.target_idx],
        )


def _fetch_in_order(store: VectorStore, native_ids: list) -> np.ndarray:
    """Vectors of these records, in this order (stores may answer in any order)."""
    rows: dict[str, np.ndarray] = {}
    for start in range(0, len(native_ids), 500):
        got = store.fetch(native_ids[start : start + 500])
        assert got.vectors is not None
        rows.update((str(rid), vec) for rid, vec in zip(got.ids, got.vectors, strict=True))
    missing = [rid for rid in native_ids if str(rid) not in rows]
    if missing:
        raise StoreUnreachableError(
            f"{store.uri} listed {len(missing)} records it then could not fetch "
            f"(first: {missing[:5]}); was it written to during the check?"
        )
    return np.stack([rows[str(rid)] for rid in native_ids]) if native_ids else np.zeros((0, 0))
