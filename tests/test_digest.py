"""The checksum fast path (vmtest.digest): a record verified by its digest is one the checks
would pass, and a migration corrupted in any one way fails the same checks, naming the same
records, as the full record-by-record comparison."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import uuid
from collections.abc import Callable

import numpy as np
import pytest

from tests.support import build_chroma, qdrant_copy
from vmtest.checks.fidelity import check_vectors
from vmtest.compare import Comparison
from vmtest.digest import (
    GRID_CEILING,
    DigestSide,
    match_digests,
    quantum,
    record_digests,
    vector_digests,
)
from vmtest.migrate import copy_store
from vmtest.settings import Settings
from vmtest.stores import CollectionSpec, RecordBatch, open_store

# -- the digests themselves -------------------------------------------------------------------


@pytest.mark.parametrize(("metric", "atol"), [("l2", 1e-6), ("l2", 1e-3), ("cosine", 1e-3),
                                              ("cosine", 1e-4), ("cosine", 3e-6),
                                              ("cosine", 1e-6)])
def test_equal_digests_mean_the_vector_check_passes(metric, atol):
    """Seeded pairs at every distance from far below to beyond the tolerance, unnormalised
    and tiny vectors among them: whenever the digests agree, the check passes."""
    rng = np.random.default_rng(11)
    dim = 64
    base = rng.normal(size=(4000, dim)).astype(np.float32)
    base *= rng.choice([1e-3, 1.0, 30.0], size=(4000, 1)).astype(np.float32)
    noise_scale = atol * rng.choice([1e-4, 0.1, 0.5, 0.9, 1.0, 1.5, 3.0], size=(4000, 1))
    other = (base + rng.normal(size=base.shape) * noise_scale).astype(np.float32)
    step = quantum(atol, metric, dim)
    cosine = metric == "cosine"
    same = vector_digests(base, step, cosine) == vector_digests(other, step, cosine)
    assert same.any()
    keys = [str(i) for i in np.flatnonzero(same)]
    result = check_vectors(keys, base[same], other[same], atol=atol, metric=metric)
    assert result.passed, result.explain()
    # and the test can fail: beyond-tolerance pairs exist among those that do not agree
    assert not check_vectors([str(i) for i in range(4000)], base, other, atol=atol,
                             metric=metric).passed


def test_the_grid_lets_a_copy_within_tolerance_match():
    """The point of quantising: noise far below the tolerance (a float round trip through
    another precision) keeps most digests equal."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(2000, 32)).astype(np.float32)
    near = (base.astype(np.float64) + rng.normal(size=base.shape) * 1e-9).astype(np.float32)
    step = quantum(1e-3, "l2", 32)
    same = vector_digests(base, step, False) == vector_digests(near, step, False)
    assert same.mean() > 0.9
    # exact bits (no grid) would have matched only the rows the noise left untouched
    exact = vector_digests(base, 0.0, False) == vector_digests(near, 0.0, False)
    assert exact.mean() < same.mean()


def test_a_copy_the_target_normalised_matches_under_cosine():
    """Qdrant (its server, and Qdrant Edge) keeps cosine vectors normalised: a copy of
    unnormalised vectors differs from its source by the norm, which the cosine check
    ignores. The digest must ignore it too."""
    rng = np.random.default_rng(8)
    base = (rng.normal(size=(2000, 384)) * rng.uniform(0.5, 40, size=(2000, 1))).astype(
        np.float32)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)  # float32, as a store does it
    step = quantum(1e-4, "cosine", 384)
    same = vector_digests(base, step, True) == vector_digests(unit, step, True)
    assert same.mean() > 0.9
    assert check_vectors([str(i) for i in range(2000)], base, unit, atol=1e-4,
                         metric="cosine").passed


def test_cosine_at_the_default_tolerance_hashes_exact_bits():
    assert quantum(1e-6, "cosine", 768) == 0.0
    assert quantum(1e-6, "l2", 768) == pytest.approx(8e-7)
    # drift is measured, not digested: a loose tolerance does not coarsen the grid further
    assert quantum(1e-2, "l2", 768) == quantum(1e-2, "cosine", 768) == GRID_CEILING / 1.25
    assert quantum(0.0, "l2", 8) == 0.0


