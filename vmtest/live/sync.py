"""``vmtest sync``: catch up a copy that fell behind while the application kept writing.

Generations, as mongodb-labs/migration-verifier runs them:

- **Generation 0** reads both stores' digests (:mod:`vmtest.digest`), compares every key and
  repairs what differs: a record *missing* on the target or whose *content* differs is copied
  again from the source (through the same plan, id mapping and refusal rules as ``migrate``);
  an *extra* record on the target is deleted with ``--delete-extra``, else listed.
- **Later generations** re-check the keys that mismatched before (did the repair land?) plus
  the keys written since: from the source's change feed where it has one (PostgreSQL:
  logical decoding, see :class:`~vmtest.stores.base.ChangeFeed`), else by reading both
  stores' digests again, whose cost is that of generation 0 (docs/live.md).
- With ``until_converged``, generations go on until one that began after the writes-off
  signal finds nothing; only then is the copy declared converged.

Each mismatch carries its kind, when it was first seen and how long it lasted. The state (the
generation, the outstanding mismatches with their first-seen times, the feed's name) is
saved after every generation, so a sync killed with ``kill -9`` resumes where it stood.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vmtest.checks.fidelity import same_value
from vmtest.digest import read_digests
from vmtest.errors import MigrationError
from vmtest.matching import Matching
from vmtest.migrate.mapping import IdMapper, MetadataPolicy, map_batch
from vmtest.migrate.runner import MigrationOptions, make_plan, refuse_if_lossy
from vmtest.stores import RecordBatch, VectorStore, open_store
from vmtest.stores.base import RecordId
from vmtest.stores.changes import ChangeFeed, ChangeFeedUnavailable
from vmtest.uri import StoreURI, parse

if TYPE_CHECKING:
    from vmtest.partitioned import Reads, Runner

KINDS = ("missing", "extra", "content")
VERSION = 1
#: Records fetched by id at once.
CHUNK = 500
#: Generations a plain ``vmtest sync`` runs at most (until one finds nothing).
DEFAULT_GENERATIONS = 10


@dataclass
class SyncOptions:
    migration: MigrationOptions = field(default_factory=MigrationOptions)
    #: Delete records the target has and the source has not (else they are listed).
    delete_extra: bool = False
    #: Run until a generation that began after writes-off finds nothing.
    until_converged: bool = False
    #: At most this many generations (None: DEFAULT_GENERATIONS, or unbounded when
    #: until_converged).
    generations: int | None = None
    #: The pause after a generation that found nothing while writes go on.
    interval_s: float = 1.0
    #: Vectors within this absolute tolerance (per component) are the same.
    tolerance: float = 1e-6
    #: Use the source's change feed where it has one.
    use_feed: bool = True
    #: Where a comparison of every key runs: in one process ("local", without partitions),
    #: over ``partitions`` in this process, or as Ray tasks ("ray"; vmtest.live.partitioned).
    executor: str = "local"
    ray_address: str | None = None
    partitions: int | None = None

    @property
    def spread(self) -> bool:
        """Whether a comparison of every key runs partition by partition."""
        return self.executor == "ray" or bool(self.partitions)

    def identity(self) -> dict[str, Any]:
        """What a resumed sync must share with the run it continues: the mapping (the rest,
        --delete-extra included, may change between runs)."""
        return self.migration.identity()


@dataclass
class Mismatch:
    key: str
    kind: str
    source_id: RecordId | None
    target_id: RecordId | None
    first_seen: float
    last_seen: float

    @property
    def lasted_s(self) -> float:
        return self.last_seen - self.first_seen


@dataclass
class Generation:
    number: int
    started: float
    how: str
    checked: int = 0
    found: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    copied: int = 0
    deleted: int = 0
    listed: int = 0
    seconds: float = 0.0
    writes_off: bool = False
    #: Age of the oldest mismatch still outstanding after this generation (s).
    oldest_s: float = 0.0
    #: A comparison over partitions: how many, and what each side read in all (records
    #: with vectors, ids alone, and the source records read again to be copied).
    partitions: int = 0
    reads: dict[str, int] = field(default_factory=dict)

    @property
    def mismatches(self) -> int:
        return sum(self.found.values())

    def line(self) -> str:
        found = ", ".join(f"{n} {kind}" for kind, n in self.found.items() if n) or "nothing"
        repair = f"; copied {self.copied}, deleted {self.deleted}" if \
            self.copied or self.deleted else ""
        listed = f", {self.listed} extra listed (--delete-extra deletes)" if self.listed else ""
        off = " [writes off]" if self.writes_off else ""
        return (f"generation {self.number} ({self.how}): checked {self.checked:,} keys, found "
                f"{found}{repair}{listed}; {self.seconds:.2f} s{off}")


@dataclass
class SyncState:
    source: str
    target: str
    options: dict[str, Any]
    generation: int = 0
    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    generations: list[dict[str, Any]] = field(default_factory=list)
    feed: str | None = None
    converged: bool = False
    version: int = VERSION

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=1, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SyncState | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')}")
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise MigrationError(f"the sync state file {path} cannot be read ({exc})",
                                 hint="remove it, or pass --restart to begin again") from exc

    def outstanding(self) -> dict[str, Mismatch]:
        return {k: Mismatch(**v) for k, v in self.pending.items()}


@dataclass
class SyncReport:
    source: str
    target: str
    state_path: str | None
    generations: list[Generation]
    outstanding: list[Mismatch]
    converged: bool
    writes_off_seen: bool
    feed: str | None
    seconds: float = 0.0

    @property
    def faithful(self) -> bool:
        """The last generation found nothing (and, asked to converge, began after
        writes-off)."""
        return bool(self.generations) and self.generations[-1].mismatches == 0 and \
            not self.outstanding

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "vmtest-sync", "schema_version": 1, "source": self.source,
            "target": self.target, "state_path": self.state_path,
            "verdict": "converged" if self.converged else
            ("faithful" if self.faithful else "mismatches remain"),
            "converged": self.converged, "writes_off_seen": self.writes_off_seen,
            "feed": self.feed, "seconds": round(self.seconds, 3),
            "generations": [{**asdict(g), "mismatches": g.mismatches}
                            for g in self.generations],
            "outstanding": [{**asdict(m), "lasted_s": round(m.lasted_s, 3)}
                            for m in self.outstanding],
        }


def default_state_path(source: StoreURI, target: StoreURI) -> Path:
    """Beside a local target (the state travels with it), as migrate's; for a server,
    under reports/, named by the pair of URIs."""
    if target.is_local and target.path:
        path = Path(target.path)
        collection = target.param("collection") or target.param("table")
        name = f"{path.name}.{collection}" if collection else path.name
        return path.with_name(name + ".vmtest-sync.json")
    digest = hashlib.sha1(f"{source}->{target}".encode()).hexdigest()[:12]
    return Path("reports") / f"sync-{digest}.state.json"


def feed_name(source: StoreURI, target: StoreURI) -> str:
    """A name for the source's change feed, stable for the pair (a resumed sync reuses it)."""
    return "vmtest_" + hashlib.sha1(f"{source}->{target}".encode()).hexdigest()[:16]


