"""Matching records across stores, and reading a store into a comparable snapshot.

A record's *key* is the source id it stands for: the value of a payload id field when the
record carries one (``original_id`` and ``__id__`` are recognised without being told, the
conventions of common migration scripts and of Qdrant's migration tool; ``--vmtest-id-field`` names
any other), else its native id. Keys are compared as text, so Qdrant's integer 7 and Chroma's
"7" match, and "007" and "7" never do.

For stores with no document column (Qdrant), the document is read from a payload field
(``document`` unless told otherwise). Mapping fields are taken out of the metadata, so they
never count as metadata differences.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmtest.settings import DEFAULT_DOCUMENT_FIELD, DEFAULT_ID_FIELDS
from vmtest.stores.base import RecordBatch, RecordId, VectorStore

__all__ = ["DEFAULT_DOCUMENT_FIELD", "DEFAULT_ID_FIELDS", "Matching", "Snapshot", "align"]


def shard_of(key: str, shards: int) -> int:
    """The share (1..shards) a record key belongs to: a stable hash, the same in every
    process and on every machine."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards + 1


@dataclass(frozen=True)
class Matching:
    id_field: str | None = None
    document_field: str = DEFAULT_DOCUMENT_FIELD
    #: (I, N): keep only the records whose key falls in share I of N.
    shard: tuple[int, int] | None = None

    @property
    def id_fields(self) -> tuple[str, ...]:
        return (self.id_field,) if self.id_field else DEFAULT_ID_FIELDS

    def key_of(self, native_id: RecordId, metadata: dict[str, Any]) -> str:
        for name in self.id_fields:
            if name in metadata and metadata[name] is not None:
                return str(metadata[name])
        return str(native_id)

    def own_share(self, batch: RecordBatch) -> RecordBatch:
        """The records of the batch in this run's --vmtest-shard share (all of them unsharded)."""
        if self.shard is None:
            return batch
        index, shards = self.shard
        return batch.take([i for i, (rid, meta) in enumerate(zip(
            batch.ids, batch.metadatas, strict=True))
            if shard_of(self.key_of(rid, meta), shards) == index])

    def split(
        self, store: VectorStore, native_id: RecordId, metadata: dict[str, Any],
        document: str | None,
    ) -> tuple[str, dict[str, Any], str | None]:
        """(key, metadata without mapping fields, document) of one record."""
        key = self.key_of(native_id, metadata)
        meta = {k: v for k, v in metadata.items() if k not in self.id_fields}
        if not store.HAS_DOCUMENTS and self.document_field in meta:
            document = meta.pop(self.document_field)
        return key, meta, document


@dataclass
class Snapshot:
    """A store's records as comparable columns (vectors only where read with vectors)."""

    keys: list[str] = field(default_factory=list)
    native_ids: list[RecordId] = field(default_factory=list)
    vectors: np.ndarray | None = None
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    documents: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def first_index(self) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            index.setdefault(key, i)
        return index


def split_batch(store: VectorStore, matching: Matching, batch: RecordBatch
                ) -> tuple[list[str], list[dict[str, Any]], list[str | None]]:
    """Keys, metadata without mapping fields, and documents of a batch. A batch with no
    mapping field anywhere (the common case) takes a fast path: its keys are its ids."""
    fields = frozenset(matching.id_fields if store.HAS_DOCUMENTS
                       else (*matching.id_fields, matching.document_field))
    if all(map(fields.isdisjoint, batch.metadatas)):
        return list(map(str, batch.ids)), batch.metadatas, batch.documents
    split = [matching.split(store, rid, meta, doc) for rid, meta, doc in zip(
        batch.ids, batch.metadatas, batch.documents, strict=True)]
    return [k for k, _, _ in split], [m for _, m, _ in split], [d for _, _, d in split]


def snapshot(
    store: VectorStore, matching: Matching, batches: Iterable[RecordBatch]
) -> Snapshot:
    snap = Snapshot()
    vector_parts: list[np.ndarray] = []
    read_vectors = True
    for batch in batches:
        batch = matching.own_share(batch)
        if batch.vectors is None:
            read_vectors = False
        elif len(batch):
            vector_parts.append(np.asarray(batch.vectors, dtype=np.float32))
        keys, metadatas, documents = split_batch(store, matching, batch)
        snap.keys += keys
        snap.native_ids += batch.ids
        snap.metadatas += metadatas
        snap.documents += documents
    if read_vectors:
        snap.vectors = (
            np.concatenate(vector_parts) if vector_parts else np.zeros((0, 0), np.float32)
        )
    return snap


def read_snapshot(
    store: VectorStore, matching: Matching, *, batch_size: int = 1000, with_vectors: bool = True
) -> Snapshot:
    return snapshot(store, matching, store.iter_batches(batch_size, with_vectors=with_vectors))


@dataclass
class Alignment:
    """Which source record pairs with which target record, and which have no partner."""

    keys: list[str]
    source_idx: np.ndarray
    target_idx: np.ndarray
    missing: list[str]
    extra: list[str]
    source_duplicates: list[str]
    target_duplicates: list[str]

    @property
    def matched(self) -> int:
        return len(self.keys)


def _duplicates(keys: list[str]) -> list[str]:
    seen: set[str] = set()
    dups: dict[str, None] = {}
    for key in keys:
        if key in seen:
            dups[key] = None
        seen.add(key)
    return list(dups)


def align(source: Snapshot, target: Snapshot) -> Alignment:
    src_index = source.first_index()
    tgt_index = target.first_index()
    keys = [k for k in src_index if k in tgt_index]
    return Alignment(
        keys=keys,
        source_idx=np.fromiter((src_index[k] for k in keys), dtype=np.int64, count=len(keys)),
        target_idx=np.fromiter((tgt_index[k] for k in keys), dtype=np.int64, count=len(keys)),
        missing=[k for k in src_index if k not in tgt_index],
        extra=[k for k in tgt_index if k not in src_index],
        source_duplicates=_duplicates(source.keys),
        target_duplicates=_duplicates(target.keys),
    )
