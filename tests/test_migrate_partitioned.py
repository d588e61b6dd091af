"""vmtest migrate over partitions, in this process and on Ray: every record copied once
(counted), the verdict of a migration in one process, a worker killed mid-partition, a rerun
that redoes only the unfinished partitions, a refused plan or target that writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import fresh_uri
from tests.test_partitioned import SIZE, assert_same, build
from vmtest.cli import main
from vmtest.compare import Comparison
from vmtest.errors import MigrationError, PlanRefusedError, StoreNotFoundError
from vmtest.migrate import MigrationOptions, copy_store
from vmtest.migrate.partitioned import (
    CopyResult,
    copy_partition,
    migrate_partitioned,
    state_folder,
)
from vmtest.partitioned import PartitionsFailed, run_local, run_ray
from vmtest.settings import Settings
from vmtest.stores import RecordBatch, open_store

#: Records a batch: a partition of about 67 records is written in several batches.
BATCH = 20


@pytest.fixture
def records(dataset: RecordBatch) -> RecordBatch:
    return dataset.take(range(SIZE))


def uri_of(request, tmp_path: Path, kind: str, name: str) -> str:
    return fresh_uri(request, kind, tmp_path / name, f"{name}_{tmp_path.name}"[-60:])


def keys_of(uri: str) -> list[str]:
    """Every record's key as the checks read it (the source id where the target mapped it)."""
    with open_store(uri) as store:
        return sorted(str(m.get("original_id", rid)) for batch in store.iter_batches(100)
                      for rid, m in zip(batch.ids, batch.metadatas, strict=True))


def assert_copied_once(source: str, target: str, reference: str) -> None:
    """The target holds each source record once, and is as faithful as ``reference``, the
    copy a migration in one process made (same verdict, offenders and counts)."""
    assert keys_of(target) == keys_of(source)  # none lost, none doubled
    with open_store(source) as src, open_store(target) as tgt, \
            open_store(reference) as ref:
        assert tgt.count() == SIZE
        on_partitions = Comparison(src, tgt, Settings()).fidelity
        in_one_process = Comparison(src, ref, Settings()).fidelity
    assert_same(in_one_process, on_partitions)
    assert all(r.passed for r in on_partitions.values()), {
        n: r.summary for n, r in on_partitions.items() if not r.passed}


PAIRS = [("lancedb", "qdrant-server"), ("pgvector", "pgvector")]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS,
                         ids=[f"{s}-{t}" for s, t in PAIRS])
