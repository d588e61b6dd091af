"""The migration runner: plan, then copy in streaming batches with explicit id and metadata
mapping, checkpoints, parallel writers and retries.

Guarantees:

- Nothing is written before the plan has read every source id and metadata value: an id
  collision or metadata the target cannot hold (under ``on_unsupported="error"``) stops the run
  with the affected ids and fields, and the target untouched.
- A batch counts as done only once the target acknowledged it; the checkpoint advances over
  contiguous acknowledged batches only. A batch that fails after its retries stops the run; its
  ids are written next to the state file.
- Memory is bounded by ``batch_size * (2 * workers + 1)`` records plus the set of target ids
  the plan keeps to detect collisions, and, from a source that reads vectors apart
  (``VectorStore.iter_vectors``: Chroma), the plan's read of ids, metadata and documents up to
  about ``KEEP_BYTES``: the copy then reads the vectors alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmtest.embed import load_embedder
from vmtest.errors import (
    MigrationError,
    NativeCopyFailed,
    PlanRefusedError,
    StoreNotFoundError,
    StoreUnreachableError,
)
from vmtest.matching import DEFAULT_DOCUMENT_FIELD
from vmtest.migrate.checkpoint import Checkpoint
from vmtest.migrate.mapping import (
    IdMapper,
    MetadataPolicy,
    documents_of,
    map_batch,
    shape_batch,
)
from vmtest.schema_map import SchemaMap, Unconvertible, read_schema_map
from vmtest.stores import (
    CollectionSpec,
    RecordBatch,
    RecordId,
    VectorStore,
    open_store,
    store_class,
)
from vmtest.stores.base import Inventory, is_connection_error
from vmtest.stream import RECORD_OVERHEAD
from vmtest.uri import StoreURI, parse

Transform = Callable[[RecordBatch], RecordBatch]
#: Into a target that takes a batch written twice as once, the checkpoint is saved at most
#: this often (each save is a synced file: 31 ms a batch measured, an eighth of a Chroma ->
#: Qdrant server copy's time); a crash redoes at most this much.
SAVE_EVERY_S = 1.0
#: What the plan keeps of its read (ids, metadata, documents; estimated) for the copy to read
#: vectors alone, from a source where that is cheaper (VectorStore.iter_vectors); a source
#: holding more is read whole twice, as by any other source.
KEEP_BYTES = 256 * 2**20
#: The base default of VectorStore.DEFAULT_BATCH_SIZE (each store may declare its own).
DEFAULT_BATCH_SIZE = VectorStore.DEFAULT_BATCH_SIZE


@dataclass
class MigrationOptions:
    #: Records per read and write; None: the target store's DEFAULT_BATCH_SIZE (chosen by
    #: measurement, benchmarks/batch_sweep.py).
    batch_size: int | None = None
    #: Parallel writers; None: the target store's DEFAULT_WRITERS (chosen by measurement).
    workers: int | None = None
    on_unsupported: str = "error"
    metric: str | None = None
    document_field: str = DEFAULT_DOCUMENT_FIELD
    retries: int = 3
    backoff_s: float = 0.5
    #: MODULE:CALLABLE that maps documents to new vectors (a model change), or None.
    reembed: str | None = None
    #: The name of the model the target's vectors come from (recorded; given to --verify).
    model: str | None = None
    #: Refuse floats the target may round (within its declared rounding) instead of copying
    #: and counting them.
    strict_floats: bool = False
    #: A schema mapping file (vmtest.schema_map): fields renamed, converted, added and
    #: dropped on the way; the suite checks the copy with the same file (--vmtest-mapping).
    mapping: Path | None = None
    #: "auto": a copy that changes nothing, between two stores of an engine that copies a
    #: whole collection itself (VectorStore.copy_natively), goes that way; "records":
    #: record by record, always.
    transfer: str = "auto"

    def identity(self) -> dict[str, Any]:
        """The options a resumed run must share with the run it continues (batch size and
        workers may change freely)."""
        identity: dict[str, Any] = {"on_unsupported": self.on_unsupported,
                                    "metric": self.metric, "document_field": self.document_field}
        if self.reembed:
            identity.update(reembed=self.reembed, model=self.model)
        if self.mapping is not None:
            identity.update(mapping=str(self.mapping))
        return identity

    @property
    def schema_map(self) -> SchemaMap | None:
        return None if self.mapping is None else read_schema_map(self.mapping)


@dataclass
class Plan:
    source: Inventory
    spec: CollectionSpec
    target_uri: str
    target_exists: bool
    native_ids: int = 0
    mapped_ids: int = 0
    affected_fields: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    #: field -> records, for field names the target cannot hold (only dropping helps)
    bad_keys: dict[str, int] = field(default_factory=dict)
    collisions: list[tuple[str, str, str]] = field(default_factory=list)
    #: source id -> why the target cannot hold its document
    bad_documents: dict[str, str] = field(default_factory=dict)
    #: source id -> where it holds text that is no Unicode (a lone surrogate)
    invalid_text: dict[str, str] = field(default_factory=dict)
    on_unsupported: str = "error"
    read_rate: float | None = None
    #: With --reembed: the embedder, and the source ids of records with no document to embed.
    reembed: str | None = None
    no_document: list[str] = field(default_factory=list)
    #: The target keeps documents in a payload field (--document-field) that some source
    #: records already use for metadata: the source ids of those records.
    field_clash: list[str] = field(default_factory=list)
    document_field: str = DEFAULT_DOCUMENT_FIELD
    #: field -> values the target may give back with a float rounded, by up to
    #: ``rounding_ulps`` units in the last place (its declared rounding).
    rounded_fields: dict[str, int] = field(default_factory=dict)
    rounding_ulps: int = 0
    strict_floats: bool = False
    #: Why the vectors cannot go where the target is (one side holds none), or None.
    vectors_problem: str | None = None
    #: field -> values the schema mapping's conversion cannot make, and the first of them.
    unconvertible: dict[str, int] = field(default_factory=dict)
    unconvertible_first: dict[str, str] = field(default_factory=dict)
    mapping: str | None = None
    #: The source's batches as the plan read them (no vectors), kept for the copy when asked
    #: (make_plan's ``keep_bytes``) and within that size; else None.
    kept: list[RecordBatch] | None = field(default=None, repr=False)

    @property
    def lossless(self) -> bool:
        return (not self.affected_fields and not self.bad_keys and not self.collisions
                and not self.bad_documents and not self.invalid_text
                and not self.no_document and not self.field_clash)

    def refusals(self) -> list[tuple[str, str]]:
        """Why this migration must not start, as (reason, what to do) pairs: the one rule
        set that ``plan`` prints and exits by, and that ``migrate`` refuses by."""
        out: list[tuple[str, str]] = []
        if self.vectors_problem:
            out.append((self.vectors_problem, "migrate a store of records into a table "
                        "(sqlite://...?table=NAME, postgresql://...?table=NAME&"
                        "vector_column=none), and vectors into a vector store"))
        if self.unconvertible:
            out.append(("the schema mapping cannot convert " + ", ".join(
                f"{k} ({n} records; first {self.unconvertible_first[k]})"
                for k, n in sorted(self.unconvertible.items())),
                "fix those values in the source, or the mapping's [convert]"))
        if self.collisions:
            shown = ", ".join(f"{a} and {b}" for a, b, _ in self.collisions[:5])
            out.append((f"{len(self.collisions)} pair(s) of source ids would collide in the "
                        f"target ({shown})", "the target keeps ids as text, so ids such as 7 "
                        "and '7' cannot both live there"))
        if self.bad_documents:
            first = next(iter(self.bad_documents.items()))
            out.append((f"the target cannot hold {len(self.bad_documents)} of the source's "
                        f"documents (first: {first[0]}: {first[1]})",
                        "fix those documents in the source"))
        if self.invalid_text:
            first = next(iter(self.invalid_text.items()))
            out.append((f"{len(self.invalid_text)} source records hold text that is not "
                        "valid Unicode, a lone surrogate (half of an emoji a client cut), "
                        f"which no store can encode (first: {first[0]}: {first[1]})",
                        "fix that text in the source"))
        if self.field_clash:
            out.append((f"{len(self.field_clash)} source records have a metadata field "
                        f"{self.document_field!r}, the payload field the target would keep "
                        f"documents in (first: {', '.join(self.field_clash[:5])})",
                        "choose another --document-field"))
        if self.no_document:
            out.append((f"{len(self.no_document)} source records have no document to "
                        f"re-embed (first: {', '.join(self.no_document[:5])})",
                        "--reembed needs a document on every record"))
        if self.rounded_fields and self.strict_floats:
            out.append((f"the target may round {sum(self.rounded_fields.values())} float "
                        "values by up to " f"{self.rounding_ulps} ulps ("
                        + ", ".join(f"{k}: {n}" for k, n in sorted(self.rounded_fields.items()))
                        + ")", "--strict-floats refuses them; without it they are copied and "
                        "the suite's metadata check counts those rounded"))
        if self.bad_keys and self.on_unsupported != "drop":
            out.append(("the target cannot hold metadata fields of these names: " + ", ".join(
                f"{k!r} ({n} records: {self.reasons.get(k, 'reserved')})"
                for k, n in sorted(self.bad_keys.items())),
                "rename them in the source, or --on-unsupported=drop (JSON text keeps the "
                "name)"))
        if self.affected_fields and self.on_unsupported == "error":
            out.append(("the target cannot hold these metadata fields: " + ", ".join(
                f"{k} ({n} records: {self.reasons.get(k, 'unsupported')})"
                for k, n in sorted(self.affected_fields.items())),
                "choose --on-unsupported=json (keep as JSON text) or drop"))
        return out

    def describe(self) -> list[str]:
        s = self.source
        lines = [
            f"source  {s.uri}: {s.count} records, dimension {s.dimension}, metric {s.metric}, "
            f"dtype {s.dtype}",
            f"target  {self.target_uri}: "
            + ("exists; its shape was checked" if self.target_exists else "will be created")
            + f" with dimension {self.spec.dimension}, metric {self.spec.metric}",
            f"ids     {self.native_ids} kept as they are, {self.mapped_ids} mapped to UUIDv5 "
            "(source id kept in the payload field 'original_id')",
        ]
        if self.mapping:
            lines.append(f"fields  mapped by {self.mapping}")
        if self.reembed:
            lines.append(f"vectors re-embedded from the documents by {self.reembed} "
                         f"({self.spec.dimension} dimensions)")
        if self.collisions:
            lines.append(f"collisions ({len(self.collisions)}): source ids that map to a "
                         "target id another source id already takes:")
            lines += [f"  {a} and {b} -> {t!r}" for a, b, t in self.collisions[:20]]
        if self.affected_fields:
            verb = {"error": "REFUSED", "json": "stored as JSON text", "drop": "DROPPED"}[
                self.on_unsupported]
            lines.append(f"lossy   metadata the target cannot hold ({verb}):")
            lines += [f"  {k} ({n} records): {self.reasons.get(k, '')}"
                      for k, n in sorted(self.affected_fields.items())]
        if self.bad_keys:
            verb = "DROPPED" if self.on_unsupported == "drop" else "REFUSED"
            lines.append(f"lossy   metadata field names the target cannot hold ({verb}):")
            lines += [f"  {k!r} ({n} records): {self.reasons.get(k, '')}"
                      for k, n in sorted(self.bad_keys.items())]
        if not self.affected_fields and not self.bad_keys and not self.refusals():
            lines.append("lossy   nothing: every id, vector, metadata value and document fits")
        if self.rounded_fields:
            lines.append(
                f"floats  {sum(self.rounded_fields.values())} values the target may give back "
                f"rounded by up to {self.rounding_ulps} ulps (its declared float rounding: "
                + ", ".join(f"{k} {n}" for k, n in sorted(self.rounded_fields.items()))
                + "); copied, and counted by the suite's metadata check as a warning"
                + (" -- refused: --strict-floats" if self.strict_floats else ""))
        lines += [f"REFUSED {reason} ({hint})" for reason, hint in self.refusals()]
        if self.read_rate:
            lines.append(f"time    reading ~{s.count / self.read_rate:.1f} s at the probed "
                         f"{self.read_rate:,.0f} records/s (writes are not probed: a plan "
                         "writes nothing)")
        return lines


@dataclass(frozen=True)
class Written:
    """What one acknowledged batch contributes: records, the last source id (and the id the
    target gave it), retries."""

    records: int
    last_id: str | None
    retries: int
    last_target_id: Any = None


@dataclass
class MigrationReport:
    source: str
    target: str
    copied: int = 0
    resumed_from: int = 0
    batches: int = 0
    retries: int = 0
    seconds: float = 0.0
    affected_fields: dict[str, int] = field(default_factory=dict)
    state_path: str | None = None
    #: field -> values copied that the target may have rounded (within its declared ulps).
    rounded_fields: dict[str, int] = field(default_factory=dict)
    rounding_ulps: int = 0
    #: A migration over partitions: the partitions this run copied, and those an earlier
    #: run had finished (kept, not copied again).
    partitions_run: list[int] = field(default_factory=list)
    partitions_kept: list[int] = field(default_factory=list)
    #: How the records went: "records" (read and written in batches), or how the store's
    #: own copy went (VectorStore.copy_natively: "a collection snapshot (...)").
    method: str = "records"
    #: What the user should know of how it went (a native copy that failed, and why).
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of_plan(cls, plan: Plan, source: VectorStore, target: StoreURI,
                state_path: Path | None) -> MigrationReport:
        """The report of a migration that begins: what its plan says the copy changes."""
        return cls(source=str(source.uri), target=str(target),
                   affected_fields={**plan.affected_fields, **plan.bad_keys},
                   rounded_fields=plan.rounded_fields, rounding_ulps=plan.rounding_ulps,
                   state_path=str(state_path) if state_path else None)

    @property
    def rate(self) -> float:
        return self.copied / self.seconds if self.seconds else 0.0


def target_spec(source: Inventory, *, metric: str | None = None) -> CollectionSpec:
    if source.dimension is None or (metric or source.metric) is None:
        raise MigrationError(
            f"the source {source.uri} does not say its dimension and metric",
            hint="give the file store its metric in the URI: ?metric=cosine (or l2, ip)",
        )
    return CollectionSpec(dimension=source.dimension, metric=metric or source.metric or "l2",
                          dtype=source.dtype or "float32")


def default_state_path(source: StoreURI, target: StoreURI) -> Path:
    """Beside a local target (a folder or a file: the state travels with the target, not
    with the working folder), named by the collection where a folder holds several; for a
    server, under reports/, named by the pair of URIs."""
    if target.is_local and target.path:
        path = Path(target.path)
        collection = target.param("collection") or target.param("table")
        name = f"{path.name}.{collection}" if collection else path.name
        return path.with_name(name + ".vmtest-state.json")
    digest = hashlib.sha1(f"{source}->{target}".encode()).hexdigest()[:12]
    return Path("reports") / f"migrate-{digest}.state.json"


def make_plan(source: VectorStore, target_uri: str | StoreURI, options: MigrationOptions,
              *, probe: bool = False, keep_bytes: int = 0) -> Plan:
    """Read every source id and metadata value (no vectors) and say what the migration will
    do. Writes nothing: the target is only opened when it already exists. With
    ``keep_bytes``, the batches read are kept in ``Plan.kept`` while they take about that
    much memory at most."""
    uri = parse(target_uri) if isinstance(target_uri, str) else target_uri
    inventory = source.describe()
    spec = target_spec(inventory, metric=options.metric) if source.HAS_VECTORS \
        else RECORDS_ONLY
    if options.reembed:
        probe_vector = load_embedder(options.reembed)(["dimension probe"])
        spec = CollectionSpec(dimension=int(probe_vector.shape[1]), metric=spec.metric)
    cls = store_class(uri.scheme)
    target: VectorStore | None = None
    exists = False
    # A local store whose folder or file is not there is absent: opening it would create it.
    if not uri.is_local or (uri.path and Path(uri.path).exists()):
        try:
            target = cls.from_uri(uri)
            exists = True
        except StoreNotFoundError:  # absent: judged by its class, created when the run begins
            target = None
    probe_store = target if target is not None else _Prototype(cls, uri)
    # read on a thread of its own while this one judges the batches already read
    reads = read_ahead(source.iter_batches(batch_size_for(options, cls), with_vectors=False))
    try:
        plan = Plan(source=inventory, spec=spec, target_uri=str(uri), target_exists=exists,
                    on_unsupported=options.on_unsupported, reembed=options.reembed,
                    document_field=options.document_field,
                    mapping=str(options.mapping) if options.mapping else None,
                    vectors_problem=_vectors_problem(source, probe_store, uri))
        if target is not None and plan.vectors_problem is None:
            target.check_spec(spec)
        schema_map = options.schema_map
        ids = IdMapper(probe_store)  # type: ignore[arg-type]
        policy = MetadataPolicy(probe_store, options.on_unsupported)  # type: ignore[arg-type]
        seen: dict[str, RecordId] = {}
        source_keys: dict[str, RecordId] = {}
        # a store that keeps any document (the base rule) is not asked about each one
        judges_documents = getattr(cls.document_problem, "__func__", None) is not getattr(
            VectorStore.document_problem, "__func__", None)
        started = time.perf_counter()
        read = 0
        kept: list[RecordBatch] | None = [] if keep_bytes > 0 else None
        kept_bytes = 0
        for raw in reads:
            if kept is not None:
                kept_bytes += _approx_bytes(raw)
                if kept_bytes <= keep_bytes:
                    kept.append(raw)
                else:  # too much to keep: the copy reads whole records
                    kept = None
            batch = map_fields(raw, schema_map)
            if schema_map is not None:
                for rid, meta in zip(batch.ids, batch.metadatas, strict=True):
                    for name, value in meta.items():
                        if isinstance(value, Unconvertible):
                            plan.unconvertible[name] = plan.unconvertible.get(name, 0) + 1
                            plan.unconvertible_first.setdefault(name, f"{rid}: {value!r}")
            if source.HAS_DOCUMENTS and not probe_store.HAS_DOCUMENTS:
                plan.field_clash += [str(rid) for rid, meta in zip(
                    batch.ids, batch.metadatas, strict=True) if options.document_field in meta]
            mapped_ids = ids.map_all(batch.ids)
            shaped = shape_batch(batch, source, ids, options.document_field, mapped_ids)
            policy.scan(shaped.metadatas)
            if options.reembed:
                plan.no_document += [str(rid) for rid, doc in zip(
                    batch.ids, documents_of(batch, source, options.document_field), strict=True)
                    if not doc]
            for rid, doc, meta in zip(batch.ids, batch.documents, batch.metadatas, strict=True):
                where = invalid_text(rid, doc, meta)
                if where is not None:  # the id as it can be printed: the surrogate escaped
                    shown = str(rid).encode("utf-8", "backslashreplace").decode("utf-8")
                    plan.invalid_text[shown] = where
            if judges_documents:
                for rid, doc in zip(batch.ids, shaped.documents, strict=True):
                    problem = probe_store.document_problem(doc, uri)
                    if problem is not None:
                        plan.bad_documents[str(rid)] = problem
            mapped_count = 0
            for rid, (new_id, mapped) in zip(batch.ids, mapped_ids, strict=True):
                # ids are matched as text: 7 and "7" are one record to every check
                key = str(rid)
                mapped_count += mapped
                target_key = str(new_id)
                if key in source_keys:
                    plan.collisions.append((repr(source_keys[key]), repr(rid), key))
                elif target_key in seen:
                    plan.collisions.append((repr(seen[target_key]), repr(rid), target_key))
                # the first source id of each key (its repr only when a collision names it)
                source_keys.setdefault(key, rid)
                seen.setdefault(target_key, rid)
            plan.mapped_ids += mapped_count
            plan.native_ids += len(batch) - mapped_count
            read += len(batch)
        if probe and read:
            plan.read_rate = read / max(time.perf_counter() - started, 1e-9)
        plan.kept = kept
        plan.affected_fields = dict(policy.affected)
        plan.reasons = dict(policy.reasons)
        plan.bad_keys = dict(policy.bad_keys)
        plan.rounded_fields = dict(policy.rounded)
        plan.rounding_ulps = cls.float_rounding_ulps(uri)
        plan.strict_floats = options.strict_floats
        return plan
    finally:
        reads.close()  # stops the read, also when judging a batch raised
        if target is not None:
            target.close()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_in(value: Any) -> bool:
    if isinstance(value, str):
        return not value.isascii() and _SURROGATE.search(value) is not None
    if isinstance(value, (list, tuple)):
        return any(map(_surrogate_in, value))
    if isinstance(value, dict):
        return any(_surrogate_in(k) or _surrogate_in(v) for k, v in value.items())
    return False


def invalid_text(record_id: RecordId, document: str | None, metadata: dict[str, Any]
                 ) -> str | None:
    """Where a record holds text that is no Unicode (a lone surrogate: UTF-8, and so every
    store, cannot encode it), or None. A Python string can hold one, and a source can hand
    one over: LangChain keeps in Redis the half of an emoji a client cut."""
    if _surrogate_in(record_id):
        return "its id"
    if document is not None and _surrogate_in(document):
        return "its document"
    for key, value in metadata.items():
        if _surrogate_in(key) or _surrogate_in(value):
            return f"its metadata field {key!r}"
    return None


#: The spec of a table of records: no vectors, so no dimension or metric.
RECORDS_ONLY = CollectionSpec(dimension=0, metric="none", dtype="none")


def _vectors_problem(source: VectorStore, target: Any, uri: StoreURI) -> str | None:
    """Why the source's vectors (or their absence) cannot go into the target: a vector
    store's vectors are never dropped into a table silently, and a table's records have no
    vectors to give a vector store."""
    if source.HAS_VECTORS and not target.HAS_VECTORS:
        return (f"the target {uri} holds no vectors: the source's vectors would be lost")
    if not source.HAS_VECTORS and target.HAS_VECTORS:
        return (f"the source {source.uri} holds no vectors, and the target {uri} is a vector "
                "store")
    return None


def mapped_batches(batches: Iterator[RecordBatch], schema_map: SchemaMap | None
                   ) -> Generator[RecordBatch, None, None]:
    """The source's batches with their metadata as the schema mapping makes it."""
    for batch in batches:
        yield map_fields(batch, schema_map)


