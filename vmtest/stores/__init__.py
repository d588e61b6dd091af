"""The store registry: URI scheme -> store class.

Built-in stores are named by a lazy ``"module:Class"`` string, so nothing is imported until a
URI asks for it. Other packages add stores under the ``vmtest.stores`` entry-point group
(``myscheme = "mypkg.store:MyStore"``). A scheme registered twice is an error, never a
silent overwrite.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from vmtest.errors import ConfigError, InvalidURIError
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    RecordBatch,
    RecordId,
    VectorStore,
)
from vmtest.uri import StoreURI, parse

__all__ = [
    "CollectionSpec",
    "Inventory",
    "RecordBatch",
    "RecordId",
    "VectorStore",
    "open_store",
    "registered_schemes",
    "store_class",
]

BUILTIN: dict[str, str] = {
    "chroma": "vmtest.stores.chroma:ChromaStore",
    "qdrant": "vmtest.stores.qdrant:QdrantStore",
    "jsonl": "vmtest.stores.files:JsonlStore",
    "parquet": "vmtest.stores.files:ParquetStore",
    "postgresql": "vmtest.stores.pgvector:PgvectorStore",
    "milvus": "vmtest.stores.milvus:MilvusStore",
    "qdrant-edge": "vmtest.stores.qdrant_edge:QdrantEdgeStore",
    "qdrant-snapshot": "vmtest.stores.qdrant_snapshot:QdrantSnapshotStore",
    "lancedb": "vmtest.stores.lance:LanceDBStore",
}

ENTRY_POINT_GROUP = "vmtest.stores"


def _registry() -> dict[str, str]:
    table = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in table and table[ep.name] != ep.value:
            raise ConfigError(
                f"two stores claim the scheme {ep.name}://: {table[ep.name]} and {ep.value}",
                hint="uninstall one of the packages that register it",
            )
        table[ep.name] = ep.value
    return table


def registered_schemes() -> list[str]:
    return sorted(_registry())


def store_class(scheme: str) -> type[VectorStore]:
    table = _registry()
    target = table.get(scheme)
    if target is None:
        raise InvalidURIError(
            f"no store is registered for the scheme {scheme}://",
            hint="known schemes: " + ", ".join(f"{s}://" for s in sorted(table)),
        )
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, VectorStore)):
        raise ConfigError(f"{target} (scheme {scheme}://) is not a vmtest VectorStore")
    return cls


def open_store(uri: str | StoreURI, *, create: CollectionSpec | None = None) -> VectorStore:
    """Open the store a URI names (and create its collection when ``create`` is given)."""
    parsed = parse(uri) if isinstance(uri, str) else uri
    cls = store_class(parsed.scheme)
    cls.check_local_path(parsed, create)
    return cls.from_uri(parsed, create=create)
