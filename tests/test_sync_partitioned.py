"""vmtest sync over partitions, in this process and on Ray: the repaired target, the
generations and the mismatches (kinds, ids) of the sync in one process, each source record
read once; a worker killed mid-partition on Ray; targets a partition cannot be redone into."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_migrate_partitioned import uri_of
from tests.test_partitioned import SIZE, build, mapped
from vmtest.cli import main
from vmtest.live.partitioned import SyncResult, sync_task
from vmtest.live.sync import SyncOptions, SyncReport, SyncState, sync
from vmtest.migrate import copy_store
from vmtest.migrate.mapping import IdMapper
from vmtest.partitioned import run_ray
from vmtest.stores import RecordBatch, open_store

LOST = ("doc-000003", "doc-000090", "doc-000180")
MOVED, RETYPED, EXTRA = "doc-000047", "doc-000101", "doc-extra-1"
BROKEN = {**dict.fromkeys(LOST, "missing"), MOVED: "content", RETYPED: "content",
          EXTRA: "extra"}


@pytest.fixture
def records(dataset: RecordBatch) -> RecordBatch:
    return dataset.take(range(SIZE))


def fell_behind(source: str, target: str, records: RecordBatch) -> None:
    """A copy of the source that lost records, holds a vector moved and a metadata value
    changed since, and a record the source no longer has."""
    with open_store(source) as src:
        copy_store(src, target, batch_size=60)
    with open_store(target) as store:
        ids = IdMapper(store)
        store.delete([ids.map(k)[0] for k in LOST])
        rows = store.fetch([ids.map(k)[0] for k in (MOVED, RETYPED)])
        rows.vectors = np.array(rows.vectors, dtype=np.float32)
        for i, meta in enumerate(rows.metadatas):
            if meta["original_id"] == MOVED:
                rows.vectors[i, 0] += 0.01
            else:
                meta["year"] = str(meta["year"])
        store.upsert(rows)
        extra = records.take([5])
        extra.ids = [EXTRA]
        store.upsert(mapped(store, extra))


def held(uri: str) -> dict[str, tuple[np.ndarray, dict, str | None]]:
    """Every record of a store by id: its vector, metadata and document."""
    with open_store(uri) as store:
        return {str(rid): (np.asarray(v), m, d) for batch in store.iter_batches(100)
                for rid, v, m, d in zip(batch.ids, batch.vectors, batch.metadatas,
                                        batch.documents, strict=True)}


def mismatches(report: SyncReport) -> dict[str, tuple]:
    return {m.key: (m.kind, m.source_id, m.target_id) for m in report.outstanding}


def generations(report: SyncReport) -> list[tuple]:
    """What a generation found and did, without its timing and how it read."""
    return [(g.number, g.checked, g.found, g.copied, g.deleted, g.listed)
            for g in report.generations]


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_sync_over_partitions_repairs_as_the_sync_in_one_process(request, tmp_path, records,
                                                                   capsys, executor):
    address = request.getfixturevalue("ray_cluster") if executor == "ray" else None
    source = build(request, tmp_path, "lancedb", "src", records)
    reference, target = (uri_of(request, tmp_path, "qdrant-server", n) for n in ("ref", "copy"))
    fell_behind(source, reference, records)
    fell_behind(source, target, records)
    one_state, state = tmp_path / "one.json", tmp_path / "parts.json"
    spread = SyncOptions(delete_extra=True, generations=1, executor=executor, partitions=3,
                         ray_address=address)
    with open_store(source) as src:
        one = sync(src, reference, SyncOptions(delete_extra=True, generations=1),
                   state_path=one_state)
        parts = sync(src, target, spread, state_path=state)
    # generation 0: the same keys checked, the same mismatches (kinds, ids), repaired alike
    assert generations(parts) == generations(one)
    assert parts.generations[0].found == {"missing": 3, "extra": 1, "content": 2}
    assert (parts.generations[0].copied, parts.generations[0].deleted) == (5, 1)
    assert mismatches(parts) == mismatches(one)
    assert {k: kind for k, (kind, _, _) in mismatches(parts).items()} == BROKEN
    saved, saved_one = SyncState.load(state), SyncState.load(one_state)
    assert saved is not None and saved_one is not None
    assert {k: (m["kind"], m["source_id"], m["target_id"]) for k, m in saved.pending.items()} \
        == {k: (m["kind"], m["source_id"], m["target_id"]) for k, m in saved_one.pending.items()}
    # each source record read once with its vectors; the five repaired read again to be
    # copied; the target's partners once, and its ids once (the extras pass)
    first = parts.generations[0]
    assert first.partitions == 3
    assert first.reads == {"source_records": SIZE, "target_records": SIZE - len(LOST),
                           "target_ids": SIZE - len(LOST) + 1, "source_records_copied": 5}
    # generation 1 (resumed) finds the repairs landed, and both targets hold the same records
    with open_store(source) as src:
        sync(src, reference, SyncOptions(delete_extra=True), state_path=one_state)
    if executor == "ray":  # the command, on the same cluster
        code = main(["sync", f"--source={source}", f"--target={target}", "--executor=ray",
                     f"--ray-address={address}", "--partitions=3", "--delete-extra",
                     f"--state={state}", f"--json={tmp_path / 'sync.json'}", "--html=none"])
        assert code == 0, capsys.readouterr()
        document = json.loads((tmp_path / "sync.json").read_text())
        last = document["generations"][-1]
        assert (last["number"], last["how"], last["mismatches"]) == (1, "3 partitions, Ray", 0)
    else:
        with open_store(source) as src:
            again = sync(src, target, SyncOptions(delete_extra=True, partitions=3),
                         state_path=state)
        assert [g.mismatches for g in again.generations] == [6, 0] and again.faithful
    ours, theirs = held(target), held(reference)
    assert len(ours) == SIZE and ours.keys() == theirs.keys()
    for rid, (vector, meta, doc) in ours.items():
        assert np.array_equal(vector, theirs[rid][0]) and (meta, doc) == theirs[rid][1:], rid


def die_midway(task, digests=None, stores=None) -> SyncResult:
    """sync_task, but a worker dies the first time it compares the second source partition
    (after its first lookup) and the first time it repairs (after its first copy landed)."""
    mark = Path(task.plan.source.path).parent / f"killed-{task.phase}"
    if task.phase == "extras" or mark.exists() or \
            (task.phase == "compare" and task.part.index != 1):
        return sync_task(task, digests, stores)
    source, dest = open_store(task.plan.source), open_store(task.plan.target)
    name = "fetch" if task.phase == "compare" else "upsert"
    real = getattr(dest, name)

    def then_die(*args):
        real(*args)
        mark.write_text(str(os.getpid()))
        os._exit(1)

    setattr(dest, name, then_die)
    return sync_task(task, digests, (source, dest))


def test_a_worker_killed_mid_partition_on_ray_loses_and_doubles_nothing(
        ray_cluster, request, tmp_path, records):
    source = build(request, tmp_path, "lancedb", "src", records)
    target = uri_of(request, tmp_path, "qdrant-server", "copy")
    fell_behind(source, target, records)
    options = SyncOptions(delete_extra=True, generations=1, executor="ray", partitions=3)
    with open_store(source) as src:
        report = sync(src, target, options, runner=run_ray(None, die_midway))
        assert all((tmp_path / "src" / f"killed-{phase}").exists()
                   for phase in ("compare", "repair"))  # both workers did die
        first = report.generations[0]
        assert first.found == {"missing": 3, "extra": 1, "content": 2}
        assert (first.copied, first.deleted) == (5, 1)  # the dead attempts count nothing
        assert {m.key: m.kind for m in report.outstanding} == BROKEN
        assert first.reads["source_records"] == SIZE
        # the repairs landed, once each: a sync in one process finds nothing
        after = sync(src, target, SyncOptions(generations=1))
    assert after.generations[0].mismatches == 0
    assert len(held(target)) == SIZE


@pytest.mark.parametrize(("kind", "why"), [("lancedb", "appends"), ("qdrant", "local")])
def test_targets_a_partition_cannot_be_redone_into_are_refused_in_one_line(
        request, tmp_path, records, capsys, kind, why):
    source = build(request, tmp_path, "lancedb", "src", records)
    target = uri_of(request, tmp_path, kind, "copy")
    code = main(["sync", f"--source={source}", f"--target={target}", "--executor=ray",
                 f"--state={tmp_path / 'state.json'}", "--json=none", "--html=none"])
    err = capsys.readouterr().err
    assert code == 4
    assert len(err.strip().splitlines()) == 1 and why in err and "sync" in err, err
    assert not (tmp_path / "copy").exists() or not any((tmp_path / "copy").iterdir())