def map_fields(batch: RecordBatch, schema_map: SchemaMap | None) -> RecordBatch:
    """A source batch with its metadata as the schema mapping makes it (new dicts)."""
    if schema_map is None:
        return batch
    return RecordBatch(batch.ids, batch.vectors, [schema_map.apply(m) for m in batch.metadatas],
                       batch.documents)


def _approx_bytes(batch: RecordBatch) -> int:
    """About what a batch without vectors takes in memory: a record's measured overhead
    (stream.RECORD_OVERHEAD: three metadata fields and a short document), more per further
    field, and its text."""
    size = 0
    for meta, doc in zip(batch.metadatas, batch.documents, strict=True):
        size += RECORD_OVERHEAD + 64 * len(meta) + (len(doc) if isinstance(doc, str) else 0)
        size += sum(len(v) for v in meta.values() if isinstance(v, str))
    return size


def with_vectors(kept: list[RecordBatch], vectors: Iterator[RecordBatch]
                 ) -> Iterator[RecordBatch]:
    """The source's records from the plan's read (ids, metadata, documents) and a read of
    the vectors alone (VectorStore.iter_vectors), batch by batch; the two reads must find
    the same ids in the same order, or the source changed between them."""
    def changed(how: str) -> MigrationError:
        return MigrationError(f"the source changed between the plan's read and the copy's "
                              f"({how} now)", hint="a source must not change during a "
                              "migration; run it again")

    pending = deque(kept)
    kept.clear()  # each batch is let go once it is written
    for part in vectors:
        whole = pending.popleft() if pending else None
        if whole is None:
            raise changed("its records are more")
        if list(map(str, whole.ids)) != list(map(str, part.ids)):
            raise changed("its records are other ones or in another order")
        yield RecordBatch(whole.ids, part.vectors, whole.metadatas, whole.documents)
    if pending:
        raise changed("it holds fewer records")


