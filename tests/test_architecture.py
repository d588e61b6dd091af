"""The plugin's shape, as users and CI meet it: stores opened by overridable session fixtures
(nothing opened when collecting), the suite as one pytest-xdist group (each store read once
whatever -n is), exit 0 only with a verdict, JUnit that a strict consumer accepts, the
``--help`` text as a snapshot, and imports that stay light."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from tests.support import QUIET, qdrant_copy
from vmtest.migrate import copy_store
from vmtest.stores import open_store, registered_schemes, store_class

SNAPSHOT = Path(__file__).parent / "snapshots" / "help.txt"


def vmtest_help_section(text: str) -> str:
    start = text.index("vmtest: validate a vector-database migration")
    end = text.find("\n\n", start)
    return text[start:end if end >= 0 else None].rstrip() + "\n"


def test_help_matches_its_snapshot(pytester):
    """The options, their help and defaults as a user reads them; a change shows as a diff.
    VMTEST_UPDATE_SNAPSHOTS=1 rewrites the snapshot (review the diff before committing)."""
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:randomly"],
                          capture_output=True, text=True, env=env, cwd=pytester.path,
                          timeout=120)
    section = vmtest_help_section(done.stdout)
    if os.environ.get("VMTEST_UPDATE_SNAPSHOTS"):
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(section)
    expected = SNAPSHOT.read_text()
    assert section == expected, "".join(difflib.unified_diff(
        expected.splitlines(True), section.splitlines(True), "snapshot", "pytest --help"))


def test_every_option_but_the_stores_is_prefixed():
    from vmtest.settings import OPTIONS

    bare = [o.flag for o in OPTIONS if not o.flag.startswith("--vmtest-")]
    assert bare == ["--source", "--target", "--migrate-to"]
    assert {o.env for o in OPTIONS} >= {"VMTEST_TOLERANCE", "VMTEST_K", "VMTEST_SEED"}


def test_the_documented_fixture_override_decides_how_a_store_is_reached(
        pytester, chroma_source, tmp_path):
    """docs/writing-checks.md: override vmtest_target_store in a conftest.py to reach a store
    through credentials CI provides. The --target given is a placeholder nobody can reach:
    only the override makes the run pass."""
    real = qdrant_copy(chroma_source, tmp_path)
    pytester.makeconftest(f"""
        import pytest
        from vmtest.stores import open_store

        @pytest.fixture(scope="session")
        def vmtest_target_store():
            with open_store({real!r}) as store:  # e.g. a URI built from CI's secrets
                yield store
    """)
    result = pytester.runpytest_subprocess(
        f"--source={chroma_source}", "--target=qdrant://placeholder.invalid:6333?collection=x",
        "--pyargs", "vmtest.suites", "-m", "not latency", "--vmtest-html=none", *QUIET)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["DATA FIDELITY: FAITHFUL*"])


def test_collect_only_opens_nothing(pytester, chroma_source):
    missing_collection = chroma_source.replace("collection=docs", "collection=nope")
    collected = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                              f"--target={missing_collection}",
                                              "--collect-only", "-q")
    assert collected.ret == 0, collected.stderr.str()
    collected.stdout.fnmatch_lines(["*test_ids*"])
    assert "has no collection" not in collected.stdout.str() + collected.stderr.str()
    run = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                        f"--target={missing_collection}", "-m", "not latency")
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in run.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "has no collection 'nope'" in errors[0]
    # a run stopped by a usage error gives no verdict: no banner, no report written
    assert "DATA FIDELITY" not in run.stdout.str()
    assert not (pytester.path / "reports" / "vmtest.json").exists()


def test_no_verdict_is_not_a_pass(pytester, chroma_source):
    """Every selected check skipped (no --vmtest-filter-field for filtered_recall): pytest
    would exit 0; vmtest exits 1 and says no check gave a verdict."""
    result = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                           f"--target={chroma_source}", "-k", "filtered")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*no check gave a verdict*"])


LOCAL_KINDS = {
    "chroma": "chroma://{d}/c?collection=docs",
    "qdrant": "qdrant://{d}/q?collection=docs",
    "qdrant-edge": "qdrant-edge://{d}/e",
    "lancedb": "lancedb://{d}/l?table=docs",
    "milvus": "milvus://{d}/m.db?collection=docs",
    "jsonl": "jsonl://{d}/j.jsonl",
    "parquet": "parquet://{d}/p",
}


def test_the_embedded_kinds_are_all_covered_here():
    embedded = {s for s in registered_schemes()
                if store_class(s).LOCAL_PATH and store_class(s).HAS_VECTORS}
    assert embedded == set(LOCAL_KINDS)


@pytest.mark.parametrize("kind", sorted(LOCAL_KINDS))
def test_under_xdist_the_suite_runs_on_one_worker_and_reads_each_store_once(
        pytester, chroma_source, tmp_path, kind):
    target = LOCAL_KINDS[kind].format(d=tmp_path)
    with open_store(chroma_source) as src:
        copy_store(src, target)
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        f"--source={chroma_source}", f"--target={target}", "-n", "2",
        "-m", "not latency", f"--vmtest-json={report}", "--vmtest-html=none", *QUIET)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    checks = json.loads(report.read_text())["checks"]
    assert len(checks) == 9  # every check but latency ran (or was skipped with its reason)
    assert len({c["worker"] for c in checks}) == 1, {c["worker"] for c in checks}


def test_under_xdist_a_store_that_cannot_be_opened_is_exit_4_not_a_silent_pass(
        pytester, chroma_source):
    missing = chroma_source.replace("collection=docs", "collection=nope")
    result = pytester.runpytest_subprocess(f"--source={chroma_source}", f"--target={missing}",
                                           "-n", "2", *QUIET)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "has no collection 'nope'" in result.stderr.str()


@pytest.mark.parametrize("family", ["xunit2", "xunit1"])
def test_junit_figures_sit_where_the_family_allows_them(pytester, chroma_source, tmp_path,
                                                        family):
    target = qdrant_copy(chroma_source, tmp_path)
    xml = tmp_path / "junit.xml"
    pytester.makeini(f"[pytest]\njunit_family = {family}\n")
    result = pytester.runpytest_subprocess(
        f"--source={chroma_source}", f"--target={target}", f"--junitxml={xml}",
        "-m", "not latency", "--vmtest-html=none", "-W", "error", *QUIET)
    assert result.ret == 0, result.stdout.str()
    root = ET.parse(xml).getroot()
    suite = root.find("testsuite")
    assert suite is not None
    suite_props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    case_props = {p.get("name"): p.get("value")
                  for case in suite.iter("testcase") for p in case.findall("properties/property")}
    every = {**suite_props, **case_props}
    assert every["vmtest.ids.matched"] == "300"
    assert every["vmtest.vectors.threshold.atol"] == "1e-06"
    assert not any(name == "vmtest.result" or value.startswith("{")
                   for name, value in every.items())  # no result JSON in the XML
    if family == "xunit2":
        assert not case_props, "xunit2 allows no <properties> in a <testcase>"
        assert all(set(c.attrib) <= {"classname", "name", "time", "file", "line"}
                   for c in suite.iter("testcase"))
    else:
        assert case_props and not suite_props


def test_the_plugin_and_the_reports_import_light():
    code = ("import sys, vmtest.plugin; heavy = [m for m in ('numpy', 'scipy', 'chromadb', "
            "'qdrant_client') if m in sys.modules]; print(heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"
    code = ("import sys, vmtest.report, vmtest.report.merge; "
            "print([m for m in ('pytest', 'numpy') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_stores_import_nothing_from_the_checks():
    root = Path(__file__).parent.parent / "vmtest" / "stores"
    for module in root.glob("*.py"):
        assert "vmtest.checks" not in module.read_text(), module.name


def test_reading_one_part_of_a_comparison_does_not_change_another(dataset):
    """Before, the digest run wrote its snapshots into the comparison's __dict__, so reading
    .fidelity changed what .source returned."""
    from tests.support import MemoryStore
    from vmtest.compare import Comparison
    from vmtest.settings import Settings

    source, target = MemoryStore.holding(dataset), MemoryStore.holding(dataset)
    first = Comparison(source, target, Settings())
    before = first.source
    assert first.fidelity["ids"].status == "passed"
    assert first.source is before
    second = Comparison(source, target, Settings())
    assert second.fidelity["vectors"].status == "passed"
    kept = second.source  # the digest run's own snapshot: no second read of the store
    assert second.source is kept and len(kept) == len(dataset)
    assert "source" not in vars(Comparison(source, target, Settings()))


def test_the_model_change_part_reads_the_comparison_on_its_own(dataset):
    """vmtest.model_change, without the suite: a target re-embedded by the hashing model
    holds, for each record with a document, exactly that model's embedding of it."""
    from tests.support import MemoryStore
    from vmtest.compare import Comparison
    from vmtest.embed import hashing
    from vmtest.settings import Settings
    from vmtest.stores import RecordBatch

    reembedded = RecordBatch(list(dataset.ids), np.asarray(hashing(list(dataset.documents))),
                             [dict(m) for m in dataset.metadatas], list(dataset.documents))
    comparison = Comparison(MemoryStore.holding(dataset), MemoryStore.holding(reembedded),
                            Settings(source_model="old", target_model="hashing", queries=20))
    keys, expected, stored, population = comparison.model_change.reembedded_vectors(hashing)
    assert population == len(keys) == len(dataset)
    assert np.allclose(expected, stored, atol=1e-6)
    items = comparison.model_change.known_items(hashing, None)
    assert len(items) == 20 and all(item.source_hits is None for item in items)
