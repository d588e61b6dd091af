"""The plugin as a user meets it: options, usage errors, exit codes."""

from __future__ import annotations

import pytest

from vmtest.settings import OPTIONS

#: The suite as a user runs it, beside every plugin installed here.
pytestmark = pytest.mark.every_plugin


@pytest.fixture
def jsonl_pair(tmp_path, dataset):
    """A faithful JSONL copy of the dataset on both sides (the fastest real stores)."""
    from vmtest.stores import CollectionSpec, open_store

    uris = []
    for name in ("a", "b"):
        uri = f"jsonl://{tmp_path}/{name}.jsonl"
        with open_store(uri, create=CollectionSpec(dataset.vectors.shape[1], "cosine")) as s:
            s.upsert(dataset)
        uris.append(uri)
    return uris


def test_help_lists_every_option_with_its_default(pytester):
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    text = result.stdout.str()
    assert "vmtest: validate a vector-database migration" in text
    for opt in OPTIONS:
        assert opt.flag in text
        assert opt.env in text
    result.stdout.fnmatch_lines(["*--source=URI*", "*--vmtest-tolerance=ATOL*",
                                 "*default: 1e-06)*"])


def test_faithful_exits_zero_and_unfaithful_exits_one(pytester, jsonl_pair, tmp_path, dataset):
    source, target = jsonl_pair
    ok = pytester.runpytest_subprocess(f"--source={source}", f"--target={target}",
                                       "-m", "not latency")
    assert ok.ret == 0
    # deselected: latency (-m); orphans, shadow, the five conversation checks and references
    # (collected only when given their input)
    ok.assert_outcomes(passed=8, skipped=1, deselected=9)
    from vmtest.stores import open_store

    with open_store(target) as store:  # one more record on the target
        store.upsert(dataset.take([0]))
    bad = pytester.runpytest_subprocess(f"--source={source}", f"--target={target}")
    assert bad.ret == 1
    bad.stdout.fnmatch_lines(["*doc-000000: duplicated in the target*"])


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--source=nonsense", "--target=jsonl:///x.jsonl"], "*--source*not a store URI*"),
        (["--source=jsonl:///tmp/does-not-exist.jsonl", "--target=jsonl:///x.jsonl"],
         "*--source=jsonl:///tmp/does-not-exist.jsonl*does not exist*"),
        (["--source=mongo://h:1/x", "--target=jsonl:///x.jsonl"],
         "*no store is registered for the scheme mongo://*"),
        (["--source=jsonl:///x.jsonl"], "*--target is missing*"),
        (["--source=jsonl:///x.jsonl", "--target=jsonl:///y.jsonl", "--vmtest-tolerance=-1"],
         "*--vmtest-tolerance*not a number >= 0*"),
        (["--source=jsonl:///x.jsonl", "--target=jsonl:///y.jsonl", "--vmtest-sample=0"],
         "*--vmtest-sample*"),
    ],
)
def test_usage_errors_name_the_problem_and_exit_4(pytester, args, says):
    result = pytester.runpytest_subprocess(*args)
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, 2), result.stderr.str()
    result.stderr.fnmatch_lines([says])
    if "mongo" in says:
        result.stderr.fnmatch_lines(["*hint: known schemes: chroma://, jsonl://*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_missing_collection_lists_what_is_there(pytester, chroma_source):
    wrong = chroma_source.replace("collection=docs", "collection=nope")
    result = pytester.runpytest_subprocess(f"--source={wrong}", f"--target={chroma_source}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*has no collection 'nope' (hint: collections there: docs)"])


def test_unreachable_server_is_a_usage_error_with_the_password_redacted(pytester):
    from vmtest.servers import free_port

    port = free_port()
    uri = f"qdrant://:topsecret@127.0.0.1:{port}?collection=docs"
    result = pytester.runpytest_subprocess(f"--source={uri}", f"--target={uri}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "topsecret" not in err + result.stdout.str()
    assert f"127.0.0.1:{port}" in err and "***" in err
    assert "Traceback" not in err


def test_environment_and_ini_supply_options(pytester, jsonl_pair, monkeypatch):
    source, target = jsonl_pair
    monkeypatch.setenv("VMTEST_SOURCE", source)
    monkeypatch.setenv("VMTEST_TARGET", target)
    pytester.makeini("[pytest]\nvmtest_tolerance = 0.5\n")
    # latency is timed: on a loaded machine one slow query can fail it, and it is not what
    # this test is about
    result = pytester.runpytest_subprocess("-m", "not latency")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*tolerance atol=0.5*"])
    # the command line wins over the environment and the ini
    result = pytester.runpytest_subprocess("--vmtest-tolerance=0.25")
    result.stdout.fnmatch_lines(["*tolerance atol=0.25*"])


def test_bad_environment_value_is_a_usage_error(pytester, jsonl_pair, monkeypatch):
    monkeypatch.setenv("VMTEST_K", "ten")
    result = pytester.runpytest_subprocess(f"--source={jsonl_pair[0]}",
                                           f"--target={jsonl_pair[1]}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: VMTEST_K (environment) = 'ten': not a whole number*"])


def test_suite_without_stores_is_a_usage_error_not_a_pass(pytester):
    from vmtest.plugin import suite_dir

    result = pytester.runpytest_subprocess(str(suite_dir()))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs the stores to compare*--source=URI --target=URI*"])


def test_explicit_paths_run_a_teams_own_checks_with_the_fixtures(pytester, jsonl_pair):
    pytester.makepyfile(test_mine="""
        from vmtest.checks.result import CheckResult

        def test_counts_match(source_inventory, target_inventory, vmtest_check):
            ok = source_inventory.count == target_inventory.count
            vmtest_check(CheckResult(name="my-count", status="passed" if ok else "failed",
                                     summary=f"{source_inventory.count} records",
                                     figures={"count": source_inventory.count}))
    """)
    result = pytester.runpytest_subprocess(f"--source={jsonl_pair[0]}",
                                           f"--target={jsonl_pair[1]}", "test_mine.py",
                                           "--junitxml=junit.xml")
    result.assert_outcomes(passed=1)
    xml = (pytester.path / "junit.xml").read_text()
    assert 'name="vmtest.my-count.count" value="300"' in xml


def test_xml_report_carries_the_figures(pytester, jsonl_pair):
    result = pytester.runpytest_subprocess(f"--source={jsonl_pair[0]}",
                                           f"--target={jsonl_pair[1]}", "--junitxml=j.xml",
                                           "-m", "not latency")  # timed: can fail under load
    assert result.ret == 0
    import xml.etree.ElementTree as ET

    root = ET.parse(pytester.path / "j.xml").getroot()
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["vmtest.ids.matched"] == "300"
    assert props["vmtest.vectors.threshold.atol"] == "1e-06"
    assert props["vmtest.inventory.source_metric"] == "cosine"
