"""The bounded-memory comparison: with a --vmtest-memory-budget the records do not fit in, both
stores are spilled to partition files by key hash and compared partition by partition. The
verdict, the figures and the offending records are those of the in-memory comparison."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support import QUIET, qdrant_copy
from tests.test_shard import corrupt_many
from vmtest.stream import VectorFile, partitions_for

SMALL = "--vmtest-memory-budget=64KiB"  # 300 x 32 records of both sides: 14 partitions


def run(pytester, source, target, name, *args):
    report = pytester.path / f"{name}.json"
    result = pytester.runpytest_subprocess(
        f"--source={source}", f"--target={target}", f"--vmtest-json={report}",
        "--vmtest-html=none", "-m", "not latency", "--vmtest-queries=40", *QUIET, *args)
    return result, json.loads(report.read_text())


def test_partitions_follow_the_budget():
    assert partitions_for(600, 32, 1 << 30) == 1
    assert partitions_for(600, 32, 1 << 16) == 14
    assert partitions_for(2_000_000, 768, 1 << 30) == 14  # 1M x 768 a side in 1 GiB


def test_a_vector_file_reads_slices_and_rows_across_its_files(tmp_path):
    data = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    paths = []
    for i, rows in enumerate((data[:2], data[2:2], data[2:7])):
        path = tmp_path / f"p{i}.f32"
        rows.tofile(path)
        paths.append(path)
    vf = VectorFile(paths, [2, 0, 5], 3)
    assert len(vf) == 7 and vf.shape == (7, 3)
    assert np.array_equal(vf[0:7], data)
    assert np.array_equal(vf[1:4], data[1:4])
    assert np.array_equal(vf[[6, 0, 2]], data[[6, 0, 2]])
    assert vf[5:5].shape == (0, 3)
    many = np.random.default_rng(1).integers(0, 7, size=200)  # the read-a-whole-file path
    assert np.array_equal(vf[many], data[many])


@pytest.mark.parametrize("corrupted", [True, False], ids=["corrupted", "faithful"])
def test_streamed_comparison_equals_the_in_memory_one(pytester, chroma_source, tmp_path,
                                                      corrupted):
    target = qdrant_copy(chroma_source, tmp_path, corrupt_many if corrupted else None)
    # --vmtest-compare=full: every record through the partitions (the digest path has its own tests)
    memory_result, memory = run(pytester, chroma_source, target, "memory", "--vmtest-compare=full")
    streamed_result, streamed = run(pytester, chroma_source, target, "streamed", SMALL,
                                    "--vmtest-compare=full")
    assert streamed_result.ret == memory_result.ret == (1 if corrupted else 0)
    assert streamed["failed_checks"] == memory["failed_checks"]
    mine = {c["name"]: c for c in streamed["checks"]}
    for check in memory["checks"]:
        other = mine[check["name"]]
        assert other["status"] == check["status"], check["name"]
        assert other["offending_total"] == check["offending_total"], check["name"]
        assert {o["id"] for o in other["offenders"]} == {o["id"] for o in check["offenders"]}
    for name in ("ids", "vectors", "metadata", "documents"):
        assert "14 partitions merged" in mine[name]["summary"], mine[name]["summary"]
    theirs = {c["name"]: c for c in memory["checks"]}
    # exact ground truth streamed from the partition files finds the same neighbours, and the
    # seeded choices (queries, drift pairs) do not depend on the order records were read in
    assert mine["recall"]["figures"] == theirs["recall"]["figures"]
    assert mine["drift"]["figures"] == theirs["drift"]["figures"]


def test_a_bad_budget_is_a_usage_error(pytester, chroma_source):
    result = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                           f"--target={chroma_source}",
                                           "--vmtest-memory-budget=lots")
    assert result.ret == 4
    assert "--vmtest-memory-budget" in result.stderr.str()
