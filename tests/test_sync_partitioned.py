"""vmtest sync over partitions, in this process and on Ray: the repaired target, the
generations and the mismatches (kinds, ids) of the sync in one process, each source record
read once, though two Ray workers died mid-partition; targets a partition cannot be redone
into."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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
        for i, (rid, meta) in enumerate(zip(rows.ids, rows.metadatas, strict=True)):
            if meta.get("original_id", rid) == MOVED:
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


def dies_midway(folder: Path) -> Callable[..., SyncResult]:
    """sync_task, but a worker dies the first time it compares the second source partition
    (after its first lookup) and the first time it repairs (after its first copy landed):
    machines lost mid-partition, each task run again by Ray. ``folder`` keeps the marks."""
    def die_midway(task, digests=None, stores=None) -> SyncResult:
        mark = folder / f"killed-{task.phase}"
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

    return die_midway


#: In process, LanceDB -> Qdrant server; on Ray, PostgreSQL -> PostgreSQL (its workers start
#: in about a second: lancedb and qdrant_client take 6 s to import, twice for each worker lost).
RUNS = [("local", "lancedb", "qdrant-server"), ("ray", "pgvector", "pgvector")]


@pytest.mark.parametrize(("executor", "source_kind", "target_kind"), RUNS,
                         ids=[f"{e}-{s}-{t}" for e, s, t in RUNS])
def test_a_sync_over_partitions_repairs_as_the_sync_in_one_process(
        request, tmp_path, records, capsys, executor, source_kind, target_kind):
    """On Ray, two workers die mid-partition (one comparing, one after its repair landed):
    nothing is lost or doubled, the run is still the run in one process."""
    address = request.getfixturevalue("ray_cluster") if executor == "ray" else None
    source = build(request, tmp_path, source_kind, "src", records)
    reference, target = (uri_of(request, tmp_path, target_kind, n) for n in ("ref", "copy"))
    fell_behind(source, reference, records)
    fell_behind(source, target, records)
    one_state, state = tmp_path / "one.json", tmp_path / "parts.json"
    # every generation compares every key (PostgreSQL's change feed would serve the later ones)
    spread = SyncOptions(delete_extra=True, generations=1, executor=executor, partitions=3,
                         use_feed=False)
    with open_store(source) as src:
        one = sync(src, reference, SyncOptions(delete_extra=True, generations=1,
                                               use_feed=False), state_path=one_state)
        parts = sync(src, target, spread, state_path=state,
                     runner=run_ray(address, dies_midway(tmp_path)) if address else None)
    if address:
        assert all((tmp_path / f"killed-{phase}").exists()
                   for phase in ("compare", "repair"))  # both workers did die
    # generation 0: the same keys checked, the same mismatches (kinds, ids), repaired alike
    # (the dead attempts count nothing)
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
        sync(src, reference, SyncOptions(delete_extra=True, use_feed=False),
             state_path=one_state)
    if address:  # the command, on the same cluster
        code = main(["sync", f"--source={source}", f"--target={target}", "--executor=ray",
                     f"--ray-address={address}", "--partitions=3", "--delete-extra",
                     "--no-feed", f"--state={state}", f"--json={tmp_path / 'sync.json'}",
                     "--html=none"])
        assert code == 0, capsys.readouterr()
        document = json.loads((tmp_path / "sync.json").read_text())
        last = document["generations"][-1]
        assert (last["number"], last["how"], last["mismatches"]) == (1, "3 partitions, Ray", 0)
    else:
        with open_store(source) as src:
            again = sync(src, target, SyncOptions(delete_extra=True, partitions=3,
                                                  use_feed=False), state_path=state)
        assert [g.mismatches for g in again.generations] == [6, 0] and again.faithful
    ours, theirs = held(target), held(reference)
    assert len(ours) == SIZE and ours.keys() == theirs.keys()
    for rid, (vector, meta, doc) in ours.items():
        assert np.array_equal(vector, theirs[rid][0]) and (meta, doc) == theirs[rid][1:], rid


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