def test_vmtest_migrate_on_ray_copies_each_record_once(ray_cluster, request, tmp_path, records,
                                                       capsys, source_kind, target_kind):
    source = build(request, tmp_path, source_kind, "src", records)
    reference, target = (uri_of(request, tmp_path, target_kind, n) for n in ("ref", "copy"))
    with open_store(source) as src:
        copy_store(src, reference, batch_size=BATCH)
    state = tmp_path / "migrate.state.json"
    code = main(["migrate", f"--source={source}", f"--target={target}", "--executor=ray",
                 f"--ray-address={ray_cluster}", "--partitions=3", f"--batch-size={BATCH}",
                 f"--state={state}"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"copied {SIZE} records in 3 partitions" in out, out
    kept = sorted(p.name for p in state_folder(state).glob("plan-*/copy-*.pickle"))
    assert kept == ["copy-0.pickle", "copy-1.pickle", "copy-2.pickle"]
    assert_copied_once(source, target, reference)


def die_midway(task, digests=None, stores=None) -> CopyResult:
    """copy_partition, but the worker copying the second partition dies the first time,
    right after the target acknowledged its first batch (a machine lost mid-partition)."""
    mark = Path(task.plan.source.path).parent / "killed-once"
    if task.part.index != 1 or mark.exists():
        return copy_partition(task, digests, stores)
    source, dest = open_store(task.plan.source), open_store(task.plan.target)
    upsert = dest.upsert

    def upsert_then_die(batch: RecordBatch) -> None:
        upsert(batch)
        mark.write_text(str(len(batch)))
        os._exit(1)

    dest.upsert = upsert_then_die  # type: ignore[method-assign]
    return copy_partition(task, digests, (source, dest))


def test_a_worker_killed_mid_partition_on_ray_loses_and_doubles_nothing(
        ray_cluster, request, tmp_path, records):
    source = build(request, tmp_path, "lancedb", "src", records)
    reference, target = (uri_of(request, tmp_path, "qdrant-server", n) for n in ("ref", "copy"))
    with open_store(source) as src:
        copy_store(src, reference, batch_size=BATCH)
        report = migrate_partitioned(src, target, MigrationOptions(batch_size=BATCH),
                                     partitions=3, executor="ray",
                                     runner=run_ray(None, die_midway))
    mark = tmp_path / "src" / "killed-once"
    assert mark.exists() and int(mark.read_text()) == BATCH  # a batch landed, then it died
    assert report.partitions_run == [0, 1, 2]
    assert report.copied == SIZE  # the dead attempt counts nothing
    assert_copied_once(source, target, reference)


def crash_in_partition_1(task, digests=None, stores=None) -> CopyResult:
    """copy_partition, but the second partition's store goes away after its first batch."""
    if task.part.index != 1:
        return copy_partition(task, digests, stores)
    source, dest = open_store(task.plan.source), open_store(task.plan.target)
    upsert = dest.upsert

    def upsert_then_fail(batch: RecordBatch) -> None:
        upsert(batch)
        raise ConnectionResetError("the target went away mid-partition")

    dest.upsert = upsert_then_fail  # type: ignore[method-assign]
    try:
        return copy_partition(task, digests, (source, dest))
    finally:
        source.close()
        dest.close()


def test_a_rerun_after_a_crash_redoes_only_the_unfinished_partitions(request, tmp_path,
                                                                     records, capsys):
    source = build(request, tmp_path, "lancedb", "src", records)
    reference, target = (uri_of(request, tmp_path, "pgvector", n) for n in ("ref", "copy"))
    state = tmp_path / "migrate.state.json"
    options = MigrationOptions(batch_size=BATCH, retries=0)
    with open_store(source) as src:
        copy_store(src, reference, batch_size=BATCH)
        with pytest.raises(PartitionsFailed, match="copy-1") as failed:
            migrate_partitioned(src, target, options, partitions=3, state_path=state,
                                runner=run_local(None, crash_in_partition_1))
        assert "redo only the others" in str(failed.value.hint)
        with open_store(target) as tgt:
            landed = tgt.count()
        assert 2 * (SIZE // 3) <= landed < SIZE  # two partitions and a batch of the third
        again = migrate_partitioned(src, target, options, partitions=3, state_path=state)
    assert (again.partitions_kept, again.partitions_run) == ([0, 2], [1])
    assert again.resumed_from + again.copied == SIZE
    assert_copied_once(source, target, reference)
    code = main(["migrate", f"--source={source}", f"--target={target}", "--partitions=3",
                 f"--batch-size={BATCH}", f"--state={state}"])
    assert code == 0
    assert "nothing to do" in capsys.readouterr().out


def test_kept_partitions_are_not_trusted_when_the_target_is_gone(request, tmp_path, records):
    source = build(request, tmp_path, "lancedb", "src", records)
    state = tmp_path / "migrate.state.json"
    target = f"qdrant://{tmp_path}/copy?collection=docs"  # in this process: a local target
    with open_store(source) as src:
        first = migrate_partitioned(src, target, partitions=2, state_path=state)
        assert first.partitions_run == [0, 1]
        (tmp_path / "copy").rename(tmp_path / "moved")
        with pytest.raises(MigrationError, match="does not exist"):
            migrate_partitioned(src, target, partitions=2, state_path=state)


def test_a_refused_plan_writes_nothing_and_runs_no_partition(request, tmp_path, records,
                                                             capsys):
    bad = records.take(range(SIZE))
    bad.documents = list(bad.documents)
    bad.documents[7] = "a NUL \x00 PostgreSQL cannot hold"
    source = build(request, tmp_path, "lancedb", "src", bad)
    target = uri_of(request, tmp_path, "pgvector", "copy")
    state = tmp_path / "migrate.state.json"
    ran: list[object] = []
    with open_store(source) as src, pytest.raises(PlanRefusedError, match="NUL"):
        migrate_partitioned(src, target, partitions=3, executor="ray", state_path=state,
                            runner=lambda tasks, *rest: ran.extend(tasks))
    code = main(["migrate", f"--source={source}", f"--target={target}", "--executor=ray",
                 f"--state={state}"])
    assert code == 1
    assert "refused" in capsys.readouterr().err
    assert ran == []
    assert not state_folder(state).exists()
    with pytest.raises(StoreNotFoundError):
        open_store(target)


@pytest.mark.parametrize(("kind", "why"), [("lancedb", "appends"),
                                           ("parquet", "appends"),
                                           ("qdrant", "local")])
def test_targets_a_partition_cannot_be_redone_into_are_refused_in_one_line(
        request, tmp_path, records, capsys, kind, why):
    source = build(request, tmp_path, "lancedb", "src", records)
    target = uri_of(request, tmp_path, kind, "copy")
    code = main(["migrate", f"--source={source}", f"--target={target}", "--executor=ray",
                 f"--state={tmp_path / 'state.json'}"])
    err = capsys.readouterr().err
    assert code == 4
    assert len(err.strip().splitlines()) == 1 and why in err, err
    assert not (tmp_path / "copy").exists() or not any((tmp_path / "copy").iterdir())
