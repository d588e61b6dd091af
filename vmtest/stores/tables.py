"""What the stores of records without vectors share: a table (SQLite, PostgreSQL) whose rows
are records, and a chat history (Redis) whose messages are.

A row is a record: its id column is the id, its document column (when the table has one) the
document, and every other column a metadata field of its own, typed by the column. A NULL is
no value: the field is absent from the record (a table cannot tell a NULL from a missing
field, so a metadata value ``None`` is refused before writing, as any value a store cannot
hold). Such a store says ``HAS_VECTORS = False``: it reads batches without vectors, refuses a
batch with vectors, cannot be searched, and the suite's vector checks do not apply to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from vmtest.errors import ConfigError
from vmtest.stores.base import CollectionSpec, RecordBatch, RecordId, VectorStore
from vmtest.uri import StoreURI

#: The JSON value types a record table keeps; others (dates, bytes, numpy scalars) are refused
#: before writing.
PLAIN_TYPES = (str, int, float, bool, list, dict)


class RecordStore(VectorStore):
    """A store of records without vectors (see the module's docstring)."""

    HAS_VECTORS = False
    METRICS = ()

    def search(self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
               ) -> list[list[RecordId]]:
        raise ConfigError(f"the {self.ENGINE} store {self.uri} holds no vectors: it cannot be "
                          "searched by vector", hint="vector search needs a vector store")

    def check_spec(self, spec: CollectionSpec) -> None:
        """No vectors, so no dimension or metric to disagree with."""

    def refuse_vectors(self, batch: RecordBatch) -> None:
        """A batch with vectors is refused, never written without them."""
        if batch.vectors is not None and np.asarray(batch.vectors).size:
            raise ConfigError(
                f"the {self.ENGINE} store {self.uri} holds no vectors, and the records "
                "written to it carry some", hint="write records without vectors (a store of "
                "documents or messages), or use a vector store as the target")


class RecordTable(RecordStore):
    """A table of records (SQLite, PostgreSQL): the id and document columns are named by
    ``id_column`` and ``document_column`` (default ``id`` and ``document``)."""

    IDEMPOTENT_WRITES = True
    CAN_DELETE = True
    #: The columns of a table vmtest creates, before any field is written.
    DEFAULT_COLUMNS: ClassVar[tuple[str, str]] = ("id", "document")

    @classmethod
    def columns_of(cls, uri: StoreURI | None) -> tuple[str, str]:
        """(id column, document column) the URI names."""
        if uri is None:
            return cls.DEFAULT_COLUMNS
        return (uri.param("id_column", "id") or "id",
                uri.param("document_column", "document") or "document")

    @classmethod
    def metadata_key_problem(cls, key: str, uri: StoreURI | None = None) -> str | None:
        if key in cls.columns_of(uri):
            return f"{key!r} is the table's id or document column, not a field"
        return None

    @classmethod
    def metadata_problem(cls, key: str, value: Any, uri: StoreURI | None = None) -> str | None:
        if value is None:
            return (f"a {cls.ENGINE} table cannot tell a NULL from a missing field: null "
                    "would read back as no field")
        if not isinstance(value, PLAIN_TYPES):
            return f"a {cls.ENGINE} table vmtest writes holds no {type(value).__name__} values"
        return None

    def row_record(self, names: Sequence[str], row: Sequence[Any]
                   ) -> tuple[RecordId, dict[str, Any], str | None]:
        """(id, metadata, document) of one row read with the columns ``names``."""
        id_column, document_column = self.columns_of(self.uri)
        meta: dict[str, Any] = {}
        rid: RecordId = ""
        document = None
        for name, value in zip(names, row, strict=True):
            if name == id_column:
                rid = value
            elif name == document_column:
                document = value
            elif value is not None:
                meta[name] = self.read_value(name, value)
        return rid, meta, document

    def read_value(self, column: str, value: Any) -> Any:
        """A column's value as a metadata value (the dialect turns its types back)."""
        return value

    def batch_of(self, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> RecordBatch:
        records = [self.row_record(names, row) for row in rows]
        return RecordBatch([r[0] for r in records], None, [r[1] for r in records],
                           [r[2] for r in records])
