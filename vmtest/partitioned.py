"""The record-by-record checks over partitions of the stores, each record read once.

Each store describes itself as independent partitions (:meth:`VectorStore.partitions`:
Parquet row groups, LanceDB fragments, PostgreSQL and Qdrant id ranges; a store that cannot
split itself is one partition). One side, the *driver* (the source, unless only the source
can be looked up by id), is read partition by partition with its vectors; each record's
partner on the other side, the *lookup* side, is fetched by id (the record's key, or the
UUIDv5 vmtest derives from it), and the pair is compared by the same checks as an in-memory
run. An id-only pass over the lookup side's partitions then finds its records without a
partner: the target's extras (or, driven from the target, the source's missing records).
Every record is read with its vectors once in all; the reads are counted per side (records,
bytes, ids read alone) and reported in the ids check's figures.

A partition is a :class:`Task` run by a pure, picklable function (:func:`run_task`):
in this process, or as a Ray task (``--vmtest-executor=ray``). Results merge as the shares of
a ``--vmtest-shard`` run do (:mod:`vmtest.checks.merge`); with ``--vmtest-partition-state``
each finished partition is kept, keyed by the plan, so a rerun redoes only the partitions
that did not finish. ``--vmtest-shard=I/N`` runs the partitions whose index is I-1 modulo N.

Memory per task is bounded: a partition is compared in chunks sized from
``--vmtest-memory-budget`` (a chunk and its partners within half of it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vmtest.checks.fidelity import check_ids
from vmtest.checks.merge import merge_check_results
from vmtest.checks.result import CheckResult
from vmtest.errors import VmtestError
from vmtest.matching import Alignment, Matching, Snapshot, align, snapshot, split_batch
from vmtest.migrate.mapping import uuid5_text
from vmtest.settings import Settings
from vmtest.stores.base import Partition, RecordBatch, RecordId, VectorStore, is_uuid
from vmtest.stream import RECORD_OVERHEAD
from vmtest.uri import StoreURI

if TYPE_CHECKING:
    from vmtest.fidelity_run import FidelityRun

#: Records of a chunk at least, whatever the budget.
MIN_CHUNK = 100
#: How often Ray runs a task again whose worker died (Ray's own retry).
RAY_RETRIES = 3
#: The fidelity checks a partitioned run gives (in this order).
CHECKS = ("ids", "vectors", "metadata", "documents")


class NotPartitionable(VmtestError):
    """These two stores cannot be checked partition by partition; the caller checks them the
    other way (in one process, every record in memory or spilled)."""


class PartitionsFailed(VmtestError):
    """Some partitions did not finish (their errors are listed)."""


@dataclass
class Reads:
    """What one side read: records with their vectors, ids read alone (no vectors), and the
    bytes of both (vectors as float32, ids, metadata and documents as pickled)."""

    records: int = 0
    ids: int = 0
    bytes: int = 0

    def count(self, batch: RecordBatch) -> None:
        if not len(batch):
            return
        if batch.vectors is None:
            self.ids += len(batch)
        else:
            self.records += len(batch)
            self.bytes += int(np.asarray(batch.vectors).nbytes)
        self.bytes += len(pickle.dumps((batch.ids, batch.metadatas, batch.documents),
                                       protocol=pickle.HIGHEST_PROTOCOL))

    def add(self, other: Reads) -> None:
        self.records += other.records
        self.ids += other.ids
        self.bytes += other.bytes


@dataclass(frozen=True)
class Plan:
    """Which side drives, and both sides' partitions. The same stores in the same state
    give the same plan in every process (no random choice), so the N shares of a
    ``--vmtest-shard`` run agree on it, and it keys the checkpoints."""

    source: StoreURI
    target: StoreURI
    driver: str  # "source" or "target"
    driver_parts: tuple[Partition, ...]
    lookup_parts: tuple[Partition, ...]
    #: What else changes a partition's result (tolerances, id and document fields, metric).
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def lookup(self) -> str:
        return "target" if self.driver == "source" else "source"

    def key(self) -> str:
        return plan_key([str(self.source), str(self.target), self.driver,
                         [p.spec for p in self.driver_parts],
                         [p.spec for p in self.lookup_parts], list(self.settings)])

    def describe(self) -> str:
        return (f"{self.source} -> {self.target}, driven by the {self.driver}\n"
                + "".join(f"{self.driver} {p.index}: {p.label}\n" for p in self.driver_parts)
                + "".join(f"{self.lookup} {p.index}: {p.label}\n" for p in self.lookup_parts))


def plan_key(parts: Any) -> str:
    """A short digest of a plan's JSON-ready parts: the name of its checkpoint folder."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class Task:
    """One partition's work: ``pairs`` (read a driver partition with vectors, fetch the
    partners, compare) or ``orphans`` (read a lookup partition's ids, list those without a
    partner)."""

    phase: str
    part: Partition
    plan: Plan
    settings: Settings
    metric: str | None
    #: Records compared at once (the memory bound of a task).
    chunk: int
    #: Whether the orphans are found by looking the driver up by id (a share of a
    #: --vmtest-shard run, which never sees the other shares' keys): the driver's keys must
    #: then be its ids.
    lookups: bool = False

    @property
    def name(self) -> str:
        return f"{self.phase}-{self.part.index}"


