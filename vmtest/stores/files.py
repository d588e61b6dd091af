"""The portable export formats, as stores like any other.

``jsonl:///ABS/FILE.jsonl``: one record a line, ``{"id", "vector", "metadata", "document"}``.
The collection's shape (dimension, metric, dtype) is kept beside it in ``FILE.jsonl.meta.json``
(or given in the URI: ``?metric=cosine``).

``parquet:///ABS/DIR``: parquet parts ``part-NNNNNN.parquet`` with columns ``id``, ``vector``
(a fixed-size list of float32), ``metadata`` (canonical JSON text, so every JSON type survives)
and ``document``; the shape is in ``DIR/_vmtest.json``. Parts are written one per upsert, so
an export streams.

Both keep any JSON id and metadata value (NaN and infinities included). Writing appends:
a file store is an export, not a database, so an id written twice is there twice (and the
ids check reports it).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vmtest.errors import ConfigError, MissingDriverError, SchemaMismatchError, StoreNotFoundError
from vmtest.knn import exact_topk
from vmtest.stores.base import (
    METRICS,
    CollectionSpec,
    Inventory,
    Partition,
    RecordBatch,
    RecordId,
    VectorStore,
    dist_version,
    local_recipe,
    metadata_types,
)
from vmtest.uri import StoreURI


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=True, separators=(",", ":"))


class FileStore(VectorStore):
    """What the two file formats share: the shape file, brute-force search, fetch by scan."""

    NATIVE_ID_KINDS = frozenset({"str", "int"})
    IDEMPOTENT_WRITES = False
    METRICS = METRICS
    FETCH_IS_SCAN = True
    kind: ClassVar[str]

    def __init__(self, uri: StoreURI, path: Path, meta_path: Path) -> None:
        self.uri = uri
        self.path = path
        self._meta_path = meta_path
        self._meta: dict[str, Any] = {}
        if meta_path.exists():
            self._meta = json.loads(meta_path.read_text())
        metric = uri.param("metric")
        if metric is not None:
            if metric not in METRICS:
                raise ConfigError(
                    f"{uri} asks for the metric {metric!r}",
                    hint="metric= takes one of " + ", ".join(METRICS),
                )
            self._meta["metric"] = metric
        self._search_cache: tuple[list[RecordId], np.ndarray] | None = None

    @classmethod
    def _paths(cls, uri: StoreURI) -> tuple[Path, Path]:
        raise NotImplementedError

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> FileStore:
        if not uri.is_local or not uri.path:
            raise ConfigError(f"{uri} names no file", hint=cls.URI_HELP)
        path, meta_path = cls._paths(uri)
        if not path.exists():
            if create is None:
                raise StoreNotFoundError(f"{uri}: {path} does not exist", hint=cls.URI_HELP)
            cls._initialise(path)
            meta_path.write_text(dumps({"dimension": create.dimension, "metric": create.metric,
                                        "dtype": create.dtype}))
            return cls(uri, path, meta_path)
        store = cls(uri, path, meta_path)
        if create is not None:
            store.check_spec(create)
        return store

    @classmethod
    def _initialise(cls, path: Path) -> None:
        raise NotImplementedError

    def check_spec(self, spec: CollectionSpec) -> None:
        for key in ("dimension", "metric"):
            have = self._meta.get(key)
            if have is not None and have != getattr(spec, key):
                raise SchemaMismatchError(
                    f"{self.uri} already holds {key} {have!r}; the source has "
                    f"{getattr(spec, key)!r}",
                    hint="write to a new file",
                )
        if not self._meta:
            self._meta = {"dimension": spec.dimension, "metric": spec.metric, "dtype": spec.dtype}
            self._meta_path.write_text(dumps(self._meta))

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        wanted = {str(i) for i in ids}
        found = [
            batch.take([j for j, rid in enumerate(batch.ids) if str(rid) in wanted])
            for batch in self.iter_batches(4096)
        ]
        return RecordBatch.concat([b for b in found if len(b)])

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        metric = self._meta.get("metric")
        if metric is None:
            raise ConfigError(
                f"{self.uri} does not say its metric, so it cannot be searched",
                hint="add '?metric=cosine' (or l2, ip) to the URI",
            )
        if where:
            ids, vectors = self._load(where)
        else:
            if self._search_cache is None:
                self._search_cache = self._load(None)
            ids, vectors = self._search_cache
        if not ids:
            return [[] for _ in range(len(queries))]
        idx, _ = exact_topk(vectors, np.asarray(queries, dtype=np.float32), k, metric)
        return [[ids[i] for i in row if i >= 0] for row in idx]

    def _load(self, where: dict[str, Any] | None) -> tuple[list[RecordId], np.ndarray]:
        ids: list[RecordId] = []
        parts: list[np.ndarray] = []
        for batch in self.iter_batches(8192):
            keep = [
                j
                for j, meta in enumerate(batch.metadatas)
                if not where or all(meta.get(k) == v for k, v in where.items())
            ]
            if keep and batch.vectors is not None:
                ids.extend(batch.ids[j] for j in keep)
                parts.append(batch.vectors[keep])
        return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))

    def describe(self) -> Inventory:
        dimension = self._meta.get("dimension")
        metas: list[dict[str, Any]] = []
        for batch in self.iter_batches(256):
            metas = batch.metadatas
            if dimension is None and batch.vectors is not None and batch.vectors.size:
                dimension = int(batch.vectors.shape[1])
            break
        return Inventory(
            kind=self.kind,
            uri=str(self.uri),
            count=self.count(),
            dimension=dimension,
            metric=self._meta.get("metric"),
            dtype=self._dtype(),
            index={"kind": "flat"},
            metadata_types=metadata_types(metas),
            versions=self._versions(),
        )

    def _dtype(self) -> str | None:
        return self._meta.get("dtype")

    def _versions(self) -> dict[str, str]:
        return {}


class JsonlStore(FileStore):
    scheme = "jsonl"
    kind = "jsonl"
    PROVISIONING = (local_recipe("jsonl", "jsonl://{dir}/{name}.jsonl"),)
    ENGINE = "JSONL"
    LOCAL_PATH = "file"
    URI_HELP = "jsonl:///ABS/FILE.jsonl[?metric=cosine|l2|ip] (or jsonl://./relative.jsonl)"

    @classmethod
    def _paths(cls, uri: StoreURI) -> tuple[Path, Path]:
        path = Path(uri.path or "")
        return path, path.with_name(path.name + ".meta.json")

    @classmethod
    def _initialise(cls, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def count(self) -> int:
        with self.path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())

    def write_position(self) -> int:
        return self.path.stat().st_size

    def rewind_to(self, position: Any) -> None:
        """Cut the file back to ``position`` bytes (drops a line half-written by a crash)."""
        size = int(position or 0)
        if self.path.stat().st_size > size:
            with self.path.open("r+b") as fh:
                fh.truncate(size)
                os.fsync(fh.fileno())
        self._search_cache = None

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        rows: list[dict[str, Any]] = []
        with self.path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(
                        f"{self.uri}: line {number} is not JSON ({exc.msg})"
                    ) from exc
                if len(rows) >= batch_size:
                    yield self._rows(rows, with_vectors)
                    rows = []
        if rows:
            yield self._rows(rows, with_vectors)

    def _rows(self, rows: list[dict[str, Any]], with_vectors: bool) -> RecordBatch:
        try:
            return RecordBatch(
                ids=[r["id"] for r in rows],
                vectors=np.asarray([r["vector"] for r in rows], dtype=np.float32)
                if with_vectors
                else None,
                metadatas=[r.get("metadata") or {} for r in rows],
                documents=[r.get("document") for r in rows],
            )
        except (KeyError, ValueError) as exc:
            raise ConfigError(
                f"{self.uri} has a record without an id or with a malformed vector ({exc})",
                hint="each line needs {\"id\": ..., \"vector\": [...]}",
            ) from exc

    def upsert(self, batch: RecordBatch) -> None:
        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        with self.path.open("a", encoding="utf-8") as fh:
            for rid, vec, meta, doc in zip(
                batch.ids, batch.vectors.tolist(), batch.metadatas, batch.documents, strict=True
            ):
                fh.write(dumps({"id": rid, "vector": vec, "metadata": meta, "document": doc}))
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        self._search_cache = None


class ParquetStore(FileStore):
    scheme = "parquet"
    kind = "parquet"
    PROVISIONING = (local_recipe("parquet", "parquet://{dir}/{name}"),)
    ENGINE = "Parquet"
    LOCAL_PATH = "folder"
    LOCAL_MARKERS = ("_vmtest.json", "*.parquet")
    URI_HELP = "parquet:///ABS/DIR[?metric=cosine|l2|ip] (a folder of parquet parts)"

    @classmethod
    def _paths(cls, uri: StoreURI) -> tuple[Path, Path]:
        path = Path(uri.path or "")
        return path, path / "_vmtest.json"

    @classmethod
    def _initialise(cls, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _pq() -> Any:
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise MissingDriverError("parquet", "pyarrow", "files") from exc
        return pq

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("part-*.parquet"))

    def write_position(self) -> int:
        return len(self._parts())

    def rewind_to(self, position: Any) -> None:
        """Remove parts written after ``position`` parts (and any crash leftovers)."""
        keep = int(position or 0)
        for part in self._parts()[keep:]:
            part.unlink()
        for leftover in self.path.glob("*.parquet.tmp"):
            leftover.unlink()
        self._search_cache = None

    def count(self) -> int:
        pq = self._pq()
        return sum(pq.ParquetFile(p).metadata.num_rows for p in self._parts())

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        pq = self._pq()
        for part in self._parts():
            for rb in pq.ParquetFile(part).iter_batches(
                    batch_size=batch_size, columns=self._columns(with_vectors)):
                yield self._decode(rb, with_vectors)

    @staticmethod
    def _columns(with_vectors: bool) -> list[str]:
        return ["id", "metadata", "document"] + (["vector"] if with_vectors else [])

    @staticmethod
    def _decode(rb: Any, with_vectors: bool) -> RecordBatch:
        vectors = None
        if with_vectors:
            col = rb.column("vector")
            width = col.type.list_size if hasattr(col.type, "list_size") else None
            flat = col.flatten().to_numpy(zero_copy_only=False)
            width = width or (len(flat) // max(1, len(rb)))
            vectors = flat.astype(np.float32).reshape(len(rb), width)
        metas = rb.column("metadata").to_pylist()
        return RecordBatch(
            ids=rb.column("id").to_pylist(),
            vectors=vectors,
            metadatas=[json.loads(m) if m else {} for m in metas],
            documents=rb.column("document").to_pylist(),
        )

    def partitions(self, wanted: int) -> list[Partition]:
        """The parts' row groups, in runs of consecutive groups of about equal rows (a row
        group is the smallest unit Parquet reads on its own: a store of one row group is one
        partition). Each names its files, so parts written later are not in the plan."""
        pq = self._pq()
        units = [(part.name, group, meta.row_group(group).num_rows)
                 for part in self._parts()
                 for meta in [pq.ParquetFile(part).metadata]
                 for group in range(meta.num_row_groups)]
        if not units:
            return super().partitions(wanted)
        total = sum(rows for _, _, rows in units)
        share = max(1, math.ceil(total / max(1, wanted)))
        groups: list[list[tuple[str, int, int]]] = [[]]
        for unit in units:
            # a run takes the next row group while that keeps it nearer the share than not
            if groups[-1] and sum(r for _, _, r in groups[-1]) + unit[2] / 2 > share:
                groups.append([])
            groups[-1].append(unit)
        return [Partition(i, {"row_groups": [[name, group] for name, group, _ in run]},
                          f"{len(run)} row groups from {run[0][0]}#{run[0][1]} to "
                          f"{run[-1][0]}#{run[-1][1]}")
                for i, run in enumerate(groups)]

    def read_partition(self, part: Partition, batch_size: int, *,
                       with_vectors: bool = True) -> Iterator[RecordBatch]:
        if "row_groups" not in part.spec:
            yield from super().read_partition(part, batch_size, with_vectors=with_vectors)
            return
        pq = self._pq()
        for name, group in part.spec["row_groups"]:
            for rb in pq.ParquetFile(self.path / name).iter_batches(
                    batch_size=batch_size, row_groups=[group],
                    columns=self._columns(with_vectors)):
                yield self._decode(rb, with_vectors)

    def upsert(self, batch: RecordBatch) -> None:
        import pyarrow as pa

        pq = self._pq()
        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        dtype = {"float16": pa.float16(), "float64": pa.float64()}.get(
            self._meta.get("dtype") or "float32", pa.float32()
        )
        vectors = np.asarray(batch.vectors)
        width = int(vectors.shape[1]) if vectors.ndim == 2 else 0
        ids_are_int = all(isinstance(i, int) and not isinstance(i, bool) for i in batch.ids)
        table = pa.table(
            {
                "id": pa.array(batch.ids, pa.int64())
                if ids_are_int
                else pa.array([str(i) for i in batch.ids], pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.reshape(-1).astype(dtype.to_pandas_dtype()), dtype), width
                ),
                "metadata": pa.array([dumps(m) for m in batch.metadatas], pa.string()),
                "document": pa.array(batch.documents, pa.string()),
            }
        )
        number = len(self._parts())
        final = self.path / f"part-{number:06d}.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self._search_cache = None

    def _dtype(self) -> str | None:
        parts = self._parts()
        if not parts:
            return self._meta.get("dtype")
        field = self._pq().read_schema(parts[0]).field("vector")
        arrow_name = str(field.type.value_type)
        return {"halffloat": "float16", "float": "float32", "double": "float64"}.get(
            arrow_name, arrow_name
        )

    def _versions(self) -> dict[str, str]:
        return {"pyarrow": dist_version("pyarrow")}
