"""Verdicts as a user meets them, on real stores: the suite under ``-W error`` gives a verdict
and never an ERROR; nothing matched is never a pass and the message names the option to add;
a mistyped path fails in a line and creates nothing; every usage error is one line and exit 4;
``plan`` and ``migrate`` refuse by the same rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.support import build_chroma, failed_checks, qdrant_copy, run_suite
from vmtest.stores import CollectionSpec, RecordBatch, open_store, registered_schemes, store_class

EVERY_CHECK = ("-p", "no:randomly")  # the whole suite: fidelity, search, latency


def statuses(data: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in data["checks"]}


def moved(payload_field: str, to: str):
    """A copy that kept a mapping field (the source id, the document) under another name
    than vmtest knows, as hand-written migrations do (chroma_id, text, page_content)."""
    def transform(b: RecordBatch) -> RecordBatch:
        for meta in b.metadatas:
            meta[to] = meta.pop(payload_field)
        return b
    return transform


def move_id_to(field: str):
    return moved("original_id", field)


def move_document_to(field: str):
    return moved("document", field)


def truncated_copy(tmp_path: Path, dataset: RecordBatch, dims: int) -> str:
    vectors = dataset.vectors[:, :dims].copy()
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return build_chroma(tmp_path / "truncated", RecordBatch(
        list(dataset.ids), vectors.astype(np.float32), [dict(m) for m in dataset.metadatas],
        list(dataset.documents)))


def flipped(b: RecordBatch) -> RecordBatch:
    b.vectors = b.vectors.copy()
    b.vectors[:, 5] *= -1
    return b


def float16(b: RecordBatch) -> RecordBatch:
    b.vectors = b.vectors.astype(np.float16).astype(np.float32)
    return b


@pytest.mark.parametrize("case", ["faithful", "float16", "truncated", "id elsewhere",
                                  "documents elsewhere", "sign flipped"])
def test_the_whole_suite_under_warnings_as_errors_gives_verdicts_never_errors(
        pytester, chroma_source, dataset, tmp_path, case):
    if case == "truncated":
        target = truncated_copy(tmp_path, dataset, 16)
    else:
        transform = {"faithful": None, "float16": float16, "id elsewhere": move_id_to(
            "chroma_id"), "documents elsewhere": move_document_to("text"),
            "sign flipped": flipped}[case]
        target = qdrant_copy(chroma_source, tmp_path, transform)
    result, data = run_suite(pytester, chroma_source, target, "-W", "error",
                             "--vmtest-filter-field=topic", select=EVERY_CHECK)
    found = statuses(data)
    assert "error" not in found.values(), result.stdout.str()
    assert result.ret == (0 if case == "faithful" else 1), result.stdout.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    if case == "faithful":
        assert data["verdicts"]["fidelity"]["verdict"] == "passed"
        result.stdout.fnmatch_lines(["CUT-OVER GATE: PASSED (exit 0): no check failed",
                                     "DATA FIDELITY: FAITHFUL*", "SEARCH QUALITY: PASSED*",
                                     "PERFORMANCE: *"])
    if case == "truncated":
        assert found["recall"] == found["latency"] == "not_applicable"
        assert {"inventory", "vectors", "drift"} <= failed_checks(data)
        result.stdout.fnmatch_lines(["*32 dimensions in the source and 16 in the target*"])
    if case == "sign flipped":
        # distances between records are kept (drift passes); queries from the source see
        # the flipped dimension, so recall may drop: 1 of 32 dimensions is a lot
        assert "vectors" in failed_checks(data) and found["drift"] == "passed"
        result.stdout.fnmatch_lines(["*sign of dimension 5 is flipped*"])


def test_no_id_matched_is_never_a_pass_and_names_the_id_field(pytester, chroma_source,
                                                               tmp_path):
    target = qdrant_copy(chroma_source, tmp_path, move_id_to("chroma_id"))
    result, data = run_suite(pytester, chroma_source, target)
    found = statuses(data)
    assert result.ret == 1
    assert found["ids"] == "failed"
    assert found["vectors"] == found["metadata"] == found["documents"] == "not_applicable"
    result.stdout.fnmatch_lines(["*no id matched*add --vmtest-id-field=chroma_id*",
                                 "DATA FIDELITY: NOT FAITHFUL (ids failed); not applicable: "
                                 "vectors, metadata, documents"])
    assert "PASSED on all 0" not in result.stdout.str()
    fixed, data = run_suite(pytester, chroma_source, target, "--vmtest-id-field=chroma_id")
    assert fixed.ret == 0, fixed.stdout.str()
    ids = next(c for c in data["checks"] if c["name"] == "ids")
    assert "'chroma_id'" in ids["figures"]["matched_through"]
    assert "UUIDv5" in ids["figures"]["matched_through"]


def test_documents_in_another_payload_field_name_the_document_field(pytester, chroma_source,
                                                                    tmp_path):
    target = qdrant_copy(chroma_source, tmp_path, move_document_to("page_content"))
    result, data = run_suite(pytester, chroma_source, target)
    assert result.ret == 1
    assert "documents" in failed_checks(data)
    result.stdout.fnmatch_lines(["*add --vmtest-document-field=page_content*"])
    fixed, _ = run_suite(pytester, chroma_source, target, "--vmtest-document-field=page_content")
    assert fixed.ret == 0, fixed.stdout.str()


def test_a_library_warning_under_filterwarnings_error_is_reported_not_an_error(
        pytester, tmp_path):
    """qdrant-client warns that local mode is not meant for more than 20,000 points, when it
    opens such a folder; teams' pytest settings turn warnings into errors. The run must still
    compare the stores (before: 'cannot reach the Qdrant store ... is the server running')."""
    from vmtest.datasets import clustered
    from vmtest.migrate import copy_store

    batch = clustered(20_050, 4, seed=1)
    source = f"parquet://{tmp_path}/src?metric=cosine"
    with open_store(source, create=CollectionSpec(4, "cosine")) as store:
        store.upsert(batch)
    target = f"qdrant://{tmp_path}/big?collection=docs"
    with open_store(source) as src, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same warning, raised while writing
        copy_store(src, target, batch_size=5000)
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    # the warning comes when the folder is opened: two checks show the stores were compared
    result, data = run_suite(pytester, source, target, "--vmtest-html=none",
                             select=("-k", "inventory or ids"))
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    assert any("not recommended for collections with more than" in w
               for w in data["library_warnings"])
    result.stdout.fnmatch_lines(["*library warning (not a check result)*20,000 points*"])


# -- a mistyped path ------------------------------------------------------------------------

LOCAL_KINDS = sorted(s for s in registered_schemes() if store_class(s).LOCAL_PATH)


def local_uri(scheme: str, path: Path) -> str:
    return f"{scheme}://{path}?collection=docs&table=docs"


def vmtest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def snapshot_tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("scheme", LOCAL_KINDS)
def test_a_missing_path_fails_fast_in_one_line_and_creates_nothing(tmp_path, scheme):
    missing = tmp_path / "no" / "such"
    started = time.perf_counter()
    done = vmtest("inspect", local_uri(scheme, missing))
    elapsed = time.perf_counter() - started
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0], done.stderr
    assert elapsed < 2.0 + 1.0  # 2 s for the check; the interpreter's own start besides
    assert snapshot_tree(tmp_path) == []


@pytest.mark.parametrize("scheme", [s for s in LOCAL_KINDS
                                    if store_class(s).LOCAL_PATH == "folder"])
def test_an_empty_folder_is_not_turned_into_a_store(tmp_path, scheme):
    (tmp_path / "empty").mkdir()
    done = vmtest("inspect", local_uri(scheme, tmp_path / "empty"))
    assert done.returncode == 4, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert snapshot_tree(tmp_path) == ["empty"]


def test_a_relative_folder_without_dot_slash_is_named_as_a_host_with_the_way_to_write_it(
        tmp_path, chroma_source):
    """chroma://data/store names the host "data": when data/store is a local folder, the one
    line says so and shows the URI of the folder, and nothing is created."""
    shutil.copytree(Path(chroma_source.split("?")[0].removeprefix("chroma://")),
                    tmp_path / "data" / "store")
    before = snapshot_tree(tmp_path)
    done = vmtest("inspect", "chroma://data/store?collection=docs", cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "'data' was read as a host name" in lines[0], done.stderr
    assert "chroma://./data/store" in lines[0]
    assert snapshot_tree(tmp_path) == before
    written = vmtest("inspect", "chroma://./data/store?collection=docs", cwd=tmp_path)
    assert written.returncode == 0, written.stderr


@pytest.mark.parametrize("entry", [["-m", "vmtest"], ["-m", "vmtest.cli"]])
def test_vmtest_check_holds_in_a_project_whose_pytest_turns_warnings_into_errors(
        chroma_source, entry):
    """The CLI imports vmtest before it hands over to pytest: in this repository (the README's
    `make demo` runs here; its pytest settings turn warnings into errors) pytest's "cannot
    rewrite an already imported module" warning was a traceback."""
    done = subprocess.run([sys.executable, *entry, "check", f"--source={chroma_source}",
                           f"--target={chroma_source}", "-m", "not latency",
                           "--vmtest-json=none", "--vmtest-html=none"],
                          capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DATA FIDELITY: FAITHFUL" in done.stdout


def test_pytest_with_a_missing_source_or_target_creates_nothing(pytester, chroma_source,
                                                                 tmp_path):
    for args in ([f"--source=chroma://{tmp_path}/nope?collection=docs",
                  f"--target={chroma_source}"],
                 [f"--source={chroma_source}",
                  f"--target=qdrant://{tmp_path}/nope?collection=docs"]):
        result = pytester.runpytest_subprocess(*args, "--vmtest-json=none",
                                               "--vmtest-html=none")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        errors = [line for line in result.stderr.lines if line.startswith("ERROR")]
        assert len(errors) == 1 and "does not exist" in errors[0]
    assert not (tmp_path / "nope").exists()


def test_migrate_creates_a_target_only_inside_an_existing_folder(tmp_path, chroma_source):
    missing_source = vmtest("migrate", f"--source=chroma://{tmp_path}/gone?collection=docs",
                            f"--target=qdrant://{tmp_path}/q?collection=docs", cwd=tmp_path)
    assert missing_source.returncode == 4
    orphan = vmtest("migrate", f"--source={chroma_source}",
                    f"--target=qdrant://{tmp_path}/a/b?collection=docs", cwd=tmp_path)
    assert orphan.returncode == 4, orphan.stderr
    assert "create it first" in orphan.stderr
    assert snapshot_tree(tmp_path) == []


# -- one line, exit 4 -----------------------------------------------------------------------

@pytest.mark.parametrize("where", ["flag", "env", "ini"])
def test_a_bad_option_value_is_one_line_naming_the_option_and_where_it_came_from(
        pytester, where, monkeypatch):
    args = ["--source=jsonl:///x.jsonl", "--target=jsonl:///y.jsonl"]
    if where == "flag":
        args.append("--vmtest-tolerance=abc")
    elif where == "env":
        monkeypatch.setenv("VMTEST_TOLERANCE", "abc")
    else:
        pytester.makeini("[pytest]\nvmtest_tolerance = abc\n")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    text = result.stderr.str().strip()
    assert len(text.splitlines()) == 1, text
    origin = {"flag": "--vmtest-tolerance (command line)", "env": "VMTEST_TOLERANCE (environment)",
              "ini": "vmtest_tolerance (ini file)"}[where]
    assert text == f"ERROR: {origin} = 'abc': not a number; it takes ATOL (default 1e-06)"


@pytest.mark.parametrize("args", [
    ["migrate", "--source=jsonl:///x.jsonl", "--target=jsonl:///y.jsonl", "--batch-size=abc"],
    ["migrate", "--source=jsonl:///x.jsonl"],
    ["inspect"],
    ["frobnicate"],
    ["report", "merge", "/no/such/report.json"],
    ["inspect", "qdrant://127.0.0.1:9?collection=docs&prefer_grpc=true"],
])
def test_every_subcommand_exits_4_on_a_usage_error_with_one_line(args, tmp_path):
    done = vmtest(*args, cwd=tmp_path)
    assert done.returncode == 4, done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_plan_and_migrate_refuse_by_the_same_rules(tmp_path):
    source = f"jsonl://{tmp_path}/s.jsonl"
    with open_store(source, create=CollectionSpec(2, "l2")) as store:
        store.upsert(RecordBatch(["a", "b"], np.ones((2, 2), np.float32),
                                 [{"document": "clash"}, {}], ["doc a", "doc b"]))
    target = f"qdrant://{tmp_path}/q?collection=docs"
    plan = vmtest("plan", f"--source={source}", f"--target={target}",
                  "--on-unsupported=json", cwd=tmp_path)
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert "REFUSED 1 source records have a metadata field 'document'" in plan.stdout
    migrate = vmtest("migrate", f"--source={source}", f"--target={target}",
                     "--on-unsupported=json", cwd=tmp_path)
    assert migrate.returncode == 1, migrate.stderr
    assert "refused: 1 source records have a metadata field 'document'" in migrate.stderr
    assert not (tmp_path / "q").exists()
    lossless = vmtest("plan", f"--source={source}",
                      f"--target=jsonl://{tmp_path}/t.jsonl", cwd=tmp_path)
    assert lossless.returncode == 0, lossless.stdout


def test_the_json_report_carries_three_verdicts(pytester, chroma_source, tmp_path):
    target = qdrant_copy(chroma_source, tmp_path, float16)
    _, data = run_suite(pytester, chroma_source, target)
    assert data["schema_version"] == 2
    assert data["verdicts"]["fidelity"]["verdict"] == "failed"
    assert data["verdicts"]["fidelity"]["failed"] == ["vectors"]
    assert data["verdicts"]["search"]["verdict"] == "passed"
    assert data["verdicts"]["performance"]["verdict"] == "not_checked"
    assert data["command"].startswith("cd ") and " && pytest " in data["command"]
    assert "--source=chroma:" in data["command"]
    assert json.dumps(data)  # plain data


def test_a_hand_written_copy_into_a_qdrant_server_with_full_precision_floats(
        pytester, tmp_path, dataset, qdrant_server):
    """A copy into a Qdrant server, by the hand-written loop of the tutorials, of metadata
    holding full-precision floats (scores, similarities): the server rounds about one in ten
    by an ulp or a few. The suite passes with a warning that counts them;
    --vmtest-strict-floats fails; a float32 round trip of the same field fails in both modes.
    (The source is a JSONL file, which keeps doubles exactly: Chroma itself rounds on write,
    the same way, so a Chroma source reads back values a Qdrant server keeps as they are.)"""
    import random

    from vmtest.migrate.mapping import IdMapper

    rng = random.Random(3)
    batch = RecordBatch(list(dataset.ids), dataset.vectors.copy(),
                        [{**m, "similarity": rng.random()} for m in dataset.metadatas],
                        list(dataset.documents))
    source = f"jsonl://{tmp_path}/src.jsonl?metric=cosine"
    with open_store(source, create=CollectionSpec(batch.vectors.shape[1], "cosine")) as s:
        s.upsert(batch)

    def hand_copy(name: str, change=None) -> str:
        target = qdrant_server.uri(f"{name}-{tmp_path.name}")
        with open_store(target, create=CollectionSpec(batch.vectors.shape[1], "cosine")) as t:
            mapper = IdMapper(t)
            metas = [{**m, "original_id": rid, "document": doc}
                     for rid, m, doc in zip(batch.ids, batch.metadatas, batch.documents,
                                            strict=True)]
            if change:
                for m in metas:
                    m["similarity"] = change(m["similarity"])
            t.upsert(RecordBatch([mapper.map(r)[0] for r in batch.ids], batch.vectors, metas,
                                 [None] * len(batch)))
        return target

    target = hand_copy("floats")
    result, data = run_suite(pytester, source, target)
    assert result.ret == 0, result.stdout.str()
    metadata = next(c for c in data["checks"] if c["name"] == "metadata")
    assert metadata["status"] == "warning"
    assert 0 < metadata["figures"]["floats_rounded"] < len(batch)
    assert 1 <= metadata["figures"]["float_rounding_ulps"] <= 4
    result.stdout.fnmatch_lines(["*records hold float values that the Qdrant store rounded*"])
    strict, _ = run_suite(pytester, source, target, "--vmtest-strict-floats")
    assert strict.ret == 1
    float32 = hand_copy("float32", lambda x: float(np.float32(x)))
    for extra in ((), ("--vmtest-strict-floats",)):
        failed, data = run_suite(pytester, source, float32, *extra)
        assert failed.ret == 1
        assert "metadata" in failed_checks(data)