@dataclass
class TaskResult:
    """What one partition found: the checks of its pairs (as dicts), the id figures, the
    driver's key digests (for the orphans pass) and the reads of both sides."""

    name: str
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    matched: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    source_duplicates: list[str] = field(default_factory=list)
    target_duplicates: list[str] = field(default_factory=list)
    digests: np.ndarray | None = None
    reads: dict[str, Reads] = field(default_factory=lambda: {"source": Reads(),
                                                              "target": Reads()})
    refused: str | None = None  # NotPartitionable's message, carried across processes
    #: Chunks the partition was compared in, and the peak memory (max RSS, bytes) of the
    #: process that ran it, when it finished (the process's, not the task's alone).
    chunks: int = 0
    peak_rss: int = 0
    worker: int = 0  # the process id


@dataclass
class Outcome:
    """A partitioned run: the merged checks, what each side read, the plan, and how many
    partitions were taken from the checkpoint rather than run."""

    results: dict[str, CheckResult]
    reads: dict[str, Reads]
    plan: Plan
    ran: int
    resumed: int
    #: Each partition's result (figures, chunks, the peak memory of the process that ran it).
    tasks: list[TaskResult] = field(default_factory=list)


# -- keys and ids -----------------------------------------------------------------------------

def key_digests(keys: Sequence[str]) -> np.ndarray:
    """A 64-bit BLAKE2 digest of each key (8 bytes a record: the orphans pass's set)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(k.encode("utf-8", "surrogatepass"),
                                        digest_size=8).digest(), "little") for k in keys),
        dtype=np.uint64, count=len(keys))


def among(digests: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """Which of these keys are among the sorted key digests (:func:`key_digests`)."""
    mine = key_digests(keys)
    if not len(digests):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(digests, mine)
    return (at < len(digests)) & (digests[np.minimum(at, len(digests) - 1)] == mine)


def _forms(key: str) -> list[RecordId]:
    """The source ids a key may stand for: the text, and the integer when it is one."""
    if key.isdigit() and key.isascii() and (key == "0" or not key.startswith("0")):
        return [key, int(key)]
    return [key]


def natives_for(store: VectorStore, keys: Iterable[str]) -> list[RecordId]:
    """The native ids records of these keys may have in the store, once each: every form of
    the key it holds as it is, and, where some form is one it cannot hold, the UUIDv5
    vmtest's migration writes instead (:class:`~vmtest.migrate.mapping.IdMapper`'s rule)."""
    seen: dict[tuple[type, RecordId], None] = {}
    for key in keys:
        mapped = False
        for native in _forms(key):
            if store.accepts_id(native):
                seen.setdefault((type(native), native), None)
            else:
                mapped = True
        if mapped and not is_uuid(key):
            native = uuid5_text(key)
            if store.accepts_id(native):
                seen.setdefault((str, native), None)
    return [native for _, native in seen]


def named_by_key(native: RecordId, key: str) -> bool:
    """Whether a record's native id is one a lookup by its key would ask for."""
    text = str(native)
    return text == key or text.lower() == uuid5_text(key)


