"""The store abstraction: one small base class that every store implements.

A store reads and writes :class:`RecordBatch` objects (columnar: ids, a vector matrix,
metadata dicts, documents) and describes itself with an :class:`Inventory`. Metrics use one
vocabulary across stores: ``cosine``, ``l2`` (Euclidean), ``ip`` (inner product / dot) and
``l1`` (Manhattan).
"""

from __future__ import annotations

import contextlib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from vmtest import dist_version
from vmtest.uri import StoreURI

if TYPE_CHECKING:
    from vmtest.stores.changes import ChangeFeed

__all__ = ["dist_version"]  # re-exported: each store reports its driver's version

RecordId = str | int
METRICS = ("cosine", "l2", "ip", "l1")


@dataclass
class RecordBatch:
    """Records in columns. ``vectors`` is ``None`` when read without vectors."""

    ids: list[RecordId]
    vectors: np.ndarray | None
    metadatas: list[dict[str, Any]]
    documents: list[str | None]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.metadatas) != n or len(self.documents) != n:
            raise ValueError("a RecordBatch needs as many metadatas and documents as ids")
        if self.vectors is not None and len(self.vectors) != n:
            raise ValueError("a RecordBatch needs as many vectors as ids")

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, indices: Sequence[int]) -> RecordBatch:
        idx = list(indices)
        return RecordBatch(
            ids=[self.ids[i] for i in idx],
            vectors=None if self.vectors is None else self.vectors[idx],
            metadatas=[self.metadatas[i] for i in idx],
            documents=[self.documents[i] for i in idx],
        )

    @classmethod
    def empty(cls, dimension: int = 0) -> RecordBatch:
        return cls([], np.zeros((0, dimension), dtype=np.float32), [], [])

    @classmethod
    def concat(cls, batches: Sequence[RecordBatch]) -> RecordBatch:
        if not batches:
            return cls.empty()
        vectors = [b.vectors for b in batches if b.vectors is not None and len(b.vectors)]
        without = all(b.vectors is None for b in batches)  # a store without vectors
        return cls(
            ids=[i for b in batches for i in b.ids],
            vectors=None if without else np.concatenate(vectors) if vectors
            else np.zeros((0, 0), dtype=np.float32),
            metadatas=[m for b in batches for m in b.metadatas],
            documents=[d for b in batches for d in b.documents],
        )


@dataclass(frozen=True)
class CollectionSpec:
    """What a new target collection must be: the source's shape, in the common vocabulary."""

    dimension: int
    metric: str
    dtype: str = "float32"


@dataclass
class Inventory:
    """What a store says about itself: the figures the inventory and drift checks compare."""

    kind: str
    uri: str
    count: int
    dimension: int | None
    metric: str | None
    dtype: str | None
    index: dict[str, Any] = field(default_factory=dict)
    payload_indexes: list[str] = field(default_factory=list)
    metadata_types: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: The embedding model the vectors come from, when the user names it (--vmtest-source-model).
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            "uri": self.uri,
            "count": self.count,
            "dimension": self.dimension,
            "metric": self.metric,
            "dtype": self.dtype,
            "index": self.index,
            "payload_indexes": self.payload_indexes,
            "metadata_types": self.metadata_types,
            "versions": self.versions,
        }