# -- comparing records ---------------------------------------------------------------------

@dataclass
class _Record:
    key: str
    native: RecordId
    vector: np.ndarray | None
    metadata: dict[str, Any]
    document: str | None


def _records(store: VectorStore, matching: Matching, batch: RecordBatch) -> dict[str, _Record]:
    out: dict[str, _Record] = {}
    for i, (rid, meta, doc) in enumerate(zip(batch.ids, batch.metadatas, batch.documents,
                                             strict=True)):
        key, rest, document = matching.split(store, rid, meta, doc)
        vector = None if batch.vectors is None else np.asarray(batch.vectors[i], np.float32)
        out.setdefault(key, _Record(key, rid, vector, rest, document))
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm else v


def same_record(expected: _Record, stored: _Record, *, atol: float, cosine: bool,
                float_ulps: int) -> bool:
    """Whether the target holds what the source's record maps to: vectors within ``atol``
    (as unit vectors under cosine, which some stores normalise), metadata value by value
    within the target's declared float rounding, documents equal."""
    if expected.vector is not None and stored.vector is not None:
        a, b = expected.vector, stored.vector
        if a.shape != b.shape:
            return False
        if cosine:
            a, b = _unit(a), _unit(b)
        if not np.allclose(a, b, atol=atol, rtol=0.0):
            return False
    if expected.document != stored.document:
        return False
    return expected.metadata.keys() == stored.metadata.keys() and all(
        same_value(v, stored.metadata[k], float_ulps=float_ulps)
        for k, v in expected.metadata.items())