# -- the tasks --------------------------------------------------------------------------------

@contextmanager
def task_stores(plan: Any, stores: tuple[VectorStore, VectorStore] | None
                ) -> Iterator[tuple[VectorStore, VectorStore]]:
    """The source and target a partition's task works on: ``stores`` when given (in this
    process, already open), else opened from the plan's URIs (``plan.source``,
    ``plan.target``) and closed afterwards, as in another process."""
    from vmtest.stores import open_store

    if stores is not None:
        yield stores
        return
    pair = open_store(plan.source), open_store(plan.target)
    try:
        yield pair
    finally:
        for store in pair:
            store.close()


def run_task(task: Task, digests: np.ndarray | None = None,
             stores: tuple[VectorStore, VectorStore] | None = None) -> TaskResult:
    """Run one partition's task; pure but for reading the stores (opened from the plan's
    URIs unless given), so it runs as well in another process. ``digests``: the driver's key
    digests, sorted (the orphans pass; None: look the driver up by id instead)."""
    try:
        with task_stores(task.plan, stores) as pair:
            result = _pairs(task, pair) if task.phase == "pairs" else \
                _orphans(task, pair, digests)
    except NotPartitionable as exc:
        return TaskResult(task.name, refused=exc.message)
    result.peak_rss, result.worker = peak_rss(), os.getpid()
    return result


