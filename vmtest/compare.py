"""The comparison behind the suite: two opened stores, read once, matched by key.

:class:`Comparison` composes the parts, each in a module of its own and tested alone:

- a :class:`~vmtest.side.Side` per store: its inventory, its records (in memory, or spilled
  to partitions past the memory budget), its vectors, reading some records again;
- the :class:`~vmtest.fidelity_run.FidelityRun`: ids, vectors, metadata, documents, by the
  checksum fast path when it can decide;
- the :class:`~vmtest.search_run.SearchComparison`: queries, ground truth, each query's
  outcome on both stores;
- the :class:`~vmtest.model_change.ModelChange` reads, after a declared model change.

With ``--vmtest-sample`` each side reads ids, metadata and documents of every record, and
the vectors of a seeded random sample of matched records only.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from vmtest.checks.result import CheckResult
from vmtest.checks.search import QueryOutcome
from vmtest.checks.stats import sample_size_for
from vmtest.fidelity_run import FidelityRun
from vmtest.matching import Alignment, Matching, Snapshot, align
from vmtest.search_run import QuerySet, SearchComparison
from vmtest.settings import Settings
from vmtest.side import Side, by_key, fetch_in_order
from vmtest.stores.base import Inventory, VectorStore, is_uuid
from vmtest.stream import partitions_for

if TYPE_CHECKING:
    from vmtest.model_change import ModelChange

__all__ = ["Comparison", "QuerySet", "VectorPairs", "by_key", "fetch_in_order"]


@dataclass
class VectorPairs:
    keys: list[str]
    source: np.ndarray
    target: np.ndarray
    population: int


class Comparison:
    """Two opened stores, read lazily and once. Every attribute is filled when first read and
    never changed afterwards: reading one (``fidelity``) does not change what another
    (``source``) returns."""

    def __init__(self, source: VectorStore, target: VectorStore, settings: Settings, *,
                 inventories: tuple[Inventory, Inventory] | None = None) -> None:
        self.source_store = source
        self.target_store = target
        self.settings = settings
        self.matching = Matching(settings.id_field, settings.document_field, settings.shard)
        given = inventories or (None, None)
        self.sides = tuple(
            Side(store, self.matching, name=name, batch_size=settings.batch_size, model=model,
                 partitions=lambda: self.partitions, with_vectors=not self.sampling,
                 inventory=inventory)
            for store, name, model, inventory in (
                (source, "source", settings.source_model, given[0]),
                (target, "target", settings.target_model, given[1])))
        self._whole: Comparison | None = None

    # -- the two sides ----------------------------------------------------------------------

    @property
    def source_side(self) -> Side:
        return self.sides[0]

    @property
    def target_side(self) -> Side:
        return self.sides[1]

    @property
    def source_inventory(self) -> Inventory:
        return self.sides[0].inventory

    @property
    def target_inventory(self) -> Inventory:
        return self.sides[1].inventory

    @property
    def source(self) -> Snapshot:
        return self.sides[0].snapshot

    @property
    def target(self) -> Snapshot:
        return self.sides[1].snapshot

    @property
    def source_vectors(self) -> np.ndarray:
        """Every source vector, in snapshot order."""
        return self.sides[0].vectors

    @property
    def target_vectors(self) -> np.ndarray:
        """Every target vector, in snapshot order."""
        return self.sides[1].vectors

    @property
    def sampling(self) -> bool:
        return self.settings.sample is not None

    @cached_property
    def partitions(self) -> int:
        """1 when both stores fit in --vmtest-memory-budget (read into memory); else how many
        partitions their records are spilled to (vmtest.stream)."""
        if self.sampling:
            return 1
        dimension = max(self.source_inventory.dimension or 0,
                        self.target_inventory.dimension or 0)
        return partitions_for(self.source_inventory.count + self.target_inventory.count,
                              dimension, self.settings.memory_budget)

    @property
    def streaming(self) -> bool:
        return self.partitions > 1

    def close(self) -> None:
        """Remove the spilled partition files (nothing to do for an in-memory comparison)."""
        for side in self.sides:
            side.close()
        if self._whole is not None:
            self._whole.close()

    # -- what both sides say together -------------------------------------------------------

    @property
    def models_differ(self) -> bool:
        """Whether the user said the two sides' vectors come from different models."""
        s, t = self.settings.source_model, self.settings.target_model
        return s is not None and t is not None and s != t

    @property
    def without_vectors(self) -> str | None:
        """Why the vector checks do not apply (None: both stores hold vectors)."""
        sides = [f"the {name} ({store.ENGINE})"
                 for name, store in (("source", self.source_store), ("target", self.target_store))
                 if not store.HAS_VECTORS]
        if not sides:
            return None
        return (" and ".join(sides) + (" hold" if len(sides) > 1 else " holds")
                + " no vectors: vectors, search and their index are not compared")

    @property
    def metric(self) -> str | None:
        """The metric vectors are compared under: the shared one, if both sides say."""
        s, t = self.source_inventory.metric, self.target_inventory.metric
        return s if s == t or t is None else None

    @property
    def dimensions_differ(self) -> str | None:
        """Why the source's query vectors cannot search the target (None: they can)."""
        s, t = self.source_inventory.dimension, self.target_inventory.dimension
        if s is not None and t is not None and s != t:
            return (f"the target's vectors have {t} dimensions and the source's {s}: the "
                    "same query cannot search both (inventory and vectors say why)")
        return None

    @cached_property
    def alignment(self) -> Alignment:
        return align(self.source, self.target)

    def id_mapping(self, sample: int = 200) -> str:
        """How the target's records name the source records they copy, in words, from its
        first records: a payload id field (and what its native ids are), or the ids
        themselves."""
        batch = next(iter(self.target_store.iter_batches(sample, with_vectors=False)), None)
        if batch is None or not len(batch):
            return "nothing (the target is empty)"
        counts = {name: sum(1 for m in batch.metadatas if m.get(name) is not None)
                  for name in self.matching.id_fields}
        name, hits = max(counts.items(), key=lambda kv: kv[1])
        if not hits:
            return "their ids (the same ids on both sides)"
        natives = [rid for rid, m in zip(batch.ids, batch.metadatas, strict=True)
                   if m.get(name) is not None]
        if all(is_uuid(str(rid)) and uuid.UUID(str(rid)).version == 5 for rid in natives):
            kind = "UUIDv5 derived from the source id"
        elif all(is_uuid(str(rid)) for rid in natives):
            kind = "UUIDs"
        else:
            kind = "their own ids"
        share = "" if hits == len(batch) else f" ({hits} of the first {len(batch)} records)"
        return f"the payload field {name!r}{share}; the target's own ids are {kind}"

    # -- fidelity ---------------------------------------------------------------------------

    @cached_property
    def fidelity(self) -> dict[str, CheckResult]:
        """The record-by-record checks (ids, vectors, metadata, documents): vectors only
        when both sides' vectors were read and come from the same model."""
        return FidelityRun(self.sides[0], self.sides[1], self.settings, self.metric,
                           self.models_differ).results()

    def sample_size(self) -> int:
        sample = self.settings.sample
        if sample == "auto":
            return sample_size_for(self.settings.max_mismatch_rate, self.settings.confidence)
        return int(sample or 0)

    @cached_property
    def vector_pairs(self) -> VectorPairs:
        """The vectors of every matched pair, or (sampling) of a seeded sample of them,
        fetched by id."""
        al = self.alignment
        if not self.sampling:
            return VectorPairs(keys=al.keys, source=np.asarray(self.source_vectors[al.source_idx]),
                               target=np.asarray(self.target_vectors[al.target_idx]),
                               population=al.matched)
        rng = random.Random(self.settings.seed)
        chosen = sorted(rng.sample(by_key(al.keys), min(self.sample_size(), al.matched)))
        return VectorPairs(
            keys=[al.keys[i] for i in chosen],
            source=self.sides[0].vectors_at([al.source_idx[i] for i in chosen]),
            target=self.sides[1].vectors_at([al.target_idx[i] for i in chosen]),
            population=al.matched,
        )

    def matched_metadata(self) -> tuple[list[str], list[dict], list[dict]]:
        al = self.alignment
        return (al.keys, [self.source.metadatas[i] for i in al.source_idx],
                [self.target.metadatas[i] for i in al.target_idx])

    def matched_documents(self) -> tuple[list[str], list[str | None], list[str | None]]:
        al = self.alignment
        return (al.keys, [self.source.documents[i] for i in al.source_idx],
                [self.target.documents[i] for i in al.target_idx])

    # -- search -----------------------------------------------------------------------------

    @property
    def for_search(self) -> Comparison:
        """The comparison the search checks use: every record, whatever --vmtest-shard says
        (top-k and its ground truth are over the whole store). Run in share 1 only."""
        if self.settings.shard is None:
            return self
        if self._whole is None:
            self._whole = Comparison(self.source_store, self.target_store,
                                     dataclasses.replace(self.settings, shard=None),
                                     inventories=(self.source_inventory,
                                                  self.target_inventory))
        return self._whole

    @property
    def search_share(self) -> bool:
        """Whether this run is the share that runs the search checks."""
        return self.settings.shard is None or self.settings.shard[0] == 1

    @cached_property
    def search(self) -> SearchComparison:
        return SearchComparison(self.sides[0], self.sides[1], self.settings)

    @property
    def search_metric(self) -> str:
        return self.search.metric

    @property
    def queries(self) -> QuerySet:
        return self.search.queries

    def filter_values(self, field: str, limit: int = 5) -> list[object]:
        return self.search.filter_values(field, limit)

    def search_outcomes(self, where: dict | None = None,
                        queries: QuerySet | None = None) -> list[QueryOutcome]:
        return self.search.outcomes(where, queries)

    def drift_pairs(self, n: int = 4000) -> tuple[list[str], np.ndarray, np.ndarray]:
        """The keys and the vectors of a seeded sample of up to n matched records, on each
        side."""
        al = self.alignment
        rng = random.Random(self.settings.seed + 3)
        # in the sampled order (itself from key order): the pairs the drift check forms from
        # consecutive rows are then the same however the stores were read
        chosen = rng.sample(by_key(al.keys), min(n, al.matched))
        return ([al.keys[i] for i in chosen],
                np.asarray(self.source_vectors[al.source_idx[chosen]], dtype=np.float32),
                np.asarray(self.target_vectors[al.target_idx[chosen]], dtype=np.float32))

    # -- a model change ---------------------------------------------------------------------

    @cached_property
    def model_change(self) -> ModelChange:
        """What the checks of a declared model change read (vmtest.model_change)."""
        from vmtest.model_change import ModelChange

        return ModelChange(self)
