"""The conversation checks (issue 16) on real stores: a chat history written by LangChain's
RedisChatMessageHistory, copied into a SQLite table of messages as an application keeps it,
and LlamaIndex's RedisChatStore copied into another Redis database. Each defect fails exactly
the check it should, and its faithful twin passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import chat_writers
from tests.support import QUIET, conversation_results, fresh_redis_db
from vmtest.checks.conversation import (
    read_session_map,
    read_timestamp,
)
from vmtest.settings import Settings
from vmtest.stores import open_store

SUITE = str(Path(__file__).resolve().parents[1] / "suites")
ALICE = [("human", "Hi, my parcel is late.", {"timestamp": "2024-05-01T10:00:00.120+02:00"}),
         ("ai", "Sorry! Let me check.", {"timestamp": "2024-05-01T10:00:05.000+02:00"}),
         ("ai", "It ships tomorrow.", {"timestamp": "2024-05-01T10:00:05.000+02:00"}),  # a tie
         ("human", "Thanks.", {"timestamp": "2024-05-01T10:01:00.500+02:00"})]
BOB = [("human", "How do I rotate a token?", {"timestamp": "2024-05-02T08:00:00.250+00:00"}),
       ("ai", "Settings, then Tokens.", {"timestamp": "2024-05-02T08:00:03.000+00:00"}),
       ("human", "Found it.", {"timestamp": "2024-05-02T08:00:30.750+00:00"})]


@pytest.fixture(scope="module")
def langchain_source(redis_server) -> str:
    """Two sessions written by LangChain, each with a TTL of 10 minutes."""
    db = fresh_redis_db(redis_server)
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    chat_writers.langchain(url, "alice", ALICE, ttl=600)
    chat_writers.langchain(url, "bob", BOB, ttl=600)
    return redis_server.uri(db, "langchain")


@pytest.fixture(scope="module")
def messages(langchain_source) -> list[dict]:
    """The source's messages as rows of a table (id, session_id, seq, role, timestamp,
    document), from which each target is made."""
    with open_store(langchain_source) as store:
        return [{"id": rid, **meta, "document": doc} for batch in store.iter_batches(100)
                for rid, meta, doc in zip(batch.ids, batch.metadatas, batch.documents,
                                          strict=True)]


def table_of(tmp_path: Path, rows: list[dict], drop: tuple[str, ...] = ()) -> str:
    return chat_writers.sqlite_table(str(tmp_path / "chat.db"), "messages",
                                     [{k: v for k, v in r.items() if k not in drop}
                                      for r in rows])


def edited(rows: list[dict], key: str, **changes) -> list[dict]:
    return [{**r, **changes} if r["id"] == key else dict(r) for r in rows]


def results(source: str, target: str, *, window: int = 2,
            session_map: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Every check's status, as the suite runs them with --vmtest-conversation (the fidelity
    checks from the comparison, the conversation checks over its records)."""
    out = conversation_results(source, target, Settings(conversation=True, window=window),
                               session_map)
    return {name: r.status for name, r in out.items()}


def failed(statuses: dict[str, str]) -> set[str]:
    return {name for name, status in statuses.items() if status == "failed"}


def test_a_faithful_table_passes_and_says_what_it_cannot_keep(langchain_source, messages,
                                                               tmp_path):
    statuses = results(langchain_source, table_of(tmp_path, messages))
    assert failed(statuses) == set(), statuses
    # alice's two replies share a timestamp: ordered by the sequence alone (a warning); a
    # SQL table keeps no expiry (a warning naming the sessions that would no longer expire)
    assert statuses["conversation_order"] == "warning"
    assert statuses["conversation_ttl"] == "warning"
    assert statuses["conversation_sessions"] == statuses["conversation_window"] == "passed"


@pytest.mark.parametrize(("defect", "fails"), [
    ("reordered", {"conversation_order"}),
    ("sequence dropped while timestamps tie", {"conversation_order"}),
    ("session split", {"conversation_sessions"}),
    ("message truncated", {"documents"}),
    ("message truncated inside the window", {"documents", "conversation_window"}),
    ("precision lost", {"conversation_timestamps"}),
    ("time zone lost", {"conversation_timestamps"}),
    ("last messages swapped", {"conversation_order", "conversation_window"}),
])
def test_each_defect_fails_exactly_its_check(langchain_source, messages, tmp_path, defect,
                                             fails):
    rows, drop = messages, ()
    if defect == "reordered":  # alice's first two messages trade places (outside the window)
        rows = edited(edited(rows, "alice#0", seq=1), "alice#1", seq=0)
    elif defect == "sequence dropped while timestamps tie":
        drop = ("seq",)
    elif defect == "session split":
        rows = edited(edited(rows, "alice#2", session_id="alice-2"), "alice#3",
                      session_id="alice-2")
    elif defect == "message truncated":  # outside the window (inside, the window fails too)
        rows = edited(rows, "alice#0", document="Hi, my parc")
    elif defect == "message truncated inside the window":
        rows = edited(rows, "bob#2", document="Found")
    elif defect == "precision lost":
        rows = edited(rows, "bob#2", timestamp="2024-05-02T08:00:30+00:00")
    elif defect == "time zone lost":
        rows = edited(rows, "alice#3", timestamp="2024-05-01T08:01:00.500")
    elif defect == "last messages swapped":  # inside the window of 2
        rows = edited(edited(rows, "bob#1", seq=2), "bob#2", seq=1)
    statuses = results(langchain_source, table_of(tmp_path, rows, drop))
    assert failed(statuses) == fails, statuses


