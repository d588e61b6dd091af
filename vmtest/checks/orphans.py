"""The orphaned-writes check: nothing written to the old store after the cutover mark."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmtest.checks.result import FAILED, PASSED, CheckResult, Offender

if TYPE_CHECKING:
    from vmtest.live.orphans import Orphans

#: Offenders listed at most.
LISTED = 50


def check_orphans(orphans: Orphans) -> CheckResult:
    figures = {"created": len(orphans.created), "changed": len(orphans.changed),
               "deleted": len(orphans.deleted), "marked_at": orphans.marked_at,
               "records_at_mark": orphans.marked_count, "records_now": orphans.count}
    if not orphans.total:
        return CheckResult("orphans", PASSED,
                           f"no write reached the old store since the mark of "
                           f"{orphans.marked_at} ({orphans.count:,} records, as marked)",
                           figures=figures, thresholds={"orphaned_writes": 0})
    offenders = [Offender(key, f"{kind} in the old store after the mark")
                 for kind, keys in (("created", orphans.created), ("changed", orphans.changed),
                                    ("deleted", orphans.deleted))
                 for key in keys][:LISTED]
    return CheckResult(
        "orphans", FAILED,
        f"{orphans.total} write(s) reached the old store after the cutover mark of "
        f"{orphans.marked_at}: {len(orphans.created)} created, {len(orphans.changed)} changed, "
        f"{len(orphans.deleted)} deleted (the application still writes to it)",
        figures=figures, thresholds={"orphaned_writes": 0}, offenders=offenders,
        offending_total=orphans.total)
