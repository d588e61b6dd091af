"""Dual-write for an application's write path: write both stores, read the one in authority.

``DualWriteStore(primary, secondary, journal=PATH)`` takes an application's upserts and
deletes. The primary is the authority: its write happens first and its error is the
application's error. The secondary gets the same write, mapped to its ids and metadata as
``vmtest migrate`` maps them; a write it refuses or cannot take (its server is down) is
appended to a durable journal instead — flushed and fsynced before the call returns — with a
sequence number. From then on, every write goes to the journal too, in order, until the
journal is replayed (``vmtest sync --journal PATH --target URI``, or :meth:`replay`): so a
replay can never put back an older value over a newer one. A replay writes the last entry of
each key, deletes included, and records how far it got: it is idempotent and resumable.

Reads follow the stage: the primary until :meth:`switch_reads`, then the secondary.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from vmtest.matching import DEFAULT_DOCUMENT_FIELD, Matching
from vmtest.migrate.mapping import IdMapper, MetadataPolicy, map_batch
from vmtest.stores.base import RecordBatch, RecordId, VectorStore

#: How far the tail of a journal is read back to find its last sequence number.
TAIL_BYTES = 1 << 16


@dataclass
class Counters:
    writes: int = 0
    deletes: int = 0
    secondary_failures: int = 0
    journaled: int = 0
    replayed: int = 0
    last_failure: str | None = None


@dataclass
class ReplayReport:
    entries: int = 0
    upserted: int = 0
    deleted: int = 0
    upto: int = 0
    errors: list[str] = field(default_factory=list)


class Journal:
    """An append-only JSON-lines file of writes, each with a sequence number, and beside it
    ``PATH.replayed``: the last sequence number a replay wrote. Appends take an exclusive
    lock (several processes of one application may share a journal)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.position_path = self.path.with_name(self.path.name + ".replayed")

    @contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def last_seq(self) -> int:
        if not self.path.exists():
            return 0
        with self.path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - TAIL_BYTES))
            lines = fh.read().split(b"\n")
        for line in reversed(lines):
            entry = _parse(line)
            if entry is not None:
                return int(entry["seq"])
        return 0 if size <= TAIL_BYTES else max((e["seq"] for e in self.entries()), default=0)

    def replayed(self) -> int:
        try:
            return int(self.position_path.read_text(encoding="utf-8").strip() or 0)
        except FileNotFoundError:
            return 0

    def depth(self) -> int:
        """Entries appended and not yet replayed."""
        return max(0, self.last_seq() - self.replayed())

    def append(self, op: str, batch: RecordBatch) -> int:
        """Append one entry per record, durably; returns the last sequence number."""
        with self._locked() as fh:
            seq = self.last_seq()
            lines = []
            for i, rid in enumerate(batch.ids):
                seq += 1
                entry: dict[str, Any] = {"seq": seq, "op": op, "id": rid}
                if op == "upsert":
                    assert batch.vectors is not None
                    entry.update(vector=np.asarray(batch.vectors[i], np.float64).tolist(),
                                 metadata=batch.metadatas[i], document=batch.documents[i])
                lines.append(json.dumps(entry, ensure_ascii=False, allow_nan=True))
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
            return seq

    def entries(self, after: int = 0) -> Iterator[dict[str, Any]]:
        """The complete entries with a sequence number above ``after`` (a torn last line,
        from a crash mid-append that was never acknowledged, is skipped)."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for line in fh:
                entry = _parse(line)
                if entry is not None and entry["seq"] > after:
                    yield entry

    def mark_replayed(self, seq: int) -> None:
        tmp = self.position_path.with_name(self.position_path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(f"{seq}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.position_path)


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.endswith(b"\n") and not line.rstrip().endswith(b"}"):
        return None
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "seq" in entry else None


def replay(journal: Journal | str | os.PathLike[str], target: VectorStore,
           *, batch_size: int = 500) -> ReplayReport:
    """Write the journal's entries not yet replayed into ``target``: the last entry of each
    id wins (an upsert, or a delete), then the position is recorded. Idempotent: a replay
    interrupted and run again writes the same last values."""
    journal = journal if isinstance(journal, Journal) else Journal(journal)
    report = ReplayReport()
    start = journal.replayed()
    last: dict[str, dict[str, Any]] = {}
    upto = start
    for entry in journal.entries(after=start):
        key = str(entry["id"])
        last.pop(key, None)  # keep the order of each key's last write
        last[key] = entry
        upto = max(upto, int(entry["seq"]))
        report.entries += 1
    upserts = [e for e in last.values() if e["op"] == "upsert"]
    deletes = [e["id"] for e in last.values() if e["op"] == "delete"]
    for i in range(0, len(upserts), batch_size):
        chunk = upserts[i:i + batch_size]
        target.upsert(RecordBatch(
            [e["id"] for e in chunk], np.asarray([e["vector"] for e in chunk], np.float32),
            [e.get("metadata") or {} for e in chunk], [e.get("document") for e in chunk]))
        report.upserted += len(chunk)
    for i in range(0, len(deletes), batch_size):
        target.delete(deletes[i:i + batch_size])
        report.deleted += len(deletes[i:i + batch_size])
    if upto > start:
        journal.mark_replayed(upto)
    report.upto = upto
    return report


class DualWriteStore:
    """Writes to both stores, reads from the one the stage names (see the module)."""

    def __init__(self, primary: VectorStore, secondary: VectorStore,
                 journal: str | os.PathLike[str], *, on_unsupported: str = "error",
                 document_field: str = DEFAULT_DOCUMENT_FIELD) -> None:
        self.primary = primary
        self.secondary = secondary
        self.journal = Journal(journal)
        self.reads = "primary"
        self.counters = Counters()
        self._ids = IdMapper(secondary)
        self._policy = MetadataPolicy(secondary, on_unsupported)
        self._document_field = document_field
        self._matching = Matching(document_field=document_field)
        self._lock = threading.Lock()

    # -- writes -----------------------------------------------------------------------------

    def upsert(self, batch: RecordBatch) -> None:
        self.primary.upsert(batch)
        with self._lock:
            self.counters.writes += len(batch)
            if not self.primary.HAS_DOCUMENTS:  # the secondary holds what the primary does
                batch = RecordBatch(batch.ids, batch.vectors, batch.metadatas,
                                    [None] * len(batch))
            mapped = map_batch(batch, self.primary, self._ids, self._policy,
                               self._document_field)
            self._to_secondary("upsert", mapped, lambda: self.secondary.upsert(mapped))

    def delete(self, ids: Sequence[RecordId]) -> None:
        self.primary.delete(ids)
        with self._lock:
            self.counters.deletes += len(ids)
            mapped = [self._ids.map(rid)[0] for rid in ids]
            batch = RecordBatch(mapped, None, [{} for _ in mapped], [None for _ in mapped])
            self._to_secondary("delete", batch, lambda: self.secondary.delete(mapped))

    def _to_secondary(self, op: str, batch: RecordBatch, write: Any) -> None:
        if self.journal.depth() == 0:
            try:
                write()
                return
            except Exception as exc:  # refused, or its server is gone: journal it
                self.counters.secondary_failures += 1
                self.counters.last_failure = f"{type(exc).__name__}: {exc}"[:300]
        self.journal.append(op, batch)
        self.counters.journaled += len(batch)

    def replay(self) -> ReplayReport:
        """Drain the journal into the secondary (in this process)."""
        with self._lock:
            report = replay(self.journal, self.secondary)
            self.counters.replayed += report.entries
            return report

    @property
    def journal_depth(self) -> int:
        return self.journal.depth()

    def metrics(self) -> dict[str, Any]:
        """The counters and the journal's depth, for an application's metrics endpoint."""
        return {**asdict(self.counters), "journal_depth": self.journal_depth,
                "reads": self.reads}

    # -- reads ------------------------------------------------------------------------------

    def switch_reads(self, to: str = "secondary") -> None:
        if to not in ("primary", "secondary"):
            raise ValueError(f"reads go to 'primary' or 'secondary', not {to!r}")
        self.reads = to

    @property
    def _reader(self) -> VectorStore:
        return self.primary if self.reads == "primary" else self.secondary

    def count(self) -> int:
        return self._reader.count()

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        if self.reads == "primary":
            return self.primary.fetch(ids)
        got = self.secondary.fetch([self._ids.map(rid)[0] for rid in ids])
        return RecordBatch(self._own_ids(got.ids, got.metadatas), got.vectors, got.metadatas,
                           got.documents)

    def search(self, queries: np.ndarray, k: int, *, where: dict | None = None
               ) -> list[list[RecordId]]:
        if self.reads == "primary":
            return self.primary.search(queries, k, where=where)
        rows = self.secondary.search(queries, k, where=where)
        fetched = self.secondary.fetch(list(dict.fromkeys(rid for row in rows for rid in row)))
        names = dict(zip(map(str, fetched.ids), self._own_ids(fetched.ids, fetched.metadatas),
                         strict=True))
        return [[names.get(str(rid), rid) for rid in row] for row in rows]

    def _own_ids(self, ids: Sequence[RecordId], metadatas: Sequence[dict]) -> list[RecordId]:
        """The application's ids of the secondary's records (kept in a payload field where
        the secondary needed ids of its own)."""
        return [self._matching.key_of(rid, meta) if any(
            meta.get(name) is not None for name in self._matching.id_fields) else rid
            for rid, meta in zip(ids, metadatas, strict=True)]

    def close(self) -> None:
        self.primary.close()
        self.secondary.close()

    def __enter__(self) -> DualWriteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