def test_one_element_just_beyond_the_tolerance_never_matches():
    rng = np.random.default_rng(5)
    base = rng.uniform(-1, 1, size=(3000, 16)).astype(np.float32)
    moved = base.copy()
    moved[np.arange(3000), rng.integers(0, 16, 3000)] += np.float32(1.01e-3)
    step = quantum(1e-3, "l2", 16)
    assert not (vector_digests(base, step, False) == vector_digests(moved, step, False)).any()


def test_under_cosine_a_pair_the_check_fails_never_matches():
    """Unit vectors with one element moved by 0.3 to 1.6 times the tolerance (the check
    normalises both sides again, which shrinks some moves): no pair the check fails digests
    alike, while pairs on both sides of the line exist. (At the grid's ceiling, where the
    grid is as coarse as the tolerance allows.)"""
    atol = GRID_CEILING
    rng = np.random.default_rng(6)
    base = rng.normal(size=(3000, 16))
    base = (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)
    moved = base.copy()
    moved[np.arange(3000), rng.integers(0, 16, 3000)] += rng.uniform(0.3, 1.6, 3000) * atol
    step = quantum(atol, "cosine", 16)
    same = vector_digests(base, step, True) == vector_digests(moved, step, True)
    fails = np.array([not check_vectors(["k"], base[i : i + 1], moved[i : i + 1], atol=atol,
                                        metric="cosine").passed for i in range(3000)])
    assert same.sum() > 100 and fails.sum() > 100  # the test can fail
    assert not (same & fails).any()


def test_nan_and_zero_vectors_digest_by_their_bits():
    v = np.array([[np.nan, 1.0], [0.0, 0.0], [-0.0, 0.0], [np.inf, 0.0]], dtype=np.float32)
    for step, cosine in ((0.0, False), (quantum(1e-3, "l2", 2), False),
                         (quantum(1e-2, "cosine", 2), True)):
        d = vector_digests(v, step, cosine)
        assert np.array_equal(d, vector_digests(v.copy(), step, cosine))  # NaN equals itself
        assert d[0] != d[3]


def test_a_vector_cut_short_never_matches_its_zero_padded_self():
    """Zeros add nothing to a multilinear sum: the width is part of the digest."""
    v = np.array([[0.5, -0.25, 0.0, 0.0]], dtype=np.float32)
    for step in (0.0, quantum(1e-3, "l2", 4)):
        assert vector_digests(v, step, False)[0] != vector_digests(v[:, :2], step, False)[0]
        assert vector_digests(v, step, False)[0] != vector_digests(v[:, :3], step, False)[0]


@pytest.mark.parametrize(("a", "b"), [
    ({"n": 1}, {"n": 1.0}), ({"n": 1}, {"n": True}), ({"n": 1}, {"n": "1"}),
    ({"n": None}, {}), ({"n": [1, 2]}, {"n": [2, 1]}), ({"n": {"a": 1}}, {"n": {"a": 1.0}}),
    ({"n": 0.1 + 0.2}, {"n": 0.3}),
])
def test_metadata_of_another_type_or_value_has_another_digest(a, b):
    assert record_digests(["k"], [a], ["d"])[0] != record_digests(["k"], [b], ["d"])[0]


def test_field_order_does_not_change_a_digest_but_key_and_document_do():
    d = record_digests(["k"], [{"a": 1, "b": "x"}], ["doc"])[0]
    assert record_digests(["k"], [{"b": "x", "a": 1}], ["doc"])[0] == d
    assert record_digests(["j"], [{"a": 1, "b": "x"}], ["doc"])[0] != d
    assert record_digests(["k"], [{"a": 1, "b": "x"}], [None])[0] != d
    assert record_digests(["k"], [{"a": 1, "b": "x"}], [""])[0] != d


@pytest.mark.parametrize("value", [np.float64(1.5), np.int64(3), np.bool_(True), b"\x01",
                                   datetime.date(2026, 1, 1), [np.int64(3)],
                                   {"a": (1, 2)}])
