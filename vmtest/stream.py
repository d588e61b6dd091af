"""Comparison in bounded memory: both stores read once, in batches, records spilled to disk in
partitions by a hash of their key, each partition compared on its own, the results merged.

When the records of both stores fit in ``--vmtest-memory-budget`` (default 1 GiB) there is one
partition and nothing is spilled: the comparison is the in-memory one. Beyond it, each side is
written to P partition files (vectors as raw float32, ids, metadata and documents pickled,
which keeps every Python type exactly), P chosen so that one partition of both sides fits in
half the budget. A record lands in the same partition on both sides whatever order the stores
return records in, so matching, the id check and the record-by-record checks run partition by
partition; their results are merged as the shares of a ``--vmtest-shard`` run are
(:mod:`vmtest.report.merge`). Exact ground truth streams over the partition files in chunks.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.checks.result import CheckResult
from vmtest.matching import Matching, Snapshot, shard_of, split_batch
from vmtest.stores.base import RecordId, VectorStore

#: Bytes a record costs in memory beyond its vector (key, native id, metadata dict, document):
#: measured with tracemalloc on the benchmark's records (3 metadata fields, a short document).
RECORD_OVERHEAD = 600
#: Vectors buffered per partition before one write (bounded: partitions x this).
FLUSH_BYTES = 4 << 20


def partitions_for(records: int, dimension: int, budget: int) -> int:
    """How many partitions keep one partition of both sides within half the budget (the
    other half is for the comparison's own arrays and the interpreter)."""
    per_record = dimension * 4 + RECORD_OVERHEAD
    return max(1, math.ceil(records * per_record / max(1, budget // 2)))


class VectorFile:
    """Vectors stored as raw float32 rows across several files, read on demand: ``len``,
    slices (``v[a:b]``) and row lists (``v[[3, 9]]``) as a numpy array would answer them, so
    the chunked ground truth can stream over it without holding it."""

    def __init__(self, paths: Sequence[Path], counts: Sequence[int], dimension: int) -> None:
        self.paths = list(paths)
        self.counts = list(counts)
        self.dimension = dimension
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.shape = (int(self.starts[-1]), dimension)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, part: int, row: int, count: int) -> np.ndarray:
        with open(self.paths[part], "rb") as fh:
            fh.seek(row * self.dimension * 4)
            data = np.fromfile(fh, dtype=np.float32, count=count * self.dimension)
        return data.reshape(count, self.dimension)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("a VectorFile reads contiguous slices only")
            pieces = []
            for part in range(len(self.paths)):
                lo, hi = max(start, self.starts[part]), min(stop, self.starts[part + 1])
                if lo < hi:
                    pieces.append(self._read(part, int(lo - self.starts[part]), int(hi - lo)))
            return (np.concatenate(pieces) if pieces
                    else np.zeros((0, self.dimension), np.float32))
        rows = np.asarray(index, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        parts = np.searchsorted(self.starts, rows, side="right") - 1
        for part in np.unique(parts):
            mine = np.flatnonzero(parts == part)
            if len(mine) > 64:  # many rows of one file: read it whole (one partition fits)
                whole = self._read(int(part), 0, self.counts[part])
                out[mine] = whole[rows[mine] - self.starts[part]]
            else:
                for i in mine:
                    out[i] = self._read(int(part), int(rows[i] - self.starts[part]), 1)[0]
        return out


@dataclass
class SpilledSide:
    """One store's records, spilled to partition files."""

    directory: Path
    name: str
    parts: int
    dimension: int = 0
    counts: list[int] = field(default_factory=list)
    #: Every key and native id, partition after partition (the order of ``vectors``).
    keys: list[str] = field(default_factory=list)
    native_ids: list[RecordId] = field(default_factory=list)

    def vector_path(self, part: int) -> Path:
        return self.directory / f"{self.name}-{part}.f32"

    def record_path(self, part: int) -> Path:
        return self.directory / f"{self.name}-{part}.pickle"

    @property
    def vectors(self) -> VectorFile:
        return VectorFile([self.vector_path(p) for p in range(self.parts)], self.counts,
                          self.dimension)

    def partition(self, part: int) -> Snapshot:
        """One partition, read back as a snapshot."""
        snap = Snapshot()
        with open(self.record_path(part), "rb") as fh:
            while True:
                try:
                    keys, native, metas, docs = pickle.load(fh)
                except EOFError:
                    break
                snap.keys += keys
                snap.native_ids += native
                snap.metadatas += metas
                snap.documents += docs
        snap.vectors = np.fromfile(self.vector_path(part), dtype=np.float32).reshape(
            -1, self.dimension) if self.dimension else np.zeros((len(snap), 0), np.float32)
        return snap

    def column(self, name: str) -> Iterator[Any]:
        """Every record's metadata ("metadatas") or document ("documents"), in key order."""
        for part in range(self.parts):
            yield from getattr(self.partition(part), name)


def spill(store: VectorStore, matching: Matching, parts: int, directory: Path, name: str,
          batch_size: int) -> SpilledSide:
    """Read a store once and write its records to ``parts`` partition files by key hash."""
    side = SpilledSide(directory, name, parts, counts=[0] * parts)
    part_keys: list[list[str]] = [[] for _ in range(parts)]
    part_native: list[list[RecordId]] = [[] for _ in range(parts)]
    vec_files = [open(side.vector_path(p), "wb") for p in range(parts)]  # noqa: SIM115
    rec_files = [open(side.record_path(p), "wb") for p in range(parts)]  # noqa: SIM115
    pending: list[list[np.ndarray]] = [[] for _ in range(parts)]
    pending_bytes = [0] * parts

    def flush(part: int) -> None:
        if pending[part]:
            np.concatenate(pending[part]).tofile(vec_files[part])
            pending[part], pending_bytes[part] = [], 0

    try:
        for batch in store.iter_batches(batch_size):
            batch = matching.own_share(batch)
            if not len(batch):
                continue
            keys_all, metas_all, docs_all = split_batch(store, matching, batch)
            assert batch.vectors is not None
            vectors = np.ascontiguousarray(batch.vectors, dtype=np.float32)
            side.dimension = vectors.shape[1]
            where = np.array([shard_of(key, parts) - 1 for key in keys_all], dtype=np.int64) \
                if parts > 1 else np.zeros(len(keys_all), dtype=np.int64)
            for part in np.unique(where):
                rows = np.flatnonzero(where == part)
                pending[part].append(vectors[rows])
                pending_bytes[part] += len(rows) * vectors.shape[1] * 4
                if pending_bytes[part] >= FLUSH_BYTES:  # few large writes, not many small
                    flush(part)
                keys = [keys_all[i] for i in rows]
                native = [batch.ids[i] for i in rows]
                pickle.dump((keys, native, [metas_all[i] for i in rows],
                             [docs_all[i] for i in rows]),
                            rec_files[part], protocol=pickle.HIGHEST_PROTOCOL)
                part_keys[part] += keys
                part_native[part] += native
                side.counts[part] += len(rows)
        for part in range(parts):
            flush(part)
    finally:
        for fh in vec_files + rec_files:
            fh.close()
    for part in range(parts):
        side.keys += part_keys[part]
        side.native_ids += part_native[part]
    return side


def compare_partitions(source: SpilledSide, target: SpilledSide,
                       run_checks: Callable[[Snapshot, Snapshot], list[CheckResult]]
                       ) -> dict[str, CheckResult]:
    """Run the record-by-record checks on each partition pair; merge their results."""
    from vmtest.checks.merge import merge_check_results

    per_check: dict[str, list[CheckResult]] = {}
    for part in range(source.parts):
        for result in run_checks(source.partition(part), target.partition(part)):
            per_check.setdefault(result.name, []).append(result)
    return {name: merge_check_results(results, source.parts)
            for name, results in per_check.items()}
