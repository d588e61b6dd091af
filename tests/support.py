"""Helpers shared by vmtest's own tests: build real stores, run the suite as a user does."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from vmtest.migrate import copy_store
from vmtest.stores import CollectionSpec, Inventory, RecordBatch, RecordId, VectorStore, open_store
from vmtest.stores.base import metadata_types
from vmtest.uri import parse

#: The fidelity checks and the schema check; the search checks have their own tests.
FIDELITY = ("-m", "not latency", "-k", "not recall")
#: Installed pytest plugins nothing of vmtest uses that cost each pytest process seconds:
#: langsmith's (LangChain's test extra brings it) imports its client, 1.7 s of a 7.6 s run of
#: the suite. tests/conftest.py leaves them out of every pytest process the tests start
#: (pytester's, `vmtest check` as a command), but where a test is marked ``every_plugin``.
UNUSED_PLUGINS = ("langsmith_plugin",)
#: Plugins installed here that the suite does not use: left out of the suite's runs, they
#: save about 3 of a run's 10 seconds (hypothesis alone imports for 1.3 s); test_plugin.py
#: runs the suite with every plugin loaded.
QUIET = tuple(arg for name in ("randomly", "hypothesispytest", "html", "anyio", "metadata",
                               *UNUSED_PLUGINS) for arg in ("-p", f"no:{name}"))


def container_images() -> dict[str, str]:
    """The images the containers tests run: VMTEST_CONTAINER_IMAGE (make test sets it to the
    images scripts/build_images.py built here), else the pinned ones."""
    from vmtest.settings import Settings

    return dict(Settings.resolve({}, {}).container_image or ())


def build_chroma(path: Path, batch: RecordBatch, metric: str = "cosine") -> str:
    uri = f"chroma://{path}?collection=docs"
    with open_store(uri, create=CollectionSpec(batch.vectors.shape[1], metric)) as store:
        store.upsert(batch)
    return uri



def run_suite(pytester: pytest.Pytester, source: str, target: str, *args: str,
              select: Sequence[str] = FIDELITY, quiet: bool = True):
    """Run the suite in a subprocess as a user would; return the result and the JSON report.
    ``quiet`` leaves out the plugins the suite does not use (:data:`QUIET`)."""
    report = pytester.path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--source={source}", f"--target={target}", f"--vmtest-json={report}",
        "--vmtest-html=none", *select, *(QUIET if quiet else ()), *args,
    )
    data = json.loads(report.read_text()) if report.exists() else None
    return result, data


def failed_checks(data: dict) -> set[str]:
    return {c["name"] for c in data["checks"] if c["status"] in ("failed", "error")}


def qdrant_copy(source: str, tmp: Path, transform: Callable[[RecordBatch], RecordBatch] | None
                = None, **kwargs) -> str:
    target = f"qdrant://{tmp}/qdrant?collection=docs"
    with open_store(source) as src:
        copy_store(src, target, batch_size=128, transform=transform, **kwargs)
    return target




class MemoryStore(VectorStore):
    """A real, complete store held in memory, for tests that need a reference side: it keeps
    records as written (last write of an id wins) and searches by brute force."""

    scheme = "memory"
    URI_HELP = "memory:// (tests only: built in code, not from a URI)"

    def __init__(self, metric: str = "cosine") -> None:
        self.uri = parse("memory:///tests")
        self.metric = metric
        self.records: dict[str, tuple[RecordId, np.ndarray, dict, str | None]] = {}

    @classmethod
    def from_uri(cls, uri, *, create=None) -> MemoryStore:
        raise NotImplementedError("a MemoryStore is built in code")

    @classmethod
    def holding(cls, batch: RecordBatch, metric: str = "cosine") -> MemoryStore:
        store = cls(metric)
        store.upsert(batch)
        return store

    def count(self) -> int:
        return len(self.records)

    def _batch(self, rows: list) -> RecordBatch:
        return RecordBatch([r[0] for r in rows], np.stack([r[1] for r in rows]) if rows
                           else np.zeros((0, 0), np.float32), [dict(r[2]) for r in rows],
                           [r[3] for r in rows])

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True):
        rows = list(self.records.values())
        for start in range(0, len(rows), batch_size):
            batch = self._batch(rows[start:start + batch_size])
            if not with_vectors:
                batch.vectors = None
            yield batch

    def fetch(self, ids) -> RecordBatch:
        return self._batch([self.records[str(i)] for i in ids if str(i) in self.records])

    def search(self, queries, k, *, where=None):
        from vmtest.knn import exact_topk

        rows = [r for r in self.records.values()
                if not where or all(r[2].get(f) == v for f, v in where.items())]
        if not rows:
            return [[] for _ in queries]
        idx, _ = exact_topk(np.stack([r[1] for r in rows]), queries, k, self.metric)
        return [[rows[j][0] for j in row if j >= 0] for row in idx]

    def upsert(self, batch: RecordBatch) -> None:
        assert batch.vectors is not None
        for rid, vec, meta, doc in zip(batch.ids, batch.vectors, batch.metadatas,
                                       batch.documents, strict=True):
            self.records[str(rid)] = (rid, np.asarray(vec, np.float32), dict(meta), doc)

    def describe(self) -> Inventory:
        first = next(iter(self.records.values()), None)
        return Inventory(kind="memory", uri=str(self.uri), count=self.count(),
                         dimension=None if first is None else len(first[1]),
                         metric=self.metric, dtype="float32",
                         metadata_types=metadata_types([r[2] for r in self.records.values()]))

    CAN_DELETE = True

    def delete(self, ids) -> None:
        for rid in ids:
            self.records.pop(str(rid), None)


#: The kinds that are servers, and the session fixture that runs each (one server for the
#: whole test session; every test gets a collection or table of its own on it).
SERVER_FIXTURES = {"chroma-server": "chroma_server", "qdrant-server": "qdrant_server",
                   "pgvector": "postgres_server", "postgresql-table": "postgres_server"}


def fresh_uri(request: pytest.FixtureRequest, kind: str, folder: Path, name: str) -> str:
    """A URI for a fresh store of ``kind``: on the session's server for a server kind,
    else where the store's own provisioning recipe puts it inside ``folder`` (the stores own
    that knowledge: vmtest.provision.recipes)."""
    from vmtest.provision import recipes

    if kind in SERVER_FIXTURES:
        server = request.getfixturevalue(SERVER_FIXTURES[kind])
        if kind == "postgresql-table":
            return server.uri(name.replace("-", "_")) + "&vector_column=none"
        return server.uri(name.replace("-", "_") if kind == "pgvector" else name)
    folder.mkdir(parents=True, exist_ok=True)
    with recipes()[kind].process(folder, name) as uri:  # an embedded kind: a path, no process
        return uri


_REDIS_DBS = iter(range(1, 64))


def fresh_redis_db(server) -> int:
    """A database number (1-63) of a test's own on the session's Redis server, emptied."""
    import redis

    db = next(_REDIS_DBS, 63)  # more tests than databases: the last one, emptied each time
    client = redis.Redis(host="127.0.0.1", port=server.port, db=db)
    client.flushdb()
    client.close()
    return db


def conversation_results(source: str, target: str, settings, session_map=None) -> dict:
    """Every fidelity and conversation check's result, as the suite runs them with
    --vmtest-conversation (suites/test_conversation.py: the fidelity checks from the
    comparison, the five conversation checks over the records it read), in this process."""
    from vmtest.checks.conversation import (
        both_sides,
        check_order,
        check_sessions,
        check_timestamps,
        check_ttls,
        check_window,
        pair_sessions,
        session_expiries,
    )
    from vmtest.compare import Comparison

    with open_store(source) as s, open_store(target) as t:
        comparison = Comparison(s, t, settings)
        out = dict(comparison.fidelity)
        src, tgt = both_sides(comparison.source, comparison.target,
                              session_field=settings.session_field,
                              order_field=settings.order_field,
                              timestamp_field=settings.timestamp_field,
                              schema_map=settings.schema_map)
        pairs = pair_sessions(src, tgt, session_map)[0]
        expiry = session_expiries(s, t)
        checks = [check_sessions(src, tgt, session_map, session_field=settings.session_field),
                  check_order(src, tgt, pairs),
                  check_timestamps(src, tgt, timestamp_field=settings.timestamp_field),
                  check_ttls(*expiry, pairs, tolerance_s=settings.ttl_tolerance,
                             target_engine=t.ENGINE)]
        if settings.window is not None:
            checks.append(check_window(src, tgt, pairs, settings.window))
        for result in checks:
            out[result.name] = result
    return out
