"""Provisioning: fresh real stores of each kind, always torn down; the suite drives the
runner end to end with --migrate-to; a server killed mid-check is a clear error, not a hang."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from vmtest.provision import ProvisionError, kinds, provision
from vmtest.servers import ChromaServer
from vmtest.stores import CollectionSpec, RecordBatch, open_store
from vmtest.uri import parse


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("kind", kinds("process"))
def test_process_provider_gives_a_fresh_empty_store_and_removes_it(kind):
    with provision(kind, name="fresh") as uri:
        parsed = parse(uri)
        assert parsed.host in (None, "127.0.0.1")  # embedded, or a server on loopback only
        with open_store(uri, create=CollectionSpec(3, "cosine")) as store:
            assert store.count() == 0
            an_id = "0b7e6c1e-0c9a-4d3e-8f3e-5c1d2a3b4c5d"  # a UUID: every store takes it
            store.upsert(RecordBatch([an_id], np.ones((1, 3), np.float32), [{"k": 1}], ["d"]))
            assert store.count() == 1
    if parsed.is_local:
        assert not Path(parsed.path).exists()
    else:
        assert not _port_open(parsed.port)


def test_unknown_kind_and_provider_are_clear_errors():
    with pytest.raises(ProvisionError, match="kinds: chroma"), provision("mongo"):
        pass
    with pytest.raises(ProvisionError, match="no provider"), provision("chroma", provider="x"):
        pass


def test_containers_provider_without_an_engine_says_why(monkeypatch):
    """The engine's absence is a clear ProvisionError (tests/test_containers.py runs the
    provider on a real engine)."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(ProvisionError, match=r"no Docker engine is reachable") as caught, \
            provision("qdrant-server", provider="containers"):
        pass
    assert caught.value.hint == "use --vmtest-provision=process, which needs no engine"


@pytest.mark.parametrize("kind", ["qdrant", "chroma-server", "parquet"])
def test_suite_drives_the_runner_end_to_end(pytester, chroma_source, kind):
    result = pytester.runpytest_subprocess(
        f"--source={chroma_source}", f"--migrate-to={kind}", "-m", "not latency",
        "--vmtest-html=none", "-s",
    )
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"*target a fresh {kind} store (process)*", "*FAITHFUL*"])
    result.stdout.fnmatch_lines(["vmtest: migrated 300 records into *"])


def test_migrate_to_with_target_is_a_usage_error(pytester, chroma_source):
    result = pytester.runpytest_subprocess(f"--source={chroma_source}",
                                           f"--target={chroma_source}", "--migrate-to=qdrant")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--migrate-to and --target exclude each other*"])


def test_a_server_killed_mid_check_is_a_clear_error_not_a_hang(pytester, chroma_source,
                                                               tmp_path):
    server = ChromaServer(tmp_path / "srv").start()
    try:
        target = server.uri("victim")
        from vmtest.migrate import copy_store

        with open_store(chroma_source) as src:
            copy_store(src, target)
        pytester.makepyfile(test_aaa_kill=f"""
            import os, signal
            def test_kill_the_server():
                os.killpg({server.process.pid}, signal.SIGKILL)
        """)
        started = time.monotonic()
        result = pytester.runpytest_subprocess(
            f"--source={chroma_source}", f"--target={target}", "test_aaa_kill.py",
            "--pyargs", "vmtest.suites", "-m", "not latency", "--vmtest-html=none",
        )
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    # a server that died is a usage error (exit 4), told in one line, not a verdict
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert elapsed < 120
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr.str()
    assert f"--target={target}: cannot open the Chroma store chroma://127.0.0.1:" in errors[0]
    assert "Could not connect" in errors[0]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
