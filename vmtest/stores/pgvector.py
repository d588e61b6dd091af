"""PostgreSQL with pgvector, through psycopg 3:
``postgresql://USER[:PASS]@HOST:PORT/DB?table=NAME`` (column names configurable with
``id_column``, ``vector_column``, ``metadata_column``, ``document_column``; ``metric=`` or,
without it, the operator class of the vector column's index).

Counts are exact (``count(*)``), never the planner's estimate. Reads stream through a
server-side cursor in binary format (vectors decoded straight into numpy). Metadata is
``jsonb``: any JSON, but no NaN or infinity and no NUL character.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from vmtest.errors import (
    ConfigError,
    MissingDriverError,
    SchemaMismatchError,
    StoreNotFoundError,
    StoreUnreachableError,
    one_line,
)
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    Partition,
    Recipe,
    RecordBatch,
    RecordId,
    VectorStore,
    dist_version,
    has_non_finite,
    metadata_types,
    served,
)
from vmtest.stores.changes import ChangeFeed, ChangeFeedUnavailable
from vmtest.stores.pgtable import PgRecordTable, has_vector_column, wants_records
from vmtest.uri import StoreURI

OPS = {"cosine": "<=>", "l2": "<->", "ip": "<#>", "l1": "<+>"}
OPCLASS = {"vector_cosine_ops": "cosine", "vector_l2_ops": "l2", "vector_ip_ops": "ip",
           "vector_l1_ops": "l1"}
TIMEOUT_S = 30


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    return False


def _float_problem(value: Any) -> str | None:
    if has_non_finite(value):
        return "PostgreSQL jsonb holds no NaN or infinity"
    if isinstance(value, float) and value.is_integer() and "e" in repr(value):
        # json writes 1e+16; jsonb keeps it as the number 10000000000000000, an integer
        return "PostgreSQL jsonb reads a float such as 1e+16 back as an integer"
    if isinstance(value, (list, tuple)):
        return next(filter(None, map(_float_problem, value)), None)
    if isinstance(value, dict):
        return next(filter(None, map(_float_problem, value.values())), None)
    return None


@contextlib.contextmanager
def _postgres_container(image: str, name: str) -> Iterator[str]:
    from testcontainers.community.postgres import PostgresContainer

    from vmtest.provision import ours

    with ours(PostgresContainer(image, username="postgres", password="postgres",
                                dbname="postgres")) as pg:
        yield (f"postgresql://postgres:postgres@{pg.get_container_host_ip()}:"
               f"{pg.get_exposed_port(5432)}/postgres?table={name}")


def _records(provide: Callable[[Any, str], AbstractContextManager[str]]
             ) -> Callable[[Any, str], AbstractContextManager[str]]:
    """A recipe for a table of records without vectors on the same server."""
    @contextlib.contextmanager
    def records(where: Any, name: str) -> Iterator[str]:
        with provide(where, name) as uri:
            yield uri + "&vector_column=none"

    return records


class PgvectorStore(VectorStore):
    #: psycopg's for a server that went away or refused the connection.
    CONNECTION_ERRORS = frozenset({"OperationalError", "InterfaceError"})
    PROVISIONING = (Recipe("pgvector", served("PostgresServer", "postgres"),
                           "pgvector/pgvector:0.8.1-pg18", _postgres_container),
                    Recipe("postgresql-table", _records(served("PostgresServer", "postgres")),
                           "pgvector/pgvector:0.8.1-pg18", _records(_postgres_container),
                           vectors=False))
    scheme = "postgresql"
    ENGINE = "PostgreSQL"
    URI_HELP = ("postgresql://USER[:PASS]@HOST:PORT/DB?table=NAME[&metric=cosine|l2|ip]"
                "[&id_column=id&vector_column=embedding&metadata_column=metadata"
                "&document_column=document]")
    NATIVE_ID_KINDS = frozenset({"str", "int"})
    METRICS = ("cosine", "l2", "ip", "l1")
    CAN_DELETE = True

    def __init__(self, uri: StoreURI, conn: Any, table: str) -> None:
        self.uri = uri
        self._conn = conn
        self.table = table
        self.cols = {
            "id": uri.param("id_column", "id") or "id",
            "vector": uri.param("vector_column", "embedding") or "embedding",
            "metadata": uri.param("metadata_column", "metadata") or "metadata",
            "document": uri.param("document_column", "document") or "document",
        }
        self._register_vector()

    @classmethod
    def holds_vectors(cls, uri: StoreURI | None = None) -> bool:
        return not wants_records(uri)  # &vector_column=none: a table of records

    @classmethod
    def metadata_key_problem(cls, key: str, uri: StoreURI | None = None) -> str | None:
        if wants_records(uri):  # a column of its own per field
            return PgRecordTable.metadata_key_problem(key, uri)
        return "PostgreSQL jsonb holds no NUL characters" if _has_nul(key) else None

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        if _has_nul(value):
            return "PostgreSQL jsonb holds no NUL characters"
        return _float_problem(value)

    @classmethod
    def document_problem(cls, document: str | None, uri: StoreURI | None = None) -> str | None:
        if document is not None and "\x00" in document:
            return "PostgreSQL text holds no NUL characters"
        return None

    def accepts_id(self, record_id: RecordId) -> bool:
        return not isinstance(record_id, bool) and isinstance(record_id, (str, int)) \
            and not _has_nul(record_id)

    # -- connection -------------------------------------------------------------------

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None
                 ) -> PgvectorStore | PgRecordTable:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingDriverError("postgresql", "psycopg", "pgvector") from exc
        table = uri.require_param("table", cls.URI_HELP)
        try:
            conn = psycopg.connect(
                host=uri.host or "127.0.0.1", port=uri.port or 5432,
                user=uri.username or "postgres", password=uri.password or None,
                dbname=(uri.path or "/postgres").lstrip("/") or "postgres",
                connect_timeout=10, autocommit=True,
                options=f"-c statement_timeout={TIMEOUT_S * 1000}",
                keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
            )
        except Exception as exc:
            raise StoreUnreachableError(
                f"cannot reach the PostgreSQL store {uri}: {exc}",
                hint="check that PostgreSQL is running on that host and port, and the user",
            ) from exc
        try:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchall()[0][0]
            if wants_records(uri) or (exists and not has_vector_column(conn, table)):
                # a table of records without vectors (vmtest.stores.pgtable)
                return PgRecordTable.open(uri, conn, table, exists, create)
            if not exists:
                if create is None:
                    tables = [r[0] for r in conn.execute(
                        "SELECT table_name FROM information_schema.columns "
                        "WHERE udt_name IN ('vector', 'halfvec') ORDER BY 1")]
                    raise StoreNotFoundError(
                        f"the PostgreSQL store {uri} has no table {table!r}",
                        hint="tables with a vector column there: " + (", ".join(tables)
                                                                       or "none"),
                    )
                cls._create(conn, uri, table, create)
            store = cls(uri, conn, table)
            if exists and create is not None:
                store.check_spec(create)
            return store
        except BaseException:
            conn.close()
            raise

    @classmethod
    def _create(cls, conn: Any, uri: StoreURI, table: str, spec: CollectionSpec) -> None:
        from psycopg import sql

        if spec.metric not in OPS:
            raise SchemaMismatchError(f"pgvector has no metric {spec.metric!r}")
        cols = {k: uri.param(f"{k}_column", d) or d for k, d in
                (("id", "id"), ("vector", "embedding"), ("metadata", "metadata"),
                 ("document", "document"))}
        opclass = {v: k for k, v in OPCLASS.items()}[spec.metric]
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(sql.SQL(
            "CREATE TABLE {t} ({i} text PRIMARY KEY, {v} vector({d}) NOT NULL, {m} jsonb, "
            "{doc} text)").format(
                t=sql.Identifier(table), i=sql.Identifier(cols["id"]),
                v=sql.Identifier(cols["vector"]), d=sql.Literal(spec.dimension),
                m=sql.Identifier(cols["metadata"]), doc=sql.Identifier(cols["document"])))
        conn.execute(sql.SQL("CREATE INDEX ON {t} USING hnsw ({v} {ops})").format(
            t=sql.Identifier(table), v=sql.Identifier(cols["vector"]),
            ops=sql.SQL(opclass)))

    def _register_vector(self) -> None:
        """Decode pgvector's binary format (int16 dim, int16 unused, float32 big-endian)."""
        from psycopg.adapt import Loader
        from psycopg.pq import Format

        row = self._conn.execute("SELECT oid FROM pg_type WHERE typname = 'vector'").fetchone()
        if row is None:
            raise StoreNotFoundError(f"{self.uri}: the pgvector extension is not installed")

        class BinaryVectorLoader(Loader):
            format = Format.BINARY

            def load(self, data: Any) -> np.ndarray:
                return np.frombuffer(bytes(data)[4:], dtype=">f4").astype(np.float32)

        class TextVectorLoader(Loader):
            def load(self, data: Any) -> np.ndarray:
                return np.asarray(json.loads(bytes(data)), dtype=np.float32)

        self._conn.adapters.register_loader(row[0], BinaryVectorLoader)
        self._conn.adapters.register_loader(row[0], TextVectorLoader)

    def _sql(self, template: str) -> Any:
        from psycopg import sql

        return sql.SQL(template).format(
            t=sql.Identifier(self.table),
            **{k: sql.Identifier(v) for k, v in self.cols.items()},
        )

    def _fetchall(self, query: Any, params: Any = ()) -> list[Any]:
        return list(self._conn.execute(query, params).fetchall())

    def count(self) -> int:
        return int(self._call(self._fetchall, self._sql("SELECT count(*) FROM {t}"))[0][0])

    def _rows(self, rows: Sequence[Any], with_vectors: bool) -> RecordBatch:
        vectors = None
        if with_vectors:
            vectors = (np.stack([r[1] for r in rows]) if rows
                       else np.zeros((0, 0), dtype=np.float32))
        return RecordBatch(
            ids=[r[0] for r in rows], vectors=vectors,
            metadatas=[r[2] if isinstance(r[2], dict) else {} for r in rows],
            documents=[r[3] for r in rows],
        )

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        return self._read(batch_size, with_vectors, None, None)

    def _read(self, batch_size: int, with_vectors: bool, lo: str | None,
              hi: str | None) -> Iterator[RecordBatch]:
        """The rows (of ids in [lo, hi) when given, in the id column's order) in batches."""
        vector = "{vector}" if with_vectors else "NULL"
        bounds = [c for c, v in (("{id} >= %s", lo), ("{id} < %s", hi)) if v is not None]
        where = f"WHERE {' AND '.join(bounds)} " if bounds else ""
        query = self._sql(f"SELECT {{id}}, {vector}, {{metadata}}, {{document}} FROM {{t}} "
                          f"{where}ORDER BY {{id}}")
        params = [v for v in (lo, hi) if v is not None]
        with self._conn.transaction(), self._conn.cursor(name="vmtest_read", binary=True) as cur:
            cur.itersize = batch_size
            self._call(cur.execute, query, params)
            while True:
                rows = self._call(cur.fetchmany, batch_size)
                if not rows:
                    return
                yield self._rows(rows, with_vectors)

    #: Sampled ids per partition the boundaries are chosen from.
    SAMPLE_PER_PARTITION = 100

    def partitions(self, wanted: int) -> list[Partition]:
        """Ranges of the id column (the primary key's index reads each range alone),
        bounded by quantiles of a Bernoulli sample of about 100 ids per partition (every id
        when the table is small), in the column's own order: the ranges hold about equal rows
        and together every row once, whatever the sample. The sample is seeded (REPEATABLE):
        the same table gives the same ranges to every share of a --vmtest-shard run."""
        total = self.count()
        if total == 0 or wanted <= 1:
            return [Partition(0, {"lo": None, "hi": None}, "every id")]
        percent = min(100.0, 100.0 * self.SAMPLE_PER_PARTITION * wanted / total)
        sample = [r[0] for r in self._call(self._fetchall, self._sql(
            "SELECT {id} FROM {t} TABLESAMPLE BERNOULLI (%s) REPEATABLE (0) ORDER BY {id}"),
            (percent,))]
        cuts = list(dict.fromkeys(sample[len(sample) * i // wanted] for i in range(1, wanted)
                                  if sample))
        bounds = [None, *cuts, None]
        return [Partition(i, {"lo": lo, "hi": hi},
                          f"ids from {lo!r} to {hi!r}" if lo or hi else "every id")
                for i, (lo, hi) in enumerate(itertools.pairwise(bounds))]

    def read_partition(self, part: Partition, batch_size: int, *,
                       with_vectors: bool = True) -> Iterator[RecordBatch]:
        if "lo" not in part.spec:
            return super().read_partition(part, batch_size, with_vectors=with_vectors)
        return self._read(batch_size, with_vectors, part.spec["lo"], part.spec["hi"])

    def existing(self, ids: Sequence[RecordId]) -> list[RecordId]:
        if not ids:
            return []
        return [r[0] for r in self._call(self._fetchall, self._sql(
            "SELECT {id} FROM {t} WHERE {id} = ANY(%s)"), ([str(i) for i in ids],))]

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        if not ids:
            return RecordBatch.empty()
        with self._conn.cursor(binary=True) as cur:
            self._call(cur.execute, self._sql(
                "SELECT {id}, {vector}, {metadata}, {document} FROM {t} WHERE {id} = ANY(%s)"),
                ([str(i) for i in ids],))
            return self._rows(cur.fetchall(), True)

    def _metric(self) -> str | None:
        given = self.uri.param("metric")
        if given:
            if given not in OPS:
                raise ConfigError(f"{self.uri}: metric={given!r}",
                                  hint="one of " + ", ".join(OPS))
            return given
        row = self._conn.execute(
            "SELECT opc.opcname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
            "JOIN pg_opclass opc ON opc.oid = ANY(i.indclass::oid[]) "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey::int2[]) "
            "WHERE c.oid = to_regclass(%s) AND a.attname = %s LIMIT 1",
            (self.table, self.cols["vector"])).fetchone()
        return OPCLASS.get(row[0]) if row else None

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        metric = self._metric()
        if metric is None:
            raise ConfigError(f"{self.uri} has no vector index and no metric= to search by",
                              hint="add '&metric=cosine' (or l2, ip, l1) to the URI")
        clause = "WHERE {metadata} @> %s::jsonb " if where else ""
        query = self._sql("SELECT {id} FROM {t} " + clause + "ORDER BY {vector} "
                          + OPS[metric] + " %s::vector LIMIT %s")
        out = []
        for q in np.asarray(queries, dtype=np.float32).tolist():
            text = "[" + ",".join(map(repr, q)) + "]"
            params = ((json.dumps(where),) if where else ()) + (text, k)
            rows = self._call(self._fetchall, query, params)
            out.append([r[0] for r in rows])
        return out

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, batch: RecordBatch) -> None:
        from psycopg.types.json import Jsonb

        if batch.vectors is None:
            raise ValueError("upsert needs vectors")
        query = self._sql(
            "INSERT INTO {t} ({id}, {vector}, {metadata}, {document}) "
            "VALUES (%s, %s::vector, %s, %s) ON CONFLICT ({id}) DO UPDATE SET "
            "{vector} = EXCLUDED.{vector}, {metadata} = EXCLUDED.{metadata}, "
            "{document} = EXCLUDED.{document}")
        rows = [
            (str(rid), "[" + ",".join(map(repr, vec)) + "]", Jsonb(meta), doc)
            for rid, vec, meta, doc in zip(batch.ids, np.asarray(batch.vectors).tolist(),
                                           batch.metadatas, batch.documents, strict=True)
        ]

        def write() -> None:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.executemany(query, rows)

        self._call(write)

    def delete(self, ids: Sequence[RecordId]) -> None:
        wanted = list(dict.fromkeys(str(i) for i in ids))  # text, as upsert writes them
        if not wanted:
            return

        def remove() -> None:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute(self._sql("DELETE FROM {t} WHERE {id} = ANY(%s)"), (wanted,))

        self._call(remove)

    def describe(self) -> Inventory:
        row = self._conn.execute(
            "SELECT a.atttypmod, t.typname FROM pg_attribute a JOIN pg_type t "
            "ON t.oid = a.atttypid WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
            (self.table, self.cols["vector"])).fetchone()
        if row is None:
            raise StoreNotFoundError(f"{self.uri}: no column {self.cols['vector']!r}")
        dimension = int(row[0]) if row[0] and row[0] > 0 else None
        dtype = {"vector": "float32", "halfvec": "float16"}.get(row[1], row[1])
        indexes = self._conn.execute(
            "SELECT am.amname, c2.reloptions FROM pg_index i "
            "JOIN pg_class c2 ON c2.oid = i.indexrelid JOIN pg_am am ON am.oid = c2.relam "
            "WHERE i.indrelid = to_regclass(%s) AND am.amname IN ('hnsw', 'ivfflat')",
            (self.table,)).fetchall()
        index: dict[str, Any] = {"kind": indexes[0][0] if indexes else "flat"}
        for option in (indexes[0][1] or []) if indexes else []:
            key, _, value = option.partition("=")
            index[{"ef_construction": "ef_construct"}.get(key, key)] = int(value)
        if index["kind"] == "hnsw":
            index.setdefault("m", 16)
            index.setdefault("ef_construct", 64)
        peek = next(self.iter_batches(256, with_vectors=False), RecordBatch.empty())
        server = self._conn.execute("SHOW server_version").fetchone()[0]
        ext = self._conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        return Inventory(
            kind="pgvector", uri=str(self.uri), count=self.count(), dimension=dimension,
            metric=self._metric(), dtype=dtype, index=index,
            metadata_types=metadata_types(peek.metadatas),
            versions={"psycopg": dist_version("psycopg"), "postgresql": str(server),
                      "pgvector": str(ext[0]) if ext else "none"},
        )

    def change_feed(self, name: str) -> LogicalDecodingFeed:
        """The table's changes by PostgreSQL's logical decoding (a replication slot with the
        built-in test_decoding plugin): needs ``wal_level=logical`` and a role with the
        REPLICATION attribute (or a superuser)."""
        return LogicalDecodingFeed(self, name)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class LogicalDecodingFeed(ChangeFeed):
    """The ids of the rows of one table inserted, updated or deleted since the slot's
    confirmed position. Reading peeks (nothing is consumed); :meth:`confirm` advances the
    slot, so a sync killed between the two reads the same changes again."""

    def __init__(self, store: PgvectorStore, name: str) -> None:
        self.name = name
        self._conn = store._conn
        try:
            level = self._conn.execute("SHOW wal_level").fetchone()[0]
        except Exception as exc:  # a server too old or a role that cannot see it
            raise ChangeFeedUnavailable(f"cannot read wal_level: {exc}") from exc
        if level != "logical":
            raise ChangeFeedUnavailable(
                f"wal_level is {level!r}, not 'logical' (set wal_level = logical and restart "
                "PostgreSQL to let vmtest sync follow the changes)")
        row = self._conn.execute(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
            (store.table,)).fetchone()
        self._prefix = f"table {row[0]}: "
        self._id_column = self._conn.execute("SELECT quote_ident(%s)",
                                             (store.cols["id"],)).fetchone()[0]
        self.resumed = self._conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
            (name,)).fetchone()[0] > 0
        if not self.resumed:
            try:
                self._conn.execute("SELECT pg_create_logical_replication_slot(%s, "
                                   "'test_decoding')", (name,))
            except Exception as exc:
                raise ChangeFeedUnavailable(
                    f"cannot create the replication slot {name!r}: {one_line(str(exc))}"
                ) from exc
        self.description = f"PostgreSQL logical decoding (slot {name})"

    def changes(self) -> tuple[list[RecordId] | None, Any]:
        upto = self._conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        rows = self._conn.execute(
            "SELECT data FROM pg_logical_slot_peek_changes(%s, %s::pg_lsn, NULL, "
            "'include-xids', '0', 'skip-empty-xacts', '1')", (self.name, upto)).fetchall()
        ids: list[RecordId] = []
        for (data,) in rows:
            if not data.startswith(self._prefix):
                continue
            action, _, columns = data[len(self._prefix):].partition(": ")
            if action == "TRUNCATE":
                return None, upto  # every row went: the next generation compares all
            ids += [value for name, value in decoded_columns(columns)
                    if name == self._id_column and value is not None]
        return list(dict.fromkeys(ids)), upto

    def confirm(self, position: Any) -> None:
        self._conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                           (self.name, position))

    def drop(self) -> None:
        with contextlib.suppress(Exception):  # gone already
            self._conn.execute("SELECT pg_drop_replication_slot(%s)", (self.name,))


def decoded_columns(text: str) -> Iterator[tuple[str, str | None]]:
    """(column, value) pairs of a test_decoding row (``id[text]:'a''b' n[integer]:5``); the
    ``old-key:``/``new-tuple:`` markers of an update that changed the key are skipped, so both
    keys are listed. Quoted values are unquoted; ``null`` is None."""
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        for marker in ("old-key: ", "new-tuple: "):
            if text.startswith(marker, i):
                i += len(marker)
        if i >= n or text.startswith("(no-tuple-data)", i):
            return
        bracket = text.find("[", i)
        close = text.find("]:", bracket)
        if bracket < 0 or close < 0:
            return
        name = text[i:bracket]
        i = close + 2
        if i < n and text[i] == "'":
            out, i = [], i + 1
            while i < n:
                if text[i] == "'":
                    if i + 1 < n and text[i + 1] == "'":
                        out.append("'")
                        i += 2
                        continue
                    i += 1
                    break
                out.append(text[i])
                i += 1
            yield name, "".join(out)
        else:
            end = text.find(" ", i)
            end = n if end < 0 else end
            value = text[i:end]
            yield name, None if value == "null" else value
            i = end
