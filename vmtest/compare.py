"""The comparison behind the suite: two opened stores, read once, matched by key.

:class:`Comparison` reads lazily and caches what it read, so each check in the suite costs
only its own arithmetic. With ``sample`` it reads ids, metadata and documents of every
record, and the vectors of a seeded random sample of matched records only.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vmtest.checks.fidelity import (
    check_documents,
    check_ids,
    check_metadata,
    check_vectors,
    suggest_document_field,
    suggest_id_field,
)
from vmtest.checks.result import CheckResult
from vmtest.checks.search import QueryOutcome, score_queries
from vmtest.checks.stats import sample_size_for
from vmtest.digest import (
    DigestMatch,
    DigestSide,
    match_digests,
    quantum,
    read_digests,
)
from vmtest.errors import ConfigError, StoreUnreachableError
from vmtest.knn import cached_truth
from vmtest.matching import Alignment, Matching, Snapshot, align, read_snapshot, snapshot
from vmtest.queries import load_query_file
from vmtest.settings import Settings
from vmtest.stores.base import Inventory, RecordBatch, VectorStore, is_uuid
from vmtest.stream import (
    RECORD_OVERHEAD,
    SpilledSide,
    compare_partitions,
    partitions_for,
    spill,
)

if TYPE_CHECKING:
    from vmtest.model_change import ModelChange

#: Suspect records fetched by id at most (more: one filtered scan), and ids a fetch asks for.
FETCH_AT_MOST = 20_000
FETCH_CHUNK = 1000
#: Unmatched records looked into for a field that would match them (--vmtest-id-field and
#: --vmtest-document-field hints).
HINT_ROWS = 2000


class LazyColumn(Sequence[Any]):
    """A column of a spilled snapshot (metadata, documents), read from disk on first use:
    only the search checks that need it (a filter field, a model change) pay for it."""

    def __init__(self, load: Callable[[], Iterable[Any]]) -> None:
        self._load = load
        self._items: list[Any] | None = None

    def _all(self) -> list[Any]:
        if self._items is None:
            self._items = list(self._load())
        return self._items

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._all())


@dataclass
class QuerySet:
    labels: list[str]
    vectors: np.ndarray


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
        self._inventories = inventories
        #: Snapshots the digest run kept (they fit in the budget): the full read is not
        #: repeated by the checks that need the snapshots afterwards.
        self._kept: tuple[Snapshot, Snapshot] | None = None
        self._whole: Comparison | None = None

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
    def source_inventory(self) -> Inventory:
        if self._inventories is not None:
            return self._inventories[0]
        inventory = self.source_store.describe()
        inventory.model = self.settings.source_model
        return inventory

    @cached_property
    def target_inventory(self) -> Inventory:
        if self._inventories is not None:
            return self._inventories[1]
        inventory = self.target_store.describe()
        inventory.model = self.settings.target_model
        return inventory

    @property
    def models_differ(self) -> bool:
        """Whether the user said the two sides' vectors come from different models."""
        s, t = self.settings.source_model, self.settings.target_model
        return s is not None and t is not None and s != t

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

    _spill_dir: tempfile.TemporaryDirectory[str] | None = None

    def close(self) -> None:
        """Remove the spilled partition files (nothing to do for an in-memory comparison)."""
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None
        if self._whole is not None:
            self._whole.close()

    @cached_property
    def _spilled(self) -> tuple[SpilledSide, SpilledSide]:
        self._spill_dir = tempfile.TemporaryDirectory(prefix="vmtest-spill-")
        folder = Path(self._spill_dir.name)
        return tuple(  # type: ignore[return-value]
            spill(store, self.matching, self.partitions, folder, name, self.settings.batch_size)
            for store, name in ((self.source_store, "source"), (self.target_store, "target")))

    def _snapshot(self, store: VectorStore, side: int) -> Snapshot:
        if not self.streaming:
            return read_snapshot(store, self.matching, batch_size=self.settings.batch_size,
                                 with_vectors=not self.sampling)
        spilled = self._spilled[side]
        return Snapshot(keys=spilled.keys, native_ids=spilled.native_ids, vectors=None,
                        metadatas=LazyColumn(lambda: spilled.column("metadatas")),  # type: ignore[arg-type]
                        documents=LazyColumn(lambda: spilled.column("documents")))  # type: ignore[arg-type]

    @cached_property
    def source(self) -> Snapshot:
        if self._kept is not None:
            return self._kept[0]
        return self._snapshot(self.source_store, 0)

    @cached_property
    def target(self) -> Snapshot:
        if self._kept is not None:
            return self._kept[1]
        return self._snapshot(self.target_store, 1)

    @cached_property
    def fidelity(self) -> dict[str, CheckResult]:
        """The record-by-record checks (ids, vectors, metadata, documents): by the checksum
        fast path when it can decide (:mod:`vmtest.digest`), else in memory or partition by
        partition; vectors only when both sides' vectors were read and come from the same
        model."""
        fast = None if self.sampling or self.models_differ or self.settings.compare == "full" \
            else self._digest_fidelity()
        if fast is not None:
            return fast
        if self.streaming:
            return compare_partitions(*self._spilled, self._fidelity_checks)
        return {r.name: r for r in self._fidelity_checks(self.source, self.target)}

    def _fidelity_checks(self, source: Snapshot, target: Snapshot,
                         match: DigestMatch | None = None) -> list[CheckResult]:
        """The checks over these snapshots; ``match`` says how many more pairs the digests
        verified (the snapshots then hold only the suspects)."""
        verified = match.verified if match else 0
        al = align(source, target)
        # the target records without a partner, for the --vmtest-id-field hint (the key index
        # is built only when there are some: a faithful copy has none)
        index = target.first_index() if al.extra else {}
        unmatched = [target.metadatas[index[k]] for k in al.extra[:HINT_ROWS]]
        results = [check_ids(al, verified=verified,
                             hints=suggest_id_field(al.missing, unmatched))]
        if source.vectors is not None and target.vectors is not None \
                and not self.models_differ:
            dimension = source.vectors.shape[1] if source.vectors.ndim == 2 else 0
            results.append(check_vectors(
                al.keys, source.vectors[al.source_idx], target.vectors[al.target_idx],
                atol=self.settings.tolerance, rtol=self.settings.rtol, metric=self.metric,
                confidence=self.settings.confidence, verified=verified,
                grid=quantum(self.settings.tolerance, self.metric, dimension)))
        results.append(check_metadata(*_matched(al, source.metadatas, target.metadatas),
                                      lenient_numbers=self.settings.lenient_numbers,
                                      float_ulps=self.target_store.float_rounding_ulps(
                                          self.target_store.uri),
                                      strict_floats=self.settings.strict_floats,
                                      engine=f"the {self.target_store.ENGINE} store",
                                      verified=verified))
        keys, source_docs, target_docs = _matched(al, source.documents, target.documents)
        pairs = [(source_docs[i], target_docs[i], target.metadatas[al.target_idx[i]])
                 for i in range(min(len(keys), HINT_ROWS))]
        results.append(check_documents(
            keys, source_docs, target_docs, verified=verified,
            verified_with_document=match.verified_with_document if match else 0,
            hints=suggest_document_field(pairs)))
        return results

    def _digest_fidelity(self) -> dict[str, CheckResult] | None:
        """Both stores read once and digested; only the suspects compared one by one. None
        when the digests cannot decide alone (duplicate keys, a side without vectors, more
        suspects than the memory budget holds): the full comparison then runs (on the
        snapshots kept here when they fit in the budget, else partition by partition)."""
        retain = not self.streaming
        # one side after the other: reading both at once (threads, or a process each) was
        # measured slower on two cores (LanceDB 1M x 768: 18 s and 20 s against 13 s and 16 s)
        sides = [read_digests(store, self.matching, self.settings.batch_size,
                              atol=self.settings.tolerance, metric=self.metric, retain=retain)
                 for store in (self.source_store, self.target_store)]
        if not all(side.has_vectors for side in sides):
            return None
        if retain and sides[0].snapshot is not None and sides[1].snapshot is not None:
            self._kept = (sides[0].snapshot, sides[1].snapshot)
        match = match_digests(*sides)
        if match.duplicates:
            return None
        suspects = len(match.source_suspects) + len(match.target_suspects)
        dimension = max(side.dimension or 0 for side in sides)
        if not retain and suspects * (4 * dimension + RECORD_OVERHEAD) \
                > self.settings.memory_budget // 2:
            return None
        source, target = (
            _subset(side.snapshot, positions) if side.snapshot is not None
            else self._read_records(store, side, positions)
            for side, store, positions in (
                (sides[0], self.source_store, match.source_suspects),
                (sides[1], self.target_store, match.target_suspects)))
        return {r.name: r for r in self._fidelity_checks(source, target, match)}

    def _read_records(self, store: VectorStore, side: DigestSide, positions: np.ndarray
                      ) -> Snapshot:
        """The records at these positions of a digested side, read again: fetched by id when
        few, else by a filtered scan (one pass, whatever their number)."""
        wanted_keys = {side.keys[i] for i in positions}
        natives = list(dict.fromkeys(side.native_ids[i] for i in positions))
        if store.FETCH_IS_SCAN or len(natives) > FETCH_AT_MOST:
            wanted = set(map(str, natives))
            batches: Iterable[RecordBatch] = (
                b.take([i for i, rid in enumerate(b.ids) if str(rid) in wanted])
                for b in store.iter_batches(self.settings.batch_size))
        else:
            batches = (store.fetch(natives[i:i + FETCH_CHUNK])
                       for i in range(0, len(natives), FETCH_CHUNK))
        snap = snapshot(store, self.matching, batches)
        keep = [i for i, key in enumerate(snap.keys) if key in wanted_keys]
        if len(keep) != len(wanted_keys):
            raise StoreUnreachableError(
                f"{store.uri} listed {len(wanted_keys)} records it then could not read again "
                f"(found {len(keep)}); was it written to during the check?")
        return _subset(snap, np.asarray(keep, dtype=np.int64))

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

    @property
    def dimensions_differ(self) -> str | None:
        """Why the source's query vectors cannot search the target (None: they can)."""
        s, t = self.source_inventory.dimension, self.target_inventory.dimension
        if s is not None and t is not None and s != t:
            return (f"the target's vectors have {t} dimensions and the source's {s}: the "
                    "same query cannot search both (inventory and vectors say why)")
        return None

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
        if not self.sampling:  # every matched pair, in memory (the suite streams instead)
            return VectorPairs(
                keys=al.keys,
                source=np.asarray(self.source_vectors[al.source_idx]),
                target=np.asarray(self.target_vectors[al.target_idx]),
                population=al.matched,
            )
        rng = random.Random(self.settings.seed)
        n = min(self.sample_size(), al.matched)
        chosen = sorted(rng.sample(by_key(al.keys), n))
        keys = [al.keys[i] for i in chosen]
        src_native = [self.source.native_ids[al.source_idx[i]] for i in chosen]
        tgt_native = [self.target.native_ids[al.target_idx[i]] for i in chosen]
        return VectorPairs(
            keys=keys,
            source=fetch_in_order(self.source_store, src_native),
            target=fetch_in_order(self.target_store, tgt_native),
            population=al.matched,
        )

    # -- search ---------------------------------------------------------------------------

    @cached_property
    def source_vectors(self) -> np.ndarray:
        """Every source vector, in snapshot order (read again when the snapshot sampled; on
        disk, read chunk by chunk, when the comparison spilled)."""
        if self.streaming:
            return self._spilled[0].vectors  # type: ignore[return-value]
        if self.source.vectors is not None:
            return self.source.vectors
        return _read_vectors(self.source_store, self.settings.batch_size)

    @property
    def search_metric(self) -> str:
        metric = self.source_inventory.metric
        if metric is None:
            raise ConfigError(
                f"the source {self.source_store.uri} does not say its metric, so exact "
                "ground truth cannot be computed",
                hint="give it in the URI: ?metric=cosine (or l2, ip)",
            )
        return metric

    @cached_property
    def queries(self) -> QuerySet:
        """The query vectors: from --vmtest-query-file, else a seeded sample of the source's own."""
        dimension = self.source_inventory.dimension
        if self.settings.query_file is not None:
            vectors = load_query_file(self.settings.query_file)
            if dimension is not None and vectors.shape[1] != dimension:
                raise ConfigError(
                    f"--vmtest-query-file={self.settings.query_file} holds {vectors.shape[1]}-"
                    f"dimensional vectors; the source has {dimension}",
                )
            return QuerySet([f"query {i}" for i in range(len(vectors))], vectors)
        rng = random.Random(self.settings.seed + 1)
        n = min(self.settings.queries, len(self.source))
        rows = sorted(rng.sample(by_key(self.source.keys), n))
        return QuerySet([self.source.keys[r] for r in rows], self.source_vectors[rows])

    def filter_values(self, field: str, limit: int = 5) -> list[object]:
        """The most common scalar values of a metadata field in the source."""
        counts: dict[object, int] = {}
        for meta in self.source.metadatas:
            value = meta.get(field)
            if isinstance(value, (str, int, float, bool)):
                counts[value] = counts.get(value, 0) + 1
        if not counts:
            raise ConfigError(f"--vmtest-filter-field={field}: no source record has a scalar "
                              f"value in {field!r}")
        return sorted(counts, key=lambda v: (-counts[v], str(v)))[:limit]

    def hits(self, store: VectorStore, snap: Snapshot, queries: np.ndarray,
              where: dict | None) -> list[list[str]]:
        to_key = {str(n): k for n, k in zip(snap.native_ids, snap.keys, strict=True)}
        rows = store.search(queries, self.settings.k, where=where)
        return [[to_key.get(str(n), f"<unknown {n}>") for n in row] for row in rows]

    def search_outcomes(self, where: dict | None = None,
                        queries: QuerySet | None = None) -> list[QueryOutcome]:
        """Each query run on both stores, scored against exact ground truth."""
        qs = queries or self.queries
        metric = self.search_metric
        base = self.source_vectors
        rows = np.arange(len(self.source))
        if where:
            rows = np.array([i for i, m in enumerate(self.source.metadatas)
                             if all(m.get(f) == v for f, v in where.items())], dtype=np.int64)
        if not len(rows) or not len(qs.labels):
            return []
        subset = base if where is None else base[rows]
        idx, dist = cached_truth(self.settings.truth_cache, subset, qs.vectors,
                                 self.settings.k, metric)
        truth = [[self.source.keys[rows[j]] for j in row if j >= 0] for row in idx]
        kth = np.array([d[len(t) - 1] if t else 0.0 for d, t in zip(dist, truth, strict=True)])
        return score_queries(
            qs.labels, qs.vectors, truth, kth,
            self.hits(self.source_store, self.source, qs.vectors, where),
            self.hits(self.target_store, self.target, qs.vectors, where),
            self.settings.k, self.source.first_index(), base, metric,
        )

    # -- a model change ---------------------------------------------------------------------

    @cached_property
    def model_change(self) -> ModelChange:
        """What the checks of a declared model change read (vmtest.model_change)."""
        from vmtest.model_change import ModelChange

        return ModelChange(self)

    @cached_property
    def target_vectors(self) -> np.ndarray:
        """Every target vector, in snapshot order."""
        if self.streaming:
            return self._spilled[1].vectors  # type: ignore[return-value]
        if self.target.vectors is not None:
            return self.target.vectors
        return _read_vectors(self.target_store, self.settings.batch_size)

    def matched_metadata(self) -> tuple[list[str], list[dict], list[dict]]:
        return _matched(self.alignment, self.source.metadatas, self.target.metadatas)

    def matched_documents(self) -> tuple[list[str], list[str | None], list[str | None]]:
        return _matched(self.alignment, self.source.documents, self.target.documents)


def _subset(snap: Snapshot, positions: np.ndarray) -> Snapshot:
    rows = [int(i) for i in positions]
    return Snapshot(
        keys=[snap.keys[i] for i in rows], native_ids=[snap.native_ids[i] for i in rows],
        vectors=None if snap.vectors is None else snap.vectors[rows],
        metadatas=[snap.metadatas[i] for i in rows],
        documents=[snap.documents[i] for i in rows])


def _matched(al: Alignment, source: Sequence[Any], target: Sequence[Any]
             ) -> tuple[list[str], list[Any], list[Any]]:
    """(matched keys, the source column's values, the target column's) in alignment order."""
    return al.keys, [source[i] for i in al.source_idx], [target[i] for i in al.target_idx]


def by_key(keys: Sequence[str]) -> list[int]:
    """Positions in key order: seeded choices must not depend on the order a store returns
    its records in (nor on whether the comparison was spilled to partitions)."""
    return sorted(range(len(keys)), key=keys.__getitem__)


def _read_vectors(store: VectorStore, batch_size: int) -> np.ndarray:
    parts = [b.vectors for b in store.iter_batches(batch_size)
             if b.vectors is not None and len(b)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def fetch_in_order(store: VectorStore, native_ids: list) -> np.ndarray:
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