def peak_rss() -> int:
    """This process's peak resident memory in bytes (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _chunks(batches: Iterable[RecordBatch], size: int) -> Iterator[list[RecordBatch]]:
    """The batches in groups of about ``size`` records."""
    group: list[RecordBatch] = []
    held = 0
    for batch in batches:
        group.append(batch)
        held += len(batch)
        if held >= size:
            yield group
            group, held = [], 0
    if group:
        yield group


def _sides(task: Task, pair: tuple[VectorStore, VectorStore]
           ) -> tuple[VectorStore, VectorStore, str, str]:
    source, target = pair
    if task.plan.driver == "source":
        return source, target, "source", "target"
    return target, source, "target", "source"


def _fidelity_run(pair: tuple[VectorStore, VectorStore], settings: Settings,
                  metric: str | None) -> FidelityRun:
    """The in-memory run whose checks compare a chunk's pairs (the same checks, the same
    options as a run in one process)."""
    from vmtest.fidelity_run import FidelityRun
    from vmtest.side import Side

    matching = Matching(settings.id_field, settings.document_field)
    source, target = (Side(store, matching, name=name, batch_size=settings.batch_size)
                      for store, name in zip(pair, ("source", "target"), strict=True))
    return FidelityRun(source, target, settings, metric)


def _pairs(task: Task, pair: tuple[VectorStore, VectorStore]) -> TaskResult:
    settings = task.settings
    driver, lookup, dname, lname = _sides(task, pair)
    matching = Matching(settings.id_field, settings.document_field)
    run = _fidelity_run(pair, settings, task.metric)
    result = TaskResult(task.name)
    digests = []
    batches = driver.read_partition(task.part, min(settings.batch_size, task.chunk))
    for group in _chunks(batches, task.chunk):
        for batch in group:
            result.reads[dname].count(batch)
        mine = snapshot(driver, matching, group)
        if task.lookups and any(k != str(n) for k, n in zip(mine.keys, mine.native_ids,
                                                               strict=True)):
            raise NotPartitionable(
                f"the {dname}'s records carry their keys in a payload field, so a share of a "
                "--vmtest-shard run cannot look them up by id")
        found = _lookup(lookup, matching, mine.keys, result.reads[lname])
        if found.vectors is None or found.vectors.size == 0:
            width = mine.vectors.shape[1] if mine.vectors is not None else 0
            found.vectors = np.zeros((len(found), width), np.float32)
        source, target = (mine, found) if dname == "source" else (found, mine)
        al = align(source, target)
        result.matched += al.matched
        result.missing += al.missing
        result.extra += al.extra
        result.source_duplicates += al.source_duplicates
        result.target_duplicates += al.target_duplicates
        for check in _compare(run, source, target):
            if check.name != "ids":
                result.checks.setdefault(check.name, []).append(check.to_dict())
        digests.append(key_digests(mine.keys))
        result.chunks += 1
    result.digests = np.concatenate(digests) if digests else np.zeros(0, np.uint64)
    return result


def _compare(run: FidelityRun, source: Snapshot, target: Snapshot) -> list[CheckResult]:
    """The checks of a chunk's pairs: by the checksum fast path (only the pairs whose
    digests differ compared one by one, as a run in one process does), or every pair one by
    one under --vmtest-compare=full or when a key occurs twice."""
    from vmtest.digest import (
        DigestSide,
        combined,
        match_digests,
        quantum,
        record_digests,
        vector_digests,
    )
    from vmtest.side import subset

    settings = run.settings
    if settings.compare == "full" or source.vectors is None or target.vectors is None:
        return run.checks(source, target)
    digested = []
    for snap in (source, target):
        side = DigestSide()
        side.keys, side.native_ids = snap.keys, snap.native_ids
        vectors = np.asarray(snap.vectors, dtype=np.float32)
        side.dimension = vectors.shape[1] if vectors.ndim == 2 else 0
        side.key_hashes = np.fromiter(map(hash, snap.keys), dtype=np.int64,
                                      count=len(snap.keys))
        side.has_document = np.fromiter((d is not None for d in snap.documents), dtype=bool,
                                        count=len(snap.documents))
        step = quantum(settings.tolerance, run.metric, side.dimension or 0)
        side.digests = combined(
            record_digests(snap.keys, list(snap.metadatas), list(snap.documents)),
            vector_digests(vectors, step, run.metric == "cosine"))
        digested.append(side)
    match = match_digests(*digested)
    if match.duplicates:
        return run.checks(source, target)
    return run.checks(subset(source, match.source_suspects),
                      subset(target, match.target_suspects), match)


def _lookup(store: VectorStore, matching: Matching, keys: Sequence[str], reads: Reads
            ) -> Snapshot:
    """The records of ``store`` with these keys, fetched by id (LOOKUP_CHUNK ids a call)."""
    wanted = set(keys)
    natives = natives_for(store, keys)
    batches = []
    step = store.LOOKUP_CHUNK
    for start in range(0, len(natives), step):
        batch = store.fetch(natives[start:start + step])
        reads.count(batch)
        batches.append(batch)
    found = snapshot(store, matching, batches)
    rows = [i for i, key in enumerate(found.keys) if key in wanted]
    if len(rows) == len(found):
        return found
    from vmtest.side import subset

    return subset(found, np.asarray(rows, dtype=np.int64))


def _orphans(task: Task, pair: tuple[VectorStore, VectorStore],
             digests: np.ndarray | None) -> TaskResult:
    settings = task.settings
    driver, lookup, dname, lname = _sides(task, pair)
    matching = Matching(settings.id_field, settings.document_field)
    result = TaskResult(task.name)
    orphans = result.extra if lname == "target" else result.missing
    for batch in lookup.read_partition(task.part, settings.batch_size, with_vectors=False):
        result.reads[lname].count(batch)
        keys, _, _ = split_batch(lookup, matching, batch)
        if digests is not None:
            known = among(digests, keys)
        else:
            present = {str(n) for n in driver.existing(natives_for(driver, keys))}
            result.reads[dname].ids += len(present)
            known = np.fromiter((k in present for k in keys), dtype=bool, count=len(keys))
        for key, native, partnered in zip(keys, batch.ids, known.tolist(), strict=True):
            if not partnered:
                orphans.append(key)
            elif not named_by_key(native, key):
                raise NotPartitionable(
                    f"the {lname}'s record {native!r} stands for {key!r} under an id vmtest "
                    "cannot derive from it (neither the key nor vmtest's UUIDv5 of it), so "
                    "its partner cannot be looked up by id")
    return result


# -- planning ---------------------------------------------------------------------------------

def wanted_partitions(settings: Settings, count: int, dimension: int) -> int:
    """How many partitions to ask each store for: --vmtest-partitions, else enough for
    every share to get two, Ray's workers several, and one to fit the memory budget."""
    if settings.partitions:
        return settings.partitions
    per_record = 4 * dimension + RECORD_OVERHEAD
    by_memory = math.ceil(count * per_record / max(1, settings.memory_budget // 2))
    shares = settings.shard[1] if settings.shard else 1
    return max(by_memory, 2 * shares, 4)


def chunk_records(settings: Settings, dimension: int) -> int:
    """Records a task compares at once: a chunk and its partners in half the budget."""
    per_record = 4 * dimension + RECORD_OVERHEAD
    return max(MIN_CHUNK, settings.memory_budget // 4 // per_record)


def make_plan(source: VectorStore, target: VectorStore, settings: Settings,
              metric: str | None, *, count: int, dimension: int) -> Plan:
    if source.FETCH_IS_SCAN and target.FETCH_IS_SCAN:
        raise NotPartitionable(
            f"neither the {source.ENGINE} source nor the {target.ENGINE} target can be read by "
            "id without a scan, so no partner can be looked up")
    driver = "target" if target.FETCH_IS_SCAN else "source"
    wanted = wanted_partitions(settings, count, dimension)
    first, second = (source, target) if driver == "source" else (target, source)
    relevant = ("tolerance", "rtol", "id_field", "document_field", "lenient_numbers",
                "strict_floats", "confidence")
    return Plan(source.uri, target.uri, driver, tuple(first.partitions(wanted)),
                tuple(second.partitions(wanted)),
                settings=(*((name, getattr(settings, name)) for name in relevant),
                          ("metric", metric)))


# -- checkpoints ------------------------------------------------------------------------------

class Keyed(Protocol):
    """A plan a checkpoint is kept for: its key (the same stores in the same state and the
    same options give the same key) and what it is, in words."""

    def key(self) -> str: ...

    def describe(self) -> str: ...


class Checkpoint:
    """Each finished partition's result, in ``FOLDER/plan-KEY/``: a rerun of the same plan
    (the same stores in the same state, the same options) takes them instead of running
    them again. Files are written whole or not at all (a rename). ``restart``: forget what
    an earlier run of this plan kept."""

    def __init__(self, folder: Path, plan: Keyed, *, restart: bool = False) -> None:
        self.folder = Path(folder) / f"plan-{plan.key()}"
        if restart and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "plan.txt").write_text(plan.describe(), encoding="utf-8")

    def _path(self, name: str) -> Path:
        return self.folder / f"{name}.pickle"

    def load(self, name: str) -> Any:
        path = self._path(name)
        if not path.exists():
            return None
        with path.open("rb") as fh:
            return pickle.load(fh)

    def save(self, result: Any) -> None:
        """Keep a finished partition's result (anything picklable with a ``name``)."""
        path = self._path(result.name)
        partial = path.with_suffix(".part")
        with partial.open("wb") as fh:
            pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, path)


# -- executors --------------------------------------------------------------------------------

#: Runs tasks (a check's :class:`Task`, a migration's partition): ``run(tasks, digests,
#: done, failed)`` calls ``done(task, result)`` or ``failed(task, error)`` for each.
Runner = Callable[[list[Any], "np.ndarray | None", Callable[[Any, Any], None],
                   Callable[[Any, BaseException], None]], None]


#: A task function: ``fn(task, digests, stores)``, pure but for the stores it reads and
#: writes, picklable (importable where Ray's workers run).
TaskFn = Callable[..., Any]


def run_local(stores: tuple[VectorStore, VectorStore] | None, fn: TaskFn = run_task
              ) -> Runner:
    """Each task in this process, one after the other, on the stores already open (None:
    each task opens them; ``fn``: the task function, :func:`run_task` or one that wraps
    it)."""
    def run(tasks: list[Any], digests: np.ndarray | None, done: Callable[[Any, Any], None],
            failed: Callable[[Any, BaseException], None]) -> None:
        for task in tasks:
            try:
                result = fn(task, digests, stores)
            except Exception as exc:  # one partition's failure: the others still run
                failed(task, exc)
                continue
            done(task, result)

    return run


def run_ray(address: str | None, fn: TaskFn = run_task) -> Runner:
    """Each task as a Ray task (retried by Ray when its worker dies), on the cluster at
    ``address``, the Ray this process already initialised, or a local one started here (and
    stopped afterwards). ``fn`` must be importable where the workers run."""
    def run(tasks: list[Any], digests: np.ndarray | None, done: Callable[[Any, Any], None],
            failed: Callable[[Any, BaseException], None]) -> None:
        import ray

        with ray_session(address):
            remote: Any = ray.remote(max_retries=RAY_RETRIES)(fn)
            shared = ray.put(digests) if digests is not None else None
            pending = {remote.remote(task, shared): task for task in tasks}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as exc:  # the task raised, or Ray gave up retrying it
                    failed(task, exc)
                    continue
                done(task, result)

    return run


@contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """Ray for as long as this lasts: the cluster at ``address``, or a local one started
    here, stopped afterwards (nothing to do when this process already initialised Ray). A
    run of several waves of tasks (a sync's generations) holds one around all of them."""
    import ray

    if ray.is_initialized():
        yield
        return
    path = os.environ.get("PYTHONPATH")
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}} if path else None)
    try:
        yield
    finally:
        ray.shutdown()