def test_metadata_without_a_canonical_form_is_always_compared_one_by_one(value):
    """marshal writes numpy scalars as their raw bytes, which a bytes value (or another
    numpy type) can equal: such values get a random digest, never a shared one."""
    meta = [{"when": value}]
    assert record_digests(["k"], meta, [None])[0] != record_digests(["k"], meta, [None])[0]


def test_nested_metadata_digests_in_any_field_order():
    a = {"n": {"x": [1, {"p": 1.0, "q": None}], "y": True}}
    b = {"n": {"y": True, "x": [1, {"q": None, "p": 1.0}]}}
    assert record_digests(["k"], [a], [None])[0] == record_digests(["k"], [b], [None])[0]
    c = {"n": {"y": True, "x": [1, {"q": None, "p": 1}]}}
    assert record_digests(["k"], [a], [None])[0] != record_digests(["k"], [c], [None])[0]


def test_a_batch_digests_each_record_as_it_would_alone():
    """The batch shortcut (shared fields, plain values) gives the canonical digest; records
    that break the pattern (another field, a field fewer, one more, a value of another type)
    fall back to the record-by-record form, which is the same canonical digest or, without
    a canonical form, a random one."""
    metas = [{"a": 1, "b": "x"}, {"b": "y", "a": 2}, {"a": 1, "c": "x"}, {"a": 1},
             {"a": 1, "b": "x", "c": None}, {"a": 1.0, "b": "x"}, {"a": [1, {"z": 2}], "b": ""}]
    keys = [f"k{i}" for i in range(len(metas))]
    docs = [f"d{i}" for i in range(len(metas))]
    together = record_digests(keys, metas, docs)
    alone = [record_digests([k], [m], [d])[0]
             for k, m, d in zip(keys, metas, docs, strict=True)]
    assert list(together) == alone
    plain = record_digests(keys[:2], metas[:2], docs[:2])  # the shortcut itself
    assert list(plain) == alone[:2]
    odd = [{"a": 1, "b": "x"}, {"a": np.int64(1), "b": "x"}]
    first, second = record_digests(["k", "k"], odd, [None, None])
    assert first == record_digests(["k"], odd[:1], [None])[0]
    assert second != record_digests(["k"], odd[1:], [None])[0]  # random: never shared


def _side(keys: list[str], digests: list[int]) -> DigestSide:
    return DigestSide(keys=keys, native_ids=list(keys),
                      key_hashes=np.array([hash(k) for k in keys], dtype=np.int64),
                      digests=np.array(digests, dtype=np.uint64),
                      has_document=np.ones(len(keys), dtype=bool))


def test_matching_names_the_suspects():
    source = _side(["a", "b", "c", "d"], [1, 2, 3, 4])
    target = _side(["d", "b", "e", "a"], [4, 9, 5, 1])
    match = match_digests(source, target)
    assert match.verified == 2 and not match.duplicates
    assert [source.keys[i] for i in match.source_suspects] == ["b", "c"]
    assert [target.keys[i] for i in match.target_suspects] == ["b", "e"]
    assert match_digests(source, _side(["a", "a", "b"], [1, 1, 2])).duplicates


# -- through the comparison, on real stores ----------------------------------------------------


def _keys(b: RecordBatch) -> list[str]:
    """The source id of each record (a Qdrant copy keeps it in original_id)."""
    return [str(m.get("original_id", rid)) for rid, m in zip(b.ids, b.metadatas, strict=True)]


def _at(b: RecordBatch, key: str) -> int | None:
    keys = _keys(b)
    return keys.index(key) if key in keys else None


def _lose(b: RecordBatch) -> RecordBatch:
    return b.take([i for i, k in enumerate(_keys(b)) if k != "doc-000003"])


def _vector(b: RecordBatch) -> RecordBatch:
    if (i := _at(b, "doc-000047")) is not None:
        b.vectors[i, 5] += 0.01
    return b


