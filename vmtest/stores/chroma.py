"""Chroma: embedded (``chroma:///ABS/DIR?collection=NAME``, a PersistentClient) or a server
(``chroma://HOST:PORT?collection=NAME``, an HttpClient).

Chroma keeps string ids, float32 vectors, flat metadata (str, int, float, bool and lists of
them; no nested dicts, no None) and a document column. Its metric lives in the collection's
HNSW configuration and defaults to ``l2``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vmtest.errors import (
    ConfigError,
    MissingDriverError,
    SchemaMismatchError,
    StoreNotFoundError,
    StoreUnreachableError,
)
from vmtest.stores.base import (
    HTTPX_CONNECTION_ERRORS,
    CollectionSpec,
    Inventory,
    Recipe,
    RecordBatch,
    RecordId,
    VectorStore,
    dist_version,
    float_problem,
    is_connection_error,
    json_type,
    local_recipe,
    metadata_types,
    served,
)
from vmtest.uri import StoreURI

DEFAULT_PORT = 8000
TIMEOUT_S = 30


@contextlib.contextmanager
def _chroma_container(image: str, name: str) -> Iterator[str]:
    from testcontainers.community.chroma import ChromaContainer

    from vmtest.provision import ours

    with ours(ChromaContainer(image=image)) as chroma:
        config = chroma.get_config()
        yield f"chroma://{config['host']}:{config['port']}?collection={name}"


class ChromaStore(VectorStore):
    PROVISIONING = (
        local_recipe("chroma", "chroma://{dir}/chroma?collection={name}"),
        Recipe("chroma-server", served("ChromaServer", "chroma-server"),
               "chromadb/chroma:1.5.9", _chroma_container),
    )
    scheme = "chroma"
    ENGINE = "Chroma"
    LOCAL_PATH = "folder"
    LOCAL_MARKERS = ("chroma.sqlite3",)
    URI_HELP = (
        "chroma:///ABS/DIR?collection=NAME (embedded) or "
        "chroma://HOST:PORT?collection=NAME (a Chroma server)"
    )
    NATIVE_ID_KINDS = frozenset({"str"})
    EMPTY_METADATA_IS_NONE = True
    METRICS = ("cosine", "l2", "ip")
    CAN_DELETE = True

    CONNECTION_ERRORS = HTTPX_CONNECTION_ERRORS
    #: 774 of 6,000 doubles came back changed, by at most 2 ulps (chromadb 1.5).
    FLOAT_ROUNDING_ULPS = 4
    #: metadata_problem and rounds_float look at the values of these types only.
    METADATA_VALUE_TYPES = (float, list, tuple, dict)

    @classmethod
    def metadata_key_problem(cls, key: str, uri: StoreURI | None = None) -> str | None:
        # Chroma reserves keys starting with "$" or "#" (its operators and own fields), the
        # empty key and "chroma:document" (measured on chromadb 1.5: each refused at write).
        if not key or key[0] in "$#" or key == "chroma:document":
            return f"Chroma reserves the metadata key {key!r}"
        return None

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        kind = json_type(value)
        if kind in ("dict", "null"):
            return f"Chroma holds no {kind} metadata values"
        if kind == "list":
            kinds = {json_type(v) for v in value}
            if not value:
                return "Chroma holds no empty lists"
            if len(kinds) > 1 or not kinds <= {"str", "int", "float", "bool"}:
                return "Chroma lists hold one scalar type"
            return next(filter(None, (float_problem(v, 'Chroma') for v in value)), None)
        return float_problem(value, 'Chroma')

    def accepts_id(self, record_id: RecordId) -> bool:
        return isinstance(record_id, str) and record_id != ""

    def __init__(self, uri: StoreURI, client: Any, collection: Any) -> None:
        self.uri = uri
        self._client = client
        self._collection = collection
        self._max_batch = int(client.get_max_batch_size())
        self._get = _raw_get(collection)

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> ChromaStore:
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError as exc:
            raise MissingDriverError("chroma", "chromadb", "chroma") from exc
        name = uri.require_param("collection", cls.URI_HELP)
        settings = Settings(anonymized_telemetry=False)
        try:
            if uri.is_local:
                client = chromadb.PersistentClient(path=uri.path or ".", settings=settings)
            else:
                client = chromadb.HttpClient(
                    host=uri.host or "127.0.0.1", port=uri.port or DEFAULT_PORT, settings=settings
                )
                _bound_http_timeout(client)
        except Exception as exc:
            raise StoreUnreachableError(
                f"cannot open the Chroma store {uri}: {exc}",
                hint="check that the folder is a Chroma store, or that `chroma run` is up "
                "on that host and port",
            ) from exc
        try:
            return cls._open_collection(uri, client, name, create)
        except BaseException:
            _close_client(client)
            raise

    @classmethod
    def _open_collection(cls, uri: StoreURI, client: Any, name: str,
                         create: CollectionSpec | None) -> ChromaStore:
        names = sorted(c if isinstance(c, str) else c.name for c in client.list_collections())
        if name in names:
            collection = client.get_collection(name, embedding_function=None)
            store = cls(uri, client, collection)
            if create is not None:
                store.check_spec(create)
            return store
        if create is None:
            raise StoreNotFoundError(
                f"the Chroma store {uri} has no collection {name!r}",
                hint="collections there: " + (", ".join(names) or "none"),
            )
        if create.metric not in cls.METRICS:
            raise SchemaMismatchError(
                f"Chroma cannot hold the metric {create.metric!r} (it has {', '.join(cls.METRICS)})"
            )
        try:
            collection = client.create_collection(
                name,
                embedding_function=None,
                configuration={"hnsw": {"space": create.metric}},
            )
        except Exception as exc:
            if is_connection_error(exc, cls.CONNECTION_ERRORS):
                raise StoreUnreachableError(f"the Chroma store {uri} stopped answering: {exc}") \
                    from exc
            raise ConfigError(f"Chroma refused to create the collection {name!r}: {exc}",
                              hint="Chroma names are 3-512 characters of [a-zA-Z0-9._-]") \
                from exc
        return cls(uri, client, collection)

    def _configuration(self) -> dict[str, Any]:
        # Collections made by older chromadb versions warn that their embedding-function
        # config is legacy when it is read; vmtest never embeds, so that is noise to a user.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return dict(getattr(self._collection, "configuration", None) or {})

    def _metric(self) -> str:
        config = self._configuration()
        hnsw = config.get("hnsw") or {}
        space = hnsw.get("space") or (self._collection.metadata or {}).get("hnsw:space")
        return str(space or "l2")

    def count(self) -> int:
        return int(self._collection.count())

    def _batch(self, got: dict[str, Any], with_vectors: bool) -> RecordBatch:
        ids = list(got["ids"])
        vectors = _float32_rows(got.get("embeddings")) if with_vectors else None
        metadatas = [dict(m) if m else {} for m in (got.get("metadatas") or [None] * len(ids))]
        documents = list(got.get("documents") or [None] * len(ids))
        return RecordBatch(ids, vectors, metadatas, documents)

    def _include(self, with_vectors: bool) -> list[str]:
        return ["metadatas", "documents"] + (["embeddings"] if with_vectors else [])

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        return self._read(batch_size, self._include(with_vectors))

    def iter_vectors(self, batch_size: int) -> Iterator[RecordBatch]:
        """Embeddings alone: 4.2 s of a 50,000 x 768 read, against 6.2 s with metadata and
        documents (measured, chromadb 1.5.9)."""
        return self._read(batch_size, ["embeddings"])

    def _read(self, batch_size: int, include: list[str]) -> Iterator[RecordBatch]:
        size = max(1, min(batch_size, self._max_batch))
        offset = 0
        while True:
            got = self._call(self._get, limit=size, offset=offset, include=include)
            batch = self._batch(got, "embeddings" in include)
            if not len(batch):
                return
            yield batch
            offset += len(batch)

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        if not ids:
            return RecordBatch.empty()
        out: list[RecordBatch] = []
        wanted = [str(i) for i in ids]
        for start in range(0, len(wanted), self._max_batch):
            got = self._call(
                self._get,
                ids=wanted[start : start + self._max_batch],
                include=self._include(True),
            )
            out.append(self._batch(got, True))
        return RecordBatch.concat(out)

    def existing(self, ids: Sequence[RecordId]) -> list[RecordId]:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        found: list[RecordId] = []
        for start in range(0, len(wanted), self._max_batch):
            got = self._call(self._get, ids=wanted[start:start + self._max_batch], include=[])
            found += got["ids"]
        return found

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        got = self._call(
            self._collection.query,
            query_embeddings=np.asarray(queries, dtype=np.float32),
            n_results=k,
            where=where or None,
            include=["distances"],
        )
        return [list(row) for row in got["ids"]]

    def upsert(self, batch: RecordBatch) -> None:
        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        for start in range(0, len(batch), self._max_batch):
            end = start + self._max_batch
            self._call(
                self._collection.upsert,
                ids=[str(i) for i in batch.ids[start:end]],
                embeddings=np.asarray(batch.vectors[start:end], dtype=np.float32),
                metadatas=[m or None for m in batch.metadatas[start:end]],
                documents=batch.documents[start:end],
            )

    def delete(self, ids: Sequence[RecordId]) -> None:
        # ids as upsert writes them (text); Chroma refuses a request that names an id twice
        wanted = [rid for rid in dict.fromkeys(str(i) for i in ids) if rid]
        for start in range(0, len(wanted), self._max_batch):
            self._call(self._collection.delete, ids=wanted[start : start + self._max_batch])

    def describe(self) -> Inventory:
        peek = self._call(self._get, limit=256, include=["metadatas", "embeddings"])
        emb = _float32_rows(peek.get("embeddings"))
        dimension = int(emb.shape[1]) if len(emb) else None
        hnsw = dict(self._configuration().get("hnsw") or {})
        versions = {"chromadb": dist_version("chromadb")}
        if not self.uri.is_local:
            versions["server"] = str(self._call(self._client.get_version))
        return Inventory(
            kind="chroma",
            uri=str(self.uri),
            count=self.count(),
            dimension=dimension,
            metric=self._metric(),
            dtype="float32",
            index=_index(hnsw),
            payload_indexes=[],
            metadata_types=metadata_types([m or {} for m in peek.get("metadatas") or []]),
            versions=versions,
        )

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _close_client(client)



def _raw_get(collection: Any) -> Any:
    """What reads records of ``collection``: its client's ``_get``, which ``Collection.get``
    calls with the same request and then turns the embeddings into a float64 array (2.5 s of
    a 50,000 x 768 read's 7.5, then made float32 again here); the public ``get`` where a
    chromadb has no such method. A request from here needs none of ``get``'s checks."""
    raw = getattr(getattr(collection, "_client", None), "_get", None)
    if not callable(raw):
        return collection.get
    try:
        params = inspect.signature(raw).parameters
    except (TypeError, ValueError):
        return collection.get
    if not {"collection_id", "ids", "limit", "offset", "include", "tenant",
            "database"} <= set(params):
        return collection.get

    def get(*, include: list[str], ids: list[str] | None = None, limit: int | None = None,
            offset: int | None = None) -> dict[str, Any]:
        return dict(raw(collection_id=collection.id, ids=ids, limit=limit, offset=offset,
                        include=include, tenant=collection.tenant,
                        database=collection.database))

    return get


def _float32_rows(embeddings: Any) -> np.ndarray:
    """Chroma's embeddings (lists of Python floats, or an array) as a float32 matrix; the
    lists are read in one pass (2.5x faster than ``np.array`` of them)."""
    if embeddings is None or not len(embeddings):
        return np.zeros((0, 0), dtype=np.float32)
    if isinstance(embeddings, np.ndarray) or not isinstance(embeddings[0], list):
        return np.asarray(embeddings, dtype=np.float32)
    rows, dim = len(embeddings), len(embeddings[0])
    if any(len(row) != dim for row in embeddings):  # ragged: numpy says how
        return np.asarray(embeddings, dtype=np.float32)
    return np.fromiter(itertools.chain.from_iterable(embeddings), dtype=np.float32,
                       count=rows * dim).reshape(rows, dim)


def _bound_http_timeout(client: Any) -> None:
    """chromadb's HttpClient waits forever by default (httpx timeout=None) and offers no
    setting for it; a server that stops answering must give an error, not a hang."""
    import httpx

    for session in _http_sessions(client):
        session.timeout = httpx.Timeout(TIMEOUT_S)


def _close_client(client: Any) -> None:
    sessions = _http_sessions(client)
    if hasattr(client, "close"):  # chromadb >= 1.4 counts its clients
        client.close()
    for session in sessions:
        session.close()


def _http_sessions(client: Any) -> list[Any]:
    """The httpx sessions of an HttpClient and of the admin client it made (none for an
    embedded client); chromadb's close() stops them without closing their sockets."""
    import httpx

    found = []
    for owner in (client, getattr(client, "_admin_client", None)):
        session = getattr(getattr(owner, "_server", None), "_session", None)
        if isinstance(session, httpx.Client):
            found.append(session)
    return found


#: Chroma's HNSW setting names -> vmtest's index vocabulary.
_INDEX_NAMES = {"max_neighbors": "m", "ef_construction": "ef_construct", "ef_search": "ef_search"}


def _index(hnsw: dict[str, Any]) -> dict[str, Any]:
    index: dict[str, Any] = {"kind": "hnsw"}
    for key, value in hnsw.items():
        if key != "space" and value is not None:
            index[_INDEX_NAMES.get(key, key)] = value
    return index

