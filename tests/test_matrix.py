"""The cross-store matrix: the same dataset migrated between every ordered pair of supported
stores, each on its real engine, and the whole suite run on each pair; and into each kind the
containers provider runs, in a container (skipped where no Docker engine answers). Every pair
passes a faithful migration and fails one that lost a record."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import uuid
from pathlib import Path

import pytest

from tests.support import (  # QUIET: randomly would reseed this process
    QUIET,
    container_images,
    fresh_uri,
)
from vmtest.cli import run_pytest
from vmtest.datasets import clustered
from vmtest.migrate import copy_store
from vmtest.provision import docker_engine_problem, kinds, provision
from vmtest.stores import CollectionSpec, RecordBatch, open_store

STORES = kinds("process")
PAIRS = [(a, b, "process") for a, b in itertools.product(STORES, STORES) if a != b]
#: An embedded source into each kind the containers provider runs.
CONTAINER_PAIRS = [("chroma", kind, "containers") for kind in kinds("containers")]


@pytest.fixture
def store_uri(request, tmp_path):
    """A fresh URI of a kind: embedded in a temporary folder, or a new collection or table
    on the session's real server, or on a container of the test's own (one per kind)."""
    containers: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        def make(kind: str, provider: str = "process") -> str:
            name = f"m{uuid.uuid4().hex[:12]}"
            if provider == "process":
                return fresh_uri(request, kind, tmp_path / name, name)
            problem = docker_engine_problem()
            if problem is not None:
                pytest.skip(f"no Docker engine: {problem}")
            if kind not in containers:
                containers[kind] = stack.enter_context(
                    provision(kind, provider="containers", images=container_images()))
            return re.sub(r"(collection|table)=[^&]*", rf"\1={name}", containers[kind])

        yield make


def lose_first(batch: RecordBatch) -> RecordBatch:
    """Drop the record that stands for doc-000000, whatever id the target gave it."""
    keys = [str(m.get("original_id", rid)) for rid, m in zip(batch.ids, batch.metadatas,
                                                               strict=True)]
    return batch.take([i for i, k in enumerate(keys) if k != "doc-000000"])


def run(folder: Path, source: str, target: str) -> tuple[int, dict]:
    """The suite on a pair, as ``pytest --source --target`` runs it, in this process: a
    subprocess would spend 5 of its 6 seconds importing the stores' libraries again, 180
    times (the subprocess path has tests of its own in test_plugin.py); with this process's
    heap frozen (run_pytest: the collections at a session's end walk only its own objects)."""
    report = folder / f"r{uuid.uuid4().hex[:6]}.json"
    code = run_pytest([
        f"--source={source}", f"--target={target}", "-m", "not latency", "--vmtest-queries=30",
        f"--vmtest-json={report}", "--vmtest-html=none", f"--rootdir={folder}",
        "-p", "no:cacheprovider", "-p", "no:xdist", "-q", *QUIET,
    ])
    return int(code), json.loads(report.read_text())


@pytest.mark.parametrize(
    ("src_kind", "dst_kind", "provider"), PAIRS + CONTAINER_PAIRS,
    ids=[f"{a}->{b}" + ("@containers" if p == "containers" else "")
         for a, b, p in PAIRS + CONTAINER_PAIRS])
def test_pair_passes_faithful_and_fails_a_lost_record(tmp_path, monkeypatch, store_uri,
                                                      src_kind, dst_kind, provider):
    batch = clustered(120, 16, seed=5)
    source = store_uri(src_kind)
    with open_store(source, create=CollectionSpec(16, "cosine")) as store:
        from vmtest.migrate.mapping import IdMapper, MetadataPolicy, map_batch
        from vmtest.stores.files import JsonlStore

        store.upsert(map_batch(batch, JsonlStore, IdMapper(store),  # type: ignore[arg-type]
                               MetadataPolicy(store), "document"))
    faithful, lossy = store_uri(dst_kind, provider), store_uri(dst_kind, provider)
    with open_store(source) as src:
        copy_store(src, faithful, batch_size=50)
        copy_store(src, lossy, batch_size=50, transform=lose_first)
    monkeypatch.chdir(tmp_path)
    code, data = run(tmp_path, source, faithful)
    assert code == 0, [c["summary"] for c in data["checks"] if c["status"] != "passed"]
    code, data = run(tmp_path, source, lossy)
    assert code == 1
    ids = next(c for c in data["checks"] if c["name"] == "ids")
    assert ids["status"] == "failed" and ids["figures"]["missing"] == 1