class _Prototype:
    """A stand-in with a store class's declared abilities, for planning before it exists."""

    def __init__(self, cls: type[VectorStore], uri: StoreURI) -> None:
        self._cls = cls
        self.uri = uri
        self.HAS_VECTORS = cls.holds_vectors(uri)
        self.NATIVE_ID_KINDS = cls.NATIVE_ID_KINDS
        self.HAS_DOCUMENTS = cls.HAS_DOCUMENTS
        self.metadata_problem = cls.metadata_problem
        self.metadata_key_problem = cls.metadata_key_problem
        self.document_problem = cls.document_problem
        self.rounds_float = cls.rounds_float
        self.METADATA_VALUE_TYPES = cls.METADATA_VALUE_TYPES

    def accepts_id(self, record_id: Any) -> bool:
        """The store class's own rule (pgvector refuses NUL characters), or the base rule
        when that one needs an opened store's state (LanceDB's and Milvus's id type)."""
        try:
            return bool(self._cls.accepts_id(self, record_id))  # type: ignore[arg-type]
        except AttributeError:
            return VectorStore.accepts_id(self, record_id)  # type: ignore[arg-type]


def refuse_if_lossy(plan: Plan) -> None:
    """Raise PlanRefusedError, before anything is written, when the plan refuses."""
    refusals = plan.refusals()
    if refusals:
        reason, hint = refusals[0]
        more = f" (and {len(refusals) - 1} more reasons: vmtest plan lists them)" \
            if len(refusals) > 1 else ""
        raise PlanRefusedError(reason + more, hint=f"nothing was written; {hint}")