# -- the sync ------------------------------------------------------------------------------

class SyncRun:
    """One sync run: the source, the opened target, the mapping, the feed."""

    def __init__(self, source: VectorStore, dest: VectorStore, options: SyncOptions) -> None:
        self.source = source
        self.dest = dest
        self.options = options
        self.matching = Matching(document_field=options.migration.document_field)
        self.ids = IdMapper(dest)
        self.policy = MetadataPolicy(dest, options.migration.on_unsupported)
        self.batch_size = options.migration.batch_size or dest.DEFAULT_BATCH_SIZE
        metric = dest.describe().metric
        self.cosine = metric == "cosine"
        self.metric = metric
        self.float_ulps = dest.float_rounding_ulps(dest.uri)
        #: How the partitions' tasks run, when a comparison of every key is spread over
        #: partitions (options.spread).
        self.runner: Runner | None = None

    def target_id(self, source_id: RecordId) -> RecordId:
        return self.ids.map(source_id)[0]

    def expected(self, batch: RecordBatch) -> dict[str, _Record]:
        """The source's records as the target must hold them, by key."""
        mapped = map_batch(batch, self.source, self.ids, self.policy,
                           self.options.migration.document_field)
        records = _records(self.dest, self.matching, mapped)
        natives = dict(zip(map(str, mapped.ids), batch.ids, strict=True))
        for record in records.values():  # the source's own id, to copy it again
            record.native = natives[str(record.native)]
        return records

    def fetch(self, store: VectorStore, ids: Sequence[RecordId]) -> Iterable[RecordBatch]:
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), CHUNK):
            yield store.fetch(ids[start:start + CHUNK])

    def held(self, batch: RecordBatch) -> dict[str, _Record]:
        """The target's records of a batch it returned, by key."""
        return _records(self.dest, self.matching, batch)

    def compare_keys(self, pairs: dict[str, tuple[RecordId | None, RecordId | None]]
                     ) -> list[Mismatch]:
        """Compare these keys one by one: (source id, target id) each, fetched by id."""
        source_ids = [s for s, _ in pairs.values() if s is not None]
        target_ids = [t for _, t in pairs.values() if t is not None]
        expected: dict[str, _Record] = {}
        for batch in self.fetch(self.source, source_ids):
            expected.update(self.expected(batch))
        stored: dict[str, _Record] = {}
        for batch in self.fetch(self.dest, target_ids):
            stored.update(self.held(batch))
        return self.judge(pairs, expected, stored)

    def judge(self, pairs: dict[str, tuple[RecordId | None, RecordId | None]],
              expected: dict[str, _Record], stored: dict[str, _Record]) -> list[Mismatch]:
        """The mismatches among these keys, given what the source's records map to
        (``expected``) and what the target holds (``stored``), by sync's own rule
        (:func:`same_record`)."""
        now = time.time()
        found: list[Mismatch] = []
        for key, (sid, tid) in pairs.items():
            want, have = expected.get(key), stored.get(key)
            if want is None and have is None:
                continue
            if have is None:
                assert want is not None
                found.append(Mismatch(key, "missing", want.native, tid, now, now))
            elif want is None:
                found.append(Mismatch(key, "extra", sid, have.native, now, now))
            elif not same_record(want, have, atol=self.options.tolerance, cosine=self.cosine,
                                 float_ulps=self.float_ulps):
                found.append(Mismatch(key, "content", want.native, have.native, now, now))
        return found

    def diff_all(self) -> tuple[int, list[Mismatch]]:
        """Both stores' digests, every key compared; suspects compared one by one."""
        sides = [read_digests(store, self.matching, self.batch_size,
                              atol=self.options.tolerance, metric=self.metric, retain=False)
                 for store in (self.source, self.dest)]
        source, target = ({k: (n, int(d)) for k, n, d in zip(
            side.keys, side.native_ids, side.digests.tolist() or [0] * len(side.keys),
            strict=True)} for side in sides)
        now = time.time()
        found: list[Mismatch] = []
        suspects: dict[str, tuple[RecordId | None, RecordId | None]] = {}
        if not sides[0].has_vectors or not sides[1].has_vectors:  # no digests: all suspects
            suspects = {k: (v[0], target[k][0]) for k, v in source.items() if k in target}
        for key, (native, digest) in source.items():
            other = target.get(key)
            if other is None:
                found.append(Mismatch(key, "missing", native, self.target_id(native), now, now))
            elif other[1] != digest:
                suspects[key] = (native, other[0])
        for key, (native, _) in target.items():
            if key not in source:
                found.append(Mismatch(key, "extra", None, native, now, now))
        found += self.compare_keys(suspects)
        return len(source.keys() | target.keys()), found

    def copy_again(self, source_ids: Sequence[RecordId], reads: Reads | None = None) -> int:
        """Copy these source records into the target again (read by id, mapped as migrate
        maps them, upserted); the number copied (a record deleted since is not)."""
        copied = 0
        for batch in self.fetch(self.source, source_ids):
            if reads is not None:
                reads.count(batch)
            if len(batch):
                mapped = map_batch(batch, self.source, self.ids, self.policy,
                                   self.options.migration.document_field)
                self.dest.upsert(mapped)
                copied += len(batch)
        return copied

    def repair(self, found: Sequence[Mismatch], generation: Generation, *,
               copied: bool = False) -> None:
        """Copy the missing and changed records again (unless ``copied``: done already, by
        the partitions' tasks), delete the extras with --delete-extra, else list them."""
        if not copied:
            generation.copied += self.copy_again(
                [m.source_id for m in found if m.kind in ("missing", "content")
                 and m.source_id is not None])
        extras = [m.target_id for m in found if m.kind == "extra" and m.target_id is not None]
        if extras and self.options.delete_extra:
            for start in range(0, len(extras), CHUNK):
                self.dest.delete(extras[start:start + CHUNK])
            generation.deleted += len(extras)
        else:
            generation.listed += len(extras)


