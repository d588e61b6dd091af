"""A store's own whole-collection copy: a Qdrant server's collection into a new collection on
a Qdrant server goes as a collection snapshot, bit for bit; where a snapshot would copy more,
less or other than the URIs name, or cannot be recovered, the copy goes record by record and
says why."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

from vmtest.cli import main
from vmtest.migrate import MigrationOptions, migrate
from vmtest.servers import QdrantServer, free_port
from vmtest.stores import CollectionSpec, RecordBatch, open_store
from vmtest.stores.qdrant import _recovers

N = 1200


def qdrant_source(uri: str, seed: int = 1) -> RecordBatch:
    """A collection of records whose metadata holds full-precision doubles (what a point
    copy into a Qdrant server may round by an ulp), a payload index on ``k`` and an HNSW
    setting of its own (what a point copy creates afresh from the source's shape)."""
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).normal(size=(N, 24)).astype(np.float32)
    batch = RecordBatch(list(range(N)), vectors,
                        [{"f": rng.random(), "g": [rng.random()], "k": i % 7} for i in range(N)],
                        [f"document {i}" for i in range(N)])
    with open_store(uri, create=CollectionSpec(24, "cosine")) as store:
        store.upsert(batch)
        client = store._client
        from qdrant_client import models

        client.create_payload_index(store.collection, "k", models.PayloadSchemaType.INTEGER,
                                    wait=True)
        client.update_collection(store.collection,
                                 hnsw_config=models.HnswConfigDiff(m=32, ef_construct=123))
    return batch


def collection_info(uri: str):
    with open_store(uri) as store:
        return store._info()


def every_record(uri: str) -> RecordBatch:
    with open_store(uri) as store:
        return store.fetch(list(range(N)))


def test_a_qdrant_collection_goes_to_a_new_one_as_a_snapshot_bit_for_bit(
        qdrant_server, tmp_path, capsys):
    source, target = qdrant_server.uri("native_src"), qdrant_server.uri("native_dst")
    qdrant_source(source)
    state, report = tmp_path / "state.json", tmp_path / "verify.json"
    assert main(["migrate", f"--source={source}", f"--target={target}", f"--state={state}",
                 "--verify", f"--vmtest-json={report}", "--vmtest-html=none", "-q",
                 "-m", "not latency", "-p", "no:randomly"]) == 0
    out = capsys.readouterr().out
    assert f"copied {N} records as a collection snapshot (Qdrant 1.16.3 -> 1.16.3" in out
    # every double as it was (a point copy rounds some by an ulp), vectors and documents too
    before, after = every_record(source), every_record(target)
    assert after.metadatas == before.metadatas
    assert np.array_equal(after.vectors, before.vectors)
    # what a point copy would not carry: the payload index and the HNSW setting
    info = collection_info(target)
    assert "k" in (info.payload_schema or {})
    assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (32, 123)
    # --verify ran the suite on the copy: faithful, no float counted as rounded
    verdict = json.loads(report.read_text())
    assert verdict["verdict"] == "passed"
    metadata = next(c for c in verdict["checks"] if c["name"] == "metadata")
    assert metadata["status"] == "passed" and metadata["figures"].get("rounded", 0) == 0
    # the state says it is done, and a rerun trusts it only while the target bears it out
    assert json.loads(state.read_text())["finished"] is True
    assert main(["migrate", f"--source={source}", f"--target={target}",
                 f"--state={state}"]) == 0
    assert f"nothing to do: {state} says all {N} records were migrated" in \
        capsys.readouterr().out
    with open_store(target) as store:
        store._client.delete_collection(store.collection)
    assert main(["migrate", f"--source={source}", f"--target={target}",
                 f"--state={state}"]) == 4  # refused: the state is not borne out
    assert "the target is not there" in capsys.readouterr().err
    assert main(["migrate", f"--source={source}", f"--target={target}", f"--state={state}",
                 "--restart"]) == 0
    assert "as a collection snapshot" in capsys.readouterr().out
    assert every_record(target).metadatas == before.metadatas