def run_tasks(tasks: Sequence[Any], runner: Runner, checkpoint: Checkpoint | None, *,
              desc: str, digests: np.ndarray | None = None,
              accept: Callable[[Any], None] | None = None
              ) -> tuple[list[Any], list[Any], list[str]]:
    """Run the tasks the checkpoint does not already hold a result of (each task has a
    ``name`` and a ``part``), saving each result as it comes; a bar counts partitions (off
    when the output is not a terminal). ``accept`` may raise on a result before it is kept.
    (the results kept from an earlier run, the results of this run, a line per failed
    task): one partition's failure does not stop the others."""
    from tqdm import tqdm

    kept: list[Any] = []
    todo: list[Any] = []
    for task in tasks:
        result = checkpoint.load(task.name) if checkpoint else None
        if result is not None:
            kept.append(result)
        else:
            todo.append(task)
    ran: list[Any] = []
    failures: list[str] = []
    with tqdm(total=len(todo), unit="partition", desc=desc, disable=None) as bar:
        def done(task: Any, result: Any) -> None:
            if accept is not None:
                accept(result)
            if checkpoint:
                checkpoint.save(result)
            ran.append(result)
            bar.update(1)

        def failed(task: Any, exc: BaseException) -> None:
            failures.append(f"{task.name} ({task.part.label}): {type(exc).__name__}: {exc}")

        runner(todo, digests, done, failed)
    return kept, ran, failures


