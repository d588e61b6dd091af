"""Checking over partitions of the stores: each record read once (counted), and the verdict
and offending records of the single-process run, on LanceDB, Parquet, PostgreSQL and a Qdrant
server; --vmtest-shard reads only its own partitions; a rerun redoes only failed partitions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tests.support import fresh_uri
from vmtest.checks.merge import merge_partitioned
from vmtest.checks.result import CheckResult
from vmtest.compare import Comparison
from vmtest.migrate import copy_store
from vmtest.migrate.mapping import IdMapper, MetadataPolicy, map_batch
from vmtest.partitioned import (
    CHECKS,
    Outcome,
    PartitionsFailed,
    TaskResult,
    check_partitioned,
    run_local,
    run_task,
)
from vmtest.settings import Settings
from vmtest.stores import CollectionSpec, RecordBatch, VectorStore, open_store
from vmtest.stores.files import JsonlStore

#: Source and target kinds: both read by partitions; Parquet as either side (a store whose
#: fetch is a scan is read partition by partition, the other side looked up by id).
PAIRS = [("lancedb", "lancedb"), ("parquet", "lancedb"), ("lancedb", "parquet"),
         ("pgvector", "pgvector"), ("qdrant-server", "qdrant-server")]
LOST, MOVED, RETYPED, REWORDED = "doc-000003", "doc-000047", "doc-000101", "doc-000177"
EXTRA = "doc-extra-1"


def corrupt(batch: RecordBatch) -> RecordBatch:
    """A record lost, a vector moved, a metadata value retyped, a document changed."""
    batch.vectors = np.array(batch.vectors, dtype=np.float32)
    keys = [str(m.get("original_id", rid)) for rid, m in zip(batch.ids, batch.metadatas,
                                                             strict=True)]
    for i, key in enumerate(keys):
        if key == MOVED:
            batch.vectors[i, 0] += 0.01
        if key == RETYPED:
            batch.metadatas[i]["year"] = str(batch.metadatas[i]["year"])
        if key == REWORDED:
            if "document" in batch.metadatas[i]:
                batch.metadatas[i]["document"] = "changed"
            else:
                batch.documents[i] = "changed"
    return batch.take([i for i, key in enumerate(keys) if key != LOST])


#: Records of the session dataset used (each corruption above is among them).
SIZE = 200


@pytest.fixture
def records(dataset: RecordBatch) -> RecordBatch:
    return dataset.take(range(SIZE))


def build(request, tmp: Path, kind: str, name: str, records: RecordBatch) -> str:
    """A store of ``kind`` holding the records, written in batches of 50 (4 fragments or
    parts)."""
    uri = fresh_uri(request, kind, tmp / name, f"{name}_{tmp.name}"[-60:])
    with open_store(uri, create=CollectionSpec(records.vectors.shape[1], "cosine")) as store:
        for start in range(0, len(records), 50):
            store.upsert(mapped(store, records.take(range(start, start + 50))))
    return uri


def mapped(store: VectorStore, batch: RecordBatch) -> RecordBatch:
    return map_batch(batch, JsonlStore, IdMapper(store), MetadataPolicy(store), "document")


def copy(source: str, target: str, *, corrupted: bool, records: RecordBatch) -> None:
    with open_store(source) as src:
        copy_store(src, target, batch_size=60, transform=corrupt if corrupted else None)
    if corrupted:
        with open_store(target) as store:
            extra = records.take([5])
            extra.ids = [EXTRA]
            store.upsert(mapped(store, extra))


def partitioned(source: VectorStore, target: VectorStore, settings: Settings,
                **kwargs) -> Outcome:
    return check_partitioned(source, target, settings, "cosine",
                             counts=(source.count(), target.count()),
                             dimension=int(source.describe().dimension or 0), **kwargs)


def assert_same(whole: dict[str, CheckResult], parts: dict[str, CheckResult]) -> None:
    """Same verdict, same offending records, same counts."""
    assert list(parts) == list(CHECKS)
    for name in CHECKS:
        one, many = whole[name], parts[name]
        assert (many.status, many.offending_total) == (one.status, one.offending_total), \
            (name, one.summary, many.summary)
        assert {o.id for o in many.offenders} == {o.id for o in one.offenders}, name
    for key in ("matched", "missing", "extra"):
        assert parts["ids"].figures[key] == whole["ids"].figures[key], key


def assert_read_once(outcome: Outcome, counts: dict[str, int], *, orphans_pass: bool) -> None:
    """The driver read once with vectors; the lookup side's records with a partner once
    with vectors, and all of its ids once more only when some record had no partner."""
    plan = outcome.plan
    driver, lookup = outcome.reads[plan.driver], outcome.reads[plan.lookup]
    assert (driver.records, driver.ids) == (counts[plan.driver], 0)
    partnered = outcome.results["ids"].figures["matched"]
    assert lookup.records == partnered
    assert lookup.ids == (counts[plan.lookup] if orphans_pass else 0)
    figures = outcome.results["ids"].figures
    assert figures[f"read_{plan.driver}_records"] == counts[plan.driver]
    assert figures["read_source_bytes"] > 0 and figures["read_target_bytes"] > 0


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS,
                         ids=[f"{s}-{t}" for s, t in PAIRS])
def test_partitions_read_each_record_once_and_agree(request, tmp_path, records,
                                                    source_kind, target_kind):
    source = build(request, tmp_path, source_kind, "src", records)
    faithful, broken = (fresh_uri(request, target_kind, tmp_path / name,
                                  f"{name}_{tmp_path.name}"[-60:])
                        for name in ("copy", "broken"))
    copy(source, faithful, corrupted=False, records=records)
    copy(source, broken, corrupted=True, records=records)
    settings = dataclasses.replace(Settings(), partitions=3, batch_size=40)
    for target, corrupted in ((faithful, False), (broken, True)):
        with open_store(source) as src, open_store(target) as tgt:
            whole = Comparison(src, tgt, Settings()).fidelity
            outcome = partitioned(src, tgt, settings)
            counts = {"source": src.count(), "target": tgt.count()}
        assert len(outcome.plan.driver_parts) >= 2 and len(outcome.plan.lookup_parts) >= 2
        assert_same(whole, outcome.results)
        assert_read_once(outcome, counts, orphans_pass=corrupted)
        failed = {n for n, r in outcome.results.items() if not r.passed}
        if corrupted:
            assert failed == {"ids", "vectors", "metadata", "documents"}
            assert {o.id for o in outcome.results["ids"].offenders} == {LOST, EXTRA}
            assert {o.id for o in outcome.results["vectors"].offenders} == {MOVED}
        else:
            assert failed == set()
            assert (outcome.reads["source"].records, outcome.reads["target"].records) == (
                len(records), len(records))


@pytest.fixture
def lance_pair(tmp_path, records, request) -> tuple[str, str]:
    """A LanceDB source of 4 fragments and a corrupted LanceDB copy."""
    source = build(request, tmp_path, "lancedb", "src", records)
    target = f"lancedb://{tmp_path}/copy?table=docs"
    copy(source, target, corrupted=True, records=records)
    return source, target


def test_shares_read_only_their_partitions_and_merge_to_the_whole(lance_pair):
    source, target = lance_pair
    base = dataclasses.replace(Settings(), partitions=4)
    with open_store(source) as src, open_store(target) as tgt:
        whole = Comparison(src, tgt, Settings()).fidelity
        shares = [partitioned(src, tgt, dataclasses.replace(base, shard=(i, 2)))
                  for i in (1, 2)]
    counts = [share.reads["source"].records for share in shares]
    assert all(0 < n < SIZE for n in counts) and sum(counts) == SIZE  # each its own records
    merged = {name: CheckResult.from_dict(merge_partitioned(
        [share.results[name].to_dict() for share in shares], 2)) for name in CHECKS}
    assert_same(whole, merged)
    assert merged["ids"].figures["read_source_records"] == SIZE


def flaky(task, digests=None, stores=None) -> TaskResult:
    """run_task, but the second pairs partition fails."""
    if task.phase == "pairs" and task.part.index == 1:
        raise ConnectionResetError("the store went away mid-partition")
    return run_task(task, digests, stores)


def test_a_rerun_redoes_only_the_failed_partitions(lance_pair, tmp_path):
    source, target = lance_pair
    settings = dataclasses.replace(Settings(), partitions=3,
                                   partition_state=tmp_path / "state")
    with open_store(source) as src, open_store(target) as tgt:
        whole = Comparison(src, tgt, Settings()).fidelity
        with pytest.raises(PartitionsFailed, match="pairs-1") as failed:
            partitioned(src, tgt, settings, runner=run_local((src, tgt), flaky))
        assert "run again" in str(failed.value)
        again = partitioned(src, tgt, settings)
        fresh = partitioned(src, tgt, dataclasses.replace(settings, partition_state=None))
    assert len(again.plan.driver_parts) == 3  # 4 fragments in 3 runs
    assert again.resumed == 2 and again.ran == 1 + len(again.plan.lookup_parts)
    assert again.reads["source"].records == SIZE  # nothing lost, nothing doubled
    assert_same(whole, again.results)
    assert_same(fresh.results, again.results)
