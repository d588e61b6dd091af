"""Search quality and speed: is the target's search as good as the source's?

Recall is measured against exact ground truth computed by brute force over the source's
vectors with the source's metric; agreement is the overlap of the two stores' top-k.
"""

from __future__ import annotations

import pytest

from vmtest.checks.reembed import check_search_quality
from vmtest.checks.result import not_applicable
from vmtest.checks.search import (
    check_distance_drift,
    check_latency,
    check_recall,
    check_schema_drift,
)
from vmtest.embed import load_embedder
from vmtest.latency import measure_until_decided
from vmtest.search_run import QuerySet

pytestmark = pytest.mark.vmtest_suite


@pytest.fixture
def comparison(vmtest_comparison, vmtest_check, request):
    """The whole-store comparison for search checks; they run in share 1 of a --vmtest-shard run.
    Between stores without vectors, the check does not apply (skipped with the reason)."""
    if vmtest_comparison.without_vectors:
        vmtest_check(not_applicable(request.function.__name__.removeprefix("test_"),
                                    vmtest_comparison.without_vectors))
    if not vmtest_comparison.search_share:
        i, n = vmtest_comparison.settings.shard
        pytest.skip(f"search checks run in share 1 of {n} (this is share {i})")
    return vmtest_comparison.for_search


def test_schema(vmtest_comparison, vmtest_check):
    if vmtest_comparison.without_vectors:
        vmtest_check(not_applicable("schema", vmtest_comparison.without_vectors))
    vmtest_check(check_schema_drift(vmtest_comparison.source_inventory,
                                    vmtest_comparison.target_inventory,
                                    same_model=not vmtest_comparison.models_differ))


def test_recall(comparison, vmtest_check, vmtest_settings):
    settings = vmtest_settings
    if not comparison.models_differ and comparison.dimensions_differ:
        vmtest_check(not_applicable("recall", comparison.dimensions_differ))
    if comparison.models_differ:
        # Queries of one model cannot search the other's vectors: compare how well each model
        # finds known items instead.
        if settings.target_embedder is None:
            pytest.skip(f"vectors come from different models ({settings.source_model} -> "
                        f"{settings.target_model}): give --vmtest-target-embedder (and "
                        "--vmtest-source-embedder) to compare search quality")
        items = comparison.model_change.known_items(
            load_embedder(settings.target_embedder),
            load_embedder(settings.source_embedder) if settings.source_embedder else None)
        vmtest_check(check_search_quality(
            items, k=settings.k, source_model=str(settings.source_model),
            target_model=str(settings.target_model), max_drop=settings.max_quality_drop,
            min_recall=settings.min_recall, confidence=settings.confidence))
        return
    vmtest_check(check_recall(
        comparison.search_outcomes(), k=vmtest_settings.k,
        min_recall=vmtest_settings.min_recall, min_query_recall=vmtest_settings.min_query_recall,
        confidence=vmtest_settings.confidence,
    ))


def test_drift(comparison, vmtest_check, vmtest_settings):
    keys, source, target = comparison.drift_pairs()
    source_metric = comparison.source_inventory.metric or "l2"
    vmtest_check(check_distance_drift(
        source, target, keys=keys, source_metric=source_metric,
        target_metric=comparison.target_inventory.metric or source_metric,
        seed=vmtest_settings.seed, confidence=vmtest_settings.confidence,
        expected=comparison.models_differ,
    ))


def test_filtered_recall(comparison, vmtest_check, vmtest_settings):
    field = vmtest_settings.filter_field
    if field is None:
        pytest.skip("no --vmtest-filter-field given: filtered search not compared")
    if comparison.models_differ:
        pytest.skip("vectors come from different models: filtered search is not compared")
    if comparison.dimensions_differ:
        vmtest_check(not_applicable("filtered_recall", comparison.dimensions_differ))
    values = comparison.filter_values(field)
    queries = comparison.queries
    outcomes = []
    for i, value in enumerate(values):
        share = QuerySet(queries.labels[i::len(values)], queries.vectors[i::len(values)])
        for o in comparison.search_outcomes({field: value}, share):
            o.label = f"{o.label} [{field}={value!r}]"
            outcomes.append(o)
    result = check_recall(outcomes, k=vmtest_settings.k, name="filtered_recall",
                          min_recall=vmtest_settings.min_recall,
                          min_query_recall=vmtest_settings.min_query_recall,
                          confidence=vmtest_settings.confidence)
    result.figures["filter"] = f"{field} in {values!r}"
    vmtest_check(result)


@pytest.mark.latency
def test_latency(comparison, vmtest_check, vmtest_settings, pytestconfig):
    if hasattr(pytestconfig, "workerinput"):
        pytest.skip("latency is not measured under pytest-xdist: parallel workers share the "
                    "cores and make timings meaningless; run with -p no:xdist or -n 0")
    if comparison.models_differ:
        pytest.skip("vectors come from different models: the same queries cannot time both")
    if comparison.dimensions_differ:
        vmtest_check(not_applicable("latency", comparison.dimensions_differ))
    settings = vmtest_settings
    vmtest_check(measure_until_decided(
        comparison.source_store, comparison.target_store, comparison.queries.vectors,
        settings.k, lambda source_ms, target_ms: check_latency(
            source_ms, target_ms, max_ratio=settings.max_latency_ratio,
            max_p99_ms=settings.max_p99_ms, min_gap_ms=settings.min_latency_gap_ms,
            confidence=settings.confidence, seed=settings.seed)))
