"""Qdrant Edge (PyPI ``qdrant-edge-py``): the Qdrant engine embedded in the process, one shard
per folder: ``qdrant-edge:///ABS/DIR`` (``?vector=NAME`` picks a named dense vector).

It behaves as a Qdrant server does where it matters for a migration: unsigned-integer or UUID
ids, JSON payloads, vectors of a Cosine shard normalised on write, and floats in payloads
parsed the fast, inexact way (about one random float in ten comes back with other last
digits; NaN is refused). Writes go through its write-ahead log, so an acknowledged batch
survives a killed process. A folder is open in one process at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.errors import ConfigError, MissingDriverError, SchemaMismatchError, StoreNotFoundError
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    RecordBatch,
    RecordId,
    VectorStore,
    dist_version,
    float_problem,
    local_recipe,
    metadata_types,
)
from vmtest.stores.qdrant import METRIC_TO_QDRANT, QDRANT_TO_METRIC
from vmtest.uri import StoreURI

CONFIG_FILE = "edge_config.json"


def _native_id(point_id: Any) -> RecordId:
    return point_id if isinstance(point_id, int) else str(point_id)


class QdrantEdgeStore(VectorStore):
    PROVISIONING = (local_recipe("qdrant-edge", "qdrant-edge://{dir}/qdrant-edge"),)
    scheme = "qdrant-edge"
    ENGINE = "Qdrant Edge"
    LOCAL_PATH = "folder"
    LOCAL_MARKERS = (CONFIG_FILE,)
    URI_HELP = "qdrant-edge:///ABS/DIR[?vector=NAME] (a Qdrant Edge shard folder)"
    NATIVE_ID_KINDS = frozenset({"int", "uuid"})
    HAS_DOCUMENTS = False
    METRICS = ("cosine", "l2", "ip", "l1")
    CAN_DELETE = True

    #: 774 of 6,000 doubles came back changed, by at most 2 ulps.
    FLOAT_ROUNDING_ULPS = 4

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        return float_problem(value, "Qdrant Edge")

    def __init__(self, uri: StoreURI, shard: Any, vector: str) -> None:
        self.uri = uri
        self._shard = shard
        self.vector_name = vector
        self._folder = Path(uri.path or ".")

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> QdrantEdgeStore:
        try:
            import qdrant_edge as qe
        except ImportError as exc:
            raise MissingDriverError("qdrant-edge", "qdrant-edge-py", "qdrant-edge") from exc
        if not uri.is_local or not uri.path:
            raise ConfigError(f"{uri} names no folder", hint=cls.URI_HELP)
        folder = Path(uri.path)
        vector = uri.param("vector") or ""
        exists = (folder / CONFIG_FILE).exists()
        if not exists and create is None:
            raise StoreNotFoundError(f"{uri}: no Qdrant Edge shard in {folder}",
                                     hint=cls.URI_HELP)
        if create is not None and create.metric not in METRIC_TO_QDRANT:
            raise SchemaMismatchError(f"Qdrant Edge has no metric {create.metric!r}")
        try:
            if exists:
                shard = qe.EdgeShard.load(str(folder))
            else:
                assert create is not None
                params = qe.EdgeVectorParams(
                    size=create.dimension,
                    distance=getattr(qe.Distance, METRIC_TO_QDRANT[create.metric]),
                )
                shard = qe.EdgeShard.create(
                    str(folder), qe.EdgeConfig(vectors={vector: params} if vector else params))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise ConfigError(
                    f"the Qdrant Edge shard {uri} is open in another process",
                    hint="a shard folder is open in one process at a time: stop the other one",
                ) from exc
            raise StoreNotFoundError(f"cannot open the Qdrant Edge shard {uri}: {exc}",
                                     hint=cls.URI_HELP) from exc
        store = cls(uri, shard, vector)
        try:
            if store._params() is None:
                raise StoreNotFoundError(
                    f"the Qdrant Edge shard {uri} has no vector named {vector!r}",
                    hint="its vectors: " + ", ".join(repr(n) for n in store._vectors()))
            if create is not None and exists:
                store.check_spec(create)
        except BaseException:
            store.close()
            raise
        return store

    def _vectors(self) -> dict[str, Any]:
        config = json.loads((self._folder / CONFIG_FILE).read_text())
        return dict(config.get("vectors") or {})

    def _params(self) -> dict[str, Any] | None:
        return self._vectors().get(self.vector_name)

    def count(self) -> int:
        import qdrant_edge as qe

        return int(self._shard.count(qe.CountRequest(exact=True)))

    def _batch(self, records: Sequence[Any], with_vectors: bool) -> RecordBatch:
        vectors = None
        if with_vectors:
            vectors = np.asarray([self._vector_of(r) for r in records], dtype=np.float32)
            if not records:
                vectors = np.zeros((0, 0), dtype=np.float32)
        return RecordBatch(
            ids=[_native_id(r.id) for r in records],
            vectors=vectors,
            metadatas=[dict(r.payload or {}) for r in records],
            documents=[None] * len(records),
        )

    def _vector_of(self, record: Any) -> list[float]:
        vec = record.vector
        return list(vec[self.vector_name] if isinstance(vec, dict) else vec)

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        import qdrant_edge as qe

        offset = None
        while True:
            records, offset = self._shard.scroll(qe.ScrollRequest(
                offset=offset, limit=batch_size, with_payload=True,
                with_vector=[self.vector_name] if with_vectors else False))
            if records:
                yield self._batch(records, with_vectors)
            if offset is None:
                return

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        if not ids:
            return RecordBatch.empty()
        records = self._shard.retrieve(list(ids), with_payload=True,
                                       with_vector=[self.vector_name])
        return self._batch(records, True)

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        import qdrant_edge as qe

        query_filter = None
        if where:
            query_filter = qe.Filter(must=[
                qe.FieldCondition(key=key, match=qe.MatchValue(value))
                for key, value in where.items()
            ])
        requests = [
            qe.QueryRequest(limit=k, filter=query_filter, with_payload=False,
                            query=qe.Query.Nearest(q, using=self.vector_name or None))
            for q in np.asarray(queries, dtype=np.float32).tolist()
        ]
        results = self._shard.query_batch(qe.QueryBatchRequest(requests))
        return [[_native_id(p.id) for p in points] for points in results]

    def upsert(self, batch: RecordBatch) -> None:
        import qdrant_edge as qe

        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        points = []
        # .tolist(): the vectors as Python floats in one C loop, not element by element
        for rid, values, meta in zip(batch.ids, np.asarray(batch.vectors).tolist(),
                                     batch.metadatas, strict=True):
            points.append(qe.Point(rid, {self.vector_name: values} if self.vector_name else values,
                                   meta or {}))
        self._shard.update(qe.UpdateOperation.upsert_points(points))

    def delete(self, ids: Sequence[RecordId]) -> None:
        import qdrant_edge as qe

        # Point ids are the native ids as upsert writes them; one Qdrant cannot hold (not an
        # unsigned integer or a UUID) is not there, and would fail the whole operation.
        points: list[Any] = [rid for rid in dict.fromkeys(ids) if self.accepts_id(rid)]
        if points:
            self._shard.update(qe.UpdateOperation.delete_points(points))

    def describe(self) -> Inventory:
        import qdrant_edge as qe

        params = self._params() or {}
        config = json.loads((self._folder / CONFIG_FILE).read_text())
        index: dict[str, Any] = {"kind": "hnsw"}
        index.update(config.get("hnsw_config") or {})
        index.update(params.get("hnsw_config") or {})
        quant = params.get("quantization_config") or config.get("quantization_config")
        if quant:
            index["quantization"] = quant
        peek, _ = self._shard.scroll(qe.ScrollRequest(limit=256, with_payload=True,
                                                      with_vector=False))
        return Inventory(
            kind="qdrant-edge",
            uri=str(self.uri),
            count=self.count(),
            dimension=int(params["size"]) if "size" in params else None,
            metric=QDRANT_TO_METRIC.get(params.get("distance", "")),
            dtype=str(params.get("datatype") or "float32").lower(),
            index=index,
            payload_indexes=sorted(self._shard.info().payload_schema.keys()),
            metadata_types=metadata_types([r.payload or {} for r in peek]),
            versions={"qdrant-edge-py": dist_version("qdrant-edge-py")},
        )

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
