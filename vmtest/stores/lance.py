"""LanceDB, embedded: ``lancedb:///ABS/DIR?table=NAME``.

Tables vmtest creates have four columns: ``id`` (text; ``&id_type=int`` makes it Int64),
``vector`` (a fixed-size list of float32), ``metadata`` (the metadata as JSON text, so nested
values, null, NaN and every float survive exactly) and ``document`` (text). Column names can be
changed with ``id_column``, ``vector_column``, ``metadata_column`` and ``document_column``. A
table made by another tool is read as it is: every column that is not the id, the vector or
the document is a metadata field.

LanceDB keeps no metric with a table (it is chosen per query or per index): vmtest records the
metric it created the table with in the table's schema metadata (``vmtest.metric``); otherwise
``&metric=`` in the URI names it, else LanceDB's default, ``l2``.

Writes append a new table version; resuming a migration goes back to the version the
checkpoint recorded, so nothing is duplicated.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.errors import ConfigError, MissingDriverError, SchemaMismatchError, StoreNotFoundError
from vmtest.stores.base import (
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

METRIC_KEY = b"vmtest.metric"
LANCE_METRICS = {"cosine": "cosine", "l2": "l2", "ip": "dot"}
#: Ids per delete predicate.
DELETE_CHUNK = 1000
#: A row's ``_rowid`` is its fragment id shifted left by this, plus its offset in the fragment.
FRAGMENT_BITS = 32


def _quote(value: RecordId) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class LanceDBStore(VectorStore):
    PROVISIONING = (local_recipe("lancedb", "lancedb://{dir}/lancedb?table={name}"),)
    scheme = "lancedb"
    ENGINE = "LanceDB"
    LOCAL_PATH = "folder"
    URI_HELP = ("lancedb:///ABS/DIR?table=NAME[&id_type=str|int][&metric=cosine|l2|ip]"
                "[&id_column=&vector_column=&metadata_column=&document_column=]")
    NATIVE_ID_KINDS = frozenset({"str"})
    IDEMPOTENT_WRITES = False
    METRICS = ("cosine", "l2", "ip")
    CAN_DELETE = True
    #: A lookup by id scans the id column (unless the table has a scalar index on it): a
    #: partitioned check asks for many ids at once. Measured with benchmarks/partitioned.py
    #: (200,000 x 128): see docs/scale.md.
    LOOKUP_CHUNK = 20_000

    def __init__(self, uri: StoreURI, table: Any) -> None:
        self.uri = uri
        self._table = table
        self.id_column = uri.param("id_column", "id") or "id"
        self.vector_column = uri.param("vector_column", "vector") or "vector"
        self.metadata_column = uri.param("metadata_column", "metadata") or "metadata"
        self.document_column = uri.param("document_column", "document") or "document"
        schema = table.schema
        names = set(schema.names)
        for role, name in (("id", self.id_column), ("vector", self.vector_column)):
            if name not in names:
                raise SchemaMismatchError(
                    f"the LanceDB table {uri} has no {role} column {name!r}",
                    hint=f"its columns: {', '.join(schema.names)}; name it with "
                    f"'&{role}_column=NAME'")
        import pyarrow as pa

        self._int_ids = pa.types.is_integer(schema.field(self.id_column).type)
        self._extra = [n for n in schema.names if n not in
                       {self.id_column, self.vector_column, self.metadata_column,
                        self.document_column}]

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> LanceDBStore:
        try:
            import lancedb
        except ImportError as exc:
            raise MissingDriverError("lancedb", "lancedb", "lancedb") from exc
        if not uri.is_local or not uri.path:
            raise ConfigError(f"{uri} names no folder", hint=cls.URI_HELP)
        name = uri.require_param("table", cls.URI_HELP)
        if not Path(uri.path).exists() and create is None:
            raise StoreNotFoundError(f"{uri}: {uri.path} does not exist", hint=cls.URI_HELP)
        db = lancedb.connect(uri.path)
        names = list(db.list_tables().tables) if hasattr(db, "list_tables") else db.table_names()
        if name not in names:
            if create is None:
                raise StoreNotFoundError(
                    f"the LanceDB store {uri} has no table {name!r}",
                    hint="tables there: " + (", ".join(sorted(names)) or "none"))
            db.create_table(name, schema=cls._schema(uri, create))
        store = cls(uri, db.open_table(name))
        if create is not None and name in names:
            store.check_spec(create)
        return store

    @staticmethod
    def _schema(uri: StoreURI, spec: CollectionSpec) -> Any:
        import pyarrow as pa

        if spec.metric not in LANCE_METRICS:
            raise SchemaMismatchError(f"LanceDB has no metric {spec.metric!r}")
        id_type = uri.param("id_type", "str")
        if id_type not in ("str", "int"):
            raise ConfigError(f"{uri}: id_type must be str or int, not {id_type!r}")
        return pa.schema(
            [
                pa.field(uri.param("id_column", "id") or "id",
                         pa.int64() if id_type == "int" else pa.string(), nullable=False),
                pa.field(uri.param("vector_column", "vector") or "vector",
                         pa.list_(pa.float32(), spec.dimension)),
                pa.field(uri.param("metadata_column", "metadata") or "metadata", pa.string()),
                pa.field(uri.param("document_column", "document") or "document", pa.string()),
            ],
            metadata={METRIC_KEY: spec.metric.encode()},
        )

    def accepts_id(self, record_id: RecordId) -> bool:
        if isinstance(record_id, bool):
            return False
        if self._int_ids:
            return isinstance(record_id, int) and -(2**63) <= record_id < 2**63
        return isinstance(record_id, str)

    # -- reading ----------------------------------------------------------------------

    @property
    def metric(self) -> str:
        recorded = (self._table.schema.metadata or {}).get(METRIC_KEY)
        if recorded:
            return str(recorded.decode())
        return self.uri.param("metric", "l2") or "l2"

    @property
    def dimension(self) -> int:
        return int(self._table.schema.field(self.vector_column).type.list_size)

    def count(self) -> int:
        return int(self._table.count_rows())

    def _columns(self, with_vectors: bool) -> list[str]:
        names = set(self._table.schema.names)
        wanted = [self.id_column, self.vector_column if with_vectors else None,
                  self.metadata_column, self.document_column, *self._extra]
        return [c for c in wanted if c is not None and c in names]

    def _batch(self, table: Any, with_vectors: bool) -> RecordBatch:
        columns = set(table.column_names)
        n = table.num_rows
        meta_text = (table.column(self.metadata_column).to_pylist()
                     if self.metadata_column in columns else [None] * n)
        metadatas = [json.loads(text) if text else {} for text in meta_text]
        for name in self._extra:
            if name in columns:
                for meta, value in zip(metadatas, table.column(name).to_pylist(), strict=True):
                    meta[name] = value
        vectors = None
        if with_vectors:
            flat = table.column(self.vector_column).combine_chunks()
            vectors = (flat.values.to_numpy(zero_copy_only=False)  # the column's own
                       .astype(np.float32, copy=False).reshape(n, flat.type.list_size))
        return RecordBatch(
            ids=table.column(self.id_column).to_pylist(),
            vectors=vectors,
            metadatas=metadatas,
            documents=(table.column(self.document_column).to_pylist()
                       if self.document_column in columns else [None] * n),
        )

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        import pyarrow as pa

        query = self._table.search().limit(None).select(self._columns(with_vectors))
        for chunk in query.to_batches(batch_size):
            for start in range(0, chunk.num_rows, batch_size):
                part = pa.Table.from_batches([chunk.slice(start, batch_size)])
                yield self._batch(part, with_vectors)

    def partitions(self, wanted: int) -> list[Partition]:
        """Runs of consecutive fragments (a fragment is what one write appended, LanceDB's
        unit of storage), read at the table version of the plan. A row's id inside LanceDB
        (``_rowid``) is its fragment id times 2^32 plus its offset, so a run of fragments is a
        range of row ids, found with one single-row query per fragment."""
        fragments: list[int] = []
        start = 0
        while True:
            first = (self._table.search().with_row_id(True)
                     .where(f"_rowid >= {start << FRAGMENT_BITS}", prefilter=True)
                     .select([self.id_column]).limit(1).to_arrow())
            if not first.num_rows:
                break
            fragment = int(first.column("_rowid")[0].as_py()) >> FRAGMENT_BITS
            fragments.append(fragment)
            start = fragment + 1
        if not fragments:
            return super().partitions(wanted)
        version = int(self._table.version)
        parts = max(1, min(wanted, len(fragments)))
        cuts = [len(fragments) * i // parts for i in range(parts + 1)]
        runs = [fragments[a:b] for a, b in itertools.pairwise(cuts)]
        return [Partition(i, {"version": version, "fragments": [run[0], run[-1] + 1]},
                          f"fragments {run[0]}..{run[-1]} of version {version}")
                for i, run in enumerate(runs)]

    def read_partition(self, part: Partition, batch_size: int, *,
                       with_vectors: bool = True) -> Iterator[RecordBatch]:
        import pyarrow as pa

        if "fragments" not in part.spec:
            yield from super().read_partition(part, batch_size, with_vectors=with_vectors)
            return
        if int(self._table.version) != int(part.spec["version"]):
            self._table.checkout(int(part.spec["version"]))  # the plan's version, read-only
        lo, hi = (int(f) << FRAGMENT_BITS for f in part.spec["fragments"])
        query = (self._table.search().where(f"_rowid >= {lo} AND _rowid < {hi}", prefilter=True)
                 .limit(None).select(self._columns(with_vectors)))
        for chunk in query.to_batches(batch_size):
            for start in range(0, chunk.num_rows, batch_size):
                yield self._batch(pa.Table.from_batches([chunk.slice(start, batch_size)]),
                                  with_vectors)

    def existing(self, ids: Sequence[RecordId]) -> list[RecordId]:
        wanted = [i for i in dict.fromkeys(ids) if self.accepts_id(i)]
        if not wanted:
            return []
        found = (self._table.search().where(f"{self.id_column} IN "
                                            f"({', '.join(map(_quote, wanted))})")
                 .limit(None).select([self.id_column]).to_arrow())
        return list(found.column(self.id_column).to_pylist())

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        if not ids:
            return RecordBatch.empty(self.dimension)
        wanted = [i for i in ids if self.accepts_id(i)]
        if not wanted:
            return RecordBatch.empty(self.dimension)
        found = (self._table.search().where(f"{self.id_column} IN "
                                            f"({', '.join(map(_quote, wanted))})")
                 .limit(None).select(self._columns(True)).to_arrow())
        return self._batch(found, True)

    def _matching_ids(self, where: dict[str, Any]) -> list[RecordId]:
        """Ids whose metadata fields equal the values (metadata is JSON text, which LanceDB's
        SQL cannot look into, so the filter is applied here, on the id and metadata only)."""
        out: list[RecordId] = []
        for batch in self.iter_batches(10_000, with_vectors=False):
            out.extend(rid for rid, meta in zip(batch.ids, batch.metadatas, strict=True)
                       if all(meta.get(k) == v and type(meta.get(k)) is type(v)
                              for k, v in where.items()))
        return out

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        queries = np.asarray(queries, dtype=np.float32)
        if len(queries) == 0:
            return []
        query = (self._table.search([q.tolist() for q in queries])
                 .distance_type(LANCE_METRICS[self.metric]).limit(k)
                 .select([self.id_column]))
        if where:
            ids = self._matching_ids(where)
            if not ids:
                return [[] for _ in queries]
            query = query.where(f"{self.id_column} IN ({', '.join(map(_quote, ids))})",
                                prefilter=True)
        table = query.to_arrow()
        out: list[list[tuple[float, RecordId]]] = [[] for _ in queries]
        index = (table.column("query_index").to_pylist() if "query_index" in table.column_names
                 else [0] * table.num_rows)
        for qi, rid, dist in zip(index, table.column(self.id_column).to_pylist(),
                                 table.column("_distance").to_pylist(), strict=True):
            out[qi].append((dist, rid))
        return [[rid for _, rid in sorted(hits, key=lambda h: h[0])] for hits in out]

    # -- writing ----------------------------------------------------------------------

    def upsert(self, batch: RecordBatch) -> None:
        import pyarrow as pa

        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        if self._extra:
            raise SchemaMismatchError(
                f"vmtest writes only into LanceDB tables of its own layout; {self.uri} has "
                f"other columns ({', '.join(self._extra)})",
                hint="write into a new table")
        schema = self._table.schema
        vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
        columns = {
            self.id_column: batch.ids,
            self.vector_column: pa.FixedSizeListArray.from_arrays(
                pa.array(vectors.ravel()), self.dimension),
            self.metadata_column: [json.dumps(m, ensure_ascii=False, allow_nan=True)
                                   for m in batch.metadatas],
            self.document_column: batch.documents,
        }
        self._table.add(pa.table({n: columns[n] for n in schema.names}, schema=schema))

    def delete(self, ids: Sequence[RecordId]) -> None:
        # an id of the other type than the id column's is not there (as in fetch); each
        # chunk is one new table version
        wanted = [rid for rid in dict.fromkeys(ids) if self.accepts_id(rid)]
        for start in range(0, len(wanted), DELETE_CHUNK):
            keys = ", ".join(map(_quote, wanted[start:start + DELETE_CHUNK]))
            self._table.delete(f"{self.id_column} IN ({keys})")

    def write_position(self) -> int:
        return int(self._table.version)

    def rewind_to(self, position: Any) -> None:
        if position is not None and int(self._table.version) != int(position):
            self._table.restore(int(position))

    def describe(self) -> Inventory:
        index: dict[str, Any] = {"kind": "flat"}
        indices = list(self._table.list_indices())
        vector_index = next((i for i in indices if self.vector_column in i.columns), None)
        if vector_index is not None:
            index = {"kind": str(vector_index.index_type).lower(), "name": vector_index.name}
        peek = next(self.iter_batches(256, with_vectors=False), RecordBatch.empty())
        return Inventory(
            kind="lancedb",
            uri=str(self.uri),
            count=self.count(),
            dimension=self.dimension,
            metric=self.metric,
            dtype="float32",
            index=index,
            payload_indexes=sorted(c for i in indices if self.vector_column not in i.columns
                                   for c in i.columns),
            metadata_types=metadata_types(peek.metadatas),
            versions={"lancedb": dist_version("lancedb")},
        )

    def close(self) -> None:
        self._table = None