def migrate(
    source: VectorStore,
    target_uri: str | StoreURI,
    options: MigrationOptions | None = None,
    *,
    state_path: Path | None = None,
    restart: bool = False,
    transform: Transform | None = None,
    progress: Callable[[int], object] | None = None,
) -> MigrationReport:
    """Copy ``source`` into the store ``target_uri`` names (created from the source's shape
    when absent). With ``state_path``, progress is checkpointed there and a rerun resumes.
    ``transform`` rewrites each mapped batch before it is written (tests corrupt copies
    with it)."""
    options = options or MigrationOptions()
    started = time.perf_counter()
    uri = parse(target_uri) if isinstance(target_uri, str) else target_uri
    notes: list[str] = []
    # no state to resume: the run starts from the first record
    fresh = state_path is None or restart or not state_path.exists()
    if transform is None and fresh and _unchanged(options, source):
        native = _copy_natively(source, uri, options, state_path, notes)
        if native is not None:
            native.seconds = time.perf_counter() - started
            return native
    batch_size = batch_size_for(options, store_class(uri.scheme))
    # where the source reads vectors apart for less, the plan keeps its read for the copy
    # (a resumed run reads whole records from where it stopped)
    vectors_alone = source.iter_vectors(batch_size) if fresh else None
    plan = make_plan(source, uri, options, keep_bytes=KEEP_BYTES if vectors_alone else 0)
    refuse_if_lossy(plan)
    checkpoint = _load_checkpoint(state_path, restart, source, uri, options, plan)
    report = MigrationReport.of_plan(plan, source, uri, state_path)
    report.notes = notes
    report.resumed_from = checkpoint.done if checkpoint else 0
    if checkpoint is not None and checkpoint.done:
        verify_target(checkpoint.done, [(checkpoint.last_id, checkpoint.last_target_id)], uri,
                      state_path)
    if checkpoint is not None and checkpoint.finished:
        report.copied = 0
        report.seconds = time.perf_counter() - started
        return report
    with contextlib.ExitStack() as stack:
        dest = stack.enter_context(open_store(uri, create=plan.spec))
        if checkpoint is not None and not dest.IDEMPOTENT_WRITES:
            dest.rewind_to(checkpoint.target_position)
        workers = writers_for(dest, options)
        if vectors_alone is not None and plan.kept is not None:  # a fresh run
            read = with_vectors(plan.kept, read_ahead(vectors_alone))
        else:
            read = read_ahead(_resume(source, batch_size, checkpoint))
        batches = mapped_batches(read, options.schema_map)
        stack.callback(batches.close)  # stops the read when a write failed
        write = batch_writer(source, dest, options, state_path=state_path,
                             transform=transform)
        saved_at = -SAVE_EVERY_S  # the first acknowledged batch is saved at once

        def acknowledged(written: Written) -> None:
            nonlocal saved_at
            done, last_id = written.records, written.last_id
            report.retries += written.retries
            report.copied += done
            report.batches += 1
            if checkpoint is not None and state_path is not None:
                checkpoint.done += done
                checkpoint.last_id = last_id
                checkpoint.last_target_id = written.last_target_id
                checkpoint.target_position = dest.write_position()
                # an idempotent target takes a batch written twice as once: its checkpoint
                # (a synced file) is saved at most every SAVE_EVERY_S, and a crash redoes at
                # most that much; an append-only target's write position is saved each batch
                now = time.monotonic()
                if not dest.IDEMPOTENT_WRITES or now - saved_at >= SAVE_EVERY_S:
                    checkpoint.save(state_path)
                    saved_at = now
            if progress is not None:
                progress(done)

        if not dest.IDEMPOTENT_WRITES:
            # one batch at a time: the checkpoint's write position must be the target's own
            # after each batch, with nothing of the next one landed yet
            for batch in batches:
                acknowledged(write(batch))
        else:
            # the next batches are read (and mapped) while earlier ones are being written;
            # whatever was acknowledged is saved, also when a later batch failed
            try:
                write_in_order(batches, write, acknowledged, workers)
            except BaseException:
                if checkpoint is not None and state_path is not None:
                    checkpoint.save(state_path)
                raise
        if checkpoint is not None and state_path is not None:
            checkpoint.finished = True
            checkpoint.save(state_path)
    report.seconds = time.perf_counter() - started
    return report


