"""Rehearse the rollback (issue 14): a backup taken before a cutover, validated against the
live store before anyone relies on it. A Qdrant snapshot is a read-only store
(``qdrant-snapshot:///FILE.snapshot``), restored into a private Qdrant server; a ``vmtest
export`` Parquet folder is the same kind of backup. A faithful backup passes; one that no
longer matches the live store names the record; a bad file is one line, exit 4, and leaves
no server and no storage behind."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

from tests.support import MemoryStore, failed_checks, fresh_uri, run_suite
from vmtest.errors import ConfigError
from vmtest.migrate import copy_store
from vmtest.servers import QdrantServer
from vmtest.stores import CollectionSpec, RecordBatch, open_store
from vmtest.stores.qdrant import QdrantStore

LOST = "doc-000042"


@pytest.fixture
def live(request, tmp_path: Path, dataset: RecordBatch) -> str:
    """A collection of its own on the session's Qdrant server, holding the dataset (the
    test may change it)."""
    uri = fresh_uri(request, "qdrant-server", tmp_path, f"live-{tmp_path.name}")
    copy_store(MemoryStore.holding(dataset), uri, batch_size=128)
    return uri


@pytest.fixture(scope="module")
def pristine(request, dataset: RecordBatch) -> str:
    """A collection on the session's Qdrant server holding the dataset, never changed."""
    uri = fresh_uri(request, "qdrant-server", Path(), "pristine-snapshot-store")
    copy_store(MemoryStore.holding(dataset), uri, batch_size=128)
    return uri


