"""A PostgreSQL table of records without vectors, reached through the same URI as pgvector:
``postgresql://USER[:PASS]@HOST:PORT/DB?table=NAME``.

A table with no ``vector`` or ``halfvec`` column is read as records (the pgvector store hands
it over when it opens it); ``&vector_column=none`` says so explicitly, and is how a new one is
created (``vmtest migrate``, ``--migrate-to=postgresql-table``). Every column but the id and
document columns (``id_column``, ``document_column``) is a metadata field, typed by its
column: ``boolean``, ``bigint``/``integer``, ``double precision``, ``text``, ``jsonb`` (any
JSON value), and any other type as psycopg reads it (``timestamptz`` as an aware datetime).
The columns vmtest adds take their type from the first value written to the field; a later
value of another type is refused in one line, never converted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from vmtest.errors import SchemaMismatchError, StoreNotFoundError
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    RecordBatch,
    RecordId,
    dist_version,
)
from vmtest.stores.base import metadata_types as types_of
from vmtest.stores.tables import RecordTable
from vmtest.uri import StoreURI

#: PostgreSQL's type (udt_name) -> the Python type a value of it must have to be written
#: as it is (None: json, any JSON value).
KIND_OF_TYPE: dict[str, type | tuple[type, ...] | None] = {
    "bool": bool, "int2": int, "int4": int, "int8": int, "float8": float, "float4": float,
    "text": str, "varchar": str, "bpchar": str, "jsonb": None, "json": None,
}
#: The column type vmtest gives a new field, by the first value's type.
TYPE_OF_VALUE = {bool: "boolean", int: "bigint", float: "double precision", str: "text"}
#: How many bytes of a name PostgreSQL keeps (NAMEDATALEN - 1): a longer one is cut.
MAX_NAME_BYTES = 63


def has_vector_column(conn: Any, table: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped "
        "AND t.typname IN ('vector', 'halfvec')", (table,)).fetchone()
    return bool(row[0])


def wants_records(uri: StoreURI | None) -> bool:
    """Whether the URI says the table holds records without vectors."""
    return uri is not None and (uri.param("vector_column") or "").lower() == "none"


class PgRecordTable(RecordTable):
    scheme = "postgresql"
    ENGINE = "PostgreSQL"
    URI_HELP = ("postgresql://USER[:PASS]@HOST:PORT/DB?table=NAME[&vector_column=none]"
                "[&id_column=id&document_column=document] (a table of records without "
                "vectors)")
    CONNECTION_ERRORS = frozenset({"OperationalError", "InterfaceError"})

    def __init__(self, uri: StoreURI, conn: Any, table: str) -> None:
        self.uri = uri
        self._conn = conn
        self.table = table
        self._types: dict[str, str] = {}
        self._read_columns()

    # -- what it holds ------------------------------------------------------------------

    @classmethod
    def metadata_key_problem(cls, key: str, uri: StoreURI | None = None) -> str | None:
        if "\x00" in key:
            return "PostgreSQL names hold no NUL characters"
        if len(key.encode("utf-8")) > MAX_NAME_BYTES:
            return f"PostgreSQL cuts column names to {MAX_NAME_BYTES} bytes"
        return super().metadata_key_problem(key, uri)

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        from vmtest.stores.pgvector import PgvectorStore

        return (super().metadata_problem(key, value, uri)
                or PgvectorStore.metadata_problem(key, value, uri))

    @classmethod
    def document_problem(cls, document: str | None, uri: StoreURI | None = None) -> str | None:
        from vmtest.stores.pgvector import PgvectorStore

        return PgvectorStore.document_problem(document, uri)

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> PgRecordTable:
        from vmtest.stores.pgvector import PgvectorStore

        store = PgvectorStore.from_uri(uri.with_params(vector_column="none"), create=create)
        assert isinstance(store, PgRecordTable)
        return store

    @classmethod
    def open(cls, uri: StoreURI, conn: Any, table: str, exists: bool,
             create: CollectionSpec | None) -> PgRecordTable:
        """The table on this connection (created when ``create`` is given and it is not
        there); the pgvector store calls this for a table without a vector column."""
        from psycopg import sql

        if not exists:
            if create is None:
                tables = [r[0] for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                    "current_schema() ORDER BY 1")]
                raise StoreNotFoundError(
                    f"the PostgreSQL store {uri} has no table {table!r}",
                    hint="tables there: " + (", ".join(tables) or "none"))
            id_column, document_column = cls.columns_of(uri)
            conn.execute(sql.SQL("CREATE TABLE {t} ({i} text PRIMARY KEY, {d} text)").format(
                t=sql.Identifier(table), i=sql.Identifier(id_column),
                d=sql.Identifier(document_column)))
        return cls(uri, conn, table)

    def _read_columns(self) -> None:
        rows = self._conn.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON "
            "t.oid = a.atttypid WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT "
            "a.attisdropped ORDER BY a.attnum", (self.table,)).fetchall()
        self._types = {name: typ for name, typ in rows}
        id_column, _ = self.columns_of(self.uri)
        if id_column not in self._types:
            raise StoreNotFoundError(
                f"the PostgreSQL table {self.table!r} has no column {id_column!r}",
                hint="name the id column with &id_column=NAME (columns: "
                + ", ".join(self._types) + ")")

    # -- reads --------------------------------------------------------------------------

    def _select(self, where: str = "") -> Any:
        from psycopg import sql

        names = list(self._types)
        id_column, _ = self.columns_of(self.uri)
        query = sql.SQL("SELECT {cols} FROM {t}" + where + " ORDER BY {i}").format(
            cols=sql.SQL(", ").join(map(sql.Identifier, names)), t=sql.Identifier(self.table),
            i=sql.Identifier(id_column))
        return names, query

    def count(self) -> int:
        from psycopg import sql

        query = sql.SQL("SELECT count(*) FROM {t}").format(t=sql.Identifier(self.table))
        return int(self._call(lambda: self._conn.execute(query).fetchone()[0]))

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        names, query = self._select()
        with self._conn.transaction(), self._conn.cursor(name="vmtest_records") as cur:
            cur.itersize = batch_size
            self._call(cur.execute, query)
            while True:
                rows = self._call(cur.fetchmany, batch_size)
                if not rows:
                    return
                yield self.batch_of(names, rows)

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        names, query = self._select(" WHERE {i}::text = ANY(%s)")
        rows = self._call(lambda: self._conn.execute(
            query, ([str(i) for i in ids],)).fetchall()) if ids else []
        return self.batch_of(names, rows)

    # -- writes -------------------------------------------------------------------------

    def _add_column(self, name: str, value: Any) -> None:
        from psycopg import sql

        typ = "jsonb" if isinstance(value, (list, dict)) else TYPE_OF_VALUE[type(value)]
        self._conn.execute(sql.SQL("ALTER TABLE {t} ADD COLUMN {c} " + typ).format(
            t=sql.Identifier(self.table), c=sql.Identifier(name)))
        self._read_columns()

    def _stored(self, name: str, value: Any) -> Any:
        from psycopg.types.json import Jsonb

        typ = self._types[name]
        want = KIND_OF_TYPE.get(typ, object)
        if want is None:
            return Jsonb(value)
        if want is not object and (type(value) is not want):
            raise SchemaMismatchError(
                f"the field {name!r} of {self.uri} is a {typ} column and the record holds "
                f"{value!r} ({type(value).__name__}): PostgreSQL would convert it or refuse it",
                hint="give every record's field one type of value, or write into a new table")
        return value

    def upsert(self, batch: RecordBatch) -> None:
        from psycopg import sql

        self.refuse_vectors(batch)
        id_column, document_column = self.columns_of(self.uri)

        def write() -> None:
            with self._conn.transaction():
                for rid, meta, doc in zip(batch.ids, batch.metadatas, batch.documents,
                                          strict=True):
                    for name, value in meta.items():
                        if name not in self._types and value is not None:
                            self._add_column(name, value)
                    fields = [n for n, v in meta.items() if v is not None]
                    names = [id_column, document_column, *fields]
                    values = [str(rid), doc, *(self._stored(n, meta[n]) for n in fields)]
                    others = [n for n in self._types if n not in names]
                    updates = [sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(n))
                               for n in names[1:]]
                    updates += [sql.SQL("{c} = NULL").format(c=sql.Identifier(n))
                                for n in others]
                    self._conn.execute(sql.SQL(
                        "INSERT INTO {t} ({cols}) VALUES ({marks}) ON CONFLICT ({i}) "
                        "DO UPDATE SET {updates}").format(
                            t=sql.Identifier(self.table),
                            cols=sql.SQL(", ").join(map(sql.Identifier, names)),
                            marks=sql.SQL(", ").join(sql.Placeholder() * len(names)),
                            i=sql.Identifier(id_column),
                            updates=sql.SQL(", ").join(updates)), values)

        self._call(write)

    def delete(self, ids: Sequence[RecordId]) -> None:
        from psycopg import sql

        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            return
        id_column, _ = self.columns_of(self.uri)
        query = sql.SQL("DELETE FROM {t} WHERE {i}::text = ANY(%s)").format(
            t=sql.Identifier(self.table), i=sql.Identifier(id_column))
        self._call(lambda: self._conn.execute(query, (wanted,)))

    def describe(self) -> Inventory:
        peek = next(self.iter_batches(256), RecordBatch([], None, [], []))
        server = self._conn.execute("SHOW server_version").fetchone()[0]
        return Inventory(kind="postgresql-table", uri=str(self.uri), count=self.count(),
                         dimension=None, metric=None, dtype=None, index={},
                         metadata_types=types_of(peek.metadatas),
                         versions={"psycopg": dist_version("psycopg"),
                                   "postgresql": str(server)})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