def _open_feed(source: VectorStore, name: str, note: Callable[[str], object]
               ) -> ChangeFeed | None:
    try:
        return source.change_feed(name)
    except ChangeFeedUnavailable as exc:
        note(f"no change feed on the source ({exc}); every generation reads both stores' "
             "digests")
        return None


def sync(
    source: VectorStore,
    target_uri: str | StoreURI,
    options: SyncOptions | None = None,
    *,
    state_path: Path | None = None,
    restart: bool = False,
    writes_off: Callable[[], bool] = lambda: False,
    progress: Callable[[Generation], object] | None = None,
    note: Callable[[str], object] = lambda _: None,
    sleep: Callable[[float], object] = time.sleep,
    runner: Runner | None = None,
) -> SyncReport:
    """Run sync generations from ``source`` into the store ``target_uri`` names (see the
    module's docstring). ``writes_off()`` says whether the application stopped writing.
    With ``options.executor="ray"`` or ``options.partitions``, a comparison of every key
    runs partition by partition (:mod:`vmtest.live.partitioned`; ``runner``: how its tasks
    run, tests pass one that crashes)."""
    options = options or SyncOptions()
    if options.migration.reembed:
        raise MigrationError("vmtest sync copies records as they are; it cannot re-embed",
                             hint="sync a copy made without --reembed")
    started = time.perf_counter()
    uri = parse(target_uri) if isinstance(target_uri, str) else target_uri
    if options.spread:
        from vmtest.migrate.partitioned import refuse_target

        refuse_target(uri, options.executor, command="sync")
    plan = make_plan(source, uri, options.migration)
    refuse_if_lossy(plan)
    identity = options.identity()
    state = None if restart or state_path is None else SyncState.load(state_path)
    if state is not None and (state.source, state.target) != (str(source.uri), str(uri)):
        raise MigrationError(
            f"the sync state file {state_path} belongs to another sync ({state.source} -> "
            f"{state.target})", hint="pass --state PATH for this pair, or --restart")
    if state is not None and state.options != identity:
        raise MigrationError(
            f"the sync state file {state_path} was written with other mapping options "
            f"({state.options}, now {identity})", hint="use the same options, or --restart")
    if state is None or state.converged:
        state = SyncState(str(source.uri), str(uri), identity)
    limit = options.generations or (None if options.until_converged else DEFAULT_GENERATIONS)
    history = [Generation(**{k: v for k, v in g.items() if k != "mismatches"})
               for g in state.generations]
    feed: ChangeFeed | None = None
    writes_off_seen = False
    finished = False
    with open_store(uri, create=plan.spec) as dest, ExitStack() as session:
        if options.delete_extra and not dest.CAN_DELETE:
            raise MigrationError(f"the {dest.ENGINE} store {uri} cannot delete records, so "
                                 "--delete-extra cannot remove its extras",
                                 hint="run without --delete-extra: extras are then listed")
        run = SyncRun(source, dest, options)
        if options.spread:
            from vmtest.live.partitioned import sync_runner

            run.runner = runner or session.enter_context(sync_runner(options, (source, dest)))
        if options.use_feed:
            feed = _open_feed(source, state.feed or feed_name(source.uri, uri), note)
            state.feed = feed.name if feed is not None else None
        try:
            ran = 0
            while limit is None or ran < limit:
                off = writes_off()
                writes_off_seen = writes_off_seen or off
                # the feed holds every change since it was opened: a feed opened by this run
                # serves from its second generation, a resumed one at once
                use_feed = feed is not None and (ran > 0 or feed.resumed)
                generation, found, position = _generation(run, state, feed if use_feed
                                                          else None, off)
                ran += 1
                history.append(generation)
                _remember(state, generation, found)
                state.converged = not found and off
                if state_path is not None:
                    state.save(state_path)
                if feed is not None and position is not None:
                    feed.confirm(position)  # after the state is saved: a crash re-reads
                if progress is not None:
                    progress(generation)
                if not found and (off or not options.until_converged):
                    break
                if not found:
                    sleep(options.interval_s)
                elif generation.listed == generation.mismatches and \
                        (off or not options.until_converged):
                    break  # only extras left, which this run lists: no use going on
            finished = True
        finally:
            if feed is not None:
                if finished:  # kept only for the resume of an interrupted sync
                    feed.drop()
                    state.feed = None
                feed.close()
            if state_path is not None:
                state.save(state_path)
    return SyncReport(
        source=str(source.uri), target=str(uri),
        state_path=str(state_path) if state_path else None, generations=history,
        outstanding=list(state.outstanding().values()), converged=state.converged,
        writes_off_seen=writes_off_seen,
        feed=feed.description if feed is not None else None,
        seconds=time.perf_counter() - started)