def test_the_sequence_dropped_without_ties_is_ordered_by_time(langchain_source, messages,
                                                              tmp_path):
    """The twin of the dropped sequence: with no tie (alice's tie split by a millisecond),
    the timestamps alone tell the order."""
    rows = edited(messages, "alice#2", timestamp="2024-05-01T10:00:05.001+02:00")
    source_rows = edited(messages, "alice#2", timestamp="2024-05-01T10:00:05.001+02:00")
    source = chat_writers.sqlite_table(str(tmp_path / "src.db"), "messages", source_rows)
    statuses = results(source, table_of(tmp_path, rows, ("seq",)))
    assert failed(statuses) == set() and statuses["conversation_order"] == "passed", statuses


def test_a_session_remapped_to_two_targets_fails_and_one_target_passes(langchain_source,
                                                                        messages, tmp_path):
    rows = [{**r, "session_id": {"alice": "u-1", "bob": "u-2"}[r["session_id"]]}
            for r in messages]
    target = table_of(tmp_path, rows)
    one = read_session_map("# source,target\nalice,u-1\nbob,u-2\n")
    two = read_session_map("alice,u-1\nalice,u-9\nbob,u-2\n")
    assert failed(results(langchain_source, target, session_map=one)) == set()
    assert failed(results(langchain_source, target, session_map=two)) == {
        "conversation_sessions"}
    # without the map, the renamed sessions are not where identity says
    assert failed(results(langchain_source, target)) == {"conversation_sessions"}


@pytest.mark.parametrize("keep_ttl", [True, False])
def test_a_dropped_ttl_fails_and_a_kept_one_passes(redis_server, keep_ttl):
    """LlamaIndex's RedisChatStore copied into another database: one conversation written
    again without its TTL fails the ttl check alone."""
    src_db, tgt_db = fresh_redis_db(redis_server), fresh_redis_db(redis_server)
    for db in (src_db, tgt_db):
        url = f"redis://127.0.0.1:{redis_server.port}/{db}"
        chat_writers.llamaindex(url, "chat:1", [("user", "Hi", {}), ("assistant", "Hey", {})],
                                ttl=900)
        chat_writers.llamaindex(url, "chat:2", [("user", "Yo", {})],
                                ttl=900 if keep_ttl or db == src_db else None)
    statuses = results(redis_server.uri(src_db, "llamaindex", prefix="chat:"),
                       redis_server.uri(tgt_db, "llamaindex", prefix="chat:"))
    assert failed(statuses) == (set() if keep_ttl else {"conversation_ttl"}), statuses


def test_timestamps_compare_instants_precision_and_zones():
    at = read_timestamp("2024-05-01T10:00:00.120+02:00")
    assert at is not None and at.digits == 3 and at.offset is not None
    assert read_timestamp("2024-05-01T08:00:00.12Z").micros == at.micros  # same instant
    assert read_timestamp("2024-05-01T10:00:00.120").offset is None  # naive
    assert read_timestamp(1714550400.12).digits == 2
    assert read_timestamp("yesterday") is None and read_timestamp(True) is None


def test_the_suite_runs_the_conversation_checks_when_asked(pytester, langchain_source,
                                                           messages, tmp_path):
    """As a user runs it: with --vmtest-conversation every conversation check is reported;
    a table whose first two messages traded places fails the order check alone (exit 1)."""
    target = table_of(tmp_path, edited(edited(messages, "alice#0", seq=1), "alice#1", seq=0))
    report = tmp_path / "report.json"
    result = pytester.runpytest_subprocess(
        SUITE, f"--source={langchain_source}", f"--target={target}", "--vmtest-conversation",
        "--vmtest-window=2", f"--vmtest-json={report}", "--vmtest-html=none", "-W", "error",
        "-m", "not latency", *QUIET)
    checks = {c["name"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    assert result.ret == 1
    assert {n: s for n, s in checks.items() if n.startswith("conversation")} == {
        "conversation_sessions": "passed", "conversation_order": "failed",
        "conversation_timestamps": "passed", "conversation_ttl": "warning",
        "conversation_window": "passed"}, checks
    assert {n for n, s in checks.items() if s == "failed"} == {"conversation_order"}
    # the fidelity checks ran on the two stores without vectors; the vector checks say why not
    assert {n: checks[n] for n in ("inventory", "ids", "metadata", "documents", "vectors",
                                   "schema", "recall", "drift")} == {
        "inventory": "passed", "ids": "passed", "metadata": "passed", "documents": "passed",
        "vectors": "not_applicable", "schema": "not_applicable", "recall": "skipped",
        "drift": "skipped"}, checks
    reason = "*the source (Redis) and the target (SQLite) hold no vectors*"
    result.stdout.fnmatch_lines([
        "*alice: reordered (by the target's sequence): at position 0 the source has "
        "'alice#0', the target 'alice#1'*", f"*N/A*vectors*{reason}", f"*N/A*schema*{reason}",
        f"*SKIPPED*recall*{reason}", f"*SKIPPED*drift*{reason}"])


def test_a_malformed_session_map_is_a_usage_error(tmp_path):
    from vmtest.errors import ConfigError

    bad = tmp_path / "map.csv"
    bad.write_text("alice,u-1\nbob\n")
    with pytest.raises(ConfigError, match=r"--vmtest-session-map .*line 2 is not SOURCE,TARGET"):
        Settings.resolve({"session_map": str(bad)}, {}, {})
