"""The cutover: after the switch, does the old store still take writes?

``orphans`` runs only when ``--vmtest-orphans-since=MARK`` names a mark taken at the switch
(``vmtest cutover mark --store=URI``); the source is then the old store.
"""

from __future__ import annotations

import pytest

from vmtest.checks.orphans import check_orphans

pytestmark = pytest.mark.vmtest_suite


@pytest.mark.vmtest_needs("orphans_since")  # collected only with --vmtest-orphans-since
def test_orphans(vmtest_source_store, vmtest_check, vmtest_settings):
    from vmtest.live.orphans import orphans_since

    vmtest_check(check_orphans(orphans_since(vmtest_settings.orphans_since,
                                             vmtest_source_store,
                                             batch_size=vmtest_settings.batch_size)))