def batch_writer(source: VectorStore, dest: VectorStore, options: MigrationOptions, *,
                 state_path: Path | None = None, transform: Transform | None = None
                 ) -> Callable[[RecordBatch], Written]:
    """What writes one source batch into ``dest``: re-embedded (--reembed), mapped (ids,
    documents, the metadata policy), written with retries; safe to call from several
    threads. The one writer of a migration, in one process or partition by partition."""
    ids = IdMapper(dest)
    policy = MetadataPolicy(dest, options.on_unsupported)
    embedder = load_embedder(options.reembed) if options.reembed else None

    def write(batch: RecordBatch) -> Written:
        if embedder is not None:
            batch = RecordBatch(batch.ids, embedder(documents_of(
                batch, source, options.document_field)), batch.metadatas, batch.documents)
        mapped = map_batch(batch, source, ids, policy, options.document_field)
        if transform is not None:
            mapped = transform(mapped)
        retries = _with_retries(lambda: dest.upsert(mapped), options, batch, state_path,
                                dest.CONNECTION_ERRORS)
        return Written(len(batch), str(batch.ids[-1]) if len(batch) else None, retries,
                       mapped.ids[-1] if len(mapped) else None)

    return write


def _unchanged(options: MigrationOptions, source: VectorStore) -> bool:
    """Whether the options ask for a copy that changes nothing (no re-embedding, mapping,
    other metric or other document field), which a store's own whole-collection copy can
    make."""
    return (options.transfer == "auto" and options.reembed is None and options.mapping is None
            and options.document_field == DEFAULT_DOCUMENT_FIELD
            and (options.metric is None or options.metric == source.describe().metric))