@pytest.fixture(scope="module")
def pristine_snapshot(pristine: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of ``pristine``, taken once (tests copy it before they touch it)."""
    path = tmp_path_factory.mktemp("snapshots") / "pristine.snapshot"
    snapshot_of(pristine, path)
    return path


def copy_of(snapshot: Path, to: Path) -> str:
    shutil.copyfile(snapshot, to)
    return f"qdrant-snapshot://{to}"


@pytest.fixture
def scratch_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder of the runs started from here: what they leave there shows."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    return folder


def snapshot_of(uri: str, path: Path) -> str:
    with open_store(uri) as store:
        assert isinstance(store, QdrantStore)
        store.snapshot_to(path)
    return f"qdrant-snapshot://{path}"


def delete_record(uri: str, original_id: str) -> None:
    """Delete, with qdrant-client itself, the record that carries ``original_id``."""
    from qdrant_client import QdrantClient, models

    with open_store(uri) as store:
        assert isinstance(store, QdrantStore)
        point = next(pid for batch in store.iter_batches(100, with_vectors=False)
                     for pid, meta in zip(batch.ids, batch.metadatas, strict=True)
                     if meta.get("original_id") == original_id)
        collection = store.collection
    assert store.uri.host and store.uri.port
    client = QdrantClient(host=store.uri.host, port=store.uri.port, check_compatibility=False)
    client.delete(collection, points_selector=models.PointIdsList(points=[point]), wait=True)
    client.close()


def leftovers(folder: Path) -> list[str]:
    """Servers still running from ``folder`` (their storage was made there) and storage
    folders not deleted."""
    import psutil

    running = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "qdrant":
            continue
        try:
            if Path(proc.cwd()).is_relative_to(folder):
                running.append(f"qdrant pid {proc.pid} in {proc.cwd()}")
        except psutil.Error:
            continue
    return running + sorted(p.name for p in folder.iterdir())


def vmtest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=180, cwd=cwd)


# -- a Qdrant snapshot ----------------------------------------------------------------------

def test_a_faithful_snapshot_passes_against_the_live_store(pytester, pristine,
                                                            pristine_snapshot, scratch_tmp):
    backup = f"qdrant-snapshot://{pristine_snapshot}"
    result, data = run_suite(pytester, backup, pristine)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert data["faithful"] is True and not failed_checks(data)
    assert data["source"]["kind"] == "qdrant-snapshot"
    assert data["source"]["count"] == data["target"]["count"] == 300
    assert data["source"]["versions"]["restored with"] == "qdrant server"
    assert leftovers(scratch_tmp) == []  # the private server stopped, its storage deleted


def test_a_record_deleted_after_the_snapshot_fails_and_is_named(pytester, live, tmp_path,
                                                                 scratch_tmp):
    backup = snapshot_of(live, tmp_path / "before.snapshot")
    delete_record(live, LOST)
    result, data = run_suite(pytester, backup, live)
    assert result.ret == 1, result.stdout.str()
    assert failed_checks(data) == {"inventory", "ids"}
    result.stdout.fnmatch_lines([f"*{LOST}: missing in the target*", "*NOT FAITHFUL*"])
    ids = next(c for c in data["checks"] if c["name"] == "ids")
    assert LOST in str(ids)
    assert leftovers(scratch_tmp) == []


def not_a_snapshot(tmp_path: Path) -> str:
    path = tmp_path / "notes.snapshot"
    path.write_text("not a snapshot\n")
    return f"qdrant-snapshot://{path}"


def a_tar_qdrant_cannot_restore(tmp_path: Path) -> str:
    """A tar that looks like a collection snapshot (config.json, a shard folder) but is not
    one: only the server can tell, so a server is started, refuses it, and is stopped."""
    path = tmp_path / "forged.snapshot"
    with tarfile.open(path, "w") as tar:
        for name, body in (("config.json", b"{}"), ("0/shard_config.json", b"{}")):
            entry = tarfile.TarInfo(name)
            entry.size = len(body)
            tar.addfile(entry, io.BytesIO(body))
    return f"qdrant-snapshot://{path}"


BAD = {
    "missing file": (lambda d: f"qdrant-snapshot://{d}/gone.snapshot", "*does not exist*"),
    "not a snapshot": (not_a_snapshot, "*is not a Qdrant snapshot (not a tar archive*"),
    "relative path": (lambda d: "qdrant-snapshot://before.snapshot",
                      "*names the host 'before.snapshot', not a snapshot file*"),
    "forged tar": (a_tar_qdrant_cannot_restore, "*Qdrant could not restore the snapshot*"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_snapshot_is_one_line_exit_4_and_leaves_nothing_running(
        pytester, pristine, tmp_path, scratch_tmp, case):
    make, shown = BAD[case]
    backup = make(tmp_path)
    result, _ = run_suite(pytester, backup, pristine)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1, result.stderr.str()
    assert errors[0].startswith("ERROR: ")
    result.stderr.fnmatch_lines([shown])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert leftovers(scratch_tmp) == []


def test_a_snapshot_is_never_a_migration_target(pristine, pristine_snapshot, tmp_path):
    path = tmp_path / "before.snapshot"
    backup = copy_of(pristine_snapshot, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for target in (backup, f"qdrant-snapshot://{tmp_path}/new.snapshot"):
        done = vmtest("migrate", f"--source={pristine}", f"--target={target}", cwd=tmp_path)
        assert done.returncode == 4, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot be a migration target" in lines[0], done.stderr
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["before.snapshot"]
    with pytest.raises(ConfigError, match="cannot be a migration target"):
        open_store(backup, create=CollectionSpec(32, "cosine"))


def test_without_the_server_binary_qdrant_edge_reads_the_same_records(
        pristine, pristine_snapshot, tmp_path, monkeypatch):
    from vmtest import servers
    from vmtest.errors import StoreUnreachableError

    backup = copy_of(pristine_snapshot, tmp_path / "before.snapshot")

    def records(uri: str) -> dict[str, tuple[np.ndarray, dict]]:
        with open_store(uri) as store:
            return {str(i): (v, m) for b in store.iter_batches(100)
                    for i, v, m in zip(b.ids, b.vectors, b.metadatas, strict=True)}

    def no_binary() -> Path:
        raise StoreUnreachableError("no Qdrant server binary found")

    monkeypatch.setattr(servers, "qdrant_binary", no_binary)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where Qdrant Edge unpacks
    with open_store(backup) as store:
        inventory = store.describe()
        assert inventory.versions["restored with"] == "qdrant-edge"
        assert (inventory.count, inventory.dimension, inventory.metric) == (300, 32, "cosine")
    assert [p.name for p in tmp_path.iterdir()] == ["before.snapshot"]  # unpacked, then gone
    read_by_edge = records(backup)
    expected = records(pristine)
    assert read_by_edge.keys() == expected.keys()
    for key, (vector, meta) in expected.items():
        assert np.array_equal(read_by_edge[key][0], vector) and read_by_edge[key][1] == meta


def test_the_collection_is_named_as_qdrant_recorded_it(tmp_path, pristine_snapshot):
    from vmtest.stores.qdrant_snapshot import QdrantSnapshotStore

    taken = tmp_path / "docs-982279652689359-2026-12-01-19-14-29.snapshot"
    copy_of(pristine_snapshot, taken)
    for uri, name in ((f"qdrant-snapshot://{taken}", "docs"),
                      (f"qdrant-snapshot://{taken}?collection=kept", "kept")):
        with open_store(uri) as store:  # opening restores nothing yet: no server
            assert isinstance(store, QdrantSnapshotStore) and store.collection == name


def test_snapshot_to_needs_a_server(tmp_path, dataset):
    with open_store(f"qdrant://{tmp_path}/q?collection=docs",
                    create=CollectionSpec(32, "cosine")) as store:
        assert isinstance(store, QdrantStore)
        with pytest.raises(ConfigError, match="only a Qdrant server takes snapshots"):
            store.snapshot_to(tmp_path / "x.snapshot")
    assert not (tmp_path / "x.snapshot").exists()


# -- the same for vmtest's own export -------------------------------------------------------

@pytest.mark.parametrize("deleted", [False, True], ids=["faithful", "record deleted"])
def test_a_parquet_export_is_validated_against_the_live_store(pytester, request, tmp_path,
                                                              deleted):
    live = request.getfixturevalue("live" if deleted else "pristine")
    export = tmp_path / "before"
    done = vmtest("export", f"--source={live}", f"--to=parquet://{export}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    if deleted:
        delete_record(live, LOST)
    result, data = run_suite(pytester, f"parquet://{export}", live)
    if not deleted:
        assert result.ret == 0, result.stdout.str() + result.stderr.str()
        assert data["faithful"] is True
        return
    assert result.ret == 1, result.stdout.str()
    assert failed_checks(data) == {"inventory", "ids"}
    result.stdout.fnmatch_lines([f"*{LOST}: missing in the target*", "*NOT FAITHFUL*"])


def test_a_server_started_for_a_snapshot_stops_with_the_store(pristine_snapshot, monkeypatch):
    """close() stops the private server and deletes its storage (in process, by its port)."""
    import socket

    backup = f"qdrant-snapshot://{pristine_snapshot}"
    started: list[QdrantServer] = []
    original = QdrantServer.start

    def spy(self: QdrantServer) -> QdrantServer:
        started.append(self)
        return original(self)

    monkeypatch.setattr(QdrantServer, "start", spy)
    with open_store(backup) as store:
        assert store.count() == 300
    (server,) = started
    assert not server.data_dir.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0
