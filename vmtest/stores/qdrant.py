"""Qdrant through qdrant-client: local mode (``qdrant:///ABS/DIR?collection=NAME``) or a server
(``qdrant://HOST:PORT?collection=NAME``; the API key from the URI's password or
``QDRANT_API_KEY``). ``?vector=NAME`` picks a named dense vector.

A server is read over REST and, where the URI names its gRPC port (``&grpc_port=6334``),
written over gRPC, the two that measured fastest (benchmarks/peers.py, docs/benchmarks.md):
a gRPC write costs the server a third of the CPU of a REST one, and its vectors go as
float32 bytes; a gRPC read of vectors cost the server three times a REST one. REST answers
are not compressed (``&compression=gzip`` asks for gzip, for a slow link).
``&prefer_grpc=true`` sends every call over gRPC; ``&prefer_grpc=false`` none.

Qdrant keeps unsigned-integer or UUID ids, JSON payloads (nested values and null included),
and (a server; not qdrant-client's local mode) normalises vectors of a Cosine collection when
they are written. Documents have no column of their own: they live in a payload field
(``document`` unless told otherwise).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from vmtest.errors import (
    ConfigError,
    MissingDriverError,
    NativeCopyFailed,
    SchemaMismatchError,
    StoreNotFoundError,
    StoreUnreachableError,
    VmtestError,
)
from vmtest.stores.base import (
    HTTPX_CONNECTION_ERRORS,
    CollectionSpec,
    Inventory,
    Partition,
    Recipe,
    RecordBatch,
    RecordId,
    VectorStore,
    dist_version,
    float_problem,
    local_recipe,
    metadata_types,
    served,
)
from vmtest.uri import StoreURI

DEFAULT_PORT = 6333
#: The smallest UUID: in Qdrant's id order, every integer id comes before it.
UUID_ZERO = uuid.UUID(int=0)
TIMEOUT_S = 30
#: gRPC status codes that mean the server is gone or silent (others: it refused the request).
TRANSIENT_GRPC = ("UNAVAILABLE", "DEADLINE_EXCEEDED")

#: Qdrant's distance names <-> vmtest's metric vocabulary.
QDRANT_TO_METRIC = {"Cosine": "cosine", "Euclid": "l2", "Dot": "ip", "Manhattan": "l1"}
METRIC_TO_QDRANT = {v: k for k, v in QDRANT_TO_METRIC.items()}


@contextlib.contextmanager
def _qdrant_container(image: str, name: str) -> Iterator[str]:
    from testcontainers.community.qdrant import QdrantContainer

    from vmtest.provision import ours

    with ours(QdrantContainer(image=image)) as qdrant:
        yield (f"qdrant://{qdrant.get_container_host_ip()}:{qdrant.exposed_rest_port}"
               f"?collection={name}")


class QdrantStore(VectorStore):
    PROVISIONING = (
        local_recipe("qdrant", "qdrant://{dir}/qdrant?collection={name}"),
        Recipe("qdrant-server", served("QdrantServer", "qdrant-server"),
               "qdrant/qdrant:v1.16.3", _qdrant_container),
    )
    scheme = "qdrant"
    ENGINE = "Qdrant"
    LOCAL_PATH = "folder"
    LOCAL_MARKERS = ("meta.json", "collection")
    URI_HELP = (
        "qdrant:///ABS/DIR?collection=NAME (local mode) or "
        "qdrant://[:API_KEY@]HOST:PORT?collection=NAME[&vector=NAME] (a Qdrant server)"
    )
    NATIVE_ID_KINDS = frozenset({"int", "uuid"})
    HAS_DOCUMENTS = False
    METRICS = ("cosine", "l2", "ip", "l1")
    CAN_DELETE = True

    #: httpx's over REST, gRPC's over gRPC, and qdrant-client's wrapper of both.
    CONNECTION_ERRORS = HTTPX_CONNECTION_ERRORS | {"ResponseHandlingException",
                                                   "_InactiveRpcError"}
    #: A Qdrant server: 751 of 6,000 doubles came back changed, by at most 3 ulps (1.16.3).
    FLOAT_ROUNDING_ULPS = 4
    #: metadata_problem and rounds_float look at the values of these types only.
    METADATA_VALUE_TYPES = (float, list, tuple, dict)
    #: A server, written over gRPC, measured with benchmarks/batch_sweep.py (20,000 x 384, 2
    #: shared cores, median of 3 alternating rounds, records/s). Chroma -> Qdrant: batch 250:
    #: 2,423 / 2,201 / 2,284 with 1 / 2 / 3 writers; 500: 2,740 / 2,349 / 2,599; 1,000:
    #: 2,573 / 2,860 / 2,882; 2,000: 2,502 / 2,682 / 2,856. Qdrant -> Qdrant: 250: 2,388 /
    #: 2,379 / 2,262; 500: 2,538 / 2,676 / 2,712; 1,000: 2,624 / 2,597 / 2,524; 2,000: 2,337 /
    #: 2,325 / 2,325. Rounds differ by up to 15%: batch 1,000 is within 4% of the best
    #: of both pairs; a second writer gained 11% from Chroma and nothing from Qdrant; a third
    #: nothing more.
    DEFAULT_BATCH_SIZE = 1000
    DEFAULT_WRITERS = 2

    @classmethod
    def float_rounding_ulps(cls, uri: StoreURI | None = None) -> int:
        """Local mode is plain Python and keeps doubles; the server rounds some."""
        return 0 if uri is not None and uri.is_local else cls.FLOAT_ROUNDING_ULPS

    @classmethod
    def default_writers(cls, uri: StoreURI | None = None) -> int:
        """Local mode is one Python process behind a lock: one writer."""
        return 1 if uri is not None and uri.is_local else cls.DEFAULT_WRITERS

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        """A Qdrant server stores null for NaN and infinities, and changes the last digits of
        many floats, silently (local mode, plain Python, keeps them)."""
        if uri is not None and not uri.is_local:
            return float_problem(value, "a Qdrant server")
        return None

    def __init__(self, uri: StoreURI, client: Any, collection: str, vector: str | None,
                 *, grpc_writes: bool = False) -> None:
        self.uri = uri
        self._client = client
        self.collection = collection
        self.vector_name = vector
        #: Whether upsert writes over gRPC (a server whose URI names its gRPC port).
        self.grpc_writes = grpc_writes

    @staticmethod
    def _connect(uri: StoreURI) -> Any:
        """A qdrant-client for the URI: a local folder, or a server (REST, and gRPC where
        the URI asks for it)."""
        from qdrant_client import QdrantClient

        if uri.is_local:
            return QdrantClient(path=uri.path)
        prefer_grpc = uri.param("prefer_grpc")
        # gzip costs both ends more CPU than the bytes it saves on a fast link
        encoding = "gzip" if uri.param("compression") == "gzip" else "identity"
        return QdrantClient(
            host=uri.host,
            port=uri.port or DEFAULT_PORT,
            grpc_port=int(uri.param("grpc_port", "6334") or 6334),
            prefer_grpc=prefer_grpc == "true",
            https=uri.param("https", "false") == "true",
            api_key=_api_key(uri),
            timeout=TIMEOUT_S,
            check_compatibility=False,
            metadata={"Accept-Encoding": encoding},
            verify=_tls_context(),
        )

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> QdrantStore:
        try:
            import qdrant_client  # noqa: F401 - the driver is there, or say which extra
        except ImportError as exc:
            raise MissingDriverError("qdrant", "qdrant-client", "qdrant") from exc
        name = uri.require_param("collection", cls.URI_HELP)
        prefer_grpc = uri.param("prefer_grpc")
        grpc_writes = not uri.is_local and prefer_grpc != "false" and (
            uri.param("grpc_port") is not None or prefer_grpc == "true")
        try:
            client = cls._connect(uri)
            exists = client.collection_exists(name)
        except Exception as exc:
            if isinstance(exc, RuntimeError) and "already accessed" in str(exc):
                raise ConfigError(
                    f"the Qdrant folder {uri} is open in another process",
                    hint="local mode allows one client per folder: stop the other one, "
                    "or serve the folder with a Qdrant server",
                ) from exc
            raise StoreUnreachableError(
                f"cannot reach the Qdrant store {uri}: {exc}",
                hint="check that the Qdrant server is running on that host and port "
                "(and the API key)",
            ) from exc
        vector = uri.param("vector")
        if not exists:
            if create is None:
                names = sorted(c.name for c in client.get_collections().collections)
                client.close()
                raise StoreNotFoundError(
                    f"the Qdrant store {uri} has no collection {name!r}",
                    hint="collections there: " + (", ".join(names) or "none"),
                )
            cls._create(client, name, vector, create)
        store = cls(uri, client, name, vector, grpc_writes=grpc_writes)
        store.vector_name = store._resolve_vector_name()
        if create is not None and exists:
            store.check_spec(create)
        return store

    @staticmethod
    def _create(client: Any, name: str, vector: str | None, spec: CollectionSpec) -> None:
        from qdrant_client import models

        if spec.metric not in METRIC_TO_QDRANT:
            raise SchemaMismatchError(f"Qdrant has no metric {spec.metric!r}")
        datatype = {"float16": models.Datatype.FLOAT16, "uint8": models.Datatype.UINT8}.get(
            spec.dtype
        )
        params = models.VectorParams(
            size=spec.dimension,
            distance=models.Distance(METRIC_TO_QDRANT[spec.metric]),
            datatype=datatype,
        )
        client.create_collection(name, vectors_config={vector: params} if vector else params)

    def _vector_params(self) -> Any:
        vectors = self._info().config.params.vectors
        if isinstance(vectors, dict):
            if self.vector_name is None:
                return None if len(vectors) != 1 else next(iter(vectors.values()))
            return vectors.get(self.vector_name)
        return vectors

    def _resolve_vector_name(self) -> str | None:
        vectors = self._info().config.params.vectors
        if not isinstance(vectors, dict):
            if self.vector_name:
                raise ConfigError(
                    f"{self.uri} names the vector {self.vector_name!r}, but the collection has "
                    "one unnamed vector",
                    hint="drop '&vector=' from the URI",
                )
            return None
        if self.vector_name is None:
            if len(vectors) == 1:
                return next(iter(vectors))
            raise ConfigError(
                f"the collection behind {self.uri} has several named vectors",
                hint="pick one with '&vector=NAME': " + ", ".join(sorted(vectors)),
            )
        if self.vector_name not in vectors:
            raise StoreNotFoundError(
                f"the collection behind {self.uri} has no vector named {self.vector_name!r}",
                hint="its vectors: " + (", ".join(sorted(vectors)) or "none"),
            )
        return self.vector_name

    def _info(self) -> Any:
        return self._call(self._client.get_collection, self.collection)

    def count(self) -> int:
        return int(self._call(self._client.count, self.collection, exact=True).count)

    def _vector_of(self, point: Any) -> list[float]:
        vec = point.vector
        if isinstance(vec, dict):
            vec = vec[self.vector_name]
        return vec

    def _batch(self, points: Sequence[Any], with_vectors: bool) -> RecordBatch:
        vectors = None
        if with_vectors:
            vectors = (
                np.asarray([self._vector_of(p) for p in points], dtype=np.float32)
                if points
                else np.zeros((0, 0), dtype=np.float32)
            )
        return RecordBatch(
            ids=[p.id for p in points],
            vectors=vectors,
            metadatas=[dict(p.payload or {}) for p in points],
            documents=[None] * len(points),
        )

    def _with_vectors(self, with_vectors: bool) -> bool | list[str]:
        if not with_vectors:
            return False
        return [self.vector_name] if self.vector_name else True

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        offset = None
        while True:
            points, offset = self._call(
                self._client.scroll,
                self.collection,
                limit=batch_size,
                offset=offset,
                with_payload=True,
                with_vectors=self._with_vectors(with_vectors),
            )
            if points:
                yield self._batch(points, with_vectors)
            if offset is None:
                return

    def partitions(self, wanted: int) -> list[Partition]:
        """Ranges of point ids. Qdrant scrolls points in id order (integers, then UUIDs) and
        a scroll starts at any id, so a range is read from its lower bound until an id reaches
        its upper bound. The ranges split the ids' space evenly, with no sampling (the same
        collection gives the same ranges to every share of a --vmtest-shard run): integers
        from the smallest to the largest held (found by bisection, one single-point scroll a
        step), UUIDs over their 128 bits (vmtest's UUIDv5 ids, as any hash, spread evenly).
        Integer ids bunched unevenly give uneven partitions."""
        first = self._first_id(None)
        if first is None or wanted <= 1:
            return [Partition(0, {"lo": None, "hi": None}, "every id")]
        uuid_first = self._first_id(str(UUID_ZERO))
        kinds = (isinstance(first, int)) + (uuid_first is not None)
        each = max(1, wanted // kinds)
        cuts: list[RecordId] = []
        if isinstance(first, int):
            last = self._last_int(first)
            cuts += [first + (last + 1 - first) * i // each for i in range(1, each)]
            if uuid_first is not None:
                cuts.append(str(UUID_ZERO))
        if uuid_first is not None:
            cuts += [str(uuid.UUID(int=(1 << 128) * i // each)) for i in range(1, each)]
        bounds: list[RecordId | None] = [None, *dict.fromkeys(cuts), None]
        return [Partition(i, {"lo": lo, "hi": hi},
                          f"ids from {lo!r} to {hi!r}" if lo is not None or hi is not None
                          else "every id")
                for i, (lo, hi) in enumerate(itertools.pairwise(bounds))]

    def _first_id(self, offset: RecordId | None) -> RecordId | None:
        """The first point id at or after ``offset`` in Qdrant's order (None: none)."""
        points, _ = self._call(self._client.scroll, self.collection, limit=1, offset=offset,
                               with_payload=False, with_vectors=False)
        return points[0].id if points else None

    def _last_int(self, low: int) -> int:
        """The largest integer point id (at least ``low``, which is held), by bisection."""
        high = (1 << 64) - 1
        while low < high:
            middle = (low + high + 1) // 2
            found = self._first_id(middle)
            if isinstance(found, int):
                low = found
            else:
                high = middle - 1
        return low

    def read_partition(self, part: Partition, batch_size: int, *,
                       with_vectors: bool = True) -> Iterator[RecordBatch]:
        if "lo" not in part.spec:
            yield from super().read_partition(part, batch_size, with_vectors=with_vectors)
            return
        offset, hi = part.spec["lo"], part.spec["hi"]
        end = None if hi is None else _id_order(hi)
        while True:
            points, offset = self._call(
                self._client.scroll, self.collection, limit=batch_size, offset=offset,
                with_payload=True, with_vectors=self._with_vectors(with_vectors))
            if end is not None:
                inside = [p for p in points if _id_order(p.id) < end]
                if len(inside) < len(points):
                    offset = None  # the range ends in this page
                points = inside
            if points:
                yield self._batch(points, with_vectors)
            if offset is None:
                return

    def existing(self, ids: Sequence[RecordId]) -> list[RecordId]:
        wanted = [i for i in dict.fromkeys(ids) if self.accepts_id(i)]
        if not wanted:
            return []
        points = self._call(self._client.retrieve, self.collection, ids=wanted,
                            with_payload=False, with_vectors=False)
        return [p.id for p in points]

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        if not ids:
            return RecordBatch.empty()
        points = self._call(
            self._client.retrieve,
            self.collection,
            ids=list(ids),
            with_payload=True,
            with_vectors=self._with_vectors(True),
        )
        return self._batch(points, True)

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        from qdrant_client import models

        query_filter = None
        if where:
            query_filter = models.Filter(
                must=[
                    models.FieldCondition(key=key, match=models.MatchValue(value=value))
                    for key, value in where.items()
                ]
            )
        requests = [
            models.QueryRequest(
                query=q,
                using=self.vector_name,
                limit=k,
                filter=query_filter,
                with_payload=False,
            )
            for q in np.asarray(queries, dtype=np.float32).tolist()
        ]
        responses = self._call(self._client.query_batch_points, self.collection, requests)
        return [[p.id for p in r.points] for r in responses]

    def upsert(self, batch: RecordBatch) -> None:
        from qdrant_client import models

        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        if not len(batch):
            return
        if self.grpc_writes:
            request = self._grpc_upsert_request(batch)
            if request is not None:
                self._grpc(self._client.grpc_points.Upsert, request)
                return
        # .tolist(): the vectors as Python floats in one C loop, not element by element
        vectors = np.asarray(batch.vectors).tolist()
        points = models.Batch(
            ids=list(batch.ids),
            vectors={self.vector_name: vectors} if self.vector_name else vectors,
            payloads=[meta or {} for meta in batch.metadatas],
        )
        self._call(self._client.upsert, self.collection, points=points, wait=True)

    def _grpc_upsert_request(self, batch: RecordBatch) -> Any:
        """The batch as a gRPC UpsertPoints request: vectors as float32 bytes (no Python float
        per element), payloads by qdrant-client's own conversion. None when a payload has a
        value gRPC cannot carry (an integer past 64 bits): that batch goes over REST."""
        from qdrant_client import grpc
        from qdrant_client.conversions.conversion import RestToGrpc

        assert batch.vectors is not None  # upsert refused a batch without
        vectors = map(grpc.Vectors.FromString, _vectors_messages(batch.vectors, self.vector_name))
        try:
            points = [
                grpc.PointStruct(
                    id=grpc.PointId(num=rid) if isinstance(rid, int) else grpc.PointId(
                        uuid=str(rid)),
                    vectors=vector,
                    payload=RestToGrpc.convert_payload(meta or {}),
                )
                for rid, vector, meta in zip(batch.ids, vectors, batch.metadatas, strict=True)
            ]
        except (ValueError, TypeError, OverflowError):
            return None
        return grpc.UpsertPoints(collection_name=self.collection, wait=True, points=points)

    def _grpc(self, method: Any, request: Any) -> Any:
        """Call a gRPC method; a server gone or silent becomes StoreUnreachableError, a
        refused request a VmtestError (not retried: sending it again would not help)."""
        import grpc

        try:
            return method(request, timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if code is None or code.name in TRANSIENT_GRPC:
                port = self.uri.param("grpc_port", "6334")
                raise StoreUnreachableError(
                    f"the Qdrant store {self.uri} stopped answering on its gRPC port {port}: "
                    f"{details}",
                    hint="check that the server is running and the URI's grpc_port (or add "
                    "&prefer_grpc=false to write over REST)",
                ) from exc
            refused = f"{code.name}: {details}"
        # raised outside the except block: a refusal must not read as a lost connection
        raise VmtestError(f"the Qdrant server {self.uri} refused the request ({refused})",
                          hint="the server's log says more")

    def delete(self, ids: Sequence[RecordId]) -> None:
        from qdrant_client import models

        # Point ids are the native ids as upsert writes them. An id Qdrant cannot hold (not an
        # unsigned integer or a UUID) is no more there than an absent one, and would make
        # Qdrant refuse the whole request; local mode refuses an empty one.
        points: list[Any] = [rid for rid in dict.fromkeys(ids) if self.accepts_id(rid)]
        if points:
            self._call(self._client.delete, self.collection,
                       points_selector=models.PointIdsList(points=points), wait=True)

    def describe(self) -> Inventory:
        info = self._info()
        params = self._vector_params()
        hnsw = info.config.hnsw_config
        index: dict[str, Any] = {"kind": "hnsw"}
        if hnsw is not None:
            index.update(m=hnsw.m, ef_construct=hnsw.ef_construct)
        if params is not None and params.hnsw_config is not None:
            index.update({k: v for k, v in params.hnsw_config.model_dump().items() if v})
        quant = (params.quantization_config if params is not None else None) or (
            info.config.quantization_config
        )
        if quant is not None:
            # mode="json": enums as their values ("int8"), not <ScalarType.INT8: 'int8'>
            index["quantization"] = quant.model_dump(mode="json", exclude_none=True)
        dtype = "float32"
        if params is not None and params.datatype is not None:
            dtype = str(params.datatype.value)
        peek, _ = self._call(
            self._client.scroll, self.collection, limit=256, with_payload=True, with_vectors=False
        )
        versions = {"qdrant-client": dist_version("qdrant-client")}
        if not self.uri.is_local:
            # an old server without a version endpoint: version unknown, not an error
            with contextlib.suppress(Exception):
                versions["server"] = str(self._client.info().version)
        return Inventory(
            kind="qdrant",
            uri=str(self.uri),
            count=self.count(),
            dimension=None if params is None else int(params.size),
            metric=None if params is None else QDRANT_TO_METRIC.get(params.distance.value),
            dtype=dtype,
            index=index,
            payload_indexes=sorted((info.payload_schema or {}).keys()),
            metadata_types=metadata_types([p.payload or {} for p in peek]),
            versions=versions,
        )

    def snapshot_to(self, path: str | os.PathLike[str]) -> Path:
        """Take a snapshot of the collection (Qdrant's native backup) and download it to
        ``path``, which ``qdrant-snapshot:///PATH`` reads. A server only: local mode takes no
        snapshots. The download is checked against the snapshot's SHA-256, and the snapshot is
        then deleted from the server, which is left as it was."""
        if self.uri.is_local:
            raise ConfigError(
                f"{self.uri} is a local-mode folder, and only a Qdrant server takes snapshots",
                hint="serve the folder with a Qdrant server, or copy the folder itself",
            )
        target = Path(path)
        if not target.parent.is_dir():
            raise StoreNotFoundError(
                f"the folder {target.parent}, which would hold the snapshot, does not exist",
                hint=f"create it first (mkdir -p {target.parent})")
        taken = self._call(self._client.create_snapshot, self.collection, wait=True)
        url = (f"{_rest_url(self.uri)}/collections/{quote(self.collection, safe='')}"
               f"/snapshots/{quote(taken.name, safe='')}")
        partial = target.with_name(target.name + ".part")
        try:
            digest = self._call(_download, url, _headers(self.uri), partial)
            if taken.checksum and digest != taken.checksum:
                raise StoreUnreachableError(
                    f"the snapshot {taken.name} of {self.uri} arrived damaged (SHA-256 "
                    f"{digest}, the server's {taken.checksum})", hint="take it again")
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
            with contextlib.suppress(Exception):  # an error above says more than this one
                self._client.delete_snapshot(self.collection, taken.name, wait=True)
        return target

    def copy_natively(self, target: StoreURI) -> str | None:
        """A Qdrant server's collection into a new collection on another Qdrant server: a
        collection snapshot taken here, streamed through this process (checked against its
        SHA-256) and recovered there, bit for bit: vectors, payloads (doubles unrounded),
        payload indexes, HNSW and quantization settings. Not where it would copy more or
        other than the URIs name (a collection of several vectors of which the URI picks
        one, sparse vectors), where a snapshot holds part of the collection (a distributed
        cluster: a snapshot holds one node's shards), where the target's version cannot
        recover this one's snapshots (Qdrant recovers the same minor version or the next),
        or into a collection that exists."""
        if self.uri.is_local or target.scheme != self.scheme or target.is_local:
            return None
        params = self._info().config.params
        vectors = params.vectors
        if (isinstance(vectors, dict) and len(vectors) != 1) or params.sparse_vectors \
                or target.param("vector") not in (None, self.vector_name):
            return None
        name = target.require_param("collection", self.URI_HELP)
        client = self._call(self._connect, target)
        try:
            if self._call(client.collection_exists, name):
                return None
            here, there = (self._call(c.info).version for c in (self._client, client))
            if not _recovers(there, here) or _distributed(self.uri) or _distributed(target):
                return None
            with tempfile.TemporaryDirectory(prefix="vmtest-snapshot-") as folder:
                path = self.snapshot_to(Path(folder) / f"{self.collection}.snapshot")
                size = path.stat().st_size
                checksum = _sha256(path)
                url = f"{_rest_url(target)}/collections/{quote(name, safe='')}/snapshots/upload"
                try:
                    self._call(_upload, url, _headers(target), path, checksum)
                    copied = int(self._call(client.count, name, exact=True).count)
                    expected = self.count()
                    if copied != expected:
                        raise NativeCopyFailed(
                            f"the snapshot recovered as {copied} records of {expected}")
                except VmtestError as exc:
                    with contextlib.suppress(Exception):
                        client.delete_collection(name)
                    raise NativeCopyFailed(
                        f"the Qdrant server {target} did not recover the snapshot of "
                        f"{self.uri} ({exc.message}); nothing of it is left there",
                        hint="the copy goes record by record instead") from exc
        finally:
            client.close()
        return (f"a collection snapshot (Qdrant {here} -> {there}, {size / 2**20:,.1f} MiB, "
                "SHA-256 checked)")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _id_order(point_id: RecordId) -> tuple[int, int | str]:
    """A point id's place in Qdrant's order: integers first, then UUIDs (by their text)."""
    if isinstance(point_id, int):
        return (0, point_id)
    return (1, str(point_id).lower())


@functools.cache
def _tls_context() -> Any:
    """httpx's default TLS context (certificates verified, as httpx does unless told), made
    once per process: making it is most of the cost of opening a client (0.05 to 0.25 s),
    which a migration otherwise pays for every store it opens."""
    import httpx

    return httpx.create_ssl_context()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _vectors_messages(vectors: np.ndarray, name: str | None) -> list[bytes]:
    """Each row as a serialized gRPC ``Vectors`` message holding one dense vector (named
    ``name``, or the collection's unnamed one): the bytes protobuf encodes from a list of
    Python floats (``Vectors(vector=Vector(dense=DenseVector(data=row)))``), made from the
    row's little-endian float32 bytes behind a header that is the same for every row (ten
    times faster than making a Python float per element)."""
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    size = rows.shape[1] * 4 if rows.ndim == 2 else 0

    def field(tag: bytes, length: int) -> bytes:  # a length-delimited field's header
        return tag + _varint(length)

    dense = field(b"\x0a", size)  # DenseVector.data: field 1, packed floats
    vector = field(b"\xaa\x06", len(dense) + size) + dense  # Vector.dense: field 101
    vector_size = len(vector) + size
    if name is None:
        prefix = field(b"\x0a", vector_size) + vector  # Vectors.vector: field 1
    else:
        key = name.encode()
        # NamedVectors.vectors: field 1, a map entry of key (1) and Vector (2)
        entry = field(b"\x0a", len(key)) + key + field(b"\x12", vector_size) + vector
        named_size = len(entry) + size
        named = field(b"\x0a", named_size) + entry
        prefix = field(b"\x12", len(named) + size) + named  # Vectors.vectors: field 2
    return [prefix + row.tobytes() for row in rows]


def _api_key(uri: StoreURI) -> str | None:
    return uri.password or os.environ.get("QDRANT_API_KEY") or None


def _headers(uri: StoreURI) -> dict[str, str]:
    key = _api_key(uri)
    return {"api-key": key} if key else {}


def _rest_url(uri: StoreURI) -> str:
    """The server's REST address: http(s)://HOST:PORT."""
    host = uri.host or ""
    scheme = "https" if uri.param("https", "false") == "true" else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{uri.port or DEFAULT_PORT}"


def _recovers(target_version: str, source_version: str) -> bool:
    """Whether a server of ``target_version`` recovers a snapshot ``source_version`` took:
    the same minor version or the next (Qdrant's documented rule)."""
    try:
        there = [int(p) for p in target_version.split(".")[:2]]
        here = [int(p) for p in source_version.split(".")[:2]]
    except ValueError:
        return False
    return there[0] == here[0] and 0 <= there[1] - here[1] <= 1


def _distributed(uri: StoreURI) -> bool:
    """Whether the server runs in a cluster (its collection snapshots hold only its own
    shards); a server that does not say is taken for one."""
    import httpx

    try:
        answer = httpx.get(f"{_rest_url(uri)}/cluster", headers=_headers(uri),
                           timeout=TIMEOUT_S, verify=_tls_context())
        return answer.json()["result"]["status"] != "disabled"
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return True


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _upload(url: str, headers: dict[str, str], path: Path, checksum: str) -> None:
    """Stream the snapshot file at ``path`` to a server's upload-and-recover endpoint (the
    server checks its SHA-256), and wait until it is recovered."""
    import httpx

    with path.open("rb") as fh:
        answer = httpx.post(
            url, params={"priority": "snapshot", "checksum": checksum, "wait": "true"},
            files={"snapshot": (path.name, fh, "application/octet-stream")},
            headers=headers, verify=_tls_context(),
            timeout=httpx.Timeout(TIMEOUT_S, read=None))  # recovering takes its time
    if answer.status_code != 200:
        raise NativeCopyFailed(f"HTTP {answer.status_code}: {answer.text[:200]}")


def _download(url: str, headers: dict[str, str], to: Path) -> str:
    """Stream ``url`` into the file ``to``; its SHA-256."""
    import hashlib

    import httpx

    digest = hashlib.sha256()
    with httpx.stream("GET", url, headers=headers, timeout=TIMEOUT_S) as response, \
            to.open("wb") as out:
        if response.status_code != 200:
            response.read()
            raise StoreUnreachableError(
                f"downloading the snapshot {url} answered HTTP {response.status_code}: "
                f"{response.text[:200]}", hint="check the API key and the server's log")
        for chunk in response.iter_bytes(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