def json_type(value: Any) -> str:
    """The JSON type name vmtest uses for a metadata value (bool before int: True is an int)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return type(value).__name__


def metadata_types(metadatas: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    types: dict[str, set[str]] = {}
    for meta in metadatas:
        for key, value in meta.items():
            types.setdefault(key, set()).add(json_type(value))
    return {key: sorted(found) for key, found in sorted(types.items())}


#: A UUID in its canonical text form (either case): what ``str(uuid.UUID(v)) == v.lower()``
#: accepts, matched without building a UUID (the runner asks once per record).
_UUID_TEXT = re.compile("-".join(f"[0-9a-fA-F]{{{n}}}" for n in (8, 4, 4, 4, 12)))


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID_TEXT.fullmatch(value) is not None


@dataclass(frozen=True)
class Partition:
    """One of the independent parts a store splits itself into (:meth:`VectorStore.partitions`):
    together they hold every record once. ``spec`` is what the store needs to read this part
    again, JSON-ready, so a partition travels to another process (a Ray task) and keys a
    checkpoint; ``label`` says what it is in words ("row groups 0-3 of part-000001.parquet")."""

    index: int
    spec: dict[str, Any] = field(hash=False, compare=True)
    label: str = ""


#: The one partition of a store that cannot split itself: every record.
WHOLE = {"whole": True}


@dataclass(frozen=True)
class Recipe:
    """How to provide a fresh, empty store of one kind (vmtest.provision runs it): for the
    process provider, ``process(folder, name)`` is a context manager yielding the store's URI
    (a path inside the folder, or a server started as a child process and stopped on exit);
    for the containers provider, ``container(image, name)`` does the same with a container of
    the pinned ``image``."""

    kind: str
    process: Callable[[Path, str], AbstractContextManager[str]]
    image: str | None = None
    container: Callable[[str, str], AbstractContextManager[str]] | None = None
    #: Whether the store it provides holds vectors (a table of records does not).
    vectors: bool = True


def local_recipe(kind: str, template: str, *, vectors: bool = True) -> Recipe:
    """A recipe for an embedded store: a path in the folder (``{dir}``, ``{name}``)."""
    @contextlib.contextmanager
    def provide(folder: Path, name: str) -> Iterator[str]:
        yield template.format(dir=folder, name=name)

    return Recipe(kind, provide, vectors=vectors)


def served(server: str, subfolder: str) -> Callable[[Path, str], AbstractContextManager[str]]:
    """A process recipe that starts the local server ``vmtest.servers.<server>`` with its data
    in ``folder/subfolder`` and yields the URI of ``name`` on it (stopped on exit)."""
    @contextlib.contextmanager
    def provide(folder: Path, name: str) -> Iterator[str]:
        from vmtest import servers

        with getattr(servers, server)(folder / subfolder) as running:
            yield running.uri(name)

    return provide


class VectorStore(ABC):
    """A vector store reached through a URI.

    Subclasses set ``scheme`` and ``URI_HELP``, implement :meth:`from_uri` and the abstract
    methods, and declare what they can hold with the class flags below. Drivers are imported
    inside the store, never at module import, so a missing one raises
    :class:`~vmtest.errors.MissingDriverError`.
    """

    scheme: ClassVar[str]
    URI_HELP: ClassVar[str]
    #: The id kinds the store keeps natively: any of "str", "int", "uuid".
    NATIVE_ID_KINDS: ClassVar[frozenset[str]] = frozenset({"str", "int"})
    #: Whether documents are a column of their own (else they live in a payload field).
    HAS_DOCUMENTS: ClassVar[bool] = True
    #: Whether the store holds vectors. A store of records without vectors (a document table,
    #: a chat history) says False: it reads batches whose ``vectors`` is None, refuses a
    #: batch with vectors (nothing is dropped silently), and the vector checks do not apply.
    HAS_VECTORS: ClassVar[bool] = True
    #: Whether empty metadata and missing metadata are the same thing in this store.
    EMPTY_METADATA_IS_NONE: ClassVar[bool] = False
    #: Metrics the store can be created with.
    METRICS: ClassVar[tuple[str, ...]] = ("cosine", "l2", "ip")
    #: Whether writing a record twice leaves one record (an upsert), so a batch that may or
    #: may not have landed can simply be sent again. Append-only stores say False and
    #: implement write_position / rewind_to instead.
    IDEMPOTENT_WRITES: ClassVar[bool] = True
    #: Whether delete() removes records (a sync that drops extra records and dual writes need
    #: it). Stores that cannot, append-only files among them, say False.
    CAN_DELETE: ClassVar[bool] = False
    #: Whether fetch() reads the whole store (a file): fetch once, never in many calls.
    FETCH_IS_SCAN: ClassVar[bool] = False
    #: Ids a partitioned check asks fetch() for at once (a store whose lookup by id scans a
    #: column, not an index, asks for more at once: fewer scans).
    LOOKUP_CHUNK: ClassVar[int] = 1000
    #: The kinds of store this class can be provisioned as (--migrate-to=KIND), with how.
    PROVISIONING: ClassVar[tuple[Recipe, ...]] = ()
    #: The names of the driver's exceptions that mean the server is gone or silent (Python's
    #: own ConnectionError family is always recognised).
    CONNECTION_ERRORS: ClassVar[frozenset[str]] = frozenset()
    #: How many units in the last place the store may change a float metadata value by (0:
    #: it keeps doubles exactly). Measured by the contract suite (tests/test_store_contract.py
    #: writes 6,000 doubles of every magnitude and reads them back).
    FLOAT_ROUNDING_ULPS: ClassVar[int] = 0
    #: What a local URI's path names: a "folder" or a "file" (None: the store has no local
    #: form). Checked before the driver is imported, so a typo fails fast and creates nothing.
    LOCAL_PATH: ClassVar[str | None] = None
    #: Files (glob patterns) whose presence in the folder shows it holds a store of this kind.
    LOCAL_MARKERS: ClassVar[tuple[str, ...]] = ()
    #: The metadata value types whose every value metadata_problem and rounds_float must see
    #: (a float's digits, a list's items). For a value of any other type their answer depends
    #: only on its key and type, and the runner asks once per (key, type). None: every value
    #: is asked (the safe default for a store that does not say).
    METADATA_VALUE_TYPES: ClassVar[tuple[type, ...] | None] = None
    #: Records per read and write of `vmtest migrate` into this store when --batch-size is not
    #: given. The base value was measured with benchmarks/run.py (10,000 x 128 on 2 cores):
    #: Chroma migrated 1,361 records/s at batch 100, 1,725 at 500, 2,132 at 1,000 and 2,117 at
    #: 2,000; Parquet stopped gaining after 500. A store measured otherwise says so
    #: (benchmarks/batch_sweep.py).
    DEFAULT_BATCH_SIZE: ClassVar[int] = 1000
    #: How many writers `vmtest migrate` runs into this store when --workers is not given,
    #: chosen by measurement (benchmarks/peers.py). Only stores with IDEMPOTENT_WRITES take
    #: more than one.
    DEFAULT_WRITERS: ClassVar[int] = 1

    uri: StoreURI

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> VectorStore:
        """Open the store. With ``create``, make the collection when it does not exist and
        refuse (SchemaMismatchError) an existing one of another shape."""

    @classmethod
    def holds_vectors(cls, uri: StoreURI | None = None) -> bool:
        """Whether the store at ``uri`` holds vectors (see HAS_VECTORS), before it exists."""
        return cls.HAS_VECTORS

    @classmethod
    def float_rounding_ulps(cls, uri: StoreURI | None = None) -> int:
        """The float rounding the store at ``uri`` declares (see FLOAT_ROUNDING_ULPS)."""
        return cls.FLOAT_ROUNDING_ULPS

    @classmethod
    def default_writers(cls, uri: StoreURI | None = None) -> int:
        """The writers the store at ``uri`` takes by default (see DEFAULT_WRITERS)."""
        return cls.DEFAULT_WRITERS

    @classmethod
    def rounds_float(cls, value: Any, uri: StoreURI | None = None) -> bool:
        """Whether the store at ``uri`` may give this metadata value back with a float
        rounded (within its declared FLOAT_ROUNDING_ULPS)."""
        return cls.float_rounding_ulps(uri) > 0 and float_at_risk(value)

    @classmethod
    def check_local_path(cls, uri: StoreURI, create: CollectionSpec | None) -> None:
        """Refuse, before anything is opened or written, a local path that does not hold a
        store of this kind (reading), or whose parent folder does not exist (creating): a
        mistyped path must fail in a line and leave nothing behind."""
        from pathlib import Path

        from vmtest.errors import StoreNotFoundError

        if cls.LOCAL_PATH is None or not uri.is_local or not uri.path:
            return
        path = Path(uri.path)
        what = cls.LOCAL_PATH
        if path.exists():
            if create is None and cls.LOCAL_MARKERS and path.is_dir() and not any(
                    next(path.glob(marker), None) for marker in cls.LOCAL_MARKERS):
                raise StoreNotFoundError(
                    f"the folder {path} holds no {cls.ENGINE} store (no "
                    f"{' or '.join(cls.LOCAL_MARKERS)} in it)", hint=cls.URI_HELP)
            return
        if create is None:
            raise StoreNotFoundError(f"the {what} {path} does not exist", hint=cls.URI_HELP)
        if not path.parent.is_dir():
            raise StoreNotFoundError(
                f"the folder {path.parent}, which would hold the new {cls.ENGINE} store, does "
                "not exist", hint=f"create it first (mkdir -p {path.parent}): vmtest creates "
                "a store only inside an existing folder")

    @abstractmethod
    def count(self) -> int:
        """The exact number of records."""

    @abstractmethod
    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        """Every record once, in batches of at most ``batch_size``."""

    def iter_vectors(self, batch_size: int) -> Iterator[RecordBatch] | None:
        """The ids and vectors alone (metadata and documents empty), in the order and batches
        of :meth:`iter_batches`, where the store reads them so for clearly less than whole
        records; None where it does not (this default). A migration then reads metadata and
        documents once, in its plan, and vectors in its copy, instead of reading both twice."""
        return None

    @abstractmethod
    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        """The records with these native ids (those that exist), with vectors."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        """For each query vector, the native ids of the top ``k`` records, best first.
        ``where`` restricts to records whose metadata field equals the value."""

    @abstractmethod
    def upsert(self, batch: RecordBatch) -> None:
        """Write the records; return only once the store has acknowledged them."""

    def partitions(self, wanted: int) -> list[Partition]:
        """About ``wanted`` independent partitions that together hold every record once, each
        read by :meth:`read_partition` (in this process or another). A store that cannot split
        itself says so by returning one partition, the whole store (this default)."""
        return [Partition(0, dict(WHOLE), "the whole store")]

    def read_partition(self, part: Partition, batch_size: int, *,
                       with_vectors: bool = True) -> Iterator[RecordBatch]:
        """Every record of one partition (of :meth:`partitions`) once, in batches."""
        if part.spec != WHOLE:
            raise ValueError(f"the {self.ENGINE} store has no partition {part.spec}")
        return self.iter_batches(batch_size, with_vectors=with_vectors)

    def existing(self, ids: Sequence[RecordId]) -> list[RecordId]:
        """Which of these native ids the store holds, reading ids only where the store can
        (this default fetches the records; a store whose fetch is a scan scans without
        vectors)."""
        held = [rid for rid in ids if self.accepts_id(rid)]
        if self.FETCH_IS_SCAN:
            wanted = {str(i) for i in held}
            return [rid for batch in self.iter_batches(10_000, with_vectors=False)
                    for rid in batch.ids if str(rid) in wanted]
        return list(self.fetch(held).ids) if held else []

    def delete(self, ids: Sequence[RecordId]) -> None:
        """Delete these records; ids not present are ignored (idempotent); return only once
        the store has acknowledged it. Stores that can override this and say CAN_DELETE."""
        from vmtest.errors import ConfigError

        raise ConfigError(f"the {self.ENGINE} store {self.uri} cannot delete records",
                          hint="use a target store that can delete, or go without deleting")

    @abstractmethod
    def describe(self) -> Inventory:
        """Count, dimension, metric, dtype, index parameters, metadata key types."""

    @classmethod
    def metadata_key_problem(cls, key: str, uri: StoreURI | None = None) -> str | None:
        """Why the store at ``uri`` cannot hold a metadata field of this name, whatever its
        value (None: it can). No value policy (JSON text) helps; only dropping the field."""
        return None

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        """Why the store at ``uri`` cannot hold this metadata value as it is (None: it can).
        A class method, so a migration can be planned before the target exists."""
        return None

    @classmethod
    def document_problem(cls, document: str | None, uri: StoreURI | None = None) -> str | None:
        """Why the store cannot hold this document as it is (None: it can)."""
        return None

    #: The engine's name in messages ("the Chroma store ... stopped answering").
    ENGINE: ClassVar[str] = "vector"

    def check_spec(self, spec: CollectionSpec) -> None:
        """Refuse (SchemaMismatchError) an existing collection of another dimension or metric
        than the source needs. A side that cannot tell (an empty Chroma collection has no
        dimension yet) is not refused."""
        from vmtest.errors import SchemaMismatchError

        inv = self.describe()
        for name in ("dimension", "metric"):
            have, want = getattr(inv, name), getattr(spec, name)
            if have is not None and have != want:
                raise SchemaMismatchError(
                    f"{self.uri} holds {name} {have!r}; the source has {want!r}",
                    hint="write into a new collection, table or file",
                )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the driver; a connection that failed or timed out becomes a
        StoreUnreachableError naming the store."""
        from vmtest.errors import StoreUnreachableError

        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if is_connection_error(exc, self.CONNECTION_ERRORS):
                raise StoreUnreachableError(
                    f"the {self.ENGINE} store {self.uri} stopped answering: {exc}",
                    hint="check that the server is still running",
                ) from exc
            raise

    def write_position(self) -> Any:
        """An opaque, JSON-ready mark of how much has been written (append-only stores)."""
        return None

    def rewind_to(self, position: Any) -> None:  # noqa: B027 - optional hook
        """Forget whatever was written after ``position`` (append-only stores)."""

    def copy_natively(self, target: StoreURI) -> str | None:
        """Copy this whole store into ``target``, a store of the same engine that does not
        exist yet, the engine's own way and bit for bit (a Qdrant server: a collection
        snapshot recovered on the other server), and say how; None where the engine has no
        such way or it does not apply to this pair (the runner copies record by record).
        A native copy that was tried and failed raises :class:`NativeCopyFailed` after
        removing what it made."""
        return None

    def accepts_id(self, record_id: RecordId) -> bool:
        """Whether this id can be stored as it is (else the runner maps it)."""
        if isinstance(record_id, bool):
            return False
        if isinstance(record_id, int):
            return "int" in self.NATIVE_ID_KINDS and record_id >= 0
        if "str" in self.NATIVE_ID_KINDS:
            return True
        return "uuid" in self.NATIVE_ID_KINDS and is_uuid(record_id)

    def change_feed(self, name: str) -> ChangeFeed:
        """The store's feed of changed ids under ``name`` (created, or reopened when it
        exists), for ``vmtest sync``; raises ChangeFeedUnavailable where there is none."""
        from vmtest.stores.changes import ChangeFeedUnavailable

        raise ChangeFeedUnavailable(f"the {self.ENGINE} store has no change feed vmtest reads")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the client; stores without resources need nothing."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.uri}>"