def partitions_failed(failures: list[str], finished: int, checkpoint: Checkpoint | None,
                      flag: str) -> PartitionsFailed:
    """The error of a run some of whose partitions failed: which, and how to redo only
    those (``flag``: the option that keeps finished partitions)."""
    hint = (f"the {finished} that finished are kept in {checkpoint.folder}: run again to "
            "redo only the others") if checkpoint else \
        f"{flag} keeps finished partitions for a rerun"
    return PartitionsFailed(f"{len(failures)} partitions failed: " + "; ".join(failures),
                            hint=hint)


# -- the run ----------------------------------------------------------------------------------

def check_partitioned(source: VectorStore, target: VectorStore, settings: Settings,
                      metric: str | None, *, counts: tuple[int, int], dimension: int,
                      runner: Runner | None = None) -> Outcome:
    """The record-by-record checks of two stores holding ``counts`` records, partition by
    partition (this share's partitions under --vmtest-shard). Raises NotPartitionable when
    the stores cannot be checked this way, PartitionsFailed when some partitions did not
    finish. The orphans pass is left out when every record of the lookup side found its
    partner (a faithful copy: each record read once, and only once)."""
    plan = make_plan(source, target, settings, metric, count=max(counts),
                     dimension=dimension)
    lookup_count = counts[1] if plan.driver == "source" else counts[0]
    if runner is None:
        runner = run_ray(settings.ray_address) if settings.executor == "ray" \
            else run_local((source, target))
    checkpoint = Checkpoint(settings.partition_state, plan) \
        if settings.partition_state is not None else None
    shard = settings.shard

    def mine(part: Partition) -> bool:
        return shard is None or part.index % shard[1] == shard[0] - 1

    chunk = chunk_records(settings, dimension)
    results: list[TaskResult] = []
    failures: list[str] = []
    resumed = 0

    def refused(result: TaskResult) -> None:
        if result.refused:
            raise NotPartitionable(result.refused)

    def phase(name: str, parts: Sequence[Partition], digests: np.ndarray | None) -> None:
        nonlocal resumed
        tasks = [Task(name, part, plan, settings, metric, chunk, lookups=shard is not None)
                 for part in filter(mine, parts)]
        kept, ran, failed = run_tasks(tasks, runner, checkpoint, desc=f"vmtest {name}",
                                      digests=digests, accept=refused)
        results.extend(kept + ran)
        resumed += len(kept)
        failures.extend(failed)

    phase("pairs", plan.driver_parts, None)
    partnered = sum(r.matched for r in results) if shard is None else -1
    duplicated = any(r.source_duplicates or r.target_duplicates for r in results)
    if not failures and (partnered != lookup_count or duplicated):
        found = [r.digests for r in results if r.digests is not None]
        digests = None if shard is not None else np.unique(
            np.concatenate(found) if found else np.zeros(0, np.uint64))
        phase("orphans", plan.lookup_parts, digests)
    if failures:
        raise partitions_failed(failures, len(results), checkpoint,
                                "--vmtest-partition-state=DIR")
    return Outcome(merge(results, settings, metric, pair=(source, target)),
                   reads=_total_reads(results), plan=plan,
                   ran=len(results) - resumed, resumed=resumed, tasks=results)


