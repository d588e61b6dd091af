"""The store registry: URI scheme -> store class.

Built-in stores are named by a lazy ``"module:Class"`` string, so nothing is imported until a
URI asks for it. Other packages add stores under the ``vmtest.stores`` entry-point group
(``myscheme = "mypkg.store:MyStore"``). A scheme registered twice is an error, never a
silent overwrite.
"""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points
from pathlib import Path

from vmtest.errors import ConfigError, InvalidURIError, StoreUnreachableError
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
    "sqlite": "vmtest.stores.sqlite:SqliteStore",
    "redis": "vmtest.stores.redis_chat:RedisChatStore",
}

ENTRY_POINT_GROUP = "vmtest.stores"


@functools.cache
def _entry_points() -> tuple[tuple[str, str], ...]:
    """The stores other packages register, (scheme, "module:Class"): read once a process,
    as a scan of every installed package's metadata costs 35 ms here, which every
    ``open_store`` paid before (35 of a property test's 38 seconds)."""
    return tuple((ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP))


def _registry() -> dict[str, str]:
    table = dict(BUILTIN)
    for name, value in _entry_points():
        if name in table and table[name] != value:
            raise ConfigError(
                f"two stores claim the scheme {name}://: {table[name]} and {value}",
                hint="uninstall one of the packages that register it",
            )
        table[name] = value
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
    try:
        return cls.from_uri(parsed, create=create)
    except StoreUnreachableError as exc:
        read_as_host = _relative_path_read_as_host(cls, parsed)
        if read_as_host is None:
            raise
        raise StoreUnreachableError(exc.message, hint=read_as_host) from exc


def _relative_path_read_as_host(cls: type[VectorStore], uri: StoreURI) -> str | None:
    """``chroma://data/c?...`` names a host "data"; when no port was given and a local
    ``data/c`` exists, the user meant the folder: say how to write it."""
    if cls.LOCAL_PATH is None or uri.host is None or uri.port is not None:
        return None
    relative = Path(uri.host) / (uri.path or "").lstrip("/")
    if not relative.exists():
        return None
    return (f"{uri.host!r} was read as a host name, and there is a local {relative}: a folder "
            f"is written {uri.scheme}://./{relative.as_posix()} (relative) or "
            f"{uri.scheme}://{relative.resolve().as_posix()} (absolute)")
