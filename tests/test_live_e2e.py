"""Cut over while production keeps writing, end to end on real servers: a writer process
upserts, updates and deletes while `vmtest migrate` and then `vmtest sync --until-converged`
run; after writes-off the last generation finds nothing, and the target holds the writer's
own log: nothing lost, no deleted record resurrected, the last write of each key present.

The load is bounded for CI (VMTEST_LIVE_RATE operations/s for VMTEST_LIVE_SECONDS s; the issue's
200/s for 60 s is the same test with those set).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import failed_checks, run_suite
from vmtest.checks.fidelity import same_value
from vmtest.matching import Matching
from vmtest.migrate.mapping import IdMapper
from vmtest.servers import QdrantServer
from vmtest.stores import CollectionSpec, RecordBatch, open_store

RATE = float(os.environ.get("VMTEST_LIVE_RATE", "100"))
SECONDS = float(os.environ.get("VMTEST_LIVE_SECONDS", "8"))
ROOT = Path(__file__).parent.parent


def spawn(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def vmtest(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmtest.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def wait_for_lines(path: Path, count: int, timeout: float = 60.0) -> None:
    """Until the writer has logged ``count`` acknowledged operations."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count("\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"the writer logged fewer than {count} operations in {timeout} s")


def expected_state(initial: RecordBatch, log: Path, source: str
                   ) -> tuple[dict[str, dict], set[str]]:
    """What the target must hold after the writer's log: key -> the last write (vector,
    metadata, document), and the keys whose last operation was a delete. A source without
    a document column (Qdrant) never held the documents it was given."""
    with open_store(source) as store:
        documents = store.HAS_DOCUMENTS
    alive = {str(rid): {"vector": vec, "metadata": meta, "document": doc if documents else None}
             for rid, vec, meta, doc in zip(initial.ids, initial.vectors, initial.metadatas,
                                            initial.documents, strict=True)}
    deleted: set[str] = set()
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        key = str(entry["id"])
        if entry["op"] == "delete":
            alive.pop(key, None)
            deleted.add(key)
        else:
            alive[key] = {"vector": np.asarray(entry["vector"], np.float32),
                          "metadata": entry["metadata"],
                          "document": entry["document"] if documents else None}
            deleted.discard(key)
    return alive, deleted


def assert_holds(target_uri: str, alive: dict[str, dict], deleted: set[str],
                 native: dict[str, object]) -> None:
    """The target holds exactly the last write of each alive key, and no deleted one."""
    matching = Matching()
    with open_store(target_uri) as store:
        ids = IdMapper(store)
        got = {}
        wanted = [ids.map(native[k])[0] for k in [*alive, *deleted]]
        for start in range(0, len(wanted), 500):
            batch = store.fetch(wanted[start:start + 500])
            for i, (rid, meta, doc) in enumerate(zip(batch.ids, batch.metadatas,
                                                     batch.documents, strict=True)):
                key, rest, document = matching.split(store, rid, meta, doc)
                got[key] = (batch.vectors[i], rest, document)
        assert store.count() == len(alive), (store.count(), len(alive))
    resurrected = sorted(deleted & got.keys())
    lost = sorted(alive.keys() - got.keys())
    assert not resurrected, f"deleted records back in the target: {resurrected[:10]}"
    assert not lost, f"records lost: {lost[:10]}"
    stale = []
    for key, want in alive.items():
        vector, meta, document = got[key]
        unit = want["vector"] / np.linalg.norm(want["vector"])
        same_meta = meta.keys() == want["metadata"].keys() and all(
            same_value(v, meta[k], float_ulps=4) for k, v in want["metadata"].items())
        if not same_meta or document != want["document"] or \
                not np.allclose(vector / np.linalg.norm(vector), unit, atol=1e-5):
            stale.append((key, meta, want["metadata"], document, want["document"]))
    assert not stale, f"not the last write: {stale[:3]}"


def initial_records(dataset: RecordBatch, as_text: bool) -> RecordBatch:
    ids = list(dataset.ids) if as_text else list(range(len(dataset)))
    return RecordBatch(ids, dataset.vectors, [dict(m) for m in dataset.metadatas],
                       list(dataset.documents))


def catch_up_while_writing(source: str, target: str, initial: RecordBatch, tmp: Path,
                           pytester: pytest.Pytester) -> dict:
    log = tmp / "writer.jsonl"
    # the writer runs until told to stop: at least SECONDS, and on for a while after the copy
    # (however long the copy takes on a loaded machine), so the copy does fall behind
    writer = spawn("-m", "tests.live_writer", f"--store={source}", f"--log={log}",
                   f"--rate={RATE}", f"--seconds={SECONDS + 600}")
    try:
        return _catch_up(writer, source, target, initial, tmp, pytester)
    finally:  # a failed test leaves no writer running, no pipe open
        if writer.poll() is None:
            writer.kill()
            writer.communicate()


