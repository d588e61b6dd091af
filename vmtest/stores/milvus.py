"""Milvus through pymilvus' MilvusClient: Milvus Lite on a file
(``milvus:///ABS/FILE.db?collection=NAME``) or a Milvus server
(``milvus://[:TOKEN@]HOST:PORT?collection=NAME``).

Milvus Lite 3.x is a Python re-implementation of Milvus's API, not Milvus's C++ engine: it
shows the API's behaviour (schemas, primary keys, dynamic fields), not the server's index or
its performance. Collections vmtest creates have a VarChar primary key ``id``, a
``FLOAT_VECTOR`` field ``vector``, a nullable VarChar ``document`` and dynamic fields for the
metadata; existing collections with an Int64 primary key are read as they are.

Reads use a query iterator and are checked against the exact count afterwards: Milvus drops
duplicate primary keys on read, and an iterator that returns fewer records than the collection
holds is an error, never a silent shortfall.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.errors import (
    MissingDriverError,
    SchemaMismatchError,
    StoreNotFoundError,
    StoreUnreachableError,
)
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    RecordBatch,
    RecordId,
    VectorStore,
    dist_version,
    has_non_finite,
    local_recipe,
    metadata_types,
)
from vmtest.uri import StoreURI

METRICS = {"COSINE": "cosine", "L2": "l2", "IP": "ip"}
RESERVED = ("id", "vector", "document")
MAX_ID = 512
TIMEOUT_S = 30
#: Keys per delete expression.
DELETE_CHUNK = 1000

#: Open stores per Milvus Lite file in this process. Milvus Lite serves a file from a server
#: inside the process that holds a lock on it until released, so the last store to close a
#: file releases it (else no other process can open the file while this one lives).
_LITE_USERS: Counter[str] = Counter()


def _release_lite(path: str) -> None:
    _LITE_USERS[path] -= 1
    if _LITE_USERS[path] > 0:
        return
    del _LITE_USERS[path]
    try:
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:
        return
    server_manager_instance.release_server(path)


class MilvusStore(VectorStore):
    #: gRPC's, and pymilvus's for a server it cannot reach.
    CONNECTION_ERRORS = frozenset({"_InactiveRpcError", "MilvusUnavailableException"})
    PROVISIONING = (local_recipe("milvus", "milvus://{dir}/milvus.db?collection={name}"),)
    scheme = "milvus"
    ENGINE = "Milvus"
    LOCAL_PATH = "file"
    URI_HELP = ("milvus:///ABS/FILE.db?collection=NAME (Milvus Lite) or "
                "milvus://[:TOKEN@]HOST:PORT?collection=NAME (a Milvus server)")
    NATIVE_ID_KINDS = frozenset({"str", "int"})
    METRICS = ("cosine", "l2", "ip")
    CAN_DELETE = True

    def __init__(self, uri: StoreURI, client: Any, collection: str) -> None:
        self.uri = uri
        self._client = client
        self.collection = collection
        self._schema = self._call(client.describe_collection, collection)
        fields = {f["name"]: f for f in self._schema["fields"]}
        self._pk = next(f["name"] for f in self._schema["fields"] if f.get("is_primary"))
        self._pk_is_int = int(fields[self._pk]["type"]) == 5  # DataType.INT64
        self._vector = next(f["name"] for f in self._schema["fields"]
                            if int(f["type"]) in (100, 101, 102, 103))
        self._dimension = int(fields[self._vector]["params"]["dim"])

    @classmethod
    def metadata_key_problem(cls, key: str, uri: StoreURI | None = None) -> str | None:
        if key in RESERVED or key.startswith("$"):
            return f"Milvus reserves the field name {key!r}"
        return None

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        if has_non_finite(value):
            return "Milvus keeps null for NaN and infinite floats"
        return None

    def accepts_id(self, record_id: RecordId) -> bool:
        if isinstance(record_id, bool):
            return False
        if self._pk_is_int:
            return isinstance(record_id, int) and -(2**63) <= record_id < 2**63
        text = str(record_id)
        # Milvus's query iterator pages with a filter on the primary key: a VarChar id with a
        # quote, a backslash or a line break breaks that expression ("unterminated string
        # literal"), so such ids are mapped (UUIDv5, source id kept in the payload) instead.
        return (isinstance(record_id, (str, int)) and 0 < len(text.encode()) <= MAX_ID
                and text.isprintable() and not any(c in text for c in "\"'\\"))

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> MilvusStore:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise MissingDriverError("milvus", "pymilvus", "milvus") from exc
        logging.getLogger("pymilvus").setLevel(logging.ERROR)
        name = uri.require_param("collection", cls.URI_HELP)
        try:
            if uri.is_local:
                path = Path(uri.path or "milvus.db")
                if not path.exists() and create is None:
                    raise StoreNotFoundError(f"{uri}: {path} does not exist", hint=cls.URI_HELP)
                client = MilvusClient(str(path))
                _LITE_USERS[os.path.abspath(path)] += 1
            else:
                client = MilvusClient(uri=f"http://{uri.host}:{uri.port or 19530}",
                                      token=uri.password or "", timeout=TIMEOUT_S)
            names = client.list_collections()
        except StoreNotFoundError:
            raise
        except Exception as exc:
            raise StoreUnreachableError(f"cannot open the Milvus store {uri}: {exc}",
                                        hint="check the file, or that Milvus is running") from exc
        try:
            if name not in names:
                if create is None:
                    raise StoreNotFoundError(
                        f"the Milvus store {uri} has no collection {name!r}",
                        hint="collections there: " + (", ".join(sorted(names)) or "none"))
                cls._create(client, uri, name, create)
            else:
                # a collection another client or process made is "released" until loaded
                client.load_collection(name, timeout=TIMEOUT_S)
            store = cls(uri, client, name)
            if name in names and create is not None:
                store.check_spec(create)
            return store
        except BaseException:
            client.close()
            if uri.is_local:
                _release_lite(os.path.abspath(uri.path or "milvus.db"))
            raise

    @staticmethod
    def _create(client: Any, uri: StoreURI, name: str, spec: CollectionSpec) -> None:
        from pymilvus import DataType, MilvusClient

        metric = {v: k for k, v in METRICS.items()}.get(spec.metric)
        if metric is None:
            raise SchemaMismatchError(f"Milvus has no metric {spec.metric!r}")
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dimension)
        schema.add_field("document", DataType.VARCHAR, max_length=65535, nullable=True)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT" if uri.is_local else "AUTOINDEX",
                        metric_type=metric)
        client.create_collection(name, schema=schema, index_params=index)

    def count(self) -> int:
        got = self._call(self._client.query, self.collection, filter="",
                         output_fields=["count(*)"])
        return int(got[0]["count(*)"])

    def _batch(self, rows: Sequence[dict[str, Any]], with_vectors: bool) -> RecordBatch:
        ids, vectors, metas, docs = [], [], [], []
        for row in rows:
            row = dict(row)
            ids.append(row.pop(self._pk))
            vec = row.pop(self._vector, None)
            if with_vectors:
                vectors.append(vec)
            docs.append(row.pop("document", None))
            metas.append(row)
        return RecordBatch(
            ids, np.asarray(vectors, dtype=np.float32).reshape(len(rows), self._dimension)
            if with_vectors else None, metas, docs)

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        expected = self.count()
        # "*" is every scalar and dynamic field; the vector is added only when wanted
        fields = ["*", self._vector] if with_vectors else ["*"]
        iterator = self._call(self._client.query_iterator, self.collection,
                              batch_size=batch_size, output_fields=fields)
        seen = 0
        try:
            while True:
                rows = self._call(iterator.next)
                if not rows:
                    break
                seen += len(rows)
                yield self._batch(rows, with_vectors)
        finally:
            iterator.close()
        if seen != expected:
            raise StoreUnreachableError(
                f"the Milvus store {self.uri} returned {seen} records while counting "
                f"{expected}",
                hint="was it written to during the read? Milvus keeps one record per "
                "primary key: duplicates written earlier are gone",
            )

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        if not ids:
            return RecordBatch.empty()
        keys = [int(i) if self._pk_is_int else str(i) for i in ids]
        rows = self._call(self._client.get, self.collection, ids=keys)
        return self._batch(list(rows), True)

    def _filter(self, where: dict[str, Any] | None) -> str:
        if not where:
            return ""
        parts = []
        for key, value in where.items():
            name = key if key.isidentifier() and key not in RESERVED else \
                f"$meta[{json.dumps(key)}]"
            literal = ("true" if value else "false") if isinstance(value, bool) else \
                json.dumps(value)
            parts.append(f"{name} == {literal}")
        return " and ".join(parts)

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        got = self._call(self._client.search, self.collection,
                         data=np.asarray(queries, dtype=np.float32).tolist(), limit=k,
                         filter=self._filter(where), output_fields=[self._pk])
        return [[hit["id"] for hit in row] for row in got]

    def upsert(self, batch: RecordBatch) -> None:
        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        rows = []
        for rid, vec, meta, doc in zip(batch.ids, batch.vectors.tolist(), batch.metadatas,
                                       batch.documents, strict=True):
            row = dict(meta)
            row[self._pk] = int(rid) if self._pk_is_int else str(rid)
            row[self._vector] = vec
            row["document"] = doc
            rows.append(row)
        self._call(self._client.upsert, self.collection, rows)

    def delete(self, ids: Sequence[RecordId]) -> None:
        # Keys as upsert writes them: Int64 or text. pymilvus's delete(ids=) puts text keys in
        # single quotes as they are (an id with a quote or a backslash breaks the expression),
        # so the filter is written here, each key a JSON literal as _filter writes values.
        if self._pk_is_int:
            keys: list[RecordId] = [rid for rid in dict.fromkeys(ids) if self.accepts_id(rid)]
        else:
            keys = [rid for rid in dict.fromkeys(str(i) for i in ids) if rid]
        for start in range(0, len(keys), DELETE_CHUNK):
            chunk = json.dumps(keys[start:start + DELETE_CHUNK], ensure_ascii=False)
            self._call(self._client.delete, self.collection, filter=f"{self._pk} in {chunk}")

    def describe(self) -> Inventory:
        index: dict[str, Any] = {"kind": "flat"}
        metric = None
        try:
            info = self._call(self._client.describe_index, self.collection, self._vector)
        except StoreUnreachableError:
            raise
        except Exception:
            info = None
        if info:
            metric = METRICS.get(str(info.get("metric_type", "")).upper())
            index = {"kind": str(info.get("index_type", "flat")).lower()}
            for key in ("M", "efConstruction"):
                if key in (info.get("params") or {}):
                    index[{"M": "m", "efConstruction": "ef_construct"}[key]] = info["params"][key]
        peek = next(self._peek(), RecordBatch.empty())
        return Inventory(
            kind="milvus", uri=str(self.uri), count=self.count(), dimension=self._dimension,
            metric=metric, dtype="float32", index=index,
            metadata_types=metadata_types(peek.metadatas),
            versions={"pymilvus": dist_version("pymilvus"),
                      "milvus-lite": dist_version("milvus-lite")},
        )

    def _peek(self) -> Iterator[RecordBatch]:
        rows = self._call(self._client.query, self.collection, filter="", limit=256,
                          output_fields=["*"])
        yield self._batch(list(rows), False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            if self.uri.is_local:
                _release_lite(os.path.abspath(self.uri.path or "milvus.db"))