@pytest.mark.parametrize("why", ["--transfer=records", "target exists", "one of two vectors"])
def test_the_copy_goes_record_by_record_where_a_snapshot_is_not_asked_for_or_would_differ(
        qdrant_server, why):
    """--transfer=records; a target collection that exists (a snapshot would replace it);
    a source collection of two named vectors whose URI picks one (a snapshot carries both)."""
    name = {"--transfer=records": "rec", "target exists": "exists",
            "one of two vectors": "two"}[why]
    source, target = qdrant_server.uri(f"{name}_src"), qdrant_server.uri(f"{name}_dst")
    options = MigrationOptions(transfer="records" if why == "--transfer=records" else "auto")
    if why == "one of two vectors":
        from qdrant_client import QdrantClient, models

        client = QdrantClient(host="127.0.0.1", port=qdrant_server.port,
                              check_compatibility=False)
        client.create_collection(f"{name}_src", vectors_config={
            "a": models.VectorParams(size=4, distance=models.Distance.COSINE),
            "b": models.VectorParams(size=4, distance=models.Distance.DOT)})
        client.close()
        source += "&vector=a"
        with open_store(source) as src:
            src.upsert(RecordBatch(list(range(50)), np.ones((50, 4), np.float32),
                                   [{"i": i} for i in range(50)], [None] * 50))
    else:
        qdrant_source(source)
    if why == "target exists":
        with open_store(target, create=CollectionSpec(24, "cosine")):
            pass
    with open_store(source) as src:
        report = migrate(src, target, options)
    assert report.method == "records" and report.batches >= 1 and not report.notes
    vectors = collection_info(target).config.params.vectors
    if why == "one of two vectors":
        assert not isinstance(vectors, dict) or set(vectors) == {"a"}  # only the one named


def test_a_snapshot_the_target_refuses_falls_back_to_records_and_says_why(
        qdrant_server, monkeypatch, capsys, tmp_path):
    """The snapshot arrives damaged (its SHA-256 is not the one sent with it): the target
    server refuses to recover it, nothing of it is left, the copy goes record by record and
    the user is told why."""
    import vmtest.stores.qdrant as qdrant

    source, target = qdrant_server.uri("damaged_src"), qdrant_server.uri("damaged_dst")
    qdrant_source(source)
    monkeypatch.setattr(qdrant, "_sha256", lambda path: "0" * 64)
    assert main(["migrate", f"--source={source}", f"--target={target}",
                 f"--state={tmp_path / 'state.json'}"]) == 0
    captured = capsys.readouterr()
    assert f"copied {N} records in " in captured.out and "batches" in captured.out
    assert "did not recover the snapshot" in captured.err
    assert "the copy goes record by record instead" in captured.err
    assert every_record(target).ids == every_record(source).ids


class ClusterQdrant(QdrantServer):
    """A Qdrant server in cluster mode (a cluster of one peer): its collection snapshots
    hold only its own shards, which vmtest does not take for the whole collection."""

    def __init__(self) -> None:
        super().__init__()
        self.p2p_port = free_port()

    def command(self) -> list[str]:
        return [*super().command(), "--uri", f"http://127.0.0.1:{self.p2p_port}"]

    def environment(self) -> dict[str, str]:
        return {**super().environment(), "QDRANT__CLUSTER__ENABLED": "true",
                "QDRANT__CLUSTER__P2P__PORT": str(self.p2p_port)}


def test_a_collection_of_a_cluster_goes_record_by_record(qdrant_server):
    with ClusterQdrant() as cluster:
        source = cluster.uri("clustered")
        for _ in range(60):  # the peer elects itself leader before it takes a collection
            try:
                qdrant_source(source)
                break
            except Exception:
                time.sleep(0.25)
        with open_store(source) as src:
            report = migrate(src, qdrant_server.uri("from_cluster"))
    assert report.method == "records" and report.copied == N


@pytest.mark.parametrize(("there", "here", "recovers"), [
    ("1.16.3", "1.16.0", True), ("1.17.0", "1.16.3", True), ("1.18.0", "1.16.3", False),
    ("1.16.3", "1.17.0", False), ("2.0.0", "1.16.3", False), ("dev", "1.16.3", False),
])
def test_a_snapshot_is_recovered_by_the_same_minor_version_or_the_next(there, here, recovers):
    assert _recovers(there, here) is recovers
