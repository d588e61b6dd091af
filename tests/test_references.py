"""Cross-store references (issue 16, part 4): a vector index (JSONL) and the document store
of the same system (a SQLite table). A vector pointing to a deleted document, a document no
vector indexes and a vector with no reference each fail the references check; the faithful
twin passes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support import QUIET
from vmtest.checks.references import check_references
from vmtest.matching import Matching, read_snapshot
from vmtest.stores import CollectionSpec, RecordBatch, open_store

SUITE = str(Path(__file__).resolve().parents[1] / "suites")
#: Five chunks of three documents.
CHUNKS = {"c1": "d1", "c2": "d1", "c3": "d2", "c4": "d3", "c5": "d3"}


def vector_store(tmp_path: Path, refs: dict[str, str | None] = CHUNKS) -> str:
    uri = f"jsonl://{tmp_path}/vectors.jsonl?metric=cosine"
    rng = np.random.default_rng(3)
    with open_store(uri, create=CollectionSpec(4, "cosine")) as store:
        store.upsert(RecordBatch(list(refs), rng.normal(size=(len(refs), 4)).astype(np.float32),
                                 [{} if d is None else {"doc_id": d} for d in refs.values()],
                                 [f"chunk {c}" for c in refs]))
    return uri


def document_store(tmp_path: Path, ids=("d1", "d2", "d3")) -> str:
    uri = f"sqlite://{tmp_path}/docs.db?table=documents"
    with open_store(uri, create=CollectionSpec(0, "cosine")) as store:
        store.upsert(RecordBatch(list(ids), None, [{"title": i.upper()} for i in ids],
                                 [f"text of {i}" for i in ids]))
    return uri


def check(vectors: str, documents: str):
    with open_store(vectors) as v, open_store(documents) as d:
        snap = read_snapshot(v, Matching(), with_vectors=False)
        docs = read_snapshot(d, Matching(), with_vectors=False)
    return check_references(snap.keys, [m.get("doc_id") for m in snap.metadatas], docs.keys,
                            field="doc_id")


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


def test_the_suite_checks_references_when_given_the_document_store(pytester, tmp_path):
    vectors = vector_store(tmp_path)
    documents = document_store(tmp_path)
    with open_store(documents) as store:
        store.delete(["d3"])
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        SUITE, f"--source={vectors}", f"--target={vectors}", f"--vmtest-documents={documents}",
        f"--vmtest-json={report}", "--vmtest-html=none", "-W", "error", "-m", "not latency",
        "-k", "not recall", *QUIET)
    checks = {c["name"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    assert result.ret == 1
    assert {n for n, s in checks.items() if s == "failed"} == {"references"}, checks
    result.stdout.fnmatch_lines(["*c4: points to the document 'd3', which the document store "
                                 "does not hold*"])


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