def _swap(b: RecordBatch) -> RecordBatch:
    i, j = _at(b, "doc-000010"), _at(b, "doc-000011")
    if i is not None and j is not None:
        b.vectors[[i, j]] = b.vectors[[j, i]]
    return b


def _metadata_type(b: RecordBatch) -> RecordBatch:
    if (i := _at(b, "doc-000101")) is not None:
        b.metadatas[i]["year"] = float(b.metadatas[i]["year"])
    return b


def _document(b: RecordBatch) -> RecordBatch:
    if (i := _at(b, "doc-000177")) is not None:
        if b.documents[i] is not None:
            b.documents[i] += " "
        else:  # a Qdrant copy keeps it in the payload
            b.metadatas[i]["document"] += " "
    return b


def _duplicate(b: RecordBatch) -> RecordBatch:
    if (i := _at(b, "doc-000200")) is None:
        return b
    extra = b.take([i])
    extra.ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, "a second doc-000200"))]
    extra.metadatas = [dict(extra.metadatas[0], original_id="doc-000200")]
    return RecordBatch.concat([b, extra])


def _quantised(b: RecordBatch) -> RecordBatch:
    b.vectors = b.vectors.astype(np.float16).astype(np.float32)
    return b


CORRUPTIONS: dict[str, tuple[Callable[[RecordBatch], RecordBatch], set[str], set[str]]] = {
    # corruption: (transform, checks that must fail, the ids they must name)
    "lost": (_lose, {"ids"}, {"doc-000003"}),
    "vector": (_vector, {"vectors"}, {"doc-000047"}),
    "swapped": (_swap, {"vectors"}, {"doc-000010", "doc-000011"}),
    "metadata type": (_metadata_type, {"metadata"}, {"doc-000101"}),
    "document": (_document, {"documents"}, {"doc-000177"}),
    "duplicate": (_duplicate, {"ids"}, {"doc-000200"}),
    "float16": (_quantised, {"vectors"}, set()),
    "faithful": (lambda b: b, set(), set()),
}


def _parquet_target(dataset: RecordBatch, tmp, transform) -> str:
    uri = f"parquet://{tmp}/target?metric=cosine"
    tmp.mkdir(parents=True, exist_ok=True)
    with open_store(uri, create=CollectionSpec(dataset.vectors.shape[1], "cosine")) as store:
        store.upsert(transform(copy.deepcopy(dataset)))
    return uri


def _fidelity(source: str, target: str, **settings) -> dict:
    with open_store(source) as s, open_store(target) as t:
        c = Comparison(s, t, Settings(**settings))
        try:
            return {name: r.to_dict() for name, r in c.fidelity.items()}
        finally:
            c.close()


@pytest.mark.parametrize("budget", [1 << 30, 1 << 16], ids=["in-memory", "streamed"])
@pytest.mark.parametrize("kind", ["parquet", "qdrant"])
@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_the_digest_path_fails_what_the_full_comparison_fails(
        chroma_source, dataset, tmp_path, name, kind, budget):
    transform, failing, named = CORRUPTIONS[name]
    target = (_parquet_target(dataset, tmp_path, transform) if kind == "parquet"
              else qdrant_copy(chroma_source, tmp_path, lambda b: transform(b)))
    fast = _fidelity(chroma_source, target, memory_budget=budget)
    full = _fidelity(chroma_source, target, memory_budget=budget, compare="full")
    assert {n for n, r in fast.items() if r["status"] == "failed"} == failing
    for check in ("ids", "vectors", "metadata", "documents"):
        a, b = fast[check], full[check]
        assert a["status"] == b["status"], check
        assert a["offending_total"] == b["offending_total"], check
        assert {o["id"] for o in a["offenders"]} == {o["id"] for o in b["offenders"]}, check
        assert a["figures"].get("compared", a["figures"].get("matched")) == \
            b["figures"].get("compared", b["figures"].get("matched")), check
    assert named <= {o["id"] for r in fast.values() for o in r["offenders"]}
    for check in ("vectors", "metadata", "documents"):
        figures = fast[check]["figures"]
        # (without these figures the suspects outgrew the budget: the full comparison ran)
        assert figures.get("verified_by_digest", 0) + figures.get(
            "compared_one_by_one", figures["compared"]) == figures["compared"], check
    if kind == "qdrant" and name in ("vector", "metadata type", "document"):
        # the Qdrant copy keeps Chroma's vectors bit for bit: only the changed record is
        # compared one by one (Chroma normalises cosine vectors, so the Parquet copy,
        # written from the original vectors, differs in the last bits of a third of them)
        assert fast[next(iter(failing))]["figures"]["compared_one_by_one"] == 1


