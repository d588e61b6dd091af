"""The search checks on real stores: a faithful copy passes, a target built with another
metric fails schema and recall, a target whose vectors were perturbed fails recall and lists
its worst queries."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import build_chroma, failed_checks, run_suite
from vmtest.datasets import clustered
from vmtest.migrate import copy_store
from vmtest.stores import RecordBatch, open_store

SEARCH = ("-m", "not latency", "-k", "recall or schema")
OPTIONS = ("--vmtest-queries=60", "--vmtest-filter-field=topic")


@pytest.fixture(scope="module")
def varied_source(tmp_path_factory) -> str:
    """Clustered vectors with norms from 0.3 to 3: cosine and l2 rank them differently."""
    batch = clustered(600, 24, seed=11, clusters=12)
    rng = np.random.default_rng(5)
    batch.vectors = (batch.vectors * rng.uniform(0.3, 3.0, size=(len(batch), 1))).astype(
        np.float32)
    return build_chroma(tmp_path_factory.mktemp("varied"), batch, metric="cosine")


def copy(source: str, tmp_path, **kwargs) -> str:
    target = f"qdrant://{tmp_path}/q?collection=docs"
    with open_store(source) as src:
        copy_store(src, target, **kwargs)
    return target


def test_faithful_copy_keeps_search_quality(pytester, varied_source, tmp_path):
    target = copy(varied_source, tmp_path)
    result, data = run_suite(pytester, varied_source, target, *OPTIONS, select=SEARCH)
    assert result.ret == 0, result.stdout.str()
    recall = next(c for c in data["checks"] if c["name"] == "recall")
    assert recall["figures"]["target_recall"] >= 0.95
    assert recall["figures"]["agreement"] >= 0.9
    filtered = next(c for c in data["checks"] if c["name"] == "filtered_recall")
    assert filtered["status"] == "passed"
    assert "topic in" in filtered["figures"]["filter"]


def test_another_metric_fails_schema_and_recall(pytester, varied_source, tmp_path):
    target = copy(varied_source, tmp_path, metric="l2")
    result, data = run_suite(pytester, varied_source, target, *OPTIONS, select=SEARCH)
    assert result.ret == 1
    assert {"schema", "recall"} <= failed_checks(data)
    result.stdout.fnmatch_lines(["*schema: metric differs (source 'cosine', target 'l2')*"])


def test_perturbed_target_fails_recall_with_worst_queries(pytester, varied_source, tmp_path):
    rng = np.random.default_rng(9)

    def perturb(b: RecordBatch) -> RecordBatch:
        scale = np.linalg.norm(b.vectors, axis=1, keepdims=True)
        noise = rng.normal(size=b.vectors.shape) * 0.12 / np.sqrt(b.vectors.shape[1])
        b.vectors = (b.vectors + noise * scale).astype(np.float32)
        return b

    target = copy(varied_source, tmp_path, transform=perturb)
    result, data = run_suite(pytester, varied_source, target, *OPTIONS, select=SEARCH)
    assert result.ret == 1
    recall = next(c for c in data["checks"] if c["name"] == "recall")
    assert recall["status"] == "failed"
    assert recall["figures"]["target_recall"] < 0.95
    assert recall["figures"]["source_recall"] >= 0.95
    worst = recall["offenders"]
    assert worst and worst[0]["target"] <= worst[-1]["target"]
    result.stdout.fnmatch_lines(["*recall: target recall@10 0.*", "*- doc-*: target recall 0.*"])


@pytest.mark.parametrize("fmt", ["npy", "jsonl", "parquet"])
def test_query_file_supplies_the_queries(pytester, varied_source, tmp_path, fmt):
    import json

    rng = np.random.default_rng(2)
    queries = rng.normal(size=(25, 24)).astype(np.float32)
    path = tmp_path / f"queries.{fmt}"
    if fmt == "npy":
        np.save(path, queries)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps({"vector": q.tolist()}) + "\n" for q in queries))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"vector": [q.tolist() for q in queries]}), path)
    target = copy(varied_source, tmp_path)
    result, data = run_suite(pytester, varied_source, target, f"--vmtest-query-file={path}",
                             select=("-m", "not latency", "-k", "test_recall"))
    assert result.ret == 0, result.stdout.str()
    recall = next(c for c in data["checks"] if c["name"] == "recall")
    assert recall["figures"]["queries"] == 25


def test_query_file_of_another_dimension_is_a_clear_error(pytester, varied_source, tmp_path):
    path = tmp_path / "q.npy"
    np.save(path, np.ones((3, 7), dtype=np.float32))
    result, _ = run_suite(pytester, varied_source, varied_source, f"--vmtest-query-file={path}",
                          select=("-m", "not latency", "-k", "test_recall"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # a wrong input, not a verdict
    result.stderr.fnmatch_lines(
        ["ERROR: --vmtest-query-file=*holds 7-dimensional vectors; the source has 24"])


def test_pytest_html_report_works_alongside(pytester, varied_source, tmp_path):
    target = copy(varied_source, tmp_path)
    result, _ = run_suite(pytester, varied_source, target, f"--html={tmp_path / 'ph.html'}",
                          "--self-contained-html", quiet=False)
    assert result.ret == 0
    assert "test_vectors" in (tmp_path / "ph.html").read_text()
