"""The validation suite as a user runs it, on real stores: a faithful Chroma -> Qdrant copy
passes every check, and each corruption fails exactly the checks it should, loudly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import failed_checks, qdrant_copy, run_suite
from vmtest.migrate import copy_store
from vmtest.stores import RecordBatch, open_store

CHECKS = {"inventory", "ids", "vectors", "metadata", "documents", "schema", "drift"}


def test_faithful_copy_passes_every_check(pytester, chroma_source, tmp_path):
    target = qdrant_copy(chroma_source, tmp_path)
    result, data = run_suite(pytester, chroma_source, target)
    # deselected: latency, recall, filtered_recall (FIDELITY); orphans, shadow, the five
    # conversation checks and references (no input)
    result.assert_outcomes(passed=7, deselected=11)
    assert result.ret == 0
    assert data["faithful"] is True
    assert {c["name"] for c in data["checks"]} == CHECKS
    result.stdout.fnmatch_lines(["DATA FIDELITY: FAITHFUL (6 checks passed)",
                                 "SEARCH QUALITY: PASSED (1 check passed)",
                                 "PERFORMANCE: not checked"])


def lose_one(b: RecordBatch) -> RecordBatch:
    return b.take(range(1, len(b))) if b.metadatas[0].get("original_id") == "doc-000000" else b


def add_one(b: RecordBatch) -> RecordBatch:
    extra = RecordBatch([10**9], b.vectors[:1].copy(), [{"original_id": "intruder"}], [None])
    return RecordBatch.concat([b, extra]) if "doc-000000" in _keys(b) else b


def drift(b: RecordBatch) -> RecordBatch:
    if "doc-000005" in _keys(b):
        b.vectors[_keys(b).index("doc-000005"), 3] += 1e-3
    return b


def float16(b: RecordBatch) -> RecordBatch:
    b.vectors = b.vectors.astype(np.float16).astype(np.float32)
    return b


def swap(b: RecordBatch) -> RecordBatch:
    if "doc-000001" in _keys(b):
        i, j = _keys(b).index("doc-000001"), _keys(b).index("doc-000002")
        b.vectors[[i, j]] = b.vectors[[j, i]]
    return b


def int_to_str(b: RecordBatch) -> RecordBatch:
    for meta in b.metadatas:
        if meta["original_id"] == "doc-000007":
            meta["year"] = str(meta["year"])
    return b


def drop_key(b: RecordBatch) -> RecordBatch:
    for meta in b.metadatas:
        if meta["original_id"] == "doc-000008":
            del meta["lang"]
    return b


def truncate_doc(b: RecordBatch) -> RecordBatch:
    for meta in b.metadatas:
        if meta["original_id"] == "doc-000009":
            meta["document"] = meta["document"][:-4]
    return b


def rename_key(b: RecordBatch) -> RecordBatch:
    for meta in b.metadatas:
        if meta["original_id"] == "doc-000011":
            meta["Topic"] = meta.pop("topic")
    return b


def trim_whitespace(b: RecordBatch) -> RecordBatch:
    for meta in b.metadatas:
        if meta["original_id"] == "doc-000012":
            meta["document"] = "  " + meta["document"].replace(" ", "  ")
    return b


def zeroed(b: RecordBatch) -> RecordBatch:
    if "doc-000014" in _keys(b):
        b.vectors[_keys(b).index("doc-000014")] = 0.0
    return b


def ids_swapped(b: RecordBatch) -> RecordBatch:
    """Two records' ids exchanged: each vector now sits under the other's id (the
    metadata and documents went along with the ids, as a wrong id map would do)."""
    keys = _keys(b)
    if "doc-000015" in keys and "doc-000016" in keys:
        i, j = keys.index("doc-000015"), keys.index("doc-000016")
        b.vectors[[i, j]] = b.vectors[[j, i]]
    return b


def _keys(b: RecordBatch) -> list[str]:
    return [m.get("original_id") for m in b.metadatas]


CORRUPTIONS = {
    # name: (transform, copy options, the checks that must fail, text the log must show)
    "record lost": (lose_one, {}, {"inventory", "ids"}, "*doc-000000: missing in the target*"),
    "extra record": (add_one, {}, {"inventory", "ids"}, "*intruder: extra in the target*"),
    "vector drifted 1e-3": (drift, {}, {"vectors"}, "*doc-000005: max |delta| 0.0009*at dim 3*"),
    "float16 re-quantised": (float16, {}, {"vectors"}, "*vectors differ beyond tolerance*"),
    "two vectors swapped": (swap, {}, {"vectors"}, "*doc-000001: max |delta|*"),
    "int turned to string": (int_to_str, {}, {"metadata"},
                             "*doc-000007: 'year': source 2022 (int), target '2022' (str)*"),
    "key dropped": (drop_key, {}, {"metadata"}, "*doc-000008: 'lang' missing in the target*"),
    "document truncated": (truncate_doc, {}, {"documents"},
                           "*doc-000009: truncated: differ at character*"),
    "another metric": (None, {"metric": "l2"}, {"inventory", "schema", "drift"},
                       "*metric ('cosine' vs 'l2')*"),
    "metadata key renamed": (rename_key, {}, {"metadata"},
                             "*doc-000011: 'Topic' extra in the target*'topic' missing*"),
    "whitespace changed": (trim_whitespace, {}, {"documents"},
                           "*doc-000012: whitespace only: differ at character 0*"),
    "vector zeroed": (zeroed, {}, {"vectors"}, "*doc-000014: max |delta|*"),
    "ids swapped": (ids_swapped, {}, {"vectors"},
                    "*2 records hold another record's vector*doc-000015 holds doc-000016's*"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_fails_its_check(pytester, chroma_source, tmp_path, name):
    transform, options, must_fail, shown = CORRUPTIONS[name]
    target = qdrant_copy(chroma_source, tmp_path, transform, **options)
    result, data = run_suite(pytester, chroma_source, target)
    assert result.ret == 1, result.stdout.str()
    assert failed_checks(data) == must_fail
    assert data["faithful"] is False
    result.stdout.fnmatch_lines([shown, "*NOT FAITHFUL*"])


def test_tolerance_option_admits_a_drift_it_covers(pytester, chroma_source, tmp_path):
    target = qdrant_copy(chroma_source, tmp_path, drift)
    result, data = run_suite(pytester, chroma_source, target, "--vmtest-tolerance=1e-2")
    assert result.ret == 0, result.stdout.str()
    vectors = next(c for c in data["checks"] if c["name"] == "vectors")
    assert vectors["thresholds"]["atol"] == 1e-2
    assert vectors["figures"]["max_abs_error"] > 1e-4


def test_lenient_numbers_admits_int_to_float_only_when_asked(pytester, chroma_source, tmp_path):
    def to_float(b: RecordBatch) -> RecordBatch:
        for meta in b.metadatas:
            meta["year"] = float(meta["year"])
        return b

    target = qdrant_copy(chroma_source, tmp_path, to_float)
    strict, _ = run_suite(pytester, chroma_source, target)
    assert strict.ret == 1
    lenient, _ = run_suite(pytester, chroma_source, target, "--vmtest-lenient-numbers")
    assert lenient.ret == 0, lenient.stdout.str()


def test_sample_reports_what_it_proves(pytester, chroma_source, tmp_path):
    target = qdrant_copy(chroma_source, tmp_path)
    result, data = run_suite(pytester, chroma_source, target, "--vmtest-sample=100",
                             "--vmtest-seed=3")
    assert result.ret == 0
    vectors = next(c for c in data["checks"] if c["name"] == "vectors")
    figures = vectors["figures"]
    assert figures["compared"] == 100 and figures["population"] == 300
    # 0 of 100: with 95% confidence fewer than 1 - 0.05 ** (1/100) = 2.95% differ
    assert figures["mismatch_rate_upper"] == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-6)
    assert "with 95% confidence fewer than 2.95" in vectors["summary"]


def test_sample_still_catches_a_corruption_in_the_sample(pytester, chroma_source, tmp_path):
    target = qdrant_copy(chroma_source, tmp_path, float16)
    result, data = run_suite(pytester, chroma_source, target, "--vmtest-sample=50")
    assert result.ret == 1
    assert failed_checks(data) == {"vectors"}


def test_chroma_server_is_read_through_its_uri(pytester, chroma_server, chroma_source, tmp_path):
    target = chroma_server.uri("served")
    with open_store(chroma_source) as src:
        copy_store(src, target)
    result, data = run_suite(pytester, chroma_source, target)
    assert result.ret == 0, result.stdout.str()
    assert data["target"]["kind"] == "chroma"
    assert data["target"]["uri"].startswith("chroma://127.0.0.1:")
