"""The contract every store passes, each against its real engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.support import MemoryStore, fresh_uri
from vmtest.checks.fidelity import check_documents, check_ids, check_metadata, check_vectors
from vmtest.errors import ConfigError, SchemaMismatchError, StoreNotFoundError
from vmtest.matching import Matching, align, read_snapshot
from vmtest.migrate.mapping import IdMapper, MetadataPolicy, map_batch
from vmtest.provision import kinds
from vmtest.stores import CollectionSpec, RecordBatch, VectorStore, open_store
from vmtest.stores.files import JsonlStore

KINDS = kinds("process", vectors=None)  # stores without vectors pass it too


@pytest.fixture
def store_uri(request, tmp_path: Path) -> Callable[[str], str]:
    kind = request.param

    def make(name: str = "contract") -> str:
        return fresh_uri(request, kind, tmp_path / name, f"{name}-{tmp_path.name}")

    return make


def mapped_for(store: VectorStore, batch: RecordBatch) -> RecordBatch:
    """The batch as the store takes it (without vectors for a store of records)."""
    source = JsonlStore  # the dataset carries documents in a column, as a file store does
    mapped = map_batch(batch, source, IdMapper(store), MetadataPolicy(store), "document")
    mapped.vectors = mapped.vectors if store.HAS_VECTORS else None
    return mapped


def write(uri: str, batch: RecordBatch, metric: str = "cosine") -> VectorStore:
    store = open_store(uri, create=CollectionSpec(batch.vectors.shape[1], metric))
    mapped = mapped_for(store, batch)
    for start in range(0, len(mapped), 100):
        store.upsert(mapped.take(range(start, min(start + 100, len(mapped)))))
    return store


pytestmark = pytest.mark.parametrize("store_uri", KINDS, indirect=True)


def test_round_trip_is_exact(store_uri, dataset):
    with write(store_uri(), dataset) as store:
        assert store.count() == len(dataset)
        snap = read_snapshot(store, Matching(), batch_size=64)
        original = read_snapshot(MemoryStore.holding(dataset), Matching())
        al = align(original, snap)
        assert check_ids(al).passed, check_ids(al).explain()
        if store.HAS_VECTORS:
            vec = check_vectors(al.keys, original.vectors[al.source_idx],
                                snap.vectors[al.target_idx], metric="cosine")
            assert vec.passed, vec.explain()
        else:
            assert snap.vectors is None, "a store without vectors read some"
        meta = check_metadata(al.keys, [original.metadatas[i] for i in al.source_idx],
                              [snap.metadatas[i] for i in al.target_idx])
        assert meta.passed, meta.explain()
        docs = check_documents(al.keys, [original.documents[i] for i in al.source_idx],
                               [snap.documents[i] for i in al.target_idx])
        assert docs.passed, docs.explain()


def test_describe_reports_shape_and_count(store_uri, dataset):
    with write(store_uri(), dataset, metric="l2") as store:
        inv = store.describe()
        shape = (dataset.vectors.shape[1], "l2", "float32") if store.HAS_VECTORS \
            else (None, None, None)
    assert (inv.count, inv.dimension, inv.metric, inv.dtype) == (len(dataset), *shape)
    assert "topic" in inv.metadata_types
    assert inv.metadata_types["year"] == ["int"]


def test_batches_cover_every_record_once(store_uri, dataset):
    with write(store_uri(), dataset) as store:
        ids = [rid for batch in store.iter_batches(37) for rid in batch.ids]
        assert len(ids) == len(set(map(str, ids))) == len(dataset)
        assert all(len(b) <= 37 for b in store.iter_batches(37, with_vectors=False))


def test_vectors_read_alone_come_in_the_batches_of_whole_records(store_uri, dataset):
    """A store that reads vectors apart (the runner then keeps the plan's metadata and reads
    only vectors in the copy) gives the ids of iter_batches, batch for batch, each with the
    vector iter_batches gives it; a store that does not says None."""
    with write(store_uri(), dataset) as store:
        alone = store.iter_vectors(37)
        if alone is None:
            return
        whole = list(store.iter_batches(37))
        parts = list(alone)
        assert [list(map(str, b.ids)) for b in parts] == [list(map(str, b.ids)) for b in whole]
        for part, batch in zip(parts, whole, strict=True):
            assert part.vectors.dtype == np.float32
            assert np.array_equal(part.vectors, batch.vectors)


def test_partitions_hold_every_record_once(store_uri, dataset):
    """Whatever partitions a store splits itself into, together they hold each record once;
    the same store gives the same partitions every time; ``existing`` says which of a list
    of ids the store holds."""
    with write(store_uri(), dataset.take(range(60))) as store:
        ids = sorted(str(rid) for b in store.iter_batches(1000, with_vectors=False)
                     for rid in b.ids)
        parts = store.partitions(3)
        assert [p.index for p in parts] == list(range(len(parts)))
        read = [str(rid) for p in parts for b in store.read_partition(p, 25) for rid in b.ids]
        assert sorted(read) == ids, [p.label for p in parts]
        assert store.partitions(3) == parts
        asked = [*next(store.iter_batches(5, with_vectors=False)).ids, "no-such-id"]
        assert sorted(map(str, store.existing(asked))) == sorted(map(str, asked[:5]))


def test_fetch_and_search(store_uri, dataset):
    with write(store_uri(), dataset) as store:
        some = next(iter(store.iter_batches(10)))
        got = store.fetch(some.ids[:5])
        assert sorted(map(str, got.ids)) == sorted(map(str, some.ids[:5]))
        if not store.HAS_VECTORS:
            assert some.vectors is None and got.vectors is None
            with pytest.raises(ConfigError, match="holds no vectors"):
                store.search(np.ones((1, 4), np.float32), 5)
            return
        hits = store.search(some.vectors[:3], 5)
        assert [str(row[0]) for row in hits] == [str(i) for i in some.ids[:3]]
        topic = some.metadatas[0]["topic"]
        filtered = store.search(some.vectors[:3], 5, where={"topic": topic})
        chosen = {str(i) for row in filtered for i in row}
        fetched = store.fetch(list(chosen))
        assert {m["topic"] for m in fetched.metadatas} == {topic}


def test_missing_collection_and_shape_mismatch_are_clear_errors(store_uri, dataset):
    with pytest.raises(StoreNotFoundError):
        open_store(store_uri("absent"))
    with write(store_uri("shape"), dataset) as store:
        if not store.HAS_VECTORS:
            return  # no dimension or metric to disagree with
    with pytest.raises(SchemaMismatchError, match=r"dimension|metric"):
        open_store(store_uri("shape"), create=CollectionSpec(8, "cosine")).close()


def test_search_returns_nearest_first(store_uri, dataset):
    with write(store_uri(), dataset, metric="l2") as store:
        if not store.HAS_VECTORS:
            pytest.skip(f"{type(store).__name__} holds no vectors: nothing to search")
        q = dataset.vectors[10:11] + np.float32(0.001)
        hits = store.search(q, 3)[0]
        assert len(hits) == 3


def test_writing_the_same_records_again_leaves_one_of_each(store_uri, dataset):
    """What a resumed migration relies on: a batch sent twice (it may or may not have landed
    before a crash) is one record each in a store that upserts; an append-only store cuts
    back to a write position instead."""
    part = dataset.take(range(40))
    with write(store_uri(), part) as store:
        if store.IDEMPOTENT_WRITES:
            store.upsert(mapped_for(store, part))
            assert store.count() == 40
        else:
            mark = store.write_position()
            store.upsert(mapped_for(store, part.take(range(5))))
            assert store.count() == 45
            store.rewind_to(mark)
            assert store.count() == 40


def test_deleted_records_are_gone_and_deleting_again_is_harmless(store_uri, dataset):
    """What a sync that drops extra records, and a dual write, rely on: delete() takes the
    records it names out of every read, ignores an id named twice or never written, and
    deleting the same ids again changes nothing."""
    from vmtest.stores import store_class
    from vmtest.uri import parse

    uri = store_uri()
    cls = store_class(parse(uri).scheme)
    if not cls.CAN_DELETE:
        pytest.skip(f"{cls.__name__} says CAN_DELETE = False: it cannot delete records")
    with write(uri, dataset) as store:
        first = next(iter(store.iter_batches(10)))
        gone = {str(rid) for rid in first.ids[:3]}
        never = IdMapper(store).map("never-written")[0]
        asked = [first.ids[0], first.ids[1], first.ids[0], never, first.ids[2]]

        def held() -> set[str]:
            return {str(rid) for b in store.iter_batches(64, with_vectors=False)
                    for rid in b.ids}

        store.delete(asked)
        assert store.count() == len(dataset) - 3, (
            f"deleting {asked} left {store.count()} of {len(dataset)} records, not "
            f"{len(dataset) - 3}")
        fetched = store.fetch(first.ids[:3])
        assert not fetched.ids, f"fetch still returns the deleted {fetched.ids}"
        kept = store.fetch(first.ids[3:6])
        assert sorted(map(str, kept.ids)) == sorted(map(str, first.ids[3:6])), (
            f"fetch of the kept {first.ids[3:6]} returned {kept.ids}")
        left = held()
        assert len(left) == len(dataset) - 3 and not left & gone, (
            f"iter_batches yields {len(left)} ids, the deleted among them: {left & gone}")
        topic = first.metadatas[0]["topic"]
        for where in ((None, {"topic": topic}) if store.HAS_VECTORS else ()):
            hits = store.search(first.vectors[:3], 10, where=where)
            found = {str(rid) for row in hits for rid in row}
            assert all(hits) and not found & gone, (
                f"search (where={where}) returned the deleted {found & gone} or nothing: "
                f"{hits}")

        store.delete(asked)
        store.delete([])
        assert store.count() == len(dataset) - 3, (
            f"deleting {asked} again changed the count to {store.count()}")
        assert held() == left, f"deleting again changed the ids: {held() ^ left}"


def test_a_closed_store_can_be_opened_again(store_uri, dataset):
    """close() releases what the store held (a local folder's lock, a connection)."""
    uri = store_uri()
    write(uri, dataset.take(range(20))).close()
    with open_store(uri) as again:
        assert again.count() == 20


def test_float_metadata_comes_back_within_the_rounding_the_store_declares(store_uri):
    """The declared FLOAT_ROUNDING_ULPS is a measurement, not an assumption: 6,000 doubles
    of every magnitude (full-precision fractions, large values, 1e-30 to 1e30) written and
    read back; none may move further than the store says."""
    import random

    from vmtest.checks.fidelity import ulps_apart
    from vmtest.uri import parse

    rng = random.Random(1)
    values = ([rng.random() for _ in range(2000)] + [rng.uniform(-1e6, 1e6) for _ in range(2000)]
              + [rng.random() * 10 ** rng.randint(-30, 30) for _ in range(2000)])
    uri = store_uri("floats")
    with open_store(uri, create=CollectionSpec(4, "cosine")) as store:
        mapper = IdMapper(store)
        ids = [mapper.map(f"f{i}")[0] for i in range(len(values))]
        for start in range(0, len(values), 500):
            rows = range(start, min(start + 500, len(values)))
            store.upsert(RecordBatch([ids[i] for i in rows], np.ones((len(rows), 4), np.float32)
                                     if store.HAS_VECTORS else None,
                                     [{"x": values[i], "original_id": f"f{i}"} for i in rows],
                                     [None] * len(rows)))
        read = {m["original_id"]: m["x"] for b in store.iter_batches(1000, with_vectors=False)
                for m in b.metadatas}
        declared = type(store).float_rounding_ulps(parse(uri))
    moved = [ulps_apart(v, read[f"f{i}"]) for i, v in enumerate(values)]
    assert max(moved) <= declared, (max(moved), declared)
    if declared:  # a store that declares rounding really rounds (else the claim is stale)
        assert sum(1 for m in moved if m) > 0
