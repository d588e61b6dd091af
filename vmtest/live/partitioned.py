"""A sync's comparison of every key over partitions: in this process (``--partitions=N``) or as
Ray tasks (``--executor=ray``).

It gives what :meth:`~vmtest.live.sync.SyncRun.diff_all` gives in one process (every key
checked, the same mismatches with their kinds and ids, the same rule: :func:`~vmtest.live.
sync.same_record`) and repairs as its generation does, in three waves of tasks of the pure,
picklable :func:`sync_task`, run by the partitioned check's runners (:func:`~vmtest.
partitioned.run_tasks`, :func:`~vmtest.partitioned.run_local`, :func:`~vmtest.partitioned.
run_ray`):

1. **compare**, one task per source partition: read it with its vectors, map each batch as
   the target must hold it, fetch the partners by their mapped ids, judge each pair, and
   return every mismatching key (its kind, both ids, when it was seen) and the 64-bit
   digests of the partition's keys. It writes nothing, so a task Ray runs again (its worker
   lost) finds what the first attempt found.
2. **extras**, only when the target holds records no source key found: an id-only pass over
   the target's partitions, each task listing the records whose key is not among the
   source's digests.
3. **repair**, one task per source partition that found records missing or changed: copy
   them again (read by id, mapped, upserted). A task redone writes the same records by the
   same ids again, which the target (it must write by id) takes as once; the copies are
   counted from the tasks that returned.

The extras are deleted (``--delete-extra``) or listed on the coordinator, as in one process.
A repair inside the compare task would save reading the mismatching records twice, but then a
compare task Ray retries would see what its dead attempt repaired as matching and drop those
keys from the generation's mismatches (their first-seen times with them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from vmtest.live.sync import Generation, Mismatch, SyncOptions, SyncRun
from vmtest.migrate.partitioned import partition_count
from vmtest.partitioned import (
    PartitionsFailed,
    Reads,
    Runner,
    among,
    key_digests,
    ray_session,
    run_local,
    run_ray,
    run_tasks,
    task_stores,
)
from vmtest.stores import VectorStore
from vmtest.stores.base import Partition, RecordId
from vmtest.uri import StoreURI


@dataclass(frozen=True)
class SyncPlan:
    """Both stores, by URI (each task opens them), and the sync's options."""

    source: StoreURI
    target: StoreURI
    options: SyncOptions


@dataclass(frozen=True)
class SyncTask:
    """One partition's work: ``compare`` (a source partition), ``extras`` (a target
    partition's ids) or ``repair`` (copy these source records again)."""

    phase: str
    part: Partition
    plan: SyncPlan
    source_ids: tuple[RecordId, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.phase}-{self.part.index}"


@dataclass
class SyncResult:
    """What one task found and did: the mismatches, the keys it read (and of them, those
    whose partner the target holds), the digests of the source's keys, the records copied,
    and what it read of each side."""

    name: str
    index: int
    found: list[Mismatch] = field(default_factory=list)
    keys: int = 0
    matched: int = 0
    digests: np.ndarray | None = None
    copied: int = 0
    reads: dict[str, Reads] = field(default_factory=lambda: {"source": Reads(),
                                                              "target": Reads()})
    worker: int = 0


def sync_task(task: SyncTask, digests: np.ndarray | None = None,
              stores: tuple[VectorStore, VectorStore] | None = None) -> SyncResult:
    """Run one partition's task: pure but for reading the stores and (a repair) writing the
    target, opened from the plan's URIs unless given, so it runs as well as a Ray task.
    ``digests``: the source's key digests, sorted (the extras pass)."""
    result = SyncResult(task.name, task.part.index)
    with task_stores(task.plan, stores) as (source, dest):
        run = SyncRun(source, dest, task.plan.options)
        if task.phase == "compare":
            _compare(run, task.part, result)
        elif task.phase == "extras":
            assert digests is not None
            _extras(run, task.part, digests, result)
        else:
            result.copied = run.copy_again(task.source_ids, result.reads["source"])
    result.worker = os.getpid()
    return result