def _copy_natively(source: VectorStore, uri: StoreURI, options: MigrationOptions,
                   state_path: Path | None, notes: list[str]) -> MigrationReport | None:
    """The source store's own copy into ``uri`` (VectorStore.copy_natively), its report and
    finished state; None where it has none or it failed (why, in ``notes``)."""
    try:
        how = source.copy_natively(uri)
    except NativeCopyFailed as exc:
        notes.append(f"{exc.message}: {exc.hint}" if exc.hint else exc.message)
        return None
    if how is None:
        return None
    count = source.count()
    report = MigrationReport(source=str(source.uri), target=str(uri), copied=count,
                             state_path=str(state_path) if state_path else None, method=how)
    if state_path is not None:
        Checkpoint(source=str(source.uri), target=str(uri),
                   options=options.identity(), source_count=count, done=count,
                   finished=True, history=[{"method": how, "time": time.time()}]
                   ).save(state_path)
    return report


def copy_store(source: VectorStore, target_uri: str | StoreURI, *,
               transform: Transform | None = None, **options: Any) -> MigrationReport:
    """A one-shot migration with no checkpoint (tests and the quick start use it)."""
    return migrate(source, target_uri, MigrationOptions(**options), transform=transform)


def _load_checkpoint(state_path: Path | None, restart: bool, source: VectorStore,
                     target: StoreURI, options: MigrationOptions, plan: Plan
                     ) -> Checkpoint | None:
    if state_path is None:
        return None
    existing = None if restart else Checkpoint.load(state_path)
    if existing is not None:
        if not existing.belongs_to(str(source.uri), str(target), options.identity()):
            raise MigrationError(
                f"the state file {state_path} belongs to another migration "
                f"({existing.source} -> {existing.target}, {existing.options})",
                hint="use another --state, or --restart to begin this one from scratch",
            )
        if existing.source_count != plan.source.count and not existing.finished:
            raise MigrationError(
                f"the source held {existing.source_count} records when this migration began "
                f"and holds {plan.source.count} now",
                hint="a source must not change during a migration; --restart begins again",
            )
        existing.history.append({"resumed_at": existing.done, "time": time.time()})
        return existing
    return Checkpoint(source=str(source.uri), target=str(target), options=options.identity(),
                      source_count=plan.source.count)


