"""The parts of a comparison, each on its own: a side's reader, the fidelity run, the search
comparison. Real stores held in memory (tests/support.py), counting their reads."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import MemoryStore
from vmtest.errors import ConfigError
from vmtest.fidelity_run import FidelityRun
from vmtest.matching import Matching
from vmtest.search_run import SearchComparison
from vmtest.settings import Settings
from vmtest.side import Side
from vmtest.stores import RecordBatch


class CountingStore(MemoryStore):
    """A memory store that counts its full reads and its fetches."""

    def __init__(self, metric: str = "cosine") -> None:
        super().__init__(metric)
        self.scans = 0
        self.fetches = 0

    def iter_batches(self, batch_size, *, with_vectors=True):
        self.scans += 1
        yield from super().iter_batches(batch_size, with_vectors=with_vectors)

    def fetch(self, ids):
        self.fetches += 1
        return super().fetch(ids)


def holding(batch: RecordBatch, metric: str = "cosine") -> CountingStore:
    store = CountingStore(metric)
    store.upsert(batch)
    return store


def reversed_copy(batch: RecordBatch) -> RecordBatch:
    order = list(range(len(batch)))[::-1]
    return batch.take(order)


def side(store, name="source", **kwargs) -> Side:
    return Side(store, Matching(), name=name, batch_size=64, **kwargs)


# -- a side -----------------------------------------------------------------------------------

def test_a_side_reads_its_store_once_however_often_it_is_asked(dataset):
    store = holding(dataset)
    s = side(store)
    first = s.snapshot
    assert s.snapshot is first and len(first) == len(dataset)
    assert s.vectors.shape == (len(dataset), dataset.vectors.shape[1])
    assert store.scans == 1


def test_a_spilled_side_holds_the_same_records_as_one_read_into_memory(dataset, tmp_path):
    in_memory, spilled = side(holding(dataset)), side(holding(dataset), partitions=lambda: 3)
    try:
        assert spilled.streaming and not in_memory.streaming
        a, b = in_memory.snapshot, spilled.snapshot
        assert sorted(a.keys) == sorted(b.keys)
        by_key = {k: m for k, m in zip(b.keys, b.metadatas, strict=True)}
        assert all(by_key[k] == m for k, m in zip(a.keys, a.metadatas, strict=True))
        rows = {k: i for i, k in enumerate(b.keys)}
        order = [rows[k] for k in a.keys]
        assert np.allclose(spilled.vectors[order], in_memory.vectors)
    finally:
        spilled.close()


def test_a_side_takes_a_snapshot_kept_by_another_read_only_before_its_own(dataset):
    store = holding(dataset)
    fresh = side(store)
    kept = side(holding(dataset)).snapshot
    fresh.keep(kept)
    assert fresh.snapshot is kept and store.scans == 0
    read = side(store)
    own = read.snapshot
    read.keep(kept)
    assert read.snapshot is own  # what it returned never changes


def test_a_side_without_vectors_fetches_those_asked_for_by_id(dataset):
    store = holding(dataset)
    s = side(store, with_vectors=False)
    assert s.snapshot.vectors is None
    rows = [5, 0, 17]
    got = s.vectors_at(rows)
    expected = np.stack([dataset.vectors[dataset.ids.index(s.snapshot.keys[r])] for r in rows])
    assert np.allclose(got, expected) and store.fetches == 1


def test_a_sides_hits_are_keys_and_an_id_it_never_listed_is_named_unknown(dataset):
    store = holding(dataset)
    s = side(store)
    hits = s.hits(dataset.vectors[:3], 5)
    assert [row[0] for row in hits] == list(dataset.ids[:3])
    store.upsert(RecordBatch(["late"], dataset.vectors[:1] * 1.0, [{}], [None]))
    assert "<unknown late>" in s.hits(dataset.vectors[:1], 2)[0]


# -- the fidelity run ----------------------------------------------------------------------------

def fidelity(source: RecordBatch, target: RecordBatch, **settings) -> dict:
    config = Settings(**settings)
    run = FidelityRun(side(holding(source)), side(holding(target), "target"), config, "cosine")
    return run.results()


def test_the_fidelity_run_passes_a_faithful_copy_by_digests_and_in_full(dataset):
    for mode in ("digest", "full"):
        results = fidelity(dataset, reversed_copy(dataset), compare=mode)
        assert {name: r.status for name, r in results.items()} == {
            "ids": "passed", "vectors": "passed", "metadata": "passed",
            "documents": "passed"}, mode


def test_the_fidelity_run_names_the_one_record_whose_metadata_changed(dataset):
    broken = reversed_copy(dataset)
    i = broken.ids.index("doc-000042")
    broken.metadatas[i] = {**broken.metadatas[i], "year": str(broken.metadatas[i]["year"])}
    for mode in ("digest", "full"):
        results = fidelity(dataset, broken, compare=mode)
        assert results["metadata"].status == "failed", mode
        assert "doc-000042" in results["metadata"].explain(), mode
        assert results["ids"].status == "passed" and results["vectors"].status == "passed"


def test_the_fidelity_run_fails_a_lost_record_and_a_truncated_vector(dataset):
    lost = dataset.take([i for i in range(len(dataset)) if dataset.ids[i] != "doc-000007"])
    assert "doc-000007" in fidelity(dataset, lost)["ids"].explain()
    cut = reversed_copy(dataset)
    cut.vectors = cut.vectors.copy()
    cut.vectors[cut.ids.index("doc-000100"), -4:] = 0.0
    results = fidelity(dataset, cut)
    assert results["vectors"].status == "failed" and "doc-000100" in results["vectors"].explain()


def test_the_fidelity_run_reads_each_store_once_on_the_digest_path(dataset):
    source, target = holding(dataset), holding(reversed_copy(dataset))
    a, b = side(source), side(target, "target")
    FidelityRun(a, b, Settings(), "cosine").results()
    # the digest read kept the records it read: reading them now scans nothing again
    assert len(a.snapshot) == len(b.snapshot) == len(dataset)
    assert (source.scans, target.scans) == (1, 1)


# -- the search comparison -------------------------------------------------------------------

def search(source: RecordBatch, target: RecordBatch, metric: str = "cosine", **settings
           ) -> SearchComparison:
    return SearchComparison(side(holding(source, metric)), side(holding(target), "target"),
                            Settings(**settings))


def test_the_search_comparison_finds_an_identical_copy_answers_exactly(dataset):
    outcomes = search(dataset, reversed_copy(dataset), queries=25, k=5).outcomes()
    assert len(outcomes) == 25
    assert all(o.source_recall == o.target_recall == o.agreement == 1.0 for o in outcomes)
    assert not any(o.missing for o in outcomes)


def test_the_search_comparison_sees_a_target_that_answers_worse(dataset):
    shuffled = reversed_copy(dataset)
    rng = np.random.default_rng(3)
    shuffled.vectors = shuffled.vectors[rng.permutation(len(shuffled))]
    outcomes = search(dataset, shuffled, queries=25, k=5).outcomes()
    assert all(o.source_recall == 1.0 for o in outcomes)
    assert np.mean([o.target_recall for o in outcomes]) < 0.5


def test_the_queries_do_not_depend_on_the_order_a_store_returns_its_records(dataset):
    a = search(dataset, dataset, queries=30).queries
    b = search(reversed_copy(dataset), dataset, queries=30).queries
    assert sorted(a.labels) == sorted(b.labels)
    by_label = dict(zip(b.labels, b.vectors, strict=True))
    assert np.allclose(a.vectors, np.stack([by_label[label] for label in a.labels]))


def test_filter_values_are_the_most_common_first_and_a_filter_narrows_the_truth(dataset):
    comparison = search(dataset, dataset, queries=10, k=5)
    topics = [m["topic"] for m in dataset.metadatas]
    values = comparison.filter_values("topic", limit=2)
    assert values == sorted(set(topics), key=lambda t: (-topics.count(t), t))[:2]
    # both stores filter; the ground truth is over the matching records only, so an
    # identical copy answers exactly (over every record, it would seem to miss most)
    outcomes = comparison.outcomes({"topic": values[0]})
    assert len(outcomes) == 10
    assert all(o.source_recall == o.target_recall == 1.0 for o in outcomes)
    with pytest.raises(ConfigError, match="no source record"):
        comparison.filter_values("nowhere")


def test_without_the_sources_metric_there_is_no_ground_truth(dataset):
    comparison = search(dataset, dataset, metric=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="metric"):
        comparison.outcomes()
