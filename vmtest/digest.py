"""The checksum fast path: one read of each side, a digest per record, and record-by-record
work only for the records whose digests do not match.

data-diff compares two databases by hashing id buckets on each server and descending only
into buckets whose checksums differ. Here both sides are read by the same process, so each
record keeps its own 64-bit digest (16 bytes a record with its key hash): a bucket of one.
Only the records whose digest has no equal partner (and those whose key is missing, extra or
duplicated) are compared by the checks in :mod:`vmtest.checks.fidelity`; every other record is
*verified by digest*.

A digest is sound: equal digests mean the checks would pass on that pair (up to a 64-bit hash
collision). It covers

- the key, the metadata without mapping fields (its field names, and ``marshal`` of its
  values in name order: equal bytes mean equal values of equal types, so 1, 1.0, True and "1"
  all differ, while field order does not matter) and the document;
- the vector, quantised to a grid finer than the tolerance before hashing, so a copy that is
  not bit-identical but within ``--vmtest-tolerance`` of the source usually still matches. The
  grid is
  ``min(atol, GRID_CEILING) / 1.25`` per element (the 0.25 absorbs float32 rounding in the
  quantisation; the ceiling keeps drift out of the digests, to be measured); under cosine the
  check compares unit vectors, so the digest quantises the vector divided by its norm (taken
  in float64) on the same grid: a copy a store normalised (Qdrant does) matches its
  unnormalised source. Where that grid is finer than float32 can hold (cosine at the default
  1e-6), or for a row with a value too large for it, a zero vector, NaN or infinity, the
  digest is of the exact bits. Two values on either side of a grid line hash differently:
  their records are compared one by one, so this costs time, never a wrong verdict.

Metadata with values of other types than str, int, float, bool, None, list and dict (numpy
scalars, dates), or with field names that cannot be sorted together, gets a random digest:
those records always take the record-by-record comparison.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import marshal
import operator
import random
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmtest.matching import Matching, Snapshot, split_batch
from vmtest.stores.base import RecordBatch, RecordId, VectorStore

#: Quantised values must stay below this (in grid units) for float32 rounding to stay under
#: 1/8 of a grid step; larger ones are hashed by their exact bits.
GRID_LIMIT = float(1 << 20)
#: The coarsest grid (before the 1.25): digests absorb float noise (a round trip through
#: another precision, a store's normalisation), not drift. A vector that moved further than
#: this is compared one by one, so the error figures measure it even under a loose tolerance.
GRID_CEILING = 1e-5
#: Batches whose vector digests may be in flight on the hashing thread (bounds memory).
IN_FLIGHT = 4
_BITS_DOMAIN = np.uint64(0x9E3779B97F4A7C15)  # keeps exact-bit digests apart from grid ones
_MULTIPLIERS_SEED = 0x76_6D_74_65_73_74  # "vmtest": the same multipliers on both sides


def quantum(atol: float, metric: str | None, dimension: int) -> float:
    """The grid step vectors are quantised to (0: hash the exact bits)."""
    if atol <= 0 or dimension <= 0:
        return 0.0
    q = min(atol, GRID_CEILING) / 1.25
    if metric == "cosine" and 1 / q >= GRID_LIMIT:
        return 0.0  # finer than float32 holds for an element of a unit vector near 1
    return q


@functools.lru_cache(maxsize=8)
def _multipliers(words: int) -> np.ndarray:
    rng = np.random.default_rng(_MULTIPLIERS_SEED)
    return rng.integers(0, 1 << 63, size=words, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _row_hash(rows: np.ndarray) -> np.ndarray:
    """A multilinear hash (mod 2**64) of each row's bytes, taken as 64-bit words, and of its
    width (zeros add nothing to the sum: [a, b] and [a, b, 0, 0] must still differ)."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    width = np.uint64(rows.shape[1] * 0xD6E8FEB86659FD93 % (1 << 64))
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, np.zeros((len(rows), 1), np.float32)], axis=1)
    words = rows.view(np.uint64)
    # einsum: measured faster than @ for a (batch, words) x (words,) product of uint64
    return np.einsum("ij,j->i", words, _multipliers(words.shape[1])) ^ width


