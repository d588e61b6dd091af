"""The record-by-record checks (ids, vectors, metadata, documents) over two sides.

By the checksum fast path when it can decide (:mod:`vmtest.digest`): both stores read once
and digested, only the suspects compared one by one. Else in memory, or partition by
partition when the records were spilled (:mod:`vmtest.stream`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vmtest.checks.fidelity import (
    check_documents,
    check_ids,
    check_metadata,
    check_vectors,
    suggest_document_field,
    suggest_id_field,
)
from vmtest.checks.result import CheckResult
from vmtest.digest import DigestMatch, match_digests, quantum, read_digests
from vmtest.matching import Alignment, Snapshot, align
from vmtest.settings import Settings
from vmtest.side import Side, subset
from vmtest.stream import RECORD_OVERHEAD, compare_partitions

if TYPE_CHECKING:
    from vmtest.partitioned import Outcome

#: Unmatched records looked into for a field that would match them (--vmtest-id-field and
#: --vmtest-document-field hints).
HINT_ROWS = 2000


@dataclass
class FidelityRun:
    """The fidelity checks of two sides. ``metric`` is the one vectors are compared under
    (None: the sides disagree); ``models_differ``: vectors are not compared one by one."""

    source: Side
    target: Side
    settings: Settings
    metric: str | None
    models_differ: bool = False
    #: Why the stores could not be checked partition by partition (None: they were, or were
    #: not asked to be), and the partitioned run's outcome when they were.
    not_partitioned: str | None = field(default=None, init=False)
    outcome: Outcome | None = field(default=None, init=False)

    def results(self) -> dict[str, CheckResult]:
        sampled = not self.source.with_vectors
        # a schema mapping and the conversation fields are applied by the checks of one run
        # (below), not by the partitioned one
        if self.partitioned and not sampled and not self.models_differ \
                and self.settings.mapping is None and not self.settings.conversation_fields:
            found = self._by_partitions()
            if found is not None:
                return found
        # under a schema mapping no digest of a source record equals its target's: compare
        # one by one
        fast = None if sampled or self.models_differ or self.settings.compare == "full" \
            or self.settings.mapping is not None else self._by_digests()
        if fast is not None:
            return self._noted(fast)
        if self.source.streaming:
            return self._noted(compare_partitions(self.source.spilled, self.target.spilled,
                                                  self.checks))
        return self._noted({r.name: r for r in self.checks(self.source.snapshot,
                                                           self.target.snapshot)})

    def _noted(self, results: dict[str, CheckResult]) -> dict[str, CheckResult]:
        """The results, the ids check saying why they were not found partition by
        partition when that was asked for."""
        if self.not_partitioned and "ids" in results:
            results["ids"].warnings.append(
                f"checked without partitions: {self.not_partitioned}")
        return results

    @property
    def partitioned(self) -> bool:
        """Whether the checks run partition by partition (vmtest.partitioned): asked for
        (--vmtest-partitions, --vmtest-executor=ray), or a share of a --vmtest-shard run,
        which then reads only its own partitions."""
        settings = self.settings
        return settings.partitions is not None or settings.executor != "local" \
            or settings.shard is not None

    def _by_partitions(self) -> dict[str, CheckResult] | None:
        """The checks over partitions; None (with the reason kept for the ids check) when
        the stores cannot be checked so: they are then checked the other way."""
        from vmtest.partitioned import NotPartitionable, check_partitioned

        sides = (self.source.inventory, self.target.inventory)
        try:
            outcome = check_partitioned(
                self.source.store, self.target.store, self.settings, self.metric,
                counts=(sides[0].count, sides[1].count),
                dimension=max(s.dimension or 0 for s in sides))
        except NotPartitionable as exc:
            self.not_partitioned = exc.message
            return None
        self.outcome = outcome
        return outcome.results

    def checks(self, source: Snapshot, target: Snapshot,
               match: DigestMatch | None = None) -> list[CheckResult]:
        """The checks over these snapshots; ``match`` says how many more pairs the digests
        verified (the snapshots then hold only the suspects)."""
        settings, store = self.settings, self.target.store
        verified = match.verified if match else 0
        al = align(source, target)
        # the target records without a partner, for the --vmtest-id-field hint (the key index
        # is built only when there are some: a faithful copy has none)
        index = target.first_index() if al.extra else {}
        unmatched = [target.metadatas[index[k]] for k in al.extra[:HINT_ROWS]]
        results = [check_ids(al, verified=verified,
                             hints=suggest_id_field(al.missing, unmatched))]
        if source.vectors is not None and target.vectors is not None \
                and not self.models_differ:
            dimension = source.vectors.shape[1] if source.vectors.ndim == 2 else 0
            results.append(check_vectors(
                al.keys, source.vectors[al.source_idx], target.vectors[al.target_idx],
                atol=settings.tolerance, rtol=settings.rtol, metric=self.metric,
                confidence=settings.confidence, verified=verified,
                grid=quantum(settings.tolerance, self.metric, dimension)))
        keys, source_meta, target_meta = matched(al, source.metadatas, target.metadatas)
        if settings.schema_map is not None:
            source_meta = list(map(settings.schema_map.apply, source_meta))
        results.append(check_metadata(keys, *without(settings.conversation_fields,
                                                     source_meta, target_meta),
                                      lenient_numbers=settings.lenient_numbers,
                                      float_ulps=store.float_rounding_ulps(store.uri),
                                      strict_floats=settings.strict_floats,
                                      engine=f"the {store.ENGINE} store",
                                      verified=verified))
        keys, source_docs, target_docs = matched(al, source.documents, target.documents)
        pairs = [(source_docs[i], target_docs[i], target.metadatas[al.target_idx[i]])
                 for i in range(min(len(keys), HINT_ROWS))]
        results.append(check_documents(
            keys, source_docs, target_docs, verified=verified,
            verified_with_document=match.verified_with_document if match else 0,
            hints=suggest_document_field(pairs)))
        return results

    def _by_digests(self) -> dict[str, CheckResult] | None:
        """Both stores read once and digested; only the suspects compared one by one. None
        when the digests cannot decide alone (duplicate keys, a side without vectors, more
        suspects than the memory budget holds): the full comparison then runs (on the
        snapshots kept here when they fit in the budget, else partition by partition)."""
        settings = self.settings
        retain = not self.source.streaming
        # one side after the other: reading both at once (threads, or a process each) was
        # measured slower on two cores (LanceDB 1M x 768: 18 s and 20 s against 13 s and 16 s)
        digested = [read_digests(side.store, side.matching, settings.batch_size,
                                 atol=settings.tolerance, metric=self.metric, retain=retain)
                    for side in (self.source, self.target)]
        if not all(d.has_vectors for d in digested):
            return None
        if retain and digested[0].snapshot is not None and digested[1].snapshot is not None:
            self.source.keep(digested[0].snapshot)
            self.target.keep(digested[1].snapshot)
        match = match_digests(*digested)
        if match.duplicates:
            return None
        suspects = len(match.source_suspects) + len(match.target_suspects)
        dimension = max(d.dimension or 0 for d in digested)
        if not retain and suspects * (4 * dimension + RECORD_OVERHEAD) \
                > settings.memory_budget // 2:
            return None
        source, target = (
            subset(d.snapshot, positions) if d.snapshot is not None
            else side.read_again(d, positions)
            for d, side, positions in (
                (digested[0], self.source, match.source_suspects),
                (digested[1], self.target, match.target_suspects)))
        return {r.name: r for r in self.checks(source, target, match)}


def without(fields: Sequence[str], *columns: Sequence[dict[str, Any]]
            ) -> tuple[Sequence[dict[str, Any]], ...]:
    """The metadata columns without ``fields`` (those another check owns: the session, order
    and timestamp fields of --vmtest-conversation); unchanged when there are none."""
    if not fields:
        return columns
    owned = frozenset(fields)
    return tuple([{k: v for k, v in m.items() if k not in owned} for m in column]
                 for column in columns)


def matched(al: Alignment, source: Sequence[Any], target: Sequence[Any]
            ) -> tuple[list[str], list[Any], list[Any]]:
    """(matched keys, the source column's values, the target column's) in alignment order."""
    return al.keys, [source[i] for i in al.source_idx], [target[i] for i in al.target_idx]