def verify_target(done: int, last: list[tuple[str | None, Any]], uri: StoreURI,
                  state_path: Path | None) -> None:
    """A state file is trusted only as far as the target still bears it out: the target
    exists, holds at least as many records as the state says were written (``done``), and
    holds the last one written (``last``: the source id and target id of each run of writes
    the state counts). Else the target was deleted, recreated or replaced since (or the state
    file followed the user from another working copy): refuse rather than say "nothing to
    do"."""
    # what was found first: a message is cut to one_line's limit, and paths can be long
    said = f"the state file {state_path} says {done} records were migrated into it"
    hint = "--restart copies again from the start (or --state names another state file)"
    if uri.is_local and uri.path and not Path(uri.path).exists():
        raise MigrationError(f"the target's {uri.path} does not exist, but {said}", hint=hint)
    try:
        dest = store_class(uri.scheme).from_uri(uri)
    except StoreNotFoundError as exc:
        raise MigrationError(f"the target is not there ({exc.message}), but {said}",
                             hint=hint) from exc
    with dest:
        count = dest.count()
        if count < done:
            raise MigrationError(f"the target {uri} holds {count} records, but {said}: it was "
                                 "emptied or recreated since", hint=hint)
        for last_id, last_target in last:
            if last_target is not None and not len(dest.fetch([last_target])):
                raise MigrationError(f"the target {uri} does not hold the last record written "
                                     f"({last_id}, as {last_target}): it is another store, "
                                     f"but {said}", hint=hint)


