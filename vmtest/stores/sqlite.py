"""A SQLite table of records without vectors: ``sqlite:///ABS/FILE.db?table=NAME``
(``id_column``, ``document_column``: default ``id`` and ``document``).

Every other column is a metadata field. SQLite keeps a value's own type in a column declared
without a type, so the columns vmtest creates have none, but for two kinds SQLite has no
type of its own: booleans (a column declared ``BOOLEAN``, 0 and 1 read back as False and
True) and lists and objects (a column declared ``JSON``, the value kept as JSON text). A
table someone else made is read by its declared types the same way. The first value written
to a new field decides its column; a later value of another kind is refused in one line
(an untyped column would read a bool back as an int, a JSON column a text as text).

A missing file or table is refused before anything is opened for writing: reading opens the
file read-only, so a mistyped path creates nothing.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from vmtest.errors import ConfigError, SchemaMismatchError, StoreNotFoundError
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    RecordBatch,
    RecordId,
    local_recipe,
    metadata_types,
)
from vmtest.stores.tables import RecordTable
from vmtest.uri import StoreURI

#: 64-bit signed integers: what an INTEGER holds (a larger int raises OverflowError).
INT64 = (-(1 << 63), (1 << 63) - 1)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _kind_of_declared(declared: str) -> str:
    upper = declared.upper()
    if "BOOL" in upper:
        return "bool"
    if "JSON" in upper:
        return "json"
    return "plain"


def _kind_of_value(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (list, dict)):
        return "json"
    return "plain"


class SqliteStore(RecordTable):
    scheme = "sqlite"
    ENGINE = "SQLite"
    URI_HELP = ("sqlite:///ABS/FILE.db?table=NAME[&id_column=id&document_column=document] "
                "(or sqlite://./relative.db?table=NAME)")
    LOCAL_PATH = "file"
    PROVISIONING = (local_recipe("sqlite", "sqlite://{dir}/{name}.db?table=records",
                                 vectors=False),)
    CONNECTION_ERRORS = frozenset({"OperationalError"})

    def __init__(self, uri: StoreURI, conn: sqlite3.Connection, table: str) -> None:
        self.uri = uri
        self._conn = conn
        self.table = table
        self._kinds: dict[str, str] = {}
        self._read_columns()

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        problem = super().metadata_problem(key, value, uri)
        if problem:
            return problem
        if isinstance(value, float) and not math.isfinite(value):
            return "SQLite turns NaN into NULL and keeps no infinity in an untyped column"
        if isinstance(value, int) and not isinstance(value, bool) \
                and not INT64[0] <= value <= INT64[1]:
            return "SQLite integers are 64-bit"
        if isinstance(value, str) and "\x00" in value:
            return "SQLite text read through Python ends at a NUL character"
        return None

    @classmethod
    def document_problem(cls, document: str | None, uri: StoreURI | None = None) -> str | None:
        if document is not None and "\x00" in document:
            return "SQLite text read through Python ends at a NUL character"
        return None

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> SqliteStore:
        if not uri.is_local or not uri.path:
            raise ConfigError(f"{uri} names no file", hint=cls.URI_HELP)
        table = uri.require_param("table", cls.URI_HELP)  # before anything is opened
        path = Path(uri.path)
        mode = "rwc" if create is not None else "rw"
        try:
            conn = sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=30,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreNotFoundError(f"cannot open the SQLite file {path}: {exc}",
                                     hint=cls.URI_HELP) from exc
        try:
            try:
                tables = [r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                    "ORDER BY name")]
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{path} is not a SQLite database ({exc})",
                                  hint=cls.URI_HELP) from exc
            if table not in tables:
                if create is None:
                    raise StoreNotFoundError(
                        f"the SQLite file {path} has no table {table!r}",
                        hint="tables there: " + (", ".join(tables) or "none"))
                id_column, document_column = cls.columns_of(uri)
                conn.execute(f"CREATE TABLE {_quote(table)} ({_quote(id_column)} TEXT "
                             f"PRIMARY KEY, {_quote(document_column)} TEXT)")
                conn.commit()
            return cls(uri, conn, table)
        except BaseException:
            conn.close()
            raise

    def _read_columns(self) -> None:
        rows = self._conn.execute(f"PRAGMA table_info({_quote(self.table)})").fetchall()
        self._kinds = {r[1]: _kind_of_declared(r[2] or "") for r in rows}
        id_column, _ = self.columns_of(self.uri)
        if id_column not in self._kinds:
            raise StoreNotFoundError(
                f"the SQLite table {self.table!r} in {self.uri.path} has no column "
                f"{id_column!r}", hint="name the id column with &id_column=NAME (columns: "
                + ", ".join(self._kinds) + ")")

    def read_value(self, column: str, value: Any) -> Any:
        kind = self._kinds.get(column)
        if kind == "bool" and isinstance(value, int) and value in (0, 1):
            return bool(value)
        if kind == "json" and isinstance(value, str):
            return json.loads(value)
        return value

    def _select(self) -> Any:
        names = list(self._kinds)
        cursor = self._call(self._conn.execute, f"SELECT {', '.join(map(_quote, names))} FROM "
                            f"{_quote(self.table)} ORDER BY rowid")
        return names, cursor

    def count(self) -> int:
        return int(self._call(self._conn.execute,
                              f"SELECT count(*) FROM {_quote(self.table)}").fetchone()[0])

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        names, cursor = self._select()
        while True:
            rows = cursor.fetchmany(batch_size)
            if not rows:
                return
            yield self.batch_of(names, rows)

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        id_column, _ = self.columns_of(self.uri)
        names = list(self._kinds)
        wanted = list(dict.fromkeys(str(i) for i in ids))  # keys compare as text
        out = [RecordBatch([], None, [], [])]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = self._call(self._conn.execute,
                              f"SELECT {', '.join(map(_quote, names))} FROM "
                              f"{_quote(self.table)} WHERE CAST({_quote(id_column)} AS TEXT) "
                              f"IN ({', '.join('?' * len(chunk))}) ORDER BY rowid",
                              chunk).fetchall()
            out.append(self.batch_of(names, rows))
        return RecordBatch.concat(out)

    def _column_for(self, name: str, value: Any) -> None:
        kind = _kind_of_value(value)
        declared = {"bool": "BOOLEAN", "json": "JSON", "plain": ""}[kind]
        self._conn.execute(f"ALTER TABLE {_quote(self.table)} ADD COLUMN {_quote(name)} "
                           + declared)
        self._kinds[name] = kind

    def _stored(self, name: str, value: Any) -> Any:
        kind = self._kinds[name]
        if kind == "json":
            return json.dumps(value, ensure_ascii=False, allow_nan=True)
        if _kind_of_value(value) != kind:
            raise SchemaMismatchError(
                f"the field {name!r} of {self.uri} is a {kind} column and the record holds "
                f"{value!r} ({type(value).__name__}): SQLite would give it back as another "
                "type", hint="give every record's field one kind of value, or write into a "
                "new table")
        return int(value) if kind == "bool" else value

    def upsert(self, batch: RecordBatch) -> None:
        self.refuse_vectors(batch)
        if not len(batch):
            return
        id_column, document_column = self.columns_of(self.uri)

        def write() -> None:
            with self._conn:
                for rid, meta, doc in zip(batch.ids, batch.metadatas, batch.documents,
                                          strict=True):
                    for name, value in meta.items():
                        if name not in self._kinds and value is not None:
                            self._column_for(name, value)
                    fields = [n for n, v in meta.items() if v is not None]
                    names = [id_column, document_column, *fields]
                    values = [str(rid), doc, *(self._stored(n, meta[n]) for n in fields)]
                    others = [n for n in self._kinds if n not in names]
                    sets = ", ".join(f"{_quote(n)} = excluded.{_quote(n)}" for n in names[1:])
                    clears = "".join(f", {_quote(n)} = NULL" for n in others)
                    self._conn.execute(
                        f"INSERT INTO {_quote(self.table)} ({', '.join(map(_quote, names))}) "
                        f"VALUES ({', '.join('?' * len(names))}) ON CONFLICT "
                        f"({_quote(id_column)}) DO UPDATE SET {sets}{clears}", values)

        self._call(write)

    def delete(self, ids: Sequence[RecordId]) -> None:
        id_column, _ = self.columns_of(self.uri)
        wanted = list(dict.fromkeys(str(i) for i in ids))
        with self._conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                self._conn.execute(
                    f"DELETE FROM {_quote(self.table)} WHERE CAST({_quote(id_column)} AS TEXT) "
                    f"IN ({', '.join('?' * len(chunk))})", chunk)

    def describe(self) -> Inventory:
        peek = next(self.iter_batches(256), RecordBatch([], None, [], []))
        return Inventory(kind="sqlite", uri=str(self.uri), count=self.count(), dimension=None,
                         metric=None, dtype=None, index={},
                         metadata_types=metadata_types(peek.metadatas),
                         versions={"sqlite": sqlite3.sqlite_version})

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

