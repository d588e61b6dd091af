"""vmtest sync: generations that catch up a copy, on real embedded stores; the change feed of
a real PostgreSQL; the dual-write journal; orphaned writes after a cutover mark."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.support import MemoryStore
from vmtest.live.sync import SyncOptions, SyncState, sync
from vmtest.migrate import copy_store
from vmtest.migrate.mapping import IdMapper
from vmtest.stores import RecordBatch, open_store
from vmtest.stores.pgvector import decoded_columns


def vmtest(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.fixture
def copied(chroma_source, tmp_path):
    """A faithful Qdrant local copy of the Chroma source."""
    target = f"qdrant:///{tmp_path}/qdrant?collection=docs"
    with open_store(chroma_source) as src:
        copy_store(src, target)
    return target


def fell_behind(target: str, dataset: RecordBatch) -> dict[str, list[str]]:
    """Break the copy the way a copy taken while writes went on is broken: records it never
    got, records changed after they were copied, records deleted from the source since."""
    missing = [dataset.ids[i] for i in (3, 77, 150)]
    changed = [dataset.ids[i] for i in (10, 200)]
    extra = ["gone-1", "gone-2"]
    with open_store(target) as store:
        stored = IdMapper(store)  # the ids the copy gave them (UUIDv5 in Qdrant)
        store.delete([stored.map(k)[0] for k in missing])
        rows = store.fetch([stored.map(k)[0] for k in changed])
        store.upsert(RecordBatch(rows.ids, rows.vectors,
                                 [{**m, "year": 1999} for m in rows.metadatas], rows.documents))
        store.upsert(RecordBatch([stored.map(k)[0] for k in extra], dataset.vectors[:2],
                                 [{"topic": "x", "original_id": k} for k in extra], [None] * 2))
    return {"missing": missing, "content": changed, "extra": extra}


def test_a_faithful_copy_needs_one_generation_that_finds_nothing(chroma_source, copied):
    with open_store(chroma_source) as src:
        report = sync(src, copied, SyncOptions())
    assert len(report.generations) == 1 and report.faithful
    assert report.generations[0].mismatches == 0 and report.generations[0].checked == 300


def test_generation_0_names_each_mismatch_by_kind_and_repairs_it(chroma_source, copied,
                                                                 dataset, tmp_path):
    broken = fell_behind(copied, dataset)
    with open_store(chroma_source) as src:
        report = sync(src, copied, SyncOptions(), state_path=tmp_path / "state.json")
    first = report.generations[0]
    assert first.found == {"missing": 3, "content": 2, "extra": 2}
    assert first.copied == 5 and first.deleted == 0 and first.listed == 2
    # the extras are only listed: the copy is not faithful, and they are named
    assert not report.faithful
    # generation 1 re-checks: the copies landed, the extras are still there; it stops then
    assert [g.mismatches for g in report.generations] == [7, 2]
    assert {m.key for m in report.outstanding} == set(broken["extra"])
    assert {m.kind for m in report.outstanding} == {"extra"}
    # ... and with --delete-extra the next run resumes and ends on a clean generation
    with open_store(chroma_source) as src:
        again = sync(src, copied, SyncOptions(delete_extra=True),
                     state_path=tmp_path / "state.json")
    assert [g.mismatches for g in again.generations] == [7, 2, 2, 0] and again.faithful
    assert again.generations[2].deleted == 2
    with open_store(copied) as store:
        stored = IdMapper(store)
        assert store.count() == 300
        assert not len(store.fetch([stored.map(k)[0] for k in broken["extra"]]))
        years = {m["year"] for m in store.fetch([stored.map(k)[0]
                                                for k in broken["content"]]).metadatas}
        assert 1999 not in years


def test_a_mismatch_keeps_its_first_seen_time_across_runs(chroma_source, copied, dataset,
                                                          tmp_path):
    fell_behind(copied, dataset)
    state = tmp_path / "state.json"
    with open_store(chroma_source) as src:
        sync(src, copied, SyncOptions(generations=1), state_path=state)
        saved = SyncState.load(state)
        assert saved is not None and saved.generation == 1
        first_seen = {k: m["first_seen"] for k, m in saved.pending.items()}
        report = sync(src, copied, SyncOptions(generations=1), state_path=state)
    # resumed: generation 1, and the extras still outstanding since generation 0
    assert report.generations[-1].number == 1
    assert {m.key: m.first_seen for m in report.outstanding} == \
        {k: v for k, v in first_seen.items() if k.startswith("gone")}
    assert all(m.lasted_s > 0 for m in report.outstanding)


def test_vectors_within_the_tolerance_are_not_copied_again_and_again(chroma_source,
                                                                      tmp_path):
    """A target that keeps vectors a little off (within --tolerance) digests differently for
    some records: those are compared one by one and found the same, never re-copied."""
    target = f"qdrant:///{tmp_path}/qdrant?collection=docs"
    rng = np.random.default_rng(5)

    def nudge(batch: RecordBatch) -> RecordBatch:
        noise = rng.uniform(-3e-7, 3e-7, batch.vectors.shape).astype(np.float32)
        return RecordBatch(batch.ids, batch.vectors + noise, batch.metadatas, batch.documents)

    with open_store(chroma_source) as src:
        copy_store(src, target, transform=nudge)
        report = sync(src, target, SyncOptions())
        assert [g.mismatches for g in report.generations] == [0]
        strict = sync(src, target, SyncOptions(tolerance=1e-9, generations=1))
    # the same copy, judged at a tolerance the nudges exceed: every record differs
    assert strict.generations[0].found["content"] > 250


def test_until_converged_waits_for_writes_off_then_stops_on_a_clean_generation(
        chroma_source, copied, dataset):
    fell_behind(copied, dataset)
    calls = []

    def writes_off() -> bool:
        calls.append(1)
        return len(calls) >= 4  # writes go on for three generations

    with open_store(chroma_source) as src:
        report = sync(src, copied, SyncOptions(until_converged=True, delete_extra=True,
                                               interval_s=0.0), writes_off=writes_off)
    found = [g.mismatches for g in report.generations]
    assert found[0] == 7 and found[-1] == 0 and len(found) == 4
    assert report.converged and report.generations[-1].writes_off
    assert not any(g.writes_off for g in report.generations[:-1])


def test_sync_refuses_what_migrate_refuses_before_writing(tmp_path, dataset):
    """The same plan and refusal rules: metadata the target cannot hold stops it."""
    source = MemoryStore.holding(RecordBatch(["a"], dataset.vectors[:1],
                                             [{"bad": {"nested": [1, {"x": None}]}}], [None]))
    target = f"chroma:///{tmp_path}/chroma?collection=docs"
    from vmtest.errors import PlanRefusedError

    with pytest.raises(PlanRefusedError):
        sync(source, target, SyncOptions())
    assert not (tmp_path / "chroma").exists()


def test_the_command_exits_1_naming_the_extras_and_writes_its_reports(
        chroma_source, copied, dataset, tmp_path):
    fell_behind(copied, dataset)
    done = vmtest("sync", f"--source={chroma_source}", f"--target={copied}",
                  f"--json={tmp_path}/sync.json", f"--html={tmp_path}/sync.html",
                  f"--state={tmp_path}/state.json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "extra: gone-1" in done.stdout and "NOT CAUGHT UP" in done.stdout
    assert "generation 0 (digests): checked 302 keys, found 3 missing, 2 extra, 2 content" \
        in done.stderr
    document = json.loads((tmp_path / "sync.json").read_text())
    assert document["verdict"] == "mismatches remain"
    assert "gone-2" in (tmp_path / "sync.html").read_text()
    done = vmtest("sync", f"--source={chroma_source}", f"--target={copied}",
                  "--delete-extra", "--html=none", f"--json={tmp_path}/sync.json",
                  f"--state={tmp_path}/state2.json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CAUGHT UP" in done.stdout


def test_a_bad_uri_is_one_line_and_exit_4(chroma_source, tmp_path):
    done = vmtest("sync", f"--source={chroma_source}", "--target=qdrnt:///x", cwd=tmp_path)
    assert done.returncode == 4 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _spec(dataset):
    from vmtest.stores import CollectionSpec

    return CollectionSpec(dimension=dataset.vectors.shape[1], metric="cosine")


# -- PostgreSQL's change feed ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("id[text]:'doc-1' embedding[vector]:'[1,2]' metadata[jsonb]:'{\"a\": \"id[text]:x\"}'",
     [("id", "doc-1"), ("embedding", "[1,2]"), ("metadata", '{"a": "id[text]:x"}')]),
    ("id[text]:'it''s' n[integer]:5 d[text]:null", [("id", "it's"), ("n", "5"), ("d", None)]),
    ("old-key: id[text]:'a' new-tuple: id[text]:'b' x[double precision]:1.5",
     [("id", "a"), ("id", "b"), ("x", "1.5")]),
    ("(no-tuple-data)", []),
])
def test_test_decoding_rows_are_parsed_without_being_fooled_by_their_values(text, expected):
    assert list(decoded_columns(text)) == expected


def test_the_postgresql_feed_lists_what_was_written_and_deleted_since_its_position(
        postgres_server, dataset, request):
    uri = postgres_server.uri(f"feed_{request.node.name[-20:].lower().replace('-', '_')}")
    with open_store(uri, create=_spec(dataset)) as store:
        store.upsert(dataset.take(range(20)))
        feed = store.change_feed("vmtest_test_feed")
        try:
            assert not feed.resumed
            ids, position = feed.changes()
            assert ids == []
            store.upsert(RecordBatch(["it's", "doc-000001"], dataset.vectors[:2],
                                     [{}, {"k": "id[text]:'no'"}], [None, None]))
            store.delete(["doc-000005"])
            ids, position = feed.changes()
            assert ids == ["it's", "doc-000001", "doc-000005"]
            assert feed.changes()[0] == ids  # peeking consumes nothing
            feed.confirm(position)
            assert feed.changes()[0] == []
            reopened = store.change_feed("vmtest_test_feed")
            assert reopened.resumed
        finally:
            feed.drop()


def test_a_sync_from_postgresql_checks_only_the_changes_after_generation_0(
        postgres_server, dataset, tmp_path, request):
    source = postgres_server.uri(f"sync_{request.node.name[-12:].lower()}")
    target = f"qdrant:///{tmp_path}/qdrant?collection=docs"
    with open_store(source, create=_spec(dataset)) as store:
        store.upsert(dataset)
    calls = []

    def writes_off() -> bool:
        calls.append(1)
        if len(calls) == 2:  # between generations 0 and 1 the application writes
            with open_store(source) as store:
                store.upsert(RecordBatch(["new-1"], dataset.vectors[:1], [{"a": 1}], ["n"]))
                store.delete([dataset.ids[9]])
        return len(calls) >= 3

    with open_store(source) as src:
        copy_store(src, target)
        report = sync(src, target, SyncOptions(until_converged=True, interval_s=0.0,
                                               delete_extra=True), writes_off=writes_off)
    hows = [(g.how, g.checked, g.mismatches) for g in report.generations]
    assert hows[0] == ("digests", 300, 0)
    assert hows[1] == ("change feed", 2, 2)  # the two keys written, not the 300
    assert hows[-1] == ("change feed", 2, 0) and report.converged
    with open_store(target) as store:
        assert len(store.fetch([IdMapper(store).map("new-1")[0]])) == 1
        assert store.count() == 300
    with open_store(source) as src:  # a converged sync drops its replication slot
        rows = src._conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
        assert rows[0] == 0


# -- the dual-write journal --------------------------------------------------------------------

def test_writes_the_secondary_cannot_take_are_journaled_and_replayed_in_order(dataset,
                                                                             tmp_path):
    from vmtest.live.dualwrite import DualWriteStore, Journal

    class Flaky(MemoryStore):
        down = False

        def upsert(self, batch):
            if self.down:
                raise ConnectionError("secondary down")
            super().upsert(batch)

        def delete(self, ids):
            if self.down:
                raise ConnectionError("secondary down")
            super().delete(ids)

    primary, secondary = MemoryStore(), Flaky()
    store = DualWriteStore(primary, secondary, tmp_path / "journal.jsonl")
    store.upsert(dataset.take(range(10)))
    secondary.down = True
    store.upsert(RecordBatch(["doc-000001"], dataset.vectors[50:51], [{"v": 2}], [None]))
    store.delete(["doc-000002"])
    secondary.down = False
    # the secondary is back, but older entries wait in the journal: this write joins them
    store.upsert(RecordBatch(["doc-000001"], dataset.vectors[60:61], [{"v": 3}], [None]))
    # one failure: once the journal holds a write, the next ones queue behind it untried
    assert store.journal_depth == 3 and store.counters.secondary_failures == 1
    assert secondary.records["doc-000001"][2] != {"v": 3}
    report = store.replay()
    assert (report.entries, report.upserted, report.deleted) == (3, 1, 1)
    assert secondary.records["doc-000001"][2] == {"v": 3}
    assert "doc-000002" not in secondary.records
    assert store.journal_depth == 0 and Journal(tmp_path / "journal.jsonl").replayed() == 3
    again = store.replay()  # idempotent
    assert again.entries == 0


def test_a_torn_last_journal_line_is_ignored(tmp_path, dataset):
    from vmtest.live.dualwrite import Journal

    journal = Journal(tmp_path / "j.jsonl")
    journal.append("upsert", dataset.take(range(3)))
    with journal.path.open("a") as fh:
        fh.write('{"seq": 4, "op": "upsert", "id": "x", "vec')
    assert journal.last_seq() == 3 and [e["seq"] for e in journal.entries()] == [1, 2, 3]


# -- orphaned writes ---------------------------------------------------------------------------

def test_a_write_to_the_old_store_after_the_mark_is_listed_by_id(chroma_source, tmp_path,
                                                                 dataset):
    old = f"qdrant:///{tmp_path}/old?collection=docs"
    with open_store(chroma_source) as src:
        copy_store(src, old)
    mark = tmp_path / "mark.json"
    done = vmtest("cutover", "mark", f"--store={old}", f"--out={mark}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = vmtest("check", f"--source={old}", f"--orphans-since={mark}", cwd=tmp_path)
    assert done.returncode == 0 and "no write reached the old store" in done.stdout
    with open_store(old) as store:
        stored = IdMapper(store)
        store.upsert(RecordBatch([stored.map("late-write")[0]], dataset.vectors[:1],
                                 [{"original_id": "late-write"}], [None]))
        rows = store.fetch([stored.map(dataset.ids[4])[0]])
        store.upsert(RecordBatch(rows.ids, rows.vectors * 0.5 + 0.1, rows.metadatas,
                                 rows.documents))
        store.delete([stored.map(dataset.ids[8])[0]])
    done = vmtest("check", f"--source={old}", f"--orphans-since={mark}", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    for key in ("late-write", dataset.ids[4], dataset.ids[8]):
        assert key in done.stdout
    assert "1 created, 1 changed, 1 deleted" in done.stdout


def test_the_suites_orphans_check_runs_only_when_given_a_mark(pytester, chroma_source,
                                                              tmp_path, dataset):
    from tests.support import failed_checks, run_suite

    old = f"qdrant:///{tmp_path}/old?collection=docs"
    new = f"qdrant:///{tmp_path}/new?collection=docs"
    with open_store(chroma_source) as src:
        copy_store(src, old)
        copy_store(src, new)
    mark = tmp_path / "mark.json"
    with open_store(old) as store:
        from vmtest.live.orphans import mark as take_mark

        take_mark(store, mark)
    result, data = run_suite(pytester, old, new)
    assert result.ret == 0 and "orphans" not in {c["name"] for c in data["checks"]}
    with open_store(old) as store:
        store.upsert(RecordBatch([IdMapper(store).map("written-late")[0]], dataset.vectors[:1],
                                 [{"original_id": "written-late"}], [None]))
    result, data = run_suite(pytester, old, new, f"--vmtest-orphans-since={mark}")
    assert result.ret == 1 and "orphans" in failed_checks(data)
    orphans = next(c for c in data["checks"] if c["name"] == "orphans")
    assert [o["id"] for o in orphans["offenders"]] == ["written-late"]


def test_a_mark_of_another_store_is_refused_not_an_all_clear(chroma_source, tmp_path):
    old = f"qdrant:///{tmp_path}/old?collection=docs"
    with open_store(chroma_source) as src:
        copy_store(src, old)
    mark = tmp_path / "mark.json"
    assert vmtest("cutover", "mark", f"--store={old}", f"--out={mark}").returncode == 0
    done = vmtest("check", f"--source={chroma_source}", f"--orphans-since={mark}",
                  cwd=tmp_path)
    assert done.returncode == 4 and "was taken of" in done.stderr, done.stdout + done.stderr


def test_a_missing_mark_is_one_line_and_exit_4(chroma_source, tmp_path):
    done = vmtest("check", f"--source={chroma_source}", f"--orphans-since={tmp_path}/no.json",
                  cwd=tmp_path)
    assert done.returncode == 4 and "no cutover mark" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_sync_killed_with_sigkill_resumes_its_generation_and_its_feed(
        postgres_server, dataset, tmp_path):
    """kill -9 mid-run: the state says the generation reached and the outstanding
    mismatches; the replication slot is kept for the resume, which goes on from the feed
    (no new generation 0) and, converged, drops it."""
    import signal
    import time

    source = postgres_server.uri("killed_sync")
    target = f"qdrant:///{tmp_path}/qdrant?collection=docs"
    with open_store(source, create=_spec(dataset)) as store:
        store.upsert(dataset)
    with open_store(source) as src:
        copy_store(src, target)
    state, off = tmp_path / "state.json", tmp_path / "writes-off"
    args = ["-m", "vmtest.cli", "sync", f"--source={source}", f"--target={target}",
            "--until-converged", f"--writes-off-file={off}", "--interval=0.1",
            f"--state={state}", "--html=none", f"--json={tmp_path}/r.json"]
    first = subprocess.Popen([sys.executable, *args], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        saved = SyncState.load(state) if state.exists() else None
        if saved is not None and saved.generation >= 3:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    saved = SyncState.load(state)
    assert saved is not None and saved.generation >= 3 and saved.feed
    with open_store(source) as store:
        slots = store._conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
        assert [s[0] for s in slots] == [saved.feed]  # kept for the resume
        store.upsert(RecordBatch(["after-kill"], dataset.vectors[:1], [{"k": 1}], ["d"]))
    off.touch()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("generation ")]
    # resumed: the first generation of this run continues the numbering, from the feed
    assert lines[0].startswith(f"generation {saved.generation} (change feed)"), lines
    assert "1 missing" in lines[0]
    with open_store(source) as store:
        assert store._conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
