"""The containers provider on a real Docker engine (``make test`` starts one and builds the
images from local parts: scripts/docker-engine.sh, scripts/build_images.py): each container
kind gives a fresh store, the suite drives the runner end to end into it, and no container
of ours is left behind when a test fails, when the run is interrupted or when it is killed.
Where no engine answers, the tests skip with the reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support import QUIET, container_images
from vmtest.cli import run_pytest
from vmtest.errors import ConfigError
from vmtest.provision import (
    OWNER_LABEL,
    ProvisionError,
    docker_engine_problem,
    kinds,
    orphans,
    provision,
)
from vmtest.settings import Settings
from vmtest.stores import CollectionSpec, open_store

ENGINE_PROBLEM = docker_engine_problem()
needs_engine = pytest.mark.skipif(ENGINE_PROBLEM is not None,
                                  reason=f"no Docker engine: {ENGINE_PROBLEM}")
CONTAINER_KINDS = kinds("containers")


def docker_client():
    import docker

    return docker.from_env(timeout=20)


def owned_by(pid: int) -> list:
    """The containers a process started (its owner label)."""
    import socket

    client = docker_client()
    try:
        return client.containers.list(
            all=True, filters={"label": f"{OWNER_LABEL}={socket.gethostname()}:{pid}"})
    finally:
        client.close()


def no_orphans() -> list[str]:
    client = docker_client()
    try:
        return [c.name for c in orphans(client)]
    finally:
        client.close()


def test_container_image_takes_kind_equals_image_and_refuses_anything_else():
    env = {"VMTEST_CONTAINER_IMAGE": "qdrant-server=registry.local/q:1, pgvector=pg:local"}
    settings = Settings.resolve({}, {}, env)
    assert settings.container_image == (("qdrant-server", "registry.local/q:1"),
                                        ("pgvector", "pg:local"))
    assert settings.public()["container_image"] == \
        "qdrant-server=registry.local/q:1,pgvector=pg:local"
    for bad, says in [("mongo=mongo:7", "'mongo' is not a kind"), ("qdrant-server", "KIND=IMAGE"),
                      ("qdrant-server=", "KIND=IMAGE"), ("qdrant=q:1", "'qdrant' is not a kind")]:
        with pytest.raises(ConfigError, match=says):
            Settings.resolve({}, {}, {"VMTEST_CONTAINER_IMAGE": bad})


def test_a_bad_container_image_option_is_one_line_and_exit_4(pytester, chroma_source):
    result = pytester.runpytest_subprocess(
        f"--source={chroma_source}", "--migrate-to=qdrant-server",
        "--vmtest-provision=containers", "--vmtest-container-image=qdrant-serve=x:1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1 and "'qdrant-serve' is not a kind" in errors[0], result.stderr.str()
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


@needs_engine
def test_an_image_neither_on_the_engine_nor_pullable_is_refused_in_seconds():
    started = time.monotonic()
    with pytest.raises(ProvisionError) as caught, provision(
            "qdrant-server", provider="containers",
            images={"qdrant-server": "vmtest-local/no-such-image:0"}):
        pass
    assert time.monotonic() - started < 15
    assert "vmtest-local/no-such-image:0 is not on this Docker engine" in caught.value.message
    assert "--vmtest-container-image=qdrant-server=" in (caught.value.hint or "")
    assert owned_by(os.getpid()) == []


@needs_engine
@pytest.mark.parametrize("kind", CONTAINER_KINDS)
def test_the_suite_migrates_into_a_container_and_removes_it(tmp_path, monkeypatch,
                                                            chroma_source, kind):
    """--migrate-to=KIND --vmtest-provision=containers: started, migrated, every check run, and
    removed afterwards, also when a test of the user's fails (test_zzz_*). In this process,
    as test_matrix.py runs the suite (a subprocess spends its time importing the stores'
    libraries; test_an_interrupted_run_removes_its_container runs one)."""
    user_test = f"test_zzz_{kind.replace('-', '_')}.py"  # a module name new to this process
    (tmp_path / user_test).write_text(textwrap.dedent("""
        def test_fails(vmtest_target_store):
            assert vmtest_target_store.count() == -1
    """))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VMTEST_CONTAINER_IMAGE",
                       ",".join(f"{k}={v}" for k, v in container_images().items()))
    report = tmp_path / "vmtest.json"
    code = run_pytest([
        f"--source={chroma_source}", f"--migrate-to={kind}", "--vmtest-provision=containers",
        "--pyargs", "vmtest.suites", user_test, "-m", "not latency",
        "--vmtest-queries=20", f"--vmtest-json={report}", "--vmtest-html=none",
        f"--rootdir={tmp_path}", "-p", "no:cacheprovider", "-p", "no:xdist", "-q", *QUIET])
    data = json.loads(report.read_text())
    assert code == pytest.ExitCode.TESTS_FAILED  # the user's one failing test, nothing else
    assert data["verdict"] == "passed", [c["summary"] for c in data["checks"]
                                           if c["status"] != "passed"]
    assert data["settings"]["provision"] == "containers"
    assert data["settings"]["migrate_to"] == kind
    ids = next(c for c in data["checks"] if c["name"] == "ids")
    assert ids["status"] == "passed" and ids["figures"]["matched"] == 300
    assert owned_by(os.getpid()) == []
    assert no_orphans() == []


@needs_engine
def test_an_interrupted_run_removes_its_container(tmp_path, chroma_source):
    (tmp_path / "test_wait.py").write_text(textwrap.dedent("""
        import time
        def test_wait(vmtest_target_store):
            open("started", "w").close()
            time.sleep(120)
    """))
    env = {**os.environ, "VMTEST_CONTAINER_IMAGE": ",".join(
        f"{k}={v}" for k, v in container_images().items())}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", f"--source={chroma_source}",
         "--migrate-to=qdrant-server", "--vmtest-provision=containers", "test_wait.py",
         "-p", "no:cacheprovider", "--vmtest-html=none", "--vmtest-json=none", "-q"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # as from a terminal: xdist's workers ignore SIGINT, and children inherit that
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        while not (tmp_path / "started").exists() and run.poll() is None:
            assert time.monotonic() < deadline, "the run never reached its test"
            time.sleep(0.2)
        assert len(owned_by(run.pid)) == 1  # the container of the run, running
        run.send_signal(signal.SIGINT)
        out, _ = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert owned_by(run.pid) == []


@needs_engine
def test_a_killed_run_leaves_a_container_the_next_run_removes(tmp_path):
    images = container_images()
    script = textwrap.dedent(f"""
        import time
        from vmtest.provision import provision
        with provision("qdrant-server", provider="containers", images={images!r}) as uri:
            print(uri, flush=True)
            time.sleep(120)
    """)
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None and run.stdout.readline().startswith("qdrant://")
    finally:
        run.kill()
        run.communicate()
    left = owned_by(run.pid)
    assert len(left) == 1  # SIGKILL: nothing in the process could remove it
    with provision("qdrant-server", provider="containers", images=container_images()) as uri, \
            open_store(uri, create=CollectionSpec(3, "l2")) as store:
        assert store.count() == 0
        assert owned_by(run.pid) == []  # removed before the new one started
