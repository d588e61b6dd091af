"""Search quality and speed: is the target's search as good as the source's?

Recall is measured against exact ground truth computed by brute force over the source's
vectors with the source's metric; agreement is the overlap of the two stores' top-k.
"""

from __future__ import annotations

import pytest

from vmtest.checks.search import check_latency, check_recall, check_schema_drift
from vmtest.compare import QuerySet
from vmtest.latency import measure

pytestmark = pytest.mark.vmtest_suite


def test_schema(vmtest_comparison, vmtest_check):
    vmtest_check(check_schema_drift(vmtest_comparison.source_inventory,
                                    vmtest_comparison.target_inventory))


def test_recall(vmtest_comparison, vmtest_check, vmtest_settings):
    vmtest_check(check_recall(
        vmtest_comparison.search_outcomes(), k=vmtest_settings.k,
        min_recall=vmtest_settings.min_recall, min_query_recall=vmtest_settings.min_query_recall,
        confidence=vmtest_settings.confidence,
    ))


def test_filtered_recall(vmtest_comparison, vmtest_check, vmtest_settings):
    field = vmtest_settings.filter_field
    if field is None:
        pytest.skip("no --filter-field given: filtered search not compared")
    values = vmtest_comparison.filter_values(field)
    queries = vmtest_comparison.queries
    outcomes = []
    for i, value in enumerate(values):
        share = QuerySet(queries.labels[i::len(values)], queries.vectors[i::len(values)])
        for o in vmtest_comparison.search_outcomes({field: value}, share):
            o.label = f"{o.label} [{field}={value!r}]"
            outcomes.append(o)
    result = check_recall(outcomes, k=vmtest_settings.k, name="filtered_recall",
                          min_recall=vmtest_settings.min_recall,
                          min_query_recall=vmtest_settings.min_query_recall,
                          confidence=vmtest_settings.confidence)
    result.figures["filter"] = f"{field} in {values!r}"
    vmtest_check(result)


@pytest.mark.latency
def test_latency(vmtest_comparison, vmtest_check, vmtest_settings, pytestconfig):
    if hasattr(pytestconfig, "workerinput"):
        pytest.skip("latency is not measured under pytest-xdist: parallel workers share the "
                    "cores and make timings meaningless; run with -p no:xdist or -n 0")
    source_ms, target_ms = measure(
        vmtest_comparison.source_store, vmtest_comparison.target_store,
        vmtest_comparison.queries.vectors, vmtest_settings.k,
    )
    vmtest_check(check_latency(source_ms, target_ms,
                               max_ratio=vmtest_settings.max_latency_ratio,
                               max_p99_ms=vmtest_settings.max_p99_ms))