def _remember(state: SyncState, generation: Generation, found: list[Mismatch]) -> None:
    """Keep what this generation found as the outstanding mismatches (a key seen before
    keeps its first-seen time)."""
    now = time.time()
    before = state.outstanding()
    state.pending = {}
    for m in found:
        if m.key in before:
            m.first_seen = before[m.key].first_seen
        m.last_seen = now
        state.pending[m.key] = asdict(m)
    generation.oldest_s = max((now - m.first_seen for m in found), default=0.0)
    state.generation += 1
    state.generations.append(asdict(generation))


def _generation(run: SyncRun, state: SyncState, feed: ChangeFeed | None, off: bool
                ) -> tuple[Generation, list[Mismatch], Any]:
    """One generation: by the feed's changes and the outstanding keys, else by digests.
    Returns the feed position to confirm once the state is saved (None: nothing to)."""
    started = time.perf_counter()
    generation = Generation(state.generation, time.time(),
                            "change feed" if feed is not None else "digests", writes_off=off)
    position = None
    changed: list[RecordId] | None = None
    if feed is not None:
        changed, position = feed.changes()
        if changed is None:  # every row went at once (a TRUNCATE): compare them all
            generation.how = "digests (the feed saw a truncate)"
    if changed is not None:
        pairs: dict[str, tuple[RecordId | None, RecordId | None]] = {
            key: (m["source_id"], m["target_id"]) for key, m in state.pending.items()}
        for native in changed:
            pairs.setdefault(str(native), (native, run.target_id(native)))
        found = run.compare_keys(pairs)
        generation.checked = len(pairs)
    elif run.runner is not None:  # the partitions' tasks copy what they found
        from vmtest.live.partitioned import diff_partitioned

        generation.checked, found = diff_partitioned(run, run.runner, generation)
    else:
        generation.checked, found = run.diff_all()
    for m in found:
        generation.found[m.kind] += 1
    run.repair(found, generation, copied=changed is None and run.runner is not None)
    generation.seconds = time.perf_counter() - started
    return generation, found, position
