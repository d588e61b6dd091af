"""A migration partition by partition: in this process (``--partitions=N``) or as Ray tasks
(``--executor=ray``).

The order of a run in one process is kept: the plan (:func:`~vmtest.migrate.runner.make_plan`:
every source id, metadata value and document, no vectors) runs first, on the coordinator, and
refuses before anything is written; then the target is created once, from the source's shape;
then each of the source's partitions (:meth:`VectorStore.partitions`) is a task of the pure,
picklable :func:`copy_partition`: it opens both stores by their URIs, reads its partition and
writes it through the runner's own writer (:func:`~vmtest.migrate.runner.batch_writer`: the
same id mapping, document placement, metadata policy, schema mapping, re-embedding, retries).

A partition redone (a worker lost and the task run again by Ray, a rerun after a crash) is
written a second time, so the target must take a record written twice as one: only targets
that upsert by id (``IDEMPOTENT_WRITES``) are migrated this way; append-only ones (Parquet,
JSONL, LanceDB) are refused with one line, before the plan. On Ray the target must also be
a server, which every worker reaches (a local store is one process's folder).

Each finished partition is kept in ``STATE.partitions/plan-KEY/`` (:class:`~vmtest.partitioned.
Checkpoint`), keyed by the source's partitions and count, both URIs and the options that change
what is written (the mapping file's content included): a rerun redoes only the partitions that
did not finish, after checking that the target still holds what the kept ones wrote.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmtest.errors import ConfigError
from vmtest.migrate.runner import (
    MigrationOptions,
    MigrationReport,
    Written,
    batch_size_for,
    batch_writer,
    make_plan,
    mapped_batches,
    refuse_if_lossy,
    verify_target,
    write_in_order,
    writers_for,
)
from vmtest.partitioned import (
    Checkpoint,
    Runner,
    partitions_failed,
    plan_key,
    run_local,
    run_ray,
    run_tasks,
    task_stores,
)
from vmtest.stores import VectorStore, open_store, store_class
from vmtest.stores.base import Partition
from vmtest.uri import StoreURI, parse

#: Without --partitions: at least this many partitions, and no partition of more than
#: PARTITION_RECORDS source records (what a crash makes a rerun redo at most).
MIN_PARTITIONS = 4
PARTITION_RECORDS = 1_000_000
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class CopyPlan:
    """The source's partitions and what else decides what a partition writes: the key of
    its checkpoints. The same source in the same state gives the same partitions."""

    source: StoreURI
    target: StoreURI
    source_count: int
    parts: tuple[Partition, ...]
    #: MigrationOptions.identity(), and the schema mapping file's digest.
    identity: tuple[tuple[str, Any], ...] = ()

    def key(self) -> str:
        return plan_key([str(self.source), str(self.target), self.source_count,
                         [p.spec for p in self.parts], list(self.identity)])

    def describe(self) -> str:
        return (f"{self.source} -> {self.target}, {self.source_count} records\n"
                + "".join(f"source {p.index}: {p.label}\n" for p in self.parts))


@dataclass(frozen=True)
class CopyTask:
    """One source partition to copy into the (existing) target."""

    part: Partition
    plan: CopyPlan
    options: MigrationOptions
    batch_size: int
    workers: int

    @property
    def name(self) -> str:
        return f"copy-{self.part.index}"


@dataclass
class CopyResult:
    """What one partition wrote: records, batches, retries, the last record (its source id
    and target id: a rerun checks the target still holds it) and the process that ran it."""

    name: str
    index: int
    records: int = 0
    batches: int = 0
    retries: int = 0
    last_id: str | None = None
    last_target_id: Any = None
    worker: int = 0


def copy_partition(task: CopyTask, digests: Any = None,
                   stores: tuple[VectorStore, VectorStore] | None = None) -> CopyResult:
    """Copy one source partition into the target: pure but for reading the source and
    writing the target (opened from the plan's URIs unless given), so it runs as well as a
    Ray task. ``digests`` is unused (the signature of every partition task)."""
    result = CopyResult(task.name, task.part.index)
    with task_stores(task.plan, stores) as (source, dest):
        def acknowledged(written: Written) -> None:
            result.records += written.records
            result.batches += 1
            result.retries += written.retries
            if written.last_id is not None:
                result.last_id, result.last_target_id = written.last_id, \
                    written.last_target_id

        batches = mapped_batches(source.read_partition(task.part, task.batch_size),
                                 task.options.schema_map)
        write_in_order(batches, batch_writer(source, dest, task.options), acknowledged,
                       task.workers)
    result.worker = os.getpid()
    return result


def refuse_target(uri: StoreURI, executor: str, *, command: str = "migrate") -> None:
    """Refuse, in one line and before the plan, a target a partition cannot be redone into
    (an append-only one), or that Ray's workers cannot all write (a local store).
    ``command``: what writes partition by partition, "migrate" or "sync"."""
    cls = store_class(uri.scheme)
    what, done = ("a migration", "migrate into it") if command == "migrate" else \
        ("a sync", "sync it")
    if not cls.IDEMPOTENT_WRITES:
        raise ConfigError(
            f"{what} over partitions needs a target that writes by id, so that a "
            f"partition redone (a worker lost, a rerun) is not written twice; the {cls.ENGINE} "
            f"target {uri} appends",
            hint=f"{done} in one process (without --executor or --partitions)"
            + (": its checkpoint rewinds what a crash half wrote" if command == "migrate"
               else ""))
    if executor == "ray" and uri.is_local:
        raise ConfigError(
            f"on Ray each partition is written by its own process, perhaps on another "
            f"machine; the target {uri} is a local {cls.ENGINE} store",
            hint=f"{command} into a server (qdrant://HOST:PORT, postgresql://...), or "
            "--partitions=N without --executor=ray (in this process)")


def partition_count(count: int, partitions: int | None) -> int:
    """How many partitions to ask a source of ``count`` records for: ``partitions``, else
    at least MIN_PARTITIONS and none of more than PARTITION_RECORDS records."""
    return partitions or max(MIN_PARTITIONS, math.ceil(count / PARTITION_RECORDS))


def _identity(options: MigrationOptions) -> tuple[tuple[str, Any], ...]:
    identity = dict(options.identity())
    if options.mapping is not None:
        identity["mapping_digest"] = hashlib.blake2b(
            Path(options.mapping).read_bytes(), digest_size=8).hexdigest()
    return tuple(sorted(identity.items()))


def state_folder(state_path: Path) -> Path:
    """Where the partitions of the migration whose state file is ``state_path`` are kept."""
    return state_path.with_suffix(".partitions")


def migrate_partitioned(
    source: VectorStore,
    target_uri: str | StoreURI,
    options: MigrationOptions | None = None,
    *,
    partitions: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    state_path: Path | None = None,
    restart: bool = False,
    runner: Runner | None = None,
    note: Callable[[str], object] | None = None,
) -> MigrationReport:
    """Copy ``source`` into the store ``target_uri`` names, partition by partition (about
    ``partitions`` of them), each a :func:`copy_partition` task run here or on Ray
    (``executor``). With ``state_path``, finished partitions are kept beside it and a rerun
    redoes only the others. ``runner``: how the tasks run (tests pass one that crashes)."""
    options = options or MigrationOptions()
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor={executor!r} is not an executor",
                          hint="use one of: " + ", ".join(EXECUTORS))
    started = time.perf_counter()
    uri = parse(target_uri) if isinstance(target_uri, str) else target_uri
    refuse_target(uri, executor)
    plan = make_plan(source, uri, options)
    refuse_if_lossy(plan)
    count = plan.source.count
    copy_plan = CopyPlan(source.uri, uri, count,
                         tuple(source.partitions(partition_count(count, partitions))),
                         _identity(options))
    folder = state_folder(state_path) if state_path is not None else None
    checkpoint = Checkpoint(folder, copy_plan, restart=restart) if folder else None
    report = MigrationReport.of_plan(plan, source, uri,
                                     checkpoint.folder if checkpoint else None)
    kept = [r for r in (checkpoint.load(f"copy-{p.index}") for p in copy_plan.parts)
            if r is not None] if checkpoint else []
    if kept:
        report.resumed_from = sum(r.records for r in kept)
        verify_target(report.resumed_from, [(r.last_id, r.last_target_id) for r in kept], uri,
                      checkpoint.folder if checkpoint else None)
    with open_store(uri, create=plan.spec) as dest:
        tasks = [CopyTask(part, copy_plan, options, batch_size_for(options, type(dest)),
                          writers_for(dest, options)) for part in copy_plan.parts]
        if runner is None:
            runner = run_ray(ray_address, copy_partition) if executor == "ray" \
                else run_local((source, dest), copy_partition)
        if note is not None:
            note(f"{len(tasks)} partitions of the source, {len(kept)} kept from an earlier "
                 f"run; {'Ray tasks' if executor == 'ray' else 'in this process'}")
        kept, ran, failures = run_tasks(tasks, runner, checkpoint, desc="vmtest migrate")
    report.partitions_kept = sorted(r.index for r in kept)
    report.partitions_run = sorted(r.index for r in ran)
    report.copied = sum(r.records for r in ran)
    report.batches = sum(r.batches for r in ran)
    report.retries = sum(r.retries for r in ran)
    report.seconds = time.perf_counter() - started
    if failures:
        raise partitions_failed(failures, len(kept) + len(ran), checkpoint,
                                "--state=PATH")
    return report