def batch_size_for(options: MigrationOptions, target: type[VectorStore]) -> int:
    """--batch-size, else the target store's DEFAULT_BATCH_SIZE."""
    return options.batch_size or target.DEFAULT_BATCH_SIZE


def writers_for(dest: VectorStore, options: MigrationOptions) -> int:
    """How many writers: --workers, else the target's DEFAULT_WRITERS (one while re-embedding,
    whose model already uses every core); one for an append-only target."""
    if not dest.IDEMPOTENT_WRITES:
        return 1
    if options.workers is not None:
        return max(1, options.workers)
    return 1 if options.reembed else max(1, dest.default_writers(dest.uri))


def _resume(source: VectorStore, batch_size: int, checkpoint: Checkpoint | None
            ) -> Iterator[RecordBatch]:
    """The source's batches, without the records a checkpoint says are done. The record at
    the boundary must be the one the checkpoint names, or the source changed order."""
    # Read once: the checkpoint moves on while this generator is being consumed.
    skip = checkpoint.done if checkpoint is not None else 0
    boundary = checkpoint.last_id if checkpoint is not None else None
    seen = 0
    for batch in source.iter_batches(batch_size):
        start, seen = seen, seen + len(batch)
        if seen <= skip:
            if seen == skip and len(batch):
                _same_boundary(skip, boundary, batch.ids[-1])
            continue
        if start < skip:
            cut = skip - start
            _same_boundary(skip, boundary, batch.ids[cut - 1])
            batch = batch.take(range(cut, len(batch)))
        yield batch


def _same_boundary(done: int, expected: str | None, record_id: object) -> None:
    if expected is not None and str(record_id) != expected:
        raise MigrationError(
            f"the source no longer returns its records in the order this migration began with "
            f"(record {done} was {expected!r}, now {record_id!r})",
            hint="--restart begins again (upserts make that safe for database targets)",
        )


def _with_retries(write: Callable[[], None], options: MigrationOptions, batch: RecordBatch,
                  state_path: Path | None, connection_errors: frozenset[str]) -> int:
    """Write, retrying transient failures with exponential backoff; the number of retries."""
    for attempt in range(options.retries + 1):
        try:
            write()
            return attempt
        except Exception as exc:
            transient = isinstance(exc, StoreUnreachableError) or is_connection_error(
                exc, connection_errors)
            if transient and attempt < options.retries:
                time.sleep(options.backoff_s * 2**attempt)
                continue
            failed = _write_failed_ids(batch, state_path, exc)
            raise MigrationError(
                f"a batch of {len(batch)} records failed after {attempt + 1} attempts: {exc}",
                hint=f"their ids are in {failed}; nothing after the last checkpoint counts as "
                "done: run the same command again to resume",
            ) from exc
    raise AssertionError("unreachable")


def _write_failed_ids(batch: RecordBatch, state_path: Path | None, exc: Exception) -> Path:
    base = state_path if state_path is not None else Path("reports") / "migrate"
    path = base.with_name(base.name + ".failed.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"error": str(exc), "ids": [str(i) for i in batch.ids]},
                               indent=1))
    return path


def read_ahead(batches: Iterable[RecordBatch], depth: int = 2
               ) -> Generator[RecordBatch, None, None]:
    """``batches`` as they come, read on a thread of their own up to ``depth`` batches ahead:
    a driver that lets the GIL go while it reads (Chroma's does, for most of a read) reads the
    next batches while this thread works on the last ones. What the read raises is raised
    here; a caller that stops early stops the read (after the batch it is reading)."""
    slots: queue.Queue[tuple[RecordBatch | None, BaseException | None]] = queue.Queue(depth)
    stopped = threading.Event()

    def put(item: tuple[RecordBatch | None, BaseException | None]) -> bool:
        while not stopped.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(batches)
        try:
            for batch in iterator:
                if not put((batch, None)):
                    return
            put((None, None))
        except BaseException as exc:  # raised where the batches are used
            put((None, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=produce, name="vmtest-reader", daemon=True)
    reader.start()
    try:
        while True:
            batch, error = slots.get()
            if error is not None:
                raise error
            if batch is None:
                return
            yield batch
    finally:
        stopped.set()
        reader.join()


def write_in_order(batches: Iterator[RecordBatch], write: Callable[[RecordBatch], Written],
              acknowledged: Callable[[Written], None], workers: int) -> None:
    """Write with ``workers`` threads while this one takes the next batches; acknowledge
    strictly in source order, so a checkpoint never skips over a batch still in flight. Once
    a batch failed, the batches behind it are not written (as a run one batch at a time would
    not have reached them)."""
    in_flight: deque[Future[Written]] = deque()
    stopped = threading.Event()

    def guarded(batch: RecordBatch) -> Written:
        if stopped.is_set():
            raise MigrationError("not written: an earlier batch failed")
        try:
            return write(batch)
        except BaseException:
            stopped.set()
            raise

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vmtest-writer") as pool:
        try:
            for batch in batches:
                in_flight.append(pool.submit(guarded, batch))
                while len(in_flight) >= 2 * workers:
                    acknowledged(in_flight.popleft().result())
            while in_flight:
                acknowledged(in_flight.popleft().result())
        finally:
            stopped.set()
            for future in in_flight:
                future.cancel()