def _compare(run: SyncRun, part: Partition, result: SyncResult) -> None:
    digests = []
    for batch in run.source.read_partition(part, run.batch_size):
        result.reads["source"].count(batch)
        expected = run.expected(batch)
        pairs: dict[str, tuple[RecordId | None, RecordId | None]] = {
            key: (record.native, run.target_id(record.native))
            for key, record in expected.items()}
        stored = {}
        for held in run.fetch(run.dest, [t for _, t in pairs.values() if t is not None]):
            result.reads["target"].count(held)
            stored.update(run.held(held))
        result.found += run.judge(pairs, expected, stored)
        result.keys += len(expected)
        result.matched += sum(key in stored for key in expected)
        digests.append(key_digests(list(expected)))
    result.digests = np.concatenate(digests) if digests else np.zeros(0, np.uint64)


def _extras(run: SyncRun, part: Partition, digests: np.ndarray, result: SyncResult) -> None:
    for batch in run.dest.read_partition(part, run.batch_size, with_vectors=False):
        result.reads["target"].count(batch)
        now = time.time()
        held = run.held(batch)
        result.keys += len(held)
        for (key, record), known in zip(held.items(), among(digests, list(held)).tolist(),
                                        strict=True):
            if not known:
                result.found.append(Mismatch(key, "extra", None, record.native, now, now))


@contextmanager
def sync_runner(options: SyncOptions, stores: tuple[VectorStore, VectorStore]
                ) -> Iterator[Runner]:
    """How the tasks run while the sync lasts: as Ray tasks (one Ray session for all its
    generations), or in this process on the stores already open."""
    if options.executor == "ray":
        with ray_session(options.ray_address):
            yield run_ray(options.ray_address, sync_task)
    else:
        yield run_local(stores, sync_task)


def _wave(tasks: Sequence[SyncTask], runner: Runner, what: str,
          digests: np.ndarray | None = None) -> list[SyncResult]:
    _, ran, failures = run_tasks(tasks, runner, None, desc=f"vmtest sync: {what}",
                                 digests=digests)
    if failures:
        raise PartitionsFailed(
            f"{len(failures)} partitions of the sync's {what} failed: " + "; ".join(failures),
            hint="run the sync again: a generation that did not finish is redone whole, as in "
            "one process (the generations before it are kept in its state)")
    return sorted(ran, key=lambda r: r.index)


def diff_partitioned(run: SyncRun, runner: Runner, generation: Generation
                     ) -> tuple[int, list[Mismatch]]:
    """Every key compared partition by partition, and the missing and changed records copied
    again by the tasks (``generation.copied``); the keys checked and the mismatches, as
    :meth:`SyncRun.diff_all` gives them (the extras left to :meth:`SyncRun.repair`)."""
    source, dest = run.source, run.dest
    wanted = partition_count(source.count(), run.options.partitions)
    target_count = dest.count()
    plan = SyncPlan(source.uri, dest.uri, run.options)
    parts = {p.index: p for p in source.partitions(wanted)}
    compared = _wave([SyncTask("compare", p, plan) for p in parts.values()], runner,
                     "comparison")
    found = [m for r in compared for m in r.found]
    checked = sum(r.keys for r in compared)
    results = list(compared)
    if sum(r.matched for r in compared) != target_count:  # the target holds more
        digests = np.unique(np.concatenate([r.digests for r in compared
                                            if r.digests is not None] or
                                           [np.zeros(0, np.uint64)]))
        extras = _wave([SyncTask("extras", p, plan) for p in dest.partitions(wanted)],
                       runner, "extras", digests)
        found += [m for r in extras for m in r.found]
        checked += sum(len(r.found) for r in extras)
        results += extras
    repairs = [SyncTask("repair", parts[r.index], plan, tuple(
        m.source_id for m in r.found if m.kind in ("missing", "content")
        and m.source_id is not None)) for r in compared]
    repaired = _wave([t for t in repairs if t.source_ids], runner, "repair")
    generation.copied += sum(r.copied for r in repaired)
    generation.partitions = len(parts)
    generation.how = f"{len(parts)} partition{'s' if len(parts) != 1 else ''}, " + (
        "Ray" if run.options.executor == "ray" else "in process")
    generation.reads = {
        "source_records": sum(r.reads["source"].records for r in compared),
        "target_records": sum(r.reads["target"].records for r in compared),
        "target_ids": sum(r.reads["target"].ids for r in results),
        "source_records_copied": sum(r.reads["source"].records for r in repaired)}
    return checked, found