def _total_reads(results: list[TaskResult]) -> dict[str, Reads]:
    total = {"source": Reads(), "target": Reads()}
    for result in results:
        for side, reads in result.reads.items():
            total[side].add(reads)
    return total


class _Counted(Alignment):
    """An alignment known by its counts and offending keys (the pairs stayed in the tasks)."""

    def __init__(self, matched: int, **lists: list[str]) -> None:
        super().__init__(keys=[], source_idx=np.zeros(0, np.int64),
                         target_idx=np.zeros(0, np.int64), **lists)
        self._matched = matched

    @property
    def matched(self) -> int:
        return self._matched


def merge(results: list[TaskResult], settings: Settings, metric: str | None, *,
          pair: tuple[VectorStore, VectorStore]) -> dict[str, CheckResult]:
    """The partitions' results as one run's: the ids check from the summed counts and the
    offending keys (sorted, so the order the partitions finished in does not matter), the
    other checks merged as the shares of a --vmtest-shard run are."""
    lists = {name: sorted(k for r in results for k in getattr(r, name))
             for name in ("missing", "extra", "source_duplicates", "target_duplicates")}
    ids = check_ids(_Counted(sum(r.matched for r in results), **lists))
    reads = _total_reads(results)
    for side in ("source", "target"):
        ids.figures[f"read_{side}_records"] = reads[side].records
        ids.figures[f"read_{side}_ids"] = reads[side].ids
        ids.figures[f"read_{side}_bytes"] = reads[side].bytes
    out = {"ids": ids}
    per_check: dict[str, list[CheckResult]] = {}
    for result in results:
        for name, dicts in result.checks.items():
            per_check.setdefault(name, []).extend(CheckResult.from_dict(d) for d in dicts)
    missing = [name for name in CHECKS[1:] if name not in per_check]
    if missing:  # no pair in this run (an empty store, a share with no driver partition)
        empty = Snapshot(vectors=np.zeros((0, 0), np.float32))
        for check in _fidelity_run(pair, settings, metric).checks(empty, empty):
            if check.name in missing:
                per_check[check.name] = [check]
    for name in CHECKS[1:]:
        if name in per_check:
            out[name] = merge_check_results(per_check[name], len(per_check[name]))
    return out
