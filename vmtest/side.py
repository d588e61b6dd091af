"""One side of a comparison: how a store is read for the checks, and read once.

A :class:`Side` knows its store's inventory, its records as a :class:`Snapshot` (in memory, or
spilled to partitions on disk past the memory budget), every vector in snapshot order, and how
to read some records again (fetched by id, or by one filtered scan). It knows nothing of the
other side: matching the two is the comparison's job (:mod:`vmtest.compare`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.digest import DigestSide
from vmtest.errors import StoreUnreachableError
from vmtest.matching import Matching, Snapshot, read_snapshot, snapshot
from vmtest.stores.base import Inventory, RecordBatch, VectorStore
from vmtest.stream import SpilledSide, spill

#: Records fetched by id at most when read again (more: one filtered scan), and ids a fetch
#: asks for at once.
FETCH_AT_MOST = 20_000
FETCH_CHUNK = 1000


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


class Side:
    """A store as one side of a comparison, read lazily and once.

    ``partitions`` says, when first needed, how many partitions the records are spilled to (1:
    read into memory); it depends on both sides' sizes, so the comparison decides it.
    ``with_vectors=False`` reads ids, metadata and documents only (a sampled comparison
    fetches the vectors of its sample by id)."""

    def __init__(self, store: VectorStore, matching: Matching, *, name: str,
                 batch_size: int, model: str | None = None,
                 partitions: Callable[[], int] = lambda: 1, with_vectors: bool = True,
                 inventory: Inventory | None = None) -> None:
        self.store = store
        self.matching = matching
        self.name = name
        self.batch_size = batch_size
        self.model = model
        self.with_vectors = with_vectors
        self._partitions = partitions
        self._inventory = inventory
        self._kept: Snapshot | None = None
        self._spill_dir: tempfile.TemporaryDirectory[str] | None = None

    @cached_property
    def inventory(self) -> Inventory:
        if self._inventory is not None:
            return self._inventory
        inventory = self.store.describe()
        inventory.model = self.model
        return inventory

    @property
    def streaming(self) -> bool:
        return self._partitions() > 1

    def keep(self, snap: Snapshot) -> None:
        """Take a snapshot another reader already made of this store (the digest run keeps
        the records it read when they fit in the budget): the full read is not repeated.
        Only before the snapshot was first read: a side never changes what it returned."""
        if "snapshot" not in vars(self):  # not read yet
            self._kept = snap

    @cached_property
    def spilled(self) -> SpilledSide:
        """The records spilled to partition files on disk (removed by :meth:`close`)."""
        self._spill_dir = tempfile.TemporaryDirectory(prefix=f"vmtest-spill-{self.name}-")
        return spill(self.store, self.matching, self._partitions(), Path(self._spill_dir.name),
                     self.name, self.batch_size)

    @cached_property
    def snapshot(self) -> Snapshot:
        """The records as comparable columns: kept from an earlier read, read into memory,
        or (spilled) keys in memory and the other columns read from disk on first use."""
        if self._kept is not None:
            return self._kept
        if not self.streaming:
            return read_snapshot(self.store, self.matching, batch_size=self.batch_size,
                                 with_vectors=self.with_vectors)
        spilled = self.spilled
        return Snapshot(keys=spilled.keys, native_ids=spilled.native_ids, vectors=None,
                        metadatas=LazyColumn(lambda: spilled.column("metadatas")),  # type: ignore[arg-type]
                        documents=LazyColumn(lambda: spilled.column("documents")))  # type: ignore[arg-type]

    @cached_property
    def vectors(self) -> np.ndarray:
        """Every vector, in snapshot order (read again when the snapshot has none; on disk,
        read chunk by chunk, when spilled)."""
        if self.streaming:
            return self.spilled.vectors  # type: ignore[return-value]
        if self.snapshot.vectors is not None:
            return self.snapshot.vectors
        parts = [b.vectors for b in self.store.iter_batches(self.batch_size)
                 if b.vectors is not None and len(b)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def vectors_at(self, rows: Sequence[int]) -> np.ndarray:
        """The vectors of these snapshot rows: from memory when read, else fetched by id."""
        snap = self.snapshot
        if snap.vectors is not None:
            return np.asarray(snap.vectors[list(rows)])
        return fetch_in_order(self.store, [snap.native_ids[i] for i in rows])

    def read_again(self, digested: DigestSide, positions: np.ndarray) -> Snapshot:
        """The records at these positions of a digested read of this store, read again:
        fetched by id when few, else by a filtered scan (one pass, whatever their number)."""
        store = self.store
        wanted_keys = {digested.keys[i] for i in positions}
        natives = list(dict.fromkeys(digested.native_ids[i] for i in positions))
        if store.FETCH_IS_SCAN or len(natives) > FETCH_AT_MOST:
            wanted = set(map(str, natives))
            batches: Iterable[RecordBatch] = (
                b.take([i for i, rid in enumerate(b.ids) if str(rid) in wanted])
                for b in store.iter_batches(self.batch_size))
        else:
            batches = (store.fetch(natives[i:i + FETCH_CHUNK])
                       for i in range(0, len(natives), FETCH_CHUNK))
        snap = snapshot(store, self.matching, batches)
        keep = [i for i, key in enumerate(snap.keys) if key in wanted_keys]
        if len(keep) != len(wanted_keys):
            raise StoreUnreachableError(
                f"{store.uri} listed {len(wanted_keys)} records it then could not read again "
                f"(found {len(keep)}); was it written to during the check?")
        return subset(snap, np.asarray(keep, dtype=np.int64))

    def hits(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        """The store's top-k for each query, as record keys (an id the snapshot does not know
        shows as ``<unknown ID>``)."""
        return self.keys_of(self.store.search(queries, k, where=where))

    @cached_property
    def key_by_native_id(self) -> dict[str, str]:
        """Each record's key by its native id (as text), built once from the snapshot."""
        snap = self.snapshot
        return {str(n): key for n, key in zip(snap.native_ids, snap.keys, strict=True)}

    def keys_of(self, rows: Sequence[Sequence[Any]]) -> list[list[str]]:
        """Search results (native ids, one list per query) as record keys; an id the
        snapshot does not know shows as ``<unknown ID>``."""
        to_key = self.key_by_native_id
        return [[to_key.get(str(n), f"<unknown {n}>") for n in row] for row in rows]

    def close(self) -> None:
        """Remove the spilled partition files (nothing to do for a side read into memory)."""
        if self._spill_dir is not None:
            self._spill_dir.cleanup()
            self._spill_dir = None


def subset(snap: Snapshot, positions: np.ndarray) -> Snapshot:
    rows = [int(i) for i in positions]
    return Snapshot(
        keys=[snap.keys[i] for i in rows], native_ids=[snap.native_ids[i] for i in rows],
        vectors=None if snap.vectors is None else snap.vectors[rows],
        metadatas=[snap.metadatas[i] for i in rows],
        documents=[snap.documents[i] for i in rows])


def by_key(keys: Sequence[str]) -> list[int]:
    """Positions in key order: seeded choices must not depend on the order a store returns
    its records in (nor on whether the comparison was spilled to partitions)."""
    return sorted(range(len(keys)), key=keys.__getitem__)


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
