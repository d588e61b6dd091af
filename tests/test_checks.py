"""The pure checks, on hand-made data: each can fail, and fails for the right reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from vmtest.checks.fidelity import (
    check_documents,
    check_ids,
    check_inventory,
    check_metadata,
    check_vectors,
    same_value,
)
from vmtest.checks.search import check_latency, check_recall, check_schema_drift, score_queries
from vmtest.checks.stats import clopper_pearson_upper, sample_size_for, wilson_interval
from vmtest.knn import exact_topk
from vmtest.matching import Matching, Snapshot, align
from vmtest.stores.base import Inventory


@pytest.mark.parametrize(
    ("a", "b", "lenient", "equal"),
    [
        (42, "42", False, False),
        (1, 1.0, False, False),
        (1, 1.0, True, True),
        (True, 1, True, False),  # a bool is never a number, even leniently
        (float("nan"), float("nan"), False, True),
        ([1, 2], [1, 2.0], False, False),
        ({"a": [1]}, {"a": [1]}, False, True),
        ({"a": 1}, {"a": 1, "b": None}, False, False),
        (None, None, False, True),
        ("x", "x ", False, False),
    ],
)
def test_same_value_keeps_types(a, b, lenient, equal):
    assert same_value(a, b, lenient_numbers=lenient) is equal


def snap(keys):
    return Snapshot(keys=list(keys), native_ids=list(keys), metadatas=[{}] * len(keys),
                    documents=[None] * len(keys))


def test_ids_lists_first_twenty_and_counts_all():
    source = snap([f"s{i}" for i in range(50)])
    target = snap([f"s{i}" for i in range(10)] + ["x", "x"])
    result = check_ids(align(source, target))
    assert not result.passed
    assert result.figures["missing"] == 40 and result.figures["extra"] == 1
    assert result.figures["target_duplicates"] == 1
    assert result.offending_total == 42
    assert len(result.offenders) == 20
    assert "... and 22 more" in result.explain()


def test_vectors_tolerance_absolute_and_relative():
    keys = ["a", "b"]
    s = np.array([[1.0, 100.0], [0.5, 0.5]])
    t = s + np.array([[0.0, 0.01], [0.0, 0.0]])
    assert not check_vectors(keys, s, t, atol=1e-6).passed
    assert check_vectors(keys, s, t, atol=1e-6, rtol=1e-3).passed
    assert check_vectors(keys, s, t, atol=0.02).passed


def test_vectors_cosine_compares_directions_not_lengths():
    s = np.array([[3.0, 4.0]])
    assert check_vectors(["a"], s, s / 5.0, metric="cosine").passed
    assert not check_vectors(["a"], s, s / 5.0, metric="l2").passed


def test_vectors_nan_in_target_fails():
    s = np.array([[1.0, 2.0]])
    t = np.array([[1.0, np.nan]])
    assert not check_vectors(["a"], s, t).passed


def test_metadata_names_fields_and_types():
    result = check_metadata(["r1"], [{"year": 42, "tag": "a"}], [{"year": "42"}])
    assert not result.passed
    assert result.figures["fields_affected"] == {"tag": 1, "year": 1}
    text = result.explain()
    assert "'year': source 42 (int), target '42' (str)" in text
    assert "'tag' missing in the target" in text


def test_documents_missing_differs_from_empty():
    assert not check_documents(["a"], [""], [None]).passed
    result = check_documents(["a"], ["hello world"], ["hello"])
    assert "differ at character 5" in result.explain()


def inventory(**kw):
    base = dict(kind="x", uri="x://", count=10, dimension=4, metric="cosine", dtype="float32")
    base.update(kw)
    return Inventory(**base)


def test_inventory_fails_on_dimension_and_metric_and_warns_on_unknown():
    assert not check_inventory(inventory(), inventory(dimension=8)).passed
    result = check_inventory(inventory(), inventory(metric="ip"))
    assert "metric ('cosine' vs 'ip')" in result.summary
    unknown = check_inventory(inventory(), inventory(metric=None))
    assert unknown.passed and unknown.status == "warning"


def test_schema_drift_fails_metric_warns_on_index_parameters():
    a = inventory(index={"kind": "hnsw", "m": 16, "ef_construct": 100})
    b = inventory(index={"kind": "hnsw", "m": 32, "ef_construct": 100})
    warn = check_schema_drift(a, b)
    assert warn.status == "warning" and "index m: source 16, target 32" in warn.warnings[0]
    assert not check_schema_drift(a, inventory(metric="l2", index=a.index)).passed
    lost = check_schema_drift(inventory(payload_indexes=["topic"]), inventory())
    assert "payload indexes missing in the target: topic" in lost.warnings


def test_recall_is_tie_tolerant_with_duplicate_vectors():
    # four identical vectors: any two of them are a correct top-2
    base = np.array([[1.0, 0.0]] * 4 + [[0.0, 1.0]], dtype=np.float32)
    keys = ["a", "b", "c", "d", "e"]
    index = {k: i for i, k in enumerate(keys)}
    q = np.array([[1.0, 0.0]], dtype=np.float32)
    idx, dist = exact_topk(base, q, 2, "l2")
    truth = [[keys[i] for i in idx[0]]]
    outcomes = score_queries(["q"], q, truth, dist[:, -1], [truth[0]], [["c", "d"]], 2, index,
                             base, "l2")
    assert outcomes[0].target_recall == 1.0
    assert outcomes[0].agreement < 1.0  # different ids, equally right: agreement shows it
    wrong = score_queries(["q"], q, truth, dist[:, -1], [truth[0]], [["c", "e"]], 2, index,
                          base, "l2")
    assert wrong[0].target_recall == 0.5


def test_recall_check_thresholds_and_worst_queries():
    from vmtest.checks.search import QueryOutcome

    good = [QueryOutcome(f"q{i}", 1.0, 1.0, 1.0, []) for i in range(9)]
    bad = QueryOutcome("q9", 1.0, 0.2, 0.2, ["x"])
    result = check_recall([*good, bad], k=10, min_recall=0.95, min_query_recall=0.5)
    assert not result.passed  # mean 0.92 < 0.95 and one query under the floor
    assert result.offenders[0].id == "q9"
    ok = check_recall([*good, bad], k=10, min_recall=0.9, min_query_recall=0.1)
    assert ok.passed


def test_latency_ratio_and_absolute_ceiling():
    fast = [1.0] * 100
    assert check_latency(fast, [1.5] * 100, max_ratio=2.0).passed
    assert not check_latency(fast, [2.5] * 100, max_ratio=2.0).passed
    assert not check_latency(fast, [1.5] * 100, max_ratio=2.0, max_p99_ms=1.0).passed


def test_latency_ratio_on_microsecond_stores_needs_a_real_gap():
    # an embedded store answering in 50 us and one hiccup-prone at 300 us: 6x, but 0.25 ms
    micro, hiccup = [0.05] * 100, [0.3] * 100
    assert not check_latency(micro, hiccup, max_ratio=2.0).passed  # no gap asked: fails
    within = check_latency(micro, hiccup, max_ratio=2.0, min_gap_ms=1.0)
    assert within.passed and "within noise" in within.summary
    # a target really slower fails with the gap too, and says by how much
    slow = check_latency(micro, [1.5] * 100, max_ratio=2.0, min_gap_ms=1.0)
    assert not slow.passed and "1.45 ms slower" in slow.summary
    assert slow.thresholds["min_latency_gap_ms"] == 1.0


def test_exact_topk_matches_a_full_sort_across_chunks():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1000, 8)).astype(np.float32)
    q = rng.normal(size=(5, 8)).astype(np.float32)
    for metric in ("l2", "cosine", "ip", "l1"):
        idx, _ = exact_topk(base, q, 7, metric, chunk=97)
        full, _ = exact_topk(base, q, 7, metric, chunk=10_000)
        assert (idx == full).all(), metric


def test_clopper_pearson_known_values():
    assert clopper_pearson_upper(0, 100, 0.95) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert clopper_pearson_upper(100, 100) == 1.0
    assert sample_size_for(0.001, 0.95) == 2995
    low, high = wilson_interval(50, 100)
    assert low < 0.5 < high


@pytest.mark.parametrize("rate", [0.002, 0.01, 0.05])
@pytest.mark.parametrize("n", [200, 1000, 3000])
def test_clopper_pearson_bound_covers_the_true_rate(rate, n):
    """In repeated seeded trials the 95% upper bound is at or above the true rate at least
    95% of the time (it is exact, so conservative); and so it is over every possible count,
    weighted by its binomial probability."""
    counts = np.arange(n + 1)
    # whether the bound at each possible count of failures covers the true rate
    covers = np.array([clopper_pearson_upper(int(f), n, 0.95) >= rate for f in counts])
    failures = np.random.default_rng(int(rate * 1e6) + n).binomial(n, rate, size=4000)
    # 4,000 trials: sampling noise of 3 standard errors below 0.95 (fixed seeds: the same
    # trials every run, so the test cannot pass or fail by chance from run to run)
    assert covers[failures].mean() >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / 4000)
    assert scipy_stats.binom.pmf(counts, n, rate)[covers].sum() >= 0.95


def test_a_normal_approximation_would_fail_the_coverage_test():
    """The coverage test can fail: the Wald bound p + 1.645 sqrt(p(1-p)/n) undercovers a rare
    rate (at 0 failures it claims a rate of 0)."""
    n, rate = 200, 0.002
    counts = np.arange(n + 1)
    p = counts / n
    wald = p + 1.645 * np.sqrt(p * (1 - p) / n)
    assert scipy_stats.binom.pmf(counts, n, rate)[wald >= rate].sum() < 0.95


def test_matching_prefers_payload_ids_and_strips_mapping_fields():
    from vmtest.stores.qdrant import QdrantStore

    m = Matching()
    key, meta, doc = m.split(QdrantStore, "uuid-1",  # type: ignore[arg-type]
                             {"original_id": "007", "document": "d", "x": 1}, None)
    assert (key, meta, doc) == ("007", {"x": 1}, "d")
    custom = Matching(id_field="src_id")
    assert custom.key_of(5, {"src_id": 7, "original_id": 9}) == "7"
    assert Matching().key_of(7, {}) == "7" != Matching().key_of("007", {})


def test_vectors_nan_in_source_only_fails_and_nan_on_both_sides_passes():
    s = np.array([[np.nan, 1.0]])
    assert not check_vectors(["a"], s, np.array([[0.5, 1.0]])).passed
    assert check_vectors(["a"], s, s.copy()).passed


def test_vectors_are_compared_in_chunks_with_the_same_verdict(monkeypatch):
    import vmtest.checks.fidelity as fidelity

    rng = np.random.default_rng(1)
    s = rng.normal(size=(1000, 8)).astype(np.float32)
    t = s.copy()
    t[[3, 517, 998], 2] += 1e-3
    keys = [f"k{i}" for i in range(1000)]
    whole = check_vectors(keys, s, t, metric="cosine")
    monkeypatch.setattr(fidelity, "VECTOR_CHUNK", 7)
    chunked = check_vectors(keys, s, t, metric="cosine")
    assert whole.offending_total == chunked.offending_total == 3
    assert [o.id for o in chunked.offenders] == ["k3", "k517", "k998"]
    assert whole.figures == chunked.figures


def test_drift_ignores_rounding_and_a_rotation_but_flags_another_metric():
    from vmtest.checks.search import check_distance_drift

    rng = np.random.default_rng(4)
    base = rng.normal(size=(500, 32)).astype(np.float32)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    half = unit.astype(np.float16).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(32, 32)))
    assert check_distance_drift(unit, half, source_metric="cosine",
                                target_metric="cosine").passed
    rotated = (unit @ rotation).astype(np.float32)  # every distance kept: harmless to search
    assert check_distance_drift(unit, rotated, source_metric="cosine",
                                target_metric="cosine").passed
    moved = check_distance_drift(unit, unit, source_metric="cosine", target_metric="l2")
    assert moved.status == "failed" and moved.figures["ks_statistic"] > 0.5
    assert check_distance_drift(unit, unit, source_metric="cosine", target_metric="l2",
                                expected=True).status == "warning"


def test_ground_truth_is_reused_from_the_cache_only_for_the_same_data(tmp_path, monkeypatch):
    from vmtest import knn

    rng = np.random.default_rng(2)
    base = rng.normal(size=(400, 8)).astype(np.float32)
    queries = base[:5]
    first = knn.cached_truth(tmp_path, base, queries, 3, "l2")
    assert len(list(tmp_path.glob("truth-*.npz"))) == 1

    def no_brute_force(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(knn, "exact_topk", no_brute_force)
    again = knn.cached_truth(tmp_path, base, queries, 3, "l2")
    assert np.array_equal(again[0], first[0]) and np.array_equal(again[1], first[1])
    changed = base.copy()
    changed[399, 0] += 1e-3  # one value of one vector: another digest, computed afresh
    with pytest.raises(AssertionError, match="recomputed"):
        knn.cached_truth(tmp_path, changed, queries, 3, "l2")
    with pytest.raises(AssertionError, match="recomputed"):
        knn.cached_truth(tmp_path, base, queries, 4, "l2")
