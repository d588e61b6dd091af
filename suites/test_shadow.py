"""Shadow reads: does the target answer the application's own queries as the source does?

``shadow`` runs only when ``--vmtest-query-log=FILE`` names a query log (JSON Lines, one
query a line: a vector or a text, optional filter, k, user). Each logged query runs twice on
the source (its agreement with itself is the noise floor) and once on the target; the
target's overlap@k must stay within ``--vmtest-shadow-tolerance`` of that floor.
"""

from __future__ import annotations

import pytest

from vmtest.checks.result import not_applicable
from vmtest.checks.shadow import check_shadow

pytestmark = pytest.mark.vmtest_suite


@pytest.mark.vmtest_needs("query_log")  # collected only with --vmtest-query-log
def test_shadow(vmtest_comparison, vmtest_check, vmtest_settings):
    from vmtest.live.shadow import load_query_log, replay

    settings = vmtest_settings
    if not vmtest_comparison.search_share:
        i, n = settings.shard
        pytest.skip(f"search checks run in share 1 of {n} (this is share {i})")
    comparison = vmtest_comparison.for_search
    if comparison.models_differ:
        pytest.skip("vectors come from different models: the same logged query cannot "
                    "search both")
    if comparison.dimensions_differ:
        vmtest_check(not_applicable("shadow", comparison.dimensions_differ))
    log = load_query_log(settings.query_log, settings.source_embedder,
                         flag="--vmtest-query-log", embedder_flag="--vmtest-source-embedder")
    outcomes = replay(comparison.source_side, comparison.target_side, log, k=settings.k,
                      seed=settings.seed)
    vmtest_check(check_shadow(outcomes, k=settings.k, tolerance=settings.shadow_tolerance,
                              max_error_rate=settings.shadow_max_error_rate,
                              confidence=settings.confidence, seed=settings.seed))
