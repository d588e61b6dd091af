"""Id and metadata mapping between stores.

Ids are kept as they are where the target accepts them; otherwise a record gets a
deterministic UUIDv5 of its source id, and the source id is kept in the payload field
``original_id`` (which the suite recognises). Metadata a target cannot hold is handled by an
explicit policy: ``error`` (refuse before writing), ``json`` (store the value as JSON text)
or ``drop`` (leave the field out; the plan lists it).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vmtest.errors import MigrationError
from vmtest.matching import DEFAULT_ID_FIELDS
from vmtest.stores.base import RecordBatch, RecordId, VectorStore, json_type

#: The namespace of vmtest's UUIDv5 ids: uuid5(NAMESPACE, str(source id)).
NAMESPACE = uuid.UUID("6f0b3d0e-8a55-5c1e-9a43-7a6d2b1c0e11")
ID_FIELD = "original_id"
POLICIES = ("error", "json", "drop")
#: At most this many (field, type) answers are remembered by a MetadataPolicy (a source
#: whose field names never repeat is asked about every value instead).
KNOWN_LIMIT = 10_000


def uuid5_text(name: str) -> str:
    """``str(uuid.uuid5(NAMESPACE, name))``, without building UUID objects (the runner maps
    every id it cannot keep, once in the plan and once in the copy)."""
    digest = bytearray(hashlib.sha1(NAMESPACE.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass
class IdMapper:
    target: VectorStore

    def map(self, record_id: RecordId) -> tuple[RecordId, bool]:
        """(the id to write, whether the source id must be kept in the payload)."""
        if self.target.accepts_id(record_id):
            return record_id, False
        return uuid5_text(str(record_id)), True

    def map_all(self, record_ids: Iterable[RecordId]) -> list[tuple[RecordId, bool]]:
        """:meth:`map` of each id, in order."""
        return [self.map(rid) for rid in record_ids]


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

    #: (field, type) -> the target's answers for a value of a type whose value does not
    #: matter to it (its METADATA_VALUE_TYPES say which do): asked once, not per record.
    _problems: dict[tuple[str, type], str | None] = field(
        default_factory=dict, init=False, repr=False)
    _verdicts: dict[tuple[str, type], tuple[str | None, bool]] = field(
        default_factory=dict, init=False, repr=False)
    _key_problems: dict[str, str | None] = field(default_factory=dict, init=False,
                                                 repr=False)

    def __post_init__(self) -> None:
        if self.on_unsupported not in POLICIES:
            raise MigrationError(
                f"--on-unsupported={self.on_unsupported!r} is not a policy",
                hint="use one of: " + ", ".join(POLICIES),
            )
        self._by_value: tuple[type, ...] | None = getattr(
            self.target, "METADATA_VALUE_TYPES", None)

    def problem(self, key: str, value: Any) -> str | None:
        """The target's metadata_problem for this value (remembered per field and type where
        the value cannot matter)."""
        if self._by_value is None or isinstance(value, self._by_value):
            return self.target.metadata_problem(key, value, self.target.uri)
        return _remembered(self._problems, (key, type(value)), self.target.metadata_problem,
                           key, value, self.target.uri)

    def key_problem(self, key: str) -> str | None:
        """The target's metadata_key_problem for this field name (remembered)."""
        return _remembered(self._key_problems, key, self.target.metadata_key_problem, key,
                           self.target.uri)

    def _judge(self, key: str, value: Any) -> tuple[str | None, bool]:
        """(why the target cannot hold the value or None, whether it may round a float of
        it: asked only of a value it can hold)."""
        problem = self.target.metadata_problem(key, value, self.target.uri)
        return problem, problem is None and bool(self.target.rounds_float(value,
                                                                          self.target.uri))

    def scan(self, metadatas: Iterable[dict[str, Any]]) -> None:
        by_value, verdicts, judge = self._by_value, self._verdicts, self._judge
        for meta in metadatas:
            for key, value in meta.items():
                key_problem = self.key_problem(key)
                if key_problem is not None:
                    self.bad_keys[key] = self.bad_keys.get(key, 0) + 1
                    self.reasons.setdefault(key, key_problem)
                    continue
                if by_value is None or isinstance(value, by_value):
                    problem, rounds = judge(key, value)
                else:
                    problem, rounds = _remembered(verdicts, (key, type(value)), judge, key,
                                                  value)
                if problem is not None:
                    self.affected[key] = self.affected.get(key, 0) + 1
                    self.reasons.setdefault(key, problem)
                elif rounds:
                    self.rounded[key] = self.rounded.get(key, 0) + 1

    def apply(self, meta: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        problem_of = self.problem
        for key, value in meta.items():
            if self.key_problem(key) is not None:
                if self.on_unsupported != "drop":
                    raise MigrationError(
                        f"the target {self.target.uri} cannot hold a metadata field named "
                        f"{key!r}", hint="rename it in the source, or --on-unsupported=drop")
            elif problem_of(key, value) is None:
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


def _remembered(cache: dict[Any, Any], known: Any, ask: Callable[..., Any], *args: Any) -> Any:
    """``cache[known]``, else ``ask(*args)`` remembered there (at most KNOWN_LIMIT answers)."""
    try:
        return cache[known]
    except KeyError:
        answer = ask(*args)
        if len(cache) < KNOWN_LIMIT:
            cache[known] = answer
        return answer


def documents_of(batch: RecordBatch, source: VectorStore, document_field: str
                 ) -> list[str]:
    """The batch's documents, from their column or, for stores without one, the payload
    field; a record without one gives ""."""
    if source.HAS_DOCUMENTS:
        return [doc or "" for doc in batch.documents]
    return [str(meta.get(document_field) or "") for meta in batch.metadatas]


def shape_batch(
    batch: RecordBatch, source: VectorStore, ids: IdMapper, document_field: str,
    mapped: list[tuple[RecordId, bool]] | None = None,
) -> RecordBatch:
    """A source batch in the target's shape before the metadata policy: ids mapped (the
    source id kept in ``original_id`` where it had to change), documents moved between their
    own column and a payload field as the two stores keep them. ``mapped``: the batch's ids
    already mapped (``ids.map_all``), when the caller needs them too."""
    if mapped is None:
        mapped = ids.map_all(batch.ids)
    into_column = not source.HAS_DOCUMENTS and ids.target.HAS_DOCUMENTS
    into_payload = not ids.target.HAS_DOCUMENTS
    out_meta: list[dict[str, Any]] = []
    out_docs: list[str | None] = []
    for rid, meta, doc, (_, keep) in zip(batch.ids, batch.metadatas, batch.documents, mapped,
                                         strict=True):
        meta = dict(meta)
        if into_column and document_field in meta:
            doc = meta.pop(document_field)
        if keep and meta.keys().isdisjoint(DEFAULT_ID_FIELDS):
            meta[ID_FIELD] = rid
        if into_payload and doc is not None:
            meta[document_field] = doc
            doc = None
        out_meta.append(meta)
        out_docs.append(doc)
    return RecordBatch([new_id for new_id, _ in mapped], batch.vectors, out_meta, out_docs)


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