#: Python's own exceptions for a peer that is gone or silent; each store adds its driver's
#: (VectorStore.CONNECTION_ERRORS).
PYTHON_CONNECTION_ERRORS = frozenset({
    "ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "TimeoutError",
})
#: httpx's, for the stores whose clients speak HTTP through it (Chroma, Qdrant).
HTTPX_CONNECTION_ERRORS = frozenset({
    "ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
    "RemoteProtocolError", "TimeoutException",
})


def is_connection_error(exc: BaseException, names: frozenset[str] = frozenset()) -> bool:
    """Whether an exception (or one it was raised from) says the server is gone or silent:
    one of Python's, or one of ``names`` (a store's CONNECTION_ERRORS)."""
    known = PYTHON_CONNECTION_ERRORS | names
    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:  # a chain can loop back on itself
        visited.add(id(seen))
        if any(cls.__name__ in known for cls in type(seen).__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def has_non_finite(value: Any) -> bool:
    """Whether a JSON-like value holds NaN or an infinity anywhere (JSON has neither)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(has_non_finite(v) for v in value.values())
    return False


def float_problem(value: Any, engine: str) -> str | None:
    """Why an engine that parses floats the fast, inexact way (Chroma; a Qdrant server)
    cannot hold this value (None: it can): it turns NaN and infinities into nothing. The last
    digits it may change are not a problem of this kind but a declared rounding
    (:func:`float_at_risk`, ``FLOAT_ROUNDING_ULPS``): copied, counted and reported."""
    if isinstance(value, (list, tuple)):
        return next(filter(None, (float_problem(v, engine) for v in value)), None)
    if isinstance(value, dict):
        return next(filter(None, (float_problem(v, engine) for v in value.values())), None)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{engine} loses NaN and infinite floats"
    return None


def float_at_risk(value: Any) -> bool:
    """Whether an engine that parses floats the fast, inexact way may give this value back
    with the last digits of a float changed (0.42451918914251396 reads back as
    0.4245191891425139: about one random float in ten). Measured on 14,000 to 20,000 floats
    each (docs/stores.md): a float survives when it is written with at most 15 significant
    digits, as M x 10^E with |E| <= 22, and is under 1e15 in size. Others may survive too,
    but cannot be promised to."""
    if isinstance(value, (list, tuple)):
        return any(map(float_at_risk, value))
    if isinstance(value, dict):
        return any(map(float_at_risk, value.values()))
    if not isinstance(value, float) or not math.isfinite(value) or value == 0.0:
        return False
    if abs(value) >= 1e15:
        return True
    # repr is the shortest text that reads back as the value: its significant digits M and
    # exponent E (value = M x 10^E, M without trailing zeros), read off the text (what
    # Decimal(repr(value)).as_tuple() gives, several times faster: asked once per float)
    mantissa, _, power = float.__repr__(value).partition("e")  # a subclass's too
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("-0")
    significant = len(digits.rstrip("0"))
    exponent = (int(power) if power else 0) - len(fraction) + len(digits) - significant
    return significant > 15 or not -22 <= exponent <= 22
