"""The migration runner on real stores: resumable after SIGKILL, refuses before writing,
never counts a failed batch as done."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.support import run_suite
from vmtest.datasets import clustered
from vmtest.errors import MigrationError, SchemaMismatchError, StoreNotFoundError
from vmtest.migrate import MigrationOptions, copy_store, make_plan, migrate
from vmtest.servers import ChromaServer
from vmtest.stores import CollectionSpec, RecordBatch, open_store


def jsonl_source(tmp_path: Path, batch: RecordBatch, name: str = "src") -> str:
    uri = f"jsonl://{tmp_path}/{name}.jsonl"
    with open_store(uri, create=CollectionSpec(batch.vectors.shape[1], "cosine")) as store:
        store.upsert(batch)
    return uri


def cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vmtest.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.mark.parametrize("target_kind", ["jsonl", "qdrant"])
def test_sigkill_at_random_points_then_resume_loses_and_doubles_nothing(
        pytester, tmp_path, target_kind):
    batch = clustered(6000, 16, seed=3)
    source = jsonl_source(tmp_path, batch)
    target = (f"jsonl://{tmp_path}/out.jsonl" if target_kind == "jsonl"
              else f"qdrant://{tmp_path}/q?collection=docs")
    state = tmp_path / "state.json"
    rng = random.Random(42)
    kills = 0
    for attempt in range(12):
        size = rng.choice([20, 37, 50, 64])  # the batch size may change between runs
        proc = cli("migrate", f"--source={source}", f"--target={target}", f"--state={state}",
                   f"--batch-size={size}")
        # wait until this run has made progress of its own, then kill it at a random moment
        before = json.loads(state.read_text())["done"] if state.exists() else 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if state.exists():
                try:
                    if json.loads(state.read_text())["done"] > before:
                        break
                except (ValueError, KeyError):
                    pass
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is None and attempt < 4:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            continue
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        if json.loads(state.read_text())["finished"]:
            break
    assert kills >= 3
    checkpoint = json.loads(state.read_text())
    assert checkpoint["finished"] and checkpoint["done"] == 6000
    assert len(checkpoint["history"]) >= kills
    result, data = run_suite(pytester, source, target)
    assert result.ret == 0, result.stdout.str()
    ids = next(c for c in data["checks"] if c["name"] == "ids")
    assert ids["figures"]["target_duplicates"] == 0 and ids["figures"]["matched"] == 6000


def test_ids_that_would_collide_are_refused_before_anything_is_written(tmp_path):
    vectors = np.eye(3, 4, dtype=np.float32)
    batch = RecordBatch([7, "7", "007"], vectors, [{}, {}, {}], [None] * 3)
    source = jsonl_source(tmp_path, batch)
    target = f"chroma://{tmp_path}/c?collection=docs"
    with open_store(source) as src, pytest.raises(
            MigrationError, match=r"would collide in the target .7 and '7'.") as info:
        migrate(src, target)
    assert "nothing was written" in str(info.value)
    with pytest.raises(StoreNotFoundError):
        open_store(target)


def test_unsupported_metadata_policy(tmp_path, pytester):
    batch = clustered(50, 8, seed=1)
    batch.metadatas[3]["nested"] = {"a": [1, 2]}
    batch.metadatas[4]["gone"] = None
    source = jsonl_source(tmp_path, batch)
    with open_store(source) as src:
        plan = make_plan(src, f"chroma://{tmp_path}/c?collection=refused", MigrationOptions())
        assert plan.affected_fields == {"nested": 1, "gone": 1}
        assert any("REFUSED" in line for line in plan.describe())
        refused = r"gone .1 records: Chroma holds no null.*nested .1 records: Chroma holds no dict"
        with pytest.raises(MigrationError, match=refused):
            migrate(src, f"chroma://{tmp_path}/c?collection=refused")
        with pytest.raises(StoreNotFoundError):
            open_store(f"chroma://{tmp_path}/c?collection=refused")
        for name, policy in (("asjson", "json"), ("dropped", "drop")):
            migrate(src, f"chroma://{tmp_path}/c?collection={name}",
                    MigrationOptions(on_unsupported=policy))
    with open_store(f"chroma://{tmp_path}/c?collection=asjson") as store:
        kept = {str(i): m for i, m in zip(*next((b.ids, b.metadatas) for b in
                                             store.iter_batches(100)), strict=True)}
    assert kept["doc-000003"]["nested"] == '{"a": [1, 2]}'
    # a lossy policy is a documented choice, and the suite still says what changed
    result, _data = run_suite(pytester, source, f"chroma://{tmp_path}/c?collection=dropped")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*doc-000003: 'nested' missing in the target*",
                                 "*doc-000004: 'gone' missing in the target*"])


@pytest.mark.parametrize("kind, names, target", [
    ("chroma", ("$price", "#tag"), "chroma://{tmp}/c?collection={name}"),
    ("milvus", ("$price", "vector"), "milvus://{tmp}/{name}.db?collection=docs"),
])
def test_a_field_name_the_target_reserves_is_refused_whatever_the_value_policy(
        tmp_path, kind, names, target):
    """Chroma refuses metadata keys starting with "$" or "#" at write time, Milvus "$..." and
    its own field names: a plan that let them through would fail half-way. JSON text keeps
    the name, so only dropping helps."""
    batch = clustered(30, 8, seed=2)
    batch.metadatas[5][names[0]] = 3
    batch.metadatas[6][names[1]] = "x"
    source = jsonl_source(tmp_path, batch)
    first, second = sorted(names)
    with open_store(source) as src:
        for name, policy in (("refused", "error"), ("asjson", "json")):
            uri = target.format(tmp=tmp_path, name=name)
            with pytest.raises(MigrationError, match=rf"names: '{re.escape(first)}' .1 "
                               rf"records: .* reserves.*'{re.escape(second)}'") as info:
                migrate(src, uri, MigrationOptions(on_unsupported=policy))
            assert "nothing was written" in str(info.value)
            with pytest.raises(StoreNotFoundError):
                open_store(uri)
        dropped = target.format(tmp=tmp_path, name="dropped")
        report = migrate(src, dropped, MigrationOptions(on_unsupported="drop"))
    assert report.affected_fields == {names[0]: 1, names[1]: 1}
    with open_store(dropped) as store:
        assert store.describe().count == 30


@pytest.mark.parametrize("where", ["document", "metadata", "key", "nested", "id"])
def test_text_that_is_no_unicode_is_refused_before_writing(tmp_path, where):
    """A lone surrogate (half of an emoji a client cut; JSON's "\\ud83d" reads back as one)
    cannot be encoded by any store: the write failed after the target was created. The plan
    refuses it, naming the record and where it is."""
    batch = clustered(20, 8, seed=3)
    half = "Hi HALF-AN-EMOJI"  # becomes the JSON escape of a lone surrogate in the file
    if where == "document":
        batch.documents[4] = half
    elif where == "metadata":
        batch.metadatas[4]["title"] = half
    elif where == "key":
        batch.metadatas[4][half] = 1
    elif where == "nested":
        batch.metadatas[4]["tags"] = ["ok", {"deep": half}]
    else:
        batch.ids[4] = half
    source = jsonl_source(tmp_path, batch)
    path = tmp_path / "src.jsonl"
    path.write_text(path.read_text().replace("HALF-AN-EMOJI", "\\ud83d"))
    target = f"chroma://{tmp_path}/c?collection=docs"
    with open_store(source) as src, pytest.raises(MigrationError,
                                                  match="not valid Unicode") as info:
        migrate(src, target)
    said = {"document": f"{batch.ids[4]}: its document",
            "metadata": f"{batch.ids[4]}: its metadata field 'title'",
            "key": f"{batch.ids[4]}: its metadata field 'Hi \\ud83d'",
            "nested": f"{batch.ids[4]}: its metadata field 'tags'",
            "id": "Hi \\ud83d: its id"}[where]  # printable: the surrogate escaped
    assert f"(first: {said})" in str(info.value)
    str(info.value).encode("utf-8")  # a terminal can print the message
    assert "nothing was written" in str(info.value)
    with pytest.raises(StoreNotFoundError):
        open_store(target)


def test_existing_target_of_another_shape_is_refused(tmp_path):
    source = jsonl_source(tmp_path, clustered(20, 8))
    target = f"qdrant://{tmp_path}/q?collection=docs"
    with open_store(target, create=CollectionSpec(16, "cosine")) as t:
        t.upsert(RecordBatch([1], np.ones((1, 16), np.float32), [{}], [None]))
    with open_store(source) as src, pytest.raises((MigrationError, SchemaMismatchError),
                                                  match="16"):
        migrate(src, target)


def test_a_state_file_of_another_migration_is_refused(tmp_path):
    source = jsonl_source(tmp_path, clustered(20, 8))
    state = tmp_path / "s.json"
    with open_store(source) as src:
        migrate(src, f"jsonl://{tmp_path}/a.jsonl", state_path=state)
        with pytest.raises(MigrationError, match="belongs to another migration"):
            migrate(src, f"jsonl://{tmp_path}/b.jsonl", state_path=state)


def test_a_batch_that_keeps_failing_stops_the_run_and_is_not_counted(tmp_path, pytester):
    batch = clustered(400, 8, seed=2)
    source = jsonl_source(tmp_path, batch)
    data_dir = tmp_path / "server"
    state = tmp_path / "state.json"
    server = ChromaServer(data_dir).start()
    port = server.port
    target = server.uri("docs")
    written = []

    def crash_after_two(b: RecordBatch) -> RecordBatch:
        written.append(len(b))
        if len(written) == 3:
            server.kill()  # the server dies while the third batch is on its way
        return b

    try:
        with open_store(source) as src, pytest.raises(MigrationError) as info:
            migrate(src, target, MigrationOptions(batch_size=100, retries=2, backoff_s=0.05),
                    state_path=state, transform=crash_after_two)
        message = str(info.value)
        assert "failed after 3 attempts" in message
        failed = json.loads((tmp_path / "state.json.failed.json").read_text())
        assert failed["ids"] == [f"doc-{i:06d}" for i in range(200, 300)]
        assert json.loads(state.read_text())["done"] == 200  # the failed batch is not done
    finally:
        server.stop()
    with ChromaServer(data_dir, port=port) as again, open_store(source) as src:
        report = migrate(src, again.uri("docs"), MigrationOptions(batch_size=100),
                         state_path=state)
        assert report.resumed_from == 200 and report.copied == 200
        result, _ = run_suite(pytester, source, again.uri("docs"))
        assert result.ret == 0, result.stdout.str()


def test_parallel_writers_into_a_server(tmp_path, chroma_server, pytester):
    source = jsonl_source(tmp_path, clustered(1200, 8, seed=4))
    target = chroma_server.uri(f"par-{os.getpid()}-{tmp_path.name}")
    with open_store(source) as src:
        report = migrate(src, target, MigrationOptions(batch_size=50, workers=4),
                         state_path=tmp_path / "s.json")
    assert report.copied == 1200 and report.batches == 24
    result, _ = run_suite(pytester, source, target)
    assert result.ret == 0, result.stdout.str()


def test_plan_writes_nothing_and_says_what_is_lossy(tmp_path):
    batch = clustered(30, 8)
    batch.metadatas[0]["deep"] = {"x": 1}
    source = jsonl_source(tmp_path, batch)
    target = f"chroma://{tmp_path}/c?collection=docs"
    proc = cli("plan", f"--source={source}", f"--target={target}")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "deep (1 records)" in out and "nothing was written" in out
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_cli_errors_are_one_line_with_a_hint_and_no_traceback(tmp_path):
    proc = cli("migrate", "--source=jsonl:///nope.jsonl", f"--target=jsonl://{tmp_path}/x.jsonl")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4
    assert err.startswith("vmtest: error: the file /nope.jsonl does not exist (hint: ")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_export_then_import_round_trips(tmp_path, pytester, chroma_source):
    export = f"parquet://{tmp_path}/export"
    back = f"qdrant://{tmp_path}/q?collection=docs"
    for args in (("export", f"--source={chroma_source}", f"--to={export}", "--batch-size=64"),
                 ("import", f"--source={export}", f"--to={back}", "--verify",
                  "-m", "not latency")):
        proc = cli(*args, cwd=tmp_path)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out + err
    assert len(list((tmp_path / "export").glob("part-*.parquet"))) == 5  # streamed in parts
    result, _ = run_suite(pytester, chroma_source, back)
    assert result.ret == 0


def test_a_metadata_field_named_like_the_document_field_is_refused_before_writing(tmp_path):
    """Found by the property test: Qdrant keeps documents in the payload field 'document'; a
    source record whose metadata already has that field would lose one or the other."""
    from vmtest.errors import MigrationError
    from vmtest.migrate import copy_store
    from vmtest.stores import CollectionSpec, RecordBatch, open_store

    source = f"jsonl://{tmp_path}/s.jsonl"
    with open_store(source, create=CollectionSpec(2, "l2")) as store:
        store.upsert(RecordBatch([0], np.ones((1, 2), np.float32), [{"document": False}], [""]))
    target = f"qdrant://{tmp_path}/q?collection=docs"
    with open_store(source) as src:
        with pytest.raises(MigrationError, match=r"(?s)metadata field .document.*nothing was"):
            copy_store(src, target)
        copy_store(src, target, document_field="text")  # another field: nothing clashes
    with open_store(target) as dst:
        batch = next(dst.iter_batches(10))
    assert batch.metadatas[0] == {"document": False, "text": ""}


def test_milvus_ids_that_break_its_iterator_are_mapped_and_read_back(tmp_path):
    """Found by the property test: Milvus's query iterator pages with a filter on the primary
    key, which a quote, a backslash or a line break in a VarChar id breaks."""
    from vmtest.matching import Matching, read_snapshot
    from vmtest.migrate import copy_store
    from vmtest.stores import CollectionSpec, RecordBatch, open_store

    ids = ['say "hi"', "it's", "back\\slash", "line\nbreak", "plain"]
    source = f"jsonl://{tmp_path}/s.jsonl"
    with open_store(source, create=CollectionSpec(2, "l2")) as store:
        store.upsert(RecordBatch(ids, np.ones((5, 2), np.float32), [{}] * 5, [None] * 5))
    target = f"milvus://{tmp_path}/m.db?collection=docs"
    with open_store(source) as src:
        copy_store(src, target)
    with open_store(target) as dst:
        snap = read_snapshot(dst, Matching())
    assert sorted(snap.keys) == sorted(ids)
    assert "plain" in snap.native_ids  # kept as it is; the others were mapped


def test_an_id_pgvector_must_map_is_planned_as_mapped(tmp_path, postgres_server):
    """A NUL in an id: pgvector maps the id (UUIDv5) and would keep the source id in the
    payload, where jsonb cannot hold a NUL either. The plan must see the mapping the write
    will do and refuse before writing (found by the property test: the plan judged ids by
    the base rule, the write by pgvector's)."""
    batch = RecordBatch([0, "\x00"], np.eye(2, 4, dtype=np.float32), [{}, {}], [None, None])
    source = jsonl_source(tmp_path, batch)
    target = postgres_server.uri("nul_ids")
    with open_store(source) as src, pytest.raises(MigrationError) as info:
        migrate(src, target)
    assert "nothing was written" in str(info.value)
    assert "original_id" in str(info.value)
    with pytest.raises(StoreNotFoundError):
        open_store(target)


def _vmtest(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_a_deleted_target_is_never_nothing_to_do(chroma_source, tmp_path):
    """The state travels with a folder target and is checked against it: the folder deleted
    after a finished migration, the same command refuses with the reason; --restart copies
    again."""
    import shutil

    target = f"qdrant:///{tmp_path}/q?collection=docs"
    done = _vmtest("migrate", f"--source={chroma_source}", f"--target={target}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "q.docs.vmtest-state.json").exists()  # beside the target
    assert not (tmp_path / "reports").exists()
    shutil.rmtree(tmp_path / "q")
    again = _vmtest("migrate", f"--source={chroma_source}", f"--target={target}", cwd=tmp_path)
    assert again.returncode == 4, again.stdout + again.stderr
    assert "nothing to do" not in again.stdout
    assert "says 300 records were migrated" in again.stderr and "does not exist" in again.stderr
    assert not (tmp_path / "q").exists()  # refused: nothing created
    fresh = _vmtest("migrate", f"--source={chroma_source}", f"--target={target}", "--restart",
                    cwd=tmp_path)
    assert fresh.returncode == 0 and "copied 300 records" in fresh.stdout
    with open_store(target) as store:
        assert store.count() == 300


def test_a_recreated_server_collection_is_never_nothing_to_do(chroma_source, qdrant_server,
                                                              tmp_path):
    target = qdrant_server.uri("recreated")
    state = tmp_path / "state.json"
    done = _vmtest("migrate", f"--source={chroma_source}", f"--target={target}",
                   f"--state={state}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with open_store(target) as store:  # recreated: same name, other records
        store._client.delete_collection("recreated")
    with open_store(chroma_source) as src:
        copy_store(src, target, transform=lambda b: RecordBatch(
            [str(uuid.uuid4()) for _ in b.ids], b.vectors, b.metadatas, b.documents))
    again = _vmtest("migrate", f"--source={chroma_source}", f"--target={target}",
                    f"--state={state}", cwd=tmp_path)
    assert again.returncode == 4 and "nothing to do" not in again.stdout
    assert "does not hold the last record written" in again.stderr, again.stderr


@pytest.mark.parametrize("kind", ["chroma", "jsonl"])
def test_full_precision_floats_into_a_qdrant_server_are_copied_and_counted(
        tmp_path, dataset, qdrant_server, kind):
    """Random full-precision floats (scores, similarities) into a Qdrant server: the defaults
    copy them and say how many the server may round; --verify passes. From a JSONL source
    (exact doubles) the server rounds about one in ten, and the metadata check's warning
    counts them; Chroma rounds on its own write the way the server does, so from Chroma
    nothing more changes. --strict-floats refuses before writing."""
    import random

    from tests.support import build_chroma

    rng = random.Random(11)
    batch = RecordBatch(list(dataset.ids), dataset.vectors.copy(),
                        [{**m, "similarity": rng.random()} for m in dataset.metadatas],
                        list(dataset.documents))
    if kind == "chroma":
        source = build_chroma(tmp_path / "chroma", batch)
    else:
        source = f"jsonl://{tmp_path}/src.jsonl?metric=cosine"
        with open_store(source, create=CollectionSpec(batch.vectors.shape[1], "cosine")) as s:
            s.upsert(batch)
    strict_target = qdrant_server.uri(f"strict-{kind}-{tmp_path.name}")
    refused = _vmtest("migrate", f"--source={source}", f"--target={strict_target}",
                      "--strict-floats", cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "may round" in refused.stderr and "--strict-floats" in refused.stderr
    with pytest.raises(StoreNotFoundError):
        open_store(strict_target)  # nothing written
    target = qdrant_server.uri(f"floats-{kind}-{tmp_path.name}")
    done = _vmtest("migrate", f"--source={source}", f"--target={target}", "--verify",
                   f"--vmtest-json={tmp_path}/report.json", "--vmtest-html=none",
                   "-m", "not latency", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "floats the target may have rounded" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    metadata = next(c for c in report["checks"] if c["name"] == "metadata")
    if kind == "jsonl":
        assert metadata["status"] == "warning", metadata
        assert 0 < metadata["figures"]["floats_rounded"] < len(batch)
    else:
        assert metadata["status"] == "passed", metadata


class _CountedReads:
    """A real store's reads, counted: which reads a migration made of its source."""

    def __init__(self, store) -> None:
        self.whole: list[bool] = []  # one entry per iter_batches: with vectors or not
        self.vectors_alone = 0
        iter_batches, iter_vectors = store.iter_batches, store.iter_vectors

        def counted_batches(size, *, with_vectors=True):
            self.whole.append(with_vectors)
            return iter_batches(size, with_vectors=with_vectors)

        def counted_vectors(size):
            self.vectors_alone += 1
            return iter_vectors(size)

        store.iter_batches, store.iter_vectors = counted_batches, counted_vectors


@pytest.mark.parametrize("keep", ["within", "beyond"])
def test_metadata_is_read_once_where_the_source_reads_vectors_apart(
        chroma_source, tmp_path, pytester, monkeypatch, keep):
    """From Chroma the plan's read of ids, metadata and documents is kept for the copy, which
    reads vectors alone; a source beyond the memory kept for that is read whole again. Both
    copies are faithful record by record."""
    from vmtest.migrate import runner

    if keep == "beyond":
        monkeypatch.setattr(runner, "KEEP_BYTES", 10_000)
    target = f"qdrant://{tmp_path}/q?collection=docs"
    with open_store(chroma_source) as src:
        reads = _CountedReads(src)
        report = migrate(src, target, MigrationOptions(batch_size=64),
                         state_path=tmp_path / "state.json")
    assert report.copied == 300
    if keep == "within":
        assert (reads.whole, reads.vectors_alone) == ([False], 1)
    else:
        assert reads.whole == [False, True]  # the plan's read, and the copy's of everything
    result, _ = run_suite(pytester, chroma_source, target)
    assert result.ret == 0, result.stdout.str()


@pytest.mark.parametrize("change", ["deleted", "added"])
def test_a_source_changed_between_the_plan_and_the_copy_stops_the_copy(
        tmp_path, dataset, monkeypatch, change):
    """The copy takes metadata from the plan's read and vectors from its own: a record
    deleted or added in between must not pair one record's vector with another's metadata
    or be dropped silently."""
    from tests.support import build_chroma
    from vmtest.migrate import runner

    source = build_chroma(tmp_path / "chroma", dataset.take(range(200)))
    planned = runner.make_plan

    def plan_then_change(*args, **kwargs):
        plan = planned(*args, **kwargs)
        with open_store(source) as writer:
            if change == "deleted":
                writer.delete([dataset.ids[5]])
            else:
                writer.upsert(dataset.take(range(200, 201)))
        return plan

    monkeypatch.setattr(runner, "make_plan", plan_then_change)
    with open_store(source) as src, pytest.raises(MigrationError,
                                                  match="source changed between"):
        migrate(src, f"qdrant://{tmp_path}/q?collection=docs", MigrationOptions(batch_size=64))


def test_read_ahead_keeps_order_raises_what_the_read_raises_and_stops_with_its_reader():
    from vmtest.migrate.runner import read_ahead

    batches = [RecordBatch([i], None, [{}], [None]) for i in range(10)]
    assert [b.ids[0] for b in read_ahead(iter(batches))] == list(range(10))

    def failing():
        yield batches[0]
        raise StoreNotFoundError("the store went away")

    got = read_ahead(failing())
    assert next(got).ids == [0]
    with pytest.raises(StoreNotFoundError, match="went away"):
        next(got)

    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield RecordBatch([i], None, [{}], [None])
                i += 1
        finally:
            closed.append(True)

    reader = read_ahead(endless(), depth=2)
    assert next(reader).ids == [0]
    reader.close()  # the consumer stops early: the read stops and its generator is closed
    assert closed == [True]


def test_verify_after_a_migration_holds_under_w_error(chroma_source, qdrant_server, tmp_path):
    """``migrate --verify`` runs the suite in the process that migrated: the store libraries
    are imported by then (a Qdrant server's client imports anyio, a pytest plugin), and
    pytest's warning that it cannot rewrite them must neither show nor, under the user's
    ``-W error``, crash the run."""
    target = qdrant_server.uri(f"verified-{tmp_path.name}")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}  # every plugin
    done = subprocess.run([sys.executable, "-m", "vmtest.cli", "migrate",
                           f"--source={chroma_source}", f"--target={target}", "--verify",
                           "-m", "not latency", "-W", "error"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout[-3000:]
    assert "DATA FIDELITY: FAITHFUL" in done.stdout