def vector_digests(vectors: np.ndarray, step: float, cosine: bool) -> np.ndarray:
    """One uint64 per row: the hash of the row quantised to ``step`` (see the module doc),
    or of its exact bits where the grid cannot hold it."""
    v = np.asarray(vectors, dtype=np.float32)
    exact = _row_hash(v) ^ _BITS_DOMAIN
    if step <= 0 or not len(v):
        return exact
    with np.errstate(all="ignore"):
        if cosine:  # the unit vector (a zero vector's inf scale fails `fits` below); the
            # scale and the product are two float32 roundings, as 1 / step and v * scale are
            norms = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))
            scale = (1 / (norms * step)).astype(np.float32)[:, None]
        else:
            scale = np.float32(1 / step)
        grid = v * scale
        np.rint(grid, out=grid)
        grid += np.float32(0)  # -0.0 and 0.0 on the same grid point
        fits = (np.abs(grid) < GRID_LIMIT).all(axis=1)  # False for NaN and infinity
    return np.where(fits, _row_hash(grid), exact)


_SCALARS = frozenset({str, int, float, bool, type(None)})


class _Fields:
    """One set of metadata field names, sorted: the metadata's canonical form is its values
    in that order, each a plain scalar or :func:`_plain`'s tagged tuple, written by
    ``marshal`` (which writes exactly these types canonically; a numpy scalar it would write
    as raw bytes, which another type can equal). The form is the same whichever order the
    fields come in, and a batch whose records share their fields (the common case) looks the
    names up once."""

    def __init__(self, names: Any) -> None:
        self.names = tuple(sorted(names))  # TypeError: names of mixed types
        self.tag = hash(self.names)
        self.keys = frozenset(self.names)
        if len(self.names) == 1:
            only = self.names[0]
            self.values: Any = lambda meta: (meta[only],)
        elif self.names:
            self.values = operator.itemgetter(*self.names)
        else:
            self.values = lambda meta: ()

    def digest(self, key: str, meta: dict[str, Any], document: Any) -> int:
        values = self.values(meta)
        if not _SCALARS.issuperset(map(type, values)):
            values = tuple(map(_plain, values))
        return hash((key, self.tag, marshal.dumps(values, 2), document))


