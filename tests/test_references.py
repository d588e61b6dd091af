"""Cross-store references (issue 16, part 4): a vector index (JSONL) and the document store
of the same system (a SQLite table). A vector pointing to a deleted document, a document no
vector indexes and a vector with no reference each fail the references check; the faithful
twin passes. Before and after migration: given the source's vectors and documents too, an
orphan the source already had is a warning naming it, and only the orphans the migration
made fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import QUIET
from vmtest.checks.references import References, check_references
from vmtest.matching import Matching, read_snapshot
from vmtest.stores import CollectionSpec, RecordBatch, open_store

SUITE = str(Path(__file__).resolve().parents[1] / "suites")
#: Five chunks of three documents.
CHUNKS = {"c1": "d1", "c2": "d1", "c3": "d2", "c4": "d3", "c5": "d3"}


def vector_store(tmp_path: Path, refs: dict[str, str | None] = CHUNKS,
                 name: str = "vectors") -> str:
    uri = f"jsonl://{tmp_path}/{name}.jsonl?metric=cosine"
    rng = np.random.default_rng(3)
    with open_store(uri, create=CollectionSpec(4, "cosine")) as store:
        store.upsert(RecordBatch(list(refs), rng.normal(size=(len(refs), 4)).astype(np.float32),
                                 [{} if d is None else {"doc_id": d} for d in refs.values()],
                                 [f"chunk {c}" for c in refs]))
    return uri


def document_store(tmp_path: Path, ids=("d1", "d2", "d3"), name: str = "docs") -> str:
    uri = f"sqlite://{tmp_path}/{name}.db?table=documents"
    with open_store(uri, create=CollectionSpec(0, "cosine")) as store:
        store.upsert(RecordBatch(list(ids), None, [{"title": i.upper()} for i in ids],
                                 [f"text of {i}" for i in ids]))
    return uri


def side(vectors: str, documents: str) -> References:
    with open_store(vectors) as v, open_store(documents) as d:
        snap = read_snapshot(v, Matching(), with_vectors=False)
        docs = read_snapshot(d, Matching(), with_vectors=False)
    return References(snap.keys, [m.get("doc_id") for m in snap.metadatas], docs.keys)


def check(vectors: str, documents: str, source: tuple[str, str] | None = None):
    """The target's references checked; with ``source`` (its vectors and documents), judged
    against the source's."""
    before = None if source is None else side(*source)
    return check_references(*side(vectors, documents), field="doc_id", source=before)


def test_every_reference_resolves_and_every_document_is_indexed(tmp_path):
    result = check(vector_store(tmp_path), document_store(tmp_path))
    assert result.status == "passed", result.explain()


def test_a_vector_pointing_to_a_deleted_document_fails(tmp_path):
    documents = document_store(tmp_path)
    with open_store(documents) as store:
        store.delete(["d2"])
    result = check(vector_store(tmp_path), documents)
    assert result.status == "failed"
    assert [(o.id, o.source) for o in result.offenders] == [("c3", "d2")], result.explain()
    assert result.figures["dangling"] == 1 and result.figures["unindexed"] == 0


def test_a_document_no_vector_indexes_and_a_vector_without_reference_fail(tmp_path):
    result = check(vector_store(tmp_path, {**CHUNKS, "c6": None}),
                   document_store(tmp_path, ("d1", "d2", "d3", "d4")))
    assert result.status == "failed"
    assert {o.id: o.detail.split(":")[0] for o in result.offenders} == {
        "c6": "no 'doc_id'", "d4": "a document no vector record points to"}


#: Before and after migration, each way: the source's orphan (a chunk pointing to a document
#: deleted long ago; a document never indexed), and what the migration adds of the same kind
#: (a document deleted on the way, so its chunk c3 dangles; a document added unindexed).
BEFORE = {
    "dangling": ({**CHUNKS, "c6": "d9"}, ("d1", "d2", "d3")),
    "unindexed": (CHUNKS, ("d1", "d2", "d3", "d4")),
}
AFTER = {"dangling": ("d1", "d3"), "unindexed": ("d1", "d2", "d3", "d4", "d5")}
KEPT = {"dangling": "c6 -> 'd9' (dangling)", "unindexed": "d4 (not indexed)"}
NEW = {"dangling": [("c3", "d2", None)], "unindexed": [("d5", None, "d5")]}


def migrated(tmp_path: Path, kind: str, target_documents) -> tuple[str, str, tuple[str, str]]:
    """The target's vectors and documents, and the source's: each in its own store, the
    vectors copied as they were."""
    chunks, documents = BEFORE[kind]
    source = (vector_store(tmp_path, chunks, "old"), document_store(tmp_path, documents, "old"))
    return (vector_store(tmp_path, chunks, "new"),
            document_store(tmp_path, target_documents, "new"), source)