def _catch_up(writer: subprocess.Popen, source: str, target: str, initial: RecordBatch,
              tmp: Path, pytester: pytest.Pytester) -> dict:
    log, off = tmp / "writer.jsonl", tmp / "writes-off"
    started = time.monotonic()
    wait_for_lines(log, int(RATE * SECONDS / 8))  # writes go on during the copy
    done = vmtest("migrate", f"--source={source}", f"--target={target}",
                  f"--state={tmp}/migrate.json")
    assert done.returncode == 0, done.stdout + done.stderr
    sync = spawn("-m", "vmtest.cli", "sync", f"--source={source}", f"--target={target}",
                 "--until-converged", "--delete-extra", f"--writes-off-file={off}",
                 "--interval=0.2", f"--state={tmp}/sync.json", f"--json={tmp}/report.json",
                 "--html=none")
    after_copy = log.read_text().count("\n")
    wait_for_lines(log, after_copy + int(RATE * 2), timeout=120)  # writes after the copy
    time.sleep(max(0.0, SECONDS - (time.monotonic() - started)))
    writer.send_signal(signal.SIGTERM)
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    off.touch()  # the application stopped writing
    sync_out, sync_err = sync.communicate(timeout=300)
    assert sync.returncode == 0, sync_out + sync_err
    report = json.loads((tmp / "report.json").read_text())
    generations = report["generations"]
    assert report["converged"] and generations[-1]["mismatches"] == 0
    assert generations[-1]["writes_off"]
    # the copy fell behind while writes went on, and sync caught it up
    assert sum(g["mismatches"] for g in generations) > 0
    alive, deleted = expected_state(initial, log, source)
    native = {str(rid): rid for rid in initial.ids}
    native.update({str(json.loads(line)["id"]): json.loads(line)["id"]
                   for line in log.read_text().splitlines()})
    assert_holds(target, alive, deleted, native)
    result, data = run_suite(pytester, source, target)
    assert result.ret == 0 and not failed_checks(data), result.stdout.str()[-3000:]
    summary["generations"] = len(generations)
    summary["feed"] = report["feed"]
    print(f"\nwriter: {summary}")
    return summary


def test_qdrant_to_qdrant_while_the_application_writes(qdrant_server, dataset, tmp_path,
                                                       pytester, request):
    name = request.node.name[-10:]
    source, target = qdrant_server.uri(f"src_{name}"), qdrant_server.uri(f"dst_{name}")
    initial = initial_records(dataset, as_text=False)
    with open_store(source, create=CollectionSpec(dimension=32, metric="cosine")) as store:
        store.upsert(initial)
    summary = catch_up_while_writing(source, target, initial, tmp_path, pytester)
    assert summary["feed"] is None  # Qdrant has no feed: every generation reads digests


def test_pgvector_to_qdrant_while_the_application_writes(postgres_server, qdrant_server,
                                                         dataset, tmp_path, pytester):
    source = postgres_server.uri("live_e2e")
    target = qdrant_server.uri("from_pg_e2e")
    initial = initial_records(dataset, as_text=True)
    with open_store(source, create=CollectionSpec(dimension=32, metric="cosine")) as store:
        store.upsert(initial)
    summary = catch_up_while_writing(source, target, initial, tmp_path, pytester)
    assert summary["feed"] and "logical decoding" in summary["feed"]


def test_dual_write_survives_the_secondary_killed_mid_load(qdrant_server, dataset, tmp_path,
                                                           pytester):
    """The secondary's server is killed with SIGKILL while the application writes and comes
    back later; writes it missed are journaled, `vmtest sync --journal` replays them, and the
    secondary then holds exactly the writer's log."""
    primary = qdrant_server.uri("dual_primary")
    initial = initial_records(dataset, as_text=False)
    with open_store(primary, create=CollectionSpec(dimension=32, metric="cosine")) as store:
        store.upsert(initial)
    server = QdrantServer(tmp_path / "secondary").start()
    stopped: list[subprocess.Popen] = []
    try:
        secondary = server.uri("dual_secondary")
        done = vmtest("migrate", f"--source={primary}", f"--target={secondary}",
                      f"--state={tmp_path}/m.json")
        assert done.returncode == 0, done.stderr
        log, journal = tmp_path / "writer.jsonl", tmp_path / "journal.jsonl"
        # the writer runs until told to stop: some writes before the kill, some while the
        # secondary is down, some after it is back, however slow the machine is
        writer = spawn("-m", "tests.live_writer", f"--store={primary}",
                       f"--secondary={secondary}", f"--journal={journal}", f"--log={log}",
                       f"--rate={RATE}", f"--seconds={SECONDS + 600}")
        stopped.append(writer)
        wait_for_lines(log, int(RATE * SECONDS / 8), timeout=120)
        server.kill()  # SIGKILL, mid-load
        killed_at = log.read_text().count("\n")
        wait_for_lines(log, killed_at + int(RATE), timeout=120)
        grpc_port = server.grpc_port
        server = QdrantServer(tmp_path / "secondary", port=server.port)
        server.grpc_port = grpc_port
        server.start()
        back_at = log.read_text().count("\n")
        wait_for_lines(log, back_at + int(RATE), timeout=120)
        writer.send_signal(signal.SIGTERM)
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["secondary_failures"] >= 1 and summary["journaled"] > 0, summary
        # the secondary took the writes before the kill itself
        assert summary["writes"] + summary["deletes"] - summary["journaled"] >= RATE * SECONDS / 8
        done = vmtest("sync", f"--journal={journal}", f"--target={secondary}")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "journal depth now 0" in done.stdout
        alive, deleted = expected_state(initial, log, primary)
        native = {str(rid): rid for rid in initial.ids}
        native.update({str(json.loads(line)["id"]): json.loads(line)["id"]
                       for line in log.read_text().splitlines()})
        assert_holds(secondary, alive, deleted, native)
        result, data = run_suite(pytester, primary, secondary)
        assert result.ret == 0 and not failed_checks(data), result.stdout.str()[-3000:]
        again = vmtest("sync", f"--journal={journal}", f"--target={secondary}")
        assert again.returncode == 0 and "replayed 0 journal entries" in again.stdout
        print(f"\nwriter: {summary}")
    finally:
        for process in stopped:  # a failed test leaves no writer running, no pipe open
            if process.poll() is None:
                process.kill()
            process.communicate()
        server.stop()