def _plain(value: Any) -> Any:
    """Nested values as tagged tuples of plain scalars (dict fields sorted); TypeError for
    any other type (the record is then always compared one by one)."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return ("list", *map(_plain, value))
    if kind is dict:
        return ("dict", *sorted((k, _plain(v)) for k, v in value.items()))
    raise TypeError(f"no canonical form for {kind.__name__}")


def record_digests(keys: list[str], metadatas: list[dict[str, Any]],
                   documents: list[Any]) -> np.ndarray:
    """One uint64 per record over its key, metadata and document (a random one where the
    metadata has no canonical form)."""
    common = _batch_values(metadatas)
    if common is not None:  # every record has these fields, every value a plain scalar
        fields, values = common
        tag, dumps = fields.tag, marshal.dumps
        with contextlib.suppress(TypeError):  # a document that cannot be hashed
            return _as_uint64([hash((k, tag, dumps(v, 2), d))
                               for k, v, d in zip(keys, values, documents, strict=True)])
    hashes: list[int] = []
    fields_of: _Fields | None = None
    for key, meta, doc in zip(keys, metadatas, documents, strict=True):
        try:
            if fields_of is None or meta.keys() != fields_of.keys:
                fields_of = _Fields(meta)
            hashes.append(fields_of.digest(key, meta, doc))
        except (TypeError, ValueError):  # no canonical form: always compared one by one
            hashes.append(random.getrandbits(63))
    return _as_uint64(hashes)


def _batch_values(metadatas: list[dict[str, Any]]) -> tuple[_Fields, list[tuple]] | None:
    """When every record of the batch has the first one's fields and only plain scalar
    values: those fields and each record's values in canonical order (checked in a few
    C-level passes over the batch, not record by record)."""
    if not metadatas:
        return None
    try:
        common = _Fields(metadatas[0])
        width = len(common.names)
        # the same number of fields, all of the first record's present: the same fields
        if not all(map(width.__eq__, map(len, metadatas))):
            return None
        values = list(map(common.values, metadatas))
    except (TypeError, KeyError):
        return None
    if not _SCALARS.issuperset(map(type, itertools.chain.from_iterable(values))):
        return None
    return common, values


def _as_uint64(hashes: list[int]) -> np.ndarray:
    return np.array(hashes, dtype=np.int64).view(np.uint64)


@dataclass
class DigestSide:
    """One store read once: every record's key, native id, key hash and digest, and (when
    asked, because they fit in the memory budget) every column as a snapshot."""

    keys: list[str] = field(default_factory=list)
    native_ids: list[RecordId] = field(default_factory=list)
    key_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    digests: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    #: Whether each record has a document (for the documents check's figures).
    has_document: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    snapshot: Snapshot | None = None
    dimension: int | None = None
    #: False when the store gave a batch without vectors (the fast path does not apply).
    has_vectors: bool = True


def read_digests(store: VectorStore, matching: Matching, batch_size: int, *, atol: float,
                 metric: str | None, retain: bool) -> DigestSide:
    """Read the store once and digest every record in this run's share. Vector hashing runs
    on a second thread (numpy releases the GIL) while the store is read."""
    side = DigestSide()
    key_parts: list[np.ndarray] = []
    record_parts: list[np.ndarray] = []
    document_parts: list[np.ndarray] = []
    vector_parts: list[Future[np.ndarray]] = []
    pending: deque[Future[np.ndarray]] = deque()
    kept_vectors: list[np.ndarray] = []
    snap = Snapshot() if retain else None
    cosine = metric == "cosine"
    with ThreadPoolExecutor(1, thread_name_prefix="vmtest-digest") as pool:
        for batch in _own(store, matching, batch_size):
            if batch.vectors is None:
                side.has_vectors = False
                return side
            keys, metas, docs = split_batch(store, matching, batch)
            vectors = np.asarray(batch.vectors, dtype=np.float32)
            if side.dimension is None:
                side.dimension = vectors.shape[1]
            step = quantum(atol, metric, vectors.shape[1])
            future = pool.submit(vector_digests, vectors, step, cosine)
            vector_parts.append(future)
            pending.append(future)
            if len(pending) > IN_FLIGHT:
                pending.popleft().result()
            side.keys += keys
            side.native_ids += batch.ids
            key_parts.append(np.fromiter(map(hash, keys), dtype=np.int64, count=len(keys)))
            record_parts.append(record_digests(keys, metas, docs))
            document_parts.append(np.fromiter(map(operator.is_not, docs, itertools.repeat(
                None)), dtype=bool, count=len(docs)))
            if snap is not None:
                snap.keys += keys
                snap.native_ids += batch.ids
                snap.metadatas += metas
                snap.documents += docs
                kept_vectors.append(vectors)
        vector_digest = [f.result() for f in vector_parts]
    if key_parts:
        side.key_hashes = np.concatenate(key_parts)
        side.has_document = np.concatenate(document_parts)
        side.digests = combined(np.concatenate(record_parts), np.concatenate(vector_digest))
    if snap is not None:
        snap.vectors = (np.concatenate(kept_vectors) if kept_vectors
                        else np.zeros((0, side.dimension or 0), np.float32))
        side.snapshot = snap
    return side


def combined(records: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """A record's digest: its key, metadata and document digest with its vector's."""
    return records ^ (vectors * np.uint64(0xBF58476D1CE4E5B9))


def _own(store: VectorStore, matching: Matching, batch_size: int) -> Iterator[RecordBatch]:
    for batch in store.iter_batches(batch_size):
        batch = matching.own_share(batch)
        if len(batch):
            yield batch


@dataclass
class DigestMatch:
    """Which records the digests verified and which need the record-by-record checks."""

    #: Positions (in each side's read order) of the records to compare one by one.
    source_suspects: np.ndarray
    target_suspects: np.ndarray
    #: Matched pairs whose digests are equal, and how many of them have a document.
    verified: int
    verified_with_document: int
    #: A key (hash) occurs twice on one side: duplicates need every record compared.
    duplicates: bool


def match_digests(source: DigestSide, target: DigestSide) -> DigestMatch:
    """Pair records by key hash; a pair with equal digests is verified, everything else
    (digests differ, no partner, a key hash seen twice) is a suspect."""
    s_hash, s_pos, s_dup = _sorted_unique(source.key_hashes)
    t_hash, t_pos, t_dup = _sorted_unique(target.key_hashes)
    at = np.minimum(np.searchsorted(t_hash, s_hash), max(len(t_hash) - 1, 0))
    found = t_hash[at] == s_hash if len(t_hash) else np.zeros(len(s_hash), dtype=bool)
    s_pair, t_pair = s_pos[found], t_pos[at[found]]
    equal = source.digests[s_pair] == target.digests[t_pair]
    src_ok = np.zeros(len(source.key_hashes), dtype=bool)
    tgt_ok = np.zeros(len(target.key_hashes), dtype=bool)
    src_ok[s_pair[equal]] = True
    tgt_ok[t_pair[equal]] = True
    return DigestMatch(np.flatnonzero(~src_ok), np.flatnonzero(~tgt_ok), int(equal.sum()),
                       int(source.has_document[s_pair[equal]].sum()), s_dup or t_dup)


def _sorted_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(the values that occur once, sorted; their positions; whether any occurs twice)."""
    order = np.argsort(values)
    ordered = values[order]
    alone = np.ones(len(values), dtype=bool)
    same = ordered[1:] == ordered[:-1]
    alone[1:] &= ~same
    alone[:-1] &= ~same
    return ordered[alone], order[alone], bool(same.any())
