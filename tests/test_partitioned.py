"""Checking over partitions of the stores: each record read once (counted), and the verdict
and offending records of the single-process run, on LanceDB, Parquet, PostgreSQL and a Qdrant
server; --vmtest-shard reads only its own partitions; a rerun redoes only failed partitions."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import QUIET, fresh_uri
from vmtest.checks.merge import merge_partitioned
from vmtest.checks.result import CheckResult
from vmtest.cli import main
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
    run_ray,
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


def test_a_task_compares_its_partition_in_chunks_the_budget_holds(lance_pair):
    """The memory budget bounds each task: a partition larger than a chunk is compared chunk
    by chunk (100 records at this budget), with the verdict and offenders of the whole (here
    every pair compared one by one: the other tests take the checksum fast path)."""
    source, target = lance_pair
    settings = dataclasses.replace(Settings(), partitions=1, memory_budget=64 << 10,
                                   compare="full")  # every pair compared one by one
    with open_store(source) as src, open_store(target) as tgt:
        whole = Comparison(src, tgt, Settings()).fidelity
        outcome = partitioned(src, tgt, settings)
    pairs = [t for t in outcome.tasks if t.name.startswith("pairs")]
    assert [t.chunks for t in pairs] == [2]  # 200 records, 100 a chunk
    assert all(t.peak_rss > 0 for t in outcome.tasks)
    assert_same(whole, outcome.results)


def test_stores_that_can_only_be_scanned_are_checked_in_one_process(request, tmp_path,
                                                                   records):
    """Parquet to Parquet: neither side can be looked up by id without a scan, so the
    partitioned check steps aside; the run in one process gives the verdict and says why."""
    source = build(request, tmp_path, "parquet", "src", records)
    target = f"parquet://{tmp_path}/copy"
    copy(source, target, corrupted=True, records=records)
    with open_store(source) as src, open_store(target) as tgt:
        whole = Comparison(src, tgt, Settings()).fidelity
        asked = Comparison(src, tgt, dataclasses.replace(Settings(), partitions=3)).fidelity
    assert_same(whole, asked)
    assert any("checked without partitions" in w and "scan" in w
               for w in asked["ids"].warnings), asked["ids"].warnings


def test_a_partitioned_run_in_process_does_not_import_ray(lance_pair, monkeypatch):
    """Ray is imported only for --vmtest-executor=ray: with ``import ray`` made to fail, a
    partitioned run in process still runs (each record read once)."""
    source, target = lance_pair
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with open_store(source) as src, open_store(target) as tgt:
        ids = Comparison(src, tgt, dataclasses.replace(Settings(), partitions=2)).fidelity["ids"]
    assert ids.figures["read_source_records"] == SIZE
    with pytest.raises(ImportError):
        import ray  # noqa: F401 - the guard above holds


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


# -- on Ray (the session's ray_cluster, tests/conftest.py) ------------------------------------

def die_once(task, digests=None, stores=None) -> TaskResult:
    """run_task, but the worker running the second pairs partition dies the first time (a
    machine lost mid-run): Ray runs the task again on another worker."""
    mark = Path(task.plan.source.path).parent / "killed-once"
    if task.phase == "pairs" and task.part.index == 1 and not mark.exists():
        mark.write_text(str(os.getpid()))
        os._exit(1)
    return run_task(task, digests, stores)


def test_on_ray_each_record_is_read_once_though_a_worker_died(ray_cluster, lance_pair):
    source, target = lance_pair
    settings = dataclasses.replace(Settings(), partitions=3, executor="ray")
    with open_store(source) as src, open_store(target) as tgt:
        whole = Comparison(src, tgt, Settings()).fidelity
        counts = {"source": src.count(), "target": tgt.count()}
        on_ray = partitioned(src, tgt, settings, runner=run_ray(None, die_once))
    assert (Path(src.uri.path).parent / "killed-once").exists()  # a worker did die
    assert_same(whole, on_ray.results)
    assert_read_once(on_ray, counts, orphans_pass=True)  # nothing lost, nothing doubled
    assert on_ray.ran == len(on_ray.plan.driver_parts) + len(on_ray.plan.lookup_parts)


def test_vmtest_check_runs_on_ray(ray_cluster, lance_pair, tmp_path, monkeypatch):
    source, target = lance_pair
    report = tmp_path / "report.json"
    monkeypatch.chdir(tmp_path)
    code = main(["check", f"--source={source}", f"--target={target}", "--executor=ray",
                 f"--ray-address={ray_cluster}", f"--vmtest-json={report}",
                 "--vmtest-html=none", "-k", "ids or vectors or metadata or documents",
                 "-q", *QUIET])
    assert code == 1
    document = json.loads(report.read_text())
    assert document["settings"]["executor"] == "ray"
    checks = {c["name"]: c for c in document["checks"]}
    assert {n for n, c in checks.items() if c["status"] == "failed"} == set(CHECKS)
    assert checks["ids"]["figures"]["read_source_records"] == SIZE
    assert checks["ids"]["figures"]["read_target_records"] == SIZE - 1
    assert {o["id"] for o in checks["ids"]["offenders"]} == {LOST, EXTRA}