@pytest.mark.parametrize("kind", ["dangling", "unindexed"])
def test_an_orphan_already_in_the_source_is_a_warning_naming_it(tmp_path, kind):
    vectors, documents, source = migrated(tmp_path, kind, BEFORE[kind][1])
    result = check(vectors, documents, source)
    assert result.status == "warning", result.explain()
    assert result.offenders == [] and result.figures["already_in_source"] == 1
    assert result.warnings == [f"1 orphan already in the source before migration (kept, not "
                               f"failed): {KEPT[kind]}"]
    assert "already in the source before migration" in result.summary
    # judged alone, the target fails on it: the source is what makes it a warning
    assert check(vectors, documents).status == "failed"


@pytest.mark.parametrize("kind", ["dangling", "unindexed"])
def test_an_orphan_the_migration_made_fails_naming_only_it(tmp_path, kind):
    vectors, documents, source = migrated(tmp_path, kind, AFTER[kind])
    result = check(vectors, documents, source)
    assert result.status == "failed"
    assert [(o.id, o.source, o.target) for o in result.offenders] == NEW[kind], \
        result.explain()
    assert result.offending_total == 1 and result.figures["already_in_source"] == 1
    assert result.summary.endswith("made by the migration (1 more was already in the source "
                                   "before migration)"), result.summary
    explained = result.explain()
    assert explained.index(f"- {NEW[kind][0][0]}: ") < explained.index(
        f"warning: 1 orphan already in the source before migration (kept, not failed): "
        f"{KEPT[kind]}"), explained


def test_an_orphan_of_another_kind_than_the_sources_fails():
    """c1 named no document in the source and points to a deleted one in the target: the same
    key, another orphan (pure function: the kinds, not the stores, are what is tested)."""
    source = References(["c1", "c2"], [None, "d1"], ["d1"])
    result = check_references(["c1", "c2"], ["d9", "d1"], ["d1"], field="doc_id",
                              source=source)
    assert result.status == "failed" and result.warnings == []
    assert [(o.id, o.source) for o in result.offenders] == [("c1", "d9")]


def test_both_ways_are_listed_when_the_vectors_alone_would_fill_the_list():
    result = check_references([f"c{i}" for i in range(10)], [f"gone{i}" for i in range(10)],
                              [f"d{i}" for i in range(10)], field="doc_id", max_listed=6)
    assert [o.id for o in result.offenders] == ["c0", "c1", "c2", "d0", "d1", "d2"]
    assert result.offending_total == 20


def test_the_suite_checks_references_when_given_the_document_stores(pytester, tmp_path):
    """The vectors copied faithfully with the source's dangling c6; the document d3 deleted
    on the way: c4 and c5 fail, c6 is the warning."""
    vectors = vector_store(tmp_path, {**CHUNKS, "c6": "d9"})
    source_documents = document_store(tmp_path, name="old")
    documents = document_store(tmp_path, ("d1", "d2"))
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        SUITE, f"--source={vectors}", f"--target={vectors}", f"--vmtest-documents={documents}",
        f"--vmtest-source-documents={source_documents}",
        f"--vmtest-json={report}", "--vmtest-html=none", "-W", "error", "-m", "not latency",
        "-k", "not recall", *QUIET)
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    assert result.ret == 1
    assert {n for n, c in checks.items() if c["status"] == "failed"} == {"references"}, checks
    assert [o["id"] for o in checks["references"]["offenders"]] == ["c4", "c5"]
    result.stdout.fnmatch_lines([
        "*c4: points to the document 'd3', which the document store does not hold*",
        "*c5: points to the document 'd3'*",
        "*warning: 1 orphan already in the source before migration (kept, not failed): "
        "c6 -> 'd9' (dangling)*"])


def test_a_wrong_document_store_is_a_usage_error_naming_its_option(tmp_path):
    """What the vmtest_documents_store fixture raises (a ConfigError: exit 4 and one line,
    as for --source and --target: tests/test_record_stores.py runs that end to end)."""
    from vmtest.errors import ConfigError
    from vmtest.fixtures import _opened

    documents = document_store(tmp_path).replace("table=documents", "table=nope")
    with pytest.raises(ConfigError) as caught, _opened("--vmtest-documents", documents):
        pass
    assert str(caught.value).startswith(f"--vmtest-documents={documents}: the SQLite file ")
    assert "has no table 'nope'" in str(caught.value) and "\n" not in str(caught.value)
