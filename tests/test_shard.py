"""--vmtest-shard=I/N and `vmtest report merge`: N shares of a run, merged, give the verdict, the
figures and the offending ids of the unsharded run on the same stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import QUIET, qdrant_copy
from vmtest.cli import main
from vmtest.matching import shard_of
from vmtest.stores import RecordBatch

CORRUPT = {"doc-000003", "doc-000047", "doc-000101", "doc-000177", "doc-000240"}


def corrupt_many(b: RecordBatch) -> RecordBatch:
    """Records lost, vectors moved, metadata and documents changed, all over the key space."""
    keys = [m.get("original_id") for m in b.metadatas]
    for i, key in enumerate(keys):
        if key in ("doc-000047", "doc-000240"):
            b.vectors[i, 0] += 0.01
        if key == "doc-000101":
            b.metadatas[i]["year"] = str(b.metadatas[i]["year"])
        if key == "doc-000177":
            b.metadatas[i]["document"] = "changed"
    return b.take([i for i, k in enumerate(keys) if k != "doc-000003"])


def run(pytester: pytest.Pytester, source: str, target: str, report: Path, *args: str) -> dict:
    pytester.runpytest_subprocess(f"--source={source}", f"--target={target}",
                                  f"--vmtest-json={report}", "--vmtest-html=none",
                                  "-m", "not latency", "--vmtest-queries=40", *QUIET, *args)
    return json.loads(report.read_text())


def merged(pytester, source: str, target: str, shares: int) -> tuple[int, dict]:
    paths = []
    for i in range(1, shares + 1):
        path = pytester.path / f"share-{i}.json"
        data = run(pytester, source, target, path, f"--vmtest-shard={i}/{shares}")
        assert data["settings"]["shard"] == f"{i}/{shares}"
        paths.append(str(path))
    out = pytester.path / "merged.json"
    code = main(["report", "merge", *paths, f"--json={out}",
                 f"--html={pytester.path / 'merged.html'}"])
    return code, json.loads(out.read_text())


def by_name(document: dict) -> dict[str, dict]:
    return {c["name"]: c for c in document["checks"]}


def test_the_keys_spread_over_every_share():
    keys = [f"doc-{i:06d}" for i in range(3000)]
    counts = [sum(shard_of(k, 3) == s for k in keys) for s in (1, 2, 3)]
    assert min(counts) > 900  # about a third each
    assert {shard_of(k, 3) for k in CORRUPT} == {1, 2, 3}  # the corruptions cross shares


def test_merged_shares_equal_the_unsharded_run(pytester, chroma_source, tmp_path):
    target = qdrant_copy(chroma_source, tmp_path, corrupt_many)
    whole = run(pytester, chroma_source, target, pytester.path / "whole.json")
    code, merge = merged(pytester, chroma_source, target, 3)
    assert code == 1
    assert merge["faithful"] is whole["faithful"] is False
    assert sorted(merge["failed_checks"]) == sorted(whole["failed_checks"])
    assert set(whole["failed_checks"]) >= {"ids", "vectors", "metadata", "documents"}
    mine, theirs = by_name(merge), by_name(whole)
    assert set(mine) == set(theirs)
    for name, check in theirs.items():
        assert mine[name]["status"] == check["status"], name
        assert mine[name]["offending_total"] == check["offending_total"], name
        assert ({o["id"] for o in mine[name]["offenders"]}
                == {o["id"] for o in check["offenders"]}), name
    for name, key in (("ids", "matched"), ("ids", "missing"), ("vectors", "compared"),
                      ("vectors", "mismatched"), ("metadata", "mismatched"),
                      ("documents", "compared")):
        assert mine[name]["figures"][key] == theirs[name]["figures"][key], (name, key)
    assert mine["vectors"]["figures"]["max_abs_error"] == pytest.approx(
        theirs["vectors"]["figures"]["max_abs_error"])
    assert mine["recall"]["figures"] == theirs["recall"]["figures"]  # share 1 ran it whole
    assert (pytester.path / "merged.html").read_text().count("doc-000101") >= 1


def test_a_faithful_copy_merges_to_faithful(pytester, chroma_source, tmp_path):
    target = qdrant_copy(chroma_source, tmp_path)
    code, merge = merged(pytester, chroma_source, target, 2)
    assert code == 0 and merge["faithful"] is True
    assert by_name(merge)["ids"]["figures"]["matched"] == 300
    assert [s["shard"] for s in merge["shares"]] == ["1/2", "2/2"]


def test_merge_refuses_an_incomplete_set(pytester, chroma_source, tmp_path, capsys):
    target = qdrant_copy(chroma_source, tmp_path)
    one = pytester.path / "one.json"
    run(pytester, chroma_source, target, one, "--vmtest-shard=1/3")
    assert main(["report", "merge", str(one), f"--json={pytester.path / 'm.json'}"]) == 4
    assert "missing: [2, 3]" in capsys.readouterr().err
    whole = pytester.path / "whole.json"
    run(pytester, chroma_source, target, whole)
    assert main(["report", "merge", str(whole)]) == 4
    assert "not from a --vmtest-shard" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0/3", "4/3", "1/0", "a/b", "2"])
def test_a_bad_shard_is_a_usage_error(pytester, chroma_source, value):
    result = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                           f"--target={chroma_source}", f"--vmtest-shard={value}")
    assert result.ret == 4
    assert "--vmtest-shard" in result.stderr.str()


def test_merge_refuses_reports_of_other_stores(pytester, chroma_source, tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, other = qdrant_copy(chroma_source, tmp_path / "a"), qdrant_copy(chroma_source,
                                                                         tmp_path / "b")
    first, second = pytester.path / "1.json", pytester.path / "2.json"
    run(pytester, chroma_source, one, first, "--vmtest-shard=1/2")
    run(pytester, chroma_source, other, second, "--vmtest-shard=2/2")
    assert main(["report", "merge", str(first), str(second)]) == 4
    assert "compare different stores" in capsys.readouterr().err
