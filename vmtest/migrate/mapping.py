"""Id and metadata mapping between stores.

Ids are kept as they are where the target accepts them; otherwise a record gets a
deterministic UUIDv5 of its source id, and the source id is kept in the payload field
``original_id`` (which the suite recognises). Metadata a target cannot hold is handled by an
explicit policy: ``error`` (refuse before writing), ``json`` (store the value as JSON text)
or ``drop`` (leave the field out; the plan lists it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vmtest.errors import MigrationError
from vmtest.matching import DEFAULT_ID_FIELDS
from vmtest.stores.base import RecordBatch, RecordId, VectorStore, json_type

#: The namespace of vmtest's UUIDv5 ids: uuid5(NAMESPACE, str(source id)).
NAMESPACE = uuid.UUID("6f0b3d0e-8a55-5c1e-9a43-7a6d2b1c0e11")
ID_FIELD = "original_id"
POLICIES = ("error", "json", "drop")


@dataclass
class IdMapper:
    target: VectorStore

    def map(self, record_id: RecordId) -> tuple[RecordId, bool]:
        """(the id to write, whether the source id must be kept in the payload)."""
        if self.target.accepts_id(record_id):
            return record_id, False
        return str(uuid.uuid5(NAMESPACE, str(record_id))), True


@dataclass
class MetadataPolicy:
    target: VectorStore
    on_unsupported: str = "error"
    #: field -> how many values it affected, filled as records are mapped or planned.
    affected: dict[str, int] = field(default_factory=dict)
    #: field -> why the target cannot hold it (the first reason seen).
    reasons: dict[str, str] = field(default_factory=dict)
    #: field -> how many values the target may give back with a float rounded (within its
    #: declared rounding): copied, counted, reported; refused with --strict-floats.
    rounded: dict[str, int] = field(default_factory=dict)
    #: field -> records, for field names the target cannot hold whatever the value: refused
    #: unless the policy drops them (JSON text would keep the name).
    bad_keys: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_unsupported not in POLICIES:
            raise MigrationError(
                f"--on-unsupported={self.on_unsupported!r} is not a policy",
                hint="use one of: " + ", ".join(POLICIES),
            )

    def scan(self, metadatas: Iterable[dict[str, Any]]) -> None:
        for meta in metadatas:
            for key, value in meta.items():
                key_problem = self.target.metadata_key_problem(key, self.target.uri)
                if key_problem is not None:
                    self.bad_keys[key] = self.bad_keys.get(key, 0) + 1
                    self.reasons.setdefault(key, key_problem)
                    continue
                problem = self.target.metadata_problem(key, value, self.target.uri)
                if problem is not None:
                    self.affected[key] = self.affected.get(key, 0) + 1
                    self.reasons.setdefault(key, problem)
                elif self.target.rounds_float(value, self.target.uri):
                    self.rounded[key] = self.rounded.get(key, 0) + 1

    def apply(self, meta: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in meta.items():
            if self.target.metadata_key_problem(key, self.target.uri) is not None:
                if self.on_unsupported != "drop":
                    raise MigrationError(
                        f"the target {self.target.uri} cannot hold a metadata field named "
                        f"{key!r}", hint="rename it in the source, or --on-unsupported=drop")
            elif self.target.metadata_problem(key, value, self.target.uri) is None:
                out[key] = value
            elif self.on_unsupported == "json":
                out[key] = json.dumps(value, ensure_ascii=False, allow_nan=True)
            elif self.on_unsupported == "error":
                raise MigrationError(
                    f"the target {self.target.uri} cannot hold the value of {key!r} "
                    f"({json_type(value)})",
                    hint="choose --on-unsupported=json (keep it as JSON text) or drop",
                )
        return out


def documents_of(batch: RecordBatch, source: VectorStore, document_field: str
                 ) -> list[str]:
    """The batch's documents, from their column or, for stores without one, the payload
    field; a record without one gives ""."""
    if source.HAS_DOCUMENTS:
        return [doc or "" for doc in batch.documents]
    return [str(meta.get(document_field) or "") for meta in batch.metadatas]


def shape_batch(
    batch: RecordBatch, source: VectorStore, ids: IdMapper, document_field: str
) -> RecordBatch:
    """A source batch in the target's shape before the metadata policy: ids mapped (the
    source id kept in ``original_id`` where it had to change), documents moved between their
    own column and a payload field as the two stores keep them."""
    out_ids: list[RecordId] = []
    out_meta: list[dict[str, Any]] = []
    out_docs: list[str | None] = []
    for rid, meta, doc in zip(batch.ids, batch.metadatas, batch.documents, strict=True):
        meta = dict(meta)
        if not source.HAS_DOCUMENTS and ids.target.HAS_DOCUMENTS and document_field in meta:
            doc = meta.pop(document_field)
        new_id, keep = ids.map(rid)
        if keep and not any(name in meta for name in DEFAULT_ID_FIELDS):
            meta[ID_FIELD] = rid
        if not ids.target.HAS_DOCUMENTS and doc is not None:
            meta[document_field] = doc
            doc = None
        out_ids.append(new_id)
        out_meta.append(meta)
        out_docs.append(doc)
    return RecordBatch(out_ids, batch.vectors, out_meta, out_docs)


def map_batch(
    batch: RecordBatch,
    source: VectorStore,
    ids: IdMapper,
    policy: MetadataPolicy,
    document_field: str,
) -> RecordBatch:
    """A source batch as the target must receive it."""
    shaped = shape_batch(batch, source, ids, document_field)
    return RecordBatch(shaped.ids, shaped.vectors, [policy.apply(m) for m in shaped.metadatas],
                       shaped.documents)