@pytest.mark.parametrize("name", ["vector", "metadata type", "document", "faithful"])
def test_only_the_records_that_differ_are_compared_one_by_one(dataset, tmp_path, name):
    transform, failing, _ = CORRUPTIONS[name]
    source = build_chroma(tmp_path / "chroma", dataset, metric="l2")  # kept as given
    target = _parquet_target(dataset, tmp_path, transform)
    fast = _fidelity(source, target, memory_budget=1 << 16)
    for check in ("vectors", "metadata", "documents"):
        figures = fast[check]["figures"]
        assert figures["compared"] == 300
        assert figures.get("compared_one_by_one", 0) == (0 if name == "faithful" else 1)
        assert figures["verified_by_digest"] == (300 if name == "faithful" else 299)
    assert {n for n, r in fast.items() if r["status"] == "failed"} == failing


@pytest.mark.parametrize("tolerance", [1e-4, 1e-6])
def test_a_copy_qdrant_normalised_is_verified_by_digest(dataset, tmp_path, tolerance):
    """Unnormalised vectors migrated into Qdrant (here its engine embedded, Qdrant Edge)
    under cosine come back normalised. At a tolerance the grid can hold, the digests see
    unit vectors and verify the copy; at the default they hash exact bits and every record
    is compared one by one: both pass."""
    scaled = copy.deepcopy(dataset)
    scaled.vectors = scaled.vectors * np.linspace(0.5, 40, len(scaled), dtype=np.float32)[:, None]
    source = _parquet_target(scaled, tmp_path / "source", lambda b: b)
    target = f"qdrant-edge://{tmp_path}/edge"
    with open_store(source) as src:
        copy_store(src, target, batch_size=100)
    with open_store(target) as t:
        stored = np.concatenate([b.vectors for b in t.iter_batches(100)])
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)  # Qdrant normalised
    fast = _fidelity(source, target, tolerance=tolerance, memory_budget=1 << 16)
    vectors = fast["vectors"]
    assert vectors["status"] == "passed", vectors["summary"]
    if tolerance == 1e-4:
        assert vectors["figures"]["verified_by_digest"] > 0.9 * len(dataset)
    else:
        assert vectors["figures"].get("verified_by_digest", 0) < 0.1 * len(dataset)


def test_a_re_check_of_an_unchanged_copy_reads_each_side_once(chroma_source, tmp_path,
                                                               monkeypatch):
    """No pairwise work and no second read: the fast path reads both stores exactly once."""
    target = qdrant_copy(chroma_source, tmp_path)
    reads: list[str] = []
    with open_store(chroma_source) as s, open_store(target) as t:
        for store in (s, t):
            original = store.iter_batches

            def counted(*args, _original=original, _uri=str(store.uri), **kwargs):
                reads.append(_uri)
                return _original(*args, **kwargs)

            monkeypatch.setattr(store, "iter_batches", counted)
            monkeypatch.setattr(store, "fetch", lambda ids: pytest.fail("fetched"))
        c = Comparison(s, t, Settings(memory_budget=1 << 16))
        assert all(r.passed for r in c.fidelity.values())
        assert c.fidelity["vectors"].figures["verified_by_digest"] == 300
    assert len(reads) == 2


def test_settings_reject_an_unknown_compare_mode():
    from vmtest.settings import OPTIONS

    option = next(o for o in OPTIONS if o.name == "compare")
    with pytest.raises(ValueError, match="digest or full"):
        option.convert("fast")
    assert dataclasses.replace(Settings(), compare="full").compare == "full"
