"""Property (issue 16): generated conversations (unicode, empty messages, equal timestamps)
written by LangChain into Redis round-trip Redis -> PostgreSQL -> SQLite through
`vmtest migrate`, and the suite's fidelity and conversation checks pass each hop (equal
timestamps may warn, a SQL table's missing expiry may warn; nothing fails). Its twin proves
the property can fail: a copy that drops the sequence while timestamps tie fails the order
check."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests import chat_writers
from tests.support import conversation_results, fresh_redis_db
from vmtest.checks.result import CheckResult
from vmtest.errors import PlanRefusedError, StoreNotFoundError
from vmtest.migrate import migrate
from vmtest.settings import Settings
from vmtest.stores import RecordBatch, open_store

START = datetime.fromisoformat("2024-05-01T10:00:00.250+02:00")
_NAMES = itertools.count()

# unicode text (no lone surrogates: they are no text), the empty string and characters
# outside the BMP always among the choices; no NUL: PostgreSQL text holds none, and migrate
# refuses it before writing
text = st.one_of(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12),
                 st.sampled_from(["", "𝄞 😀", "e\u0301 \U0010fffd"]))
# a message: its role, its text, and the milliseconds since the previous one (0: a tie)
message = st.tuples(st.sampled_from(["human", "ai"]), text,
                    st.sampled_from([0, 0, 1, 1500, 60_000]))
# 1-3 sessions of 0-6 messages; a session without messages is no key in Redis, and a Redis
# without any is no store (vmtest says so), so the first session holds at least one
chats = st.builds(lambda first, others: {**others, first[0]: first[1]},
                  st.tuples(text, st.lists(message, min_size=1, max_size=6)),
                  st.dictionaries(text, st.lists(message, max_size=6), max_size=2))


def turns(messages) -> list[chat_writers.Turn]:
    """The messages as LangChain is given them, each with its ISO 8601 timestamp."""
    out, at = [], START
    for role, body, gap_ms in messages:
        at += timedelta(milliseconds=gap_ms)
        out.append((role, body, {"timestamp": at.isoformat(timespec="milliseconds")}))
    return out


def write_redis(server, db: int, chat: dict) -> str:
    """An emptied database holding ``chat`` as LangChain writes it (TTL 10 minutes)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=server.port, db=db)
    client.flushdb()
    client.close()
    url = f"redis://127.0.0.1:{server.port}/{db}"
    for session, messages in chat.items():
        chat_writers.langchain(url, session, turns(messages), ttl=600)
    return server.uri(db, "langchain")


def suite_results(source: str, target: str) -> dict[str, CheckResult]:
    """Every fidelity and conversation check, as the suite runs them with
    --vmtest-conversation --vmtest-window=2 (suites/test_conversation.py), in process."""
    return conversation_results(source, target, Settings(conversation=True, window=2))


def assert_hop_passes(source: str, target: str, n: int) -> dict[str, CheckResult]:
    results = suite_results(source, target)
    failed = [r.explain() for r in results.values() if r.status == "failed"]
    assert not failed, "\n".join(failed)
    assert results["ids"].figures["matched"] == n, results["ids"].explain()
    assert results["ids"].status == "passed", results["ids"].explain()
    for name in ("conversation_sessions", "conversation_order", "conversation_timestamps",
                 "conversation_ttl", "conversation_window"):
        assert name in results, sorted(results)
    return results


def is_text(chat: dict) -> bool:
    """Every session id and message is Unicode text (UTF-8 can encode it): no lone
    surrogate, as a client that cuts an emoji in half sends and LangChain keeps."""
    try:
        for session, messages in chat.items():
            session.encode("utf-8")
            for _, body, _ in messages:
                body.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def absent(uri: str) -> bool:
    try:
        open_store(uri).close()
    except StoreNotFoundError:
        return True
    return False


@pytest.fixture(scope="module")
def chat_db(redis_server) -> int:
    return fresh_redis_db(redis_server)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chat=chats)
@example(chat={"alice": [("human", "Hi \ud83d", 0)]})  # half an emoji: refused before writing
def test_conversations_round_trip_redis_postgresql_sqlite(redis_server, postgres_server,
                                                          chat_db, tmp_path, monkeypatch,
                                                          chat):
    monkeypatch.chdir(tmp_path)  # a failed migration leaves reports/migrate.failed.json
    n = sum(len(messages) for messages in chat.values())
    redis_uri = write_redis(redis_server, chat_db, chat)
    name = f"conv_{next(_NAMES)}"
    postgres_uri = postgres_server.uri(name) + "&vector_column=none"
    sqlite_uri = f"sqlite://{tmp_path}/{name}.db?table=messages"
    with open_store(redis_uri) as source:
        try:
            copied = migrate(source, postgres_uri).copied
        except PlanRefusedError as exc:
            # what is no text cannot go into a text column: refused before anything is
            # written (anything else that is refused is a failure)
            assert not is_text(chat), exc
            assert absent(postgres_uri), f"refused but wrote: {exc}"
            return
    assert copied == n
    first = assert_hop_passes(redis_uri, postgres_uri, n)
    event(f"conversation_order: {first['conversation_order'].status}")
    event(f"conversation_ttl: {first['conversation_ttl'].status}")
    with open_store(postgres_uri) as source:
        assert migrate(source, sqlite_uri).copied == n
    assert_hop_passes(postgres_uri, sqlite_uri, n)
    assert_hop_passes(redis_uri, sqlite_uri, n)


def test_a_copy_without_its_sequence_fails_the_order_check(redis_server, chat_db, tmp_path):
    """The property can fail: a conversation whose two replies share a timestamp, copied
    into SQLite without the ``seq`` field, no longer says their order."""
    chat = {"alice": [("human", "Hi", 0), ("ai", "Hello 😀", 1500), ("ai", "", 0),
                      ("human", "𝄞", 60_000)]}
    redis_uri = write_redis(redis_server, chat_db, chat)
    sqlite_uri = f"sqlite://{tmp_path}/noseq.db?table=messages"

    def drop_seq(batch: RecordBatch) -> RecordBatch:
        return dataclasses.replace(batch, metadatas=[
            {k: v for k, v in m.items() if k != "seq"} for m in batch.metadatas])

    with open_store(redis_uri) as source:
        migrate(source, sqlite_uri, transform=drop_seq)
    results = suite_results(redis_uri, sqlite_uri)
    assert results["conversation_order"].status == "failed", \
        results["conversation_order"].explain()
    # the faithful twin of the same conversation passes
    faithful = f"sqlite://{tmp_path}/faithful.db?table=messages"
    with open_store(redis_uri) as source:
        migrate(source, faithful)
    # (its tie makes the order rest on the sequence alone: a warning, not a failure)
    assert assert_hop_passes(redis_uri, faithful, 4)["conversation_order"].status == "warning"
