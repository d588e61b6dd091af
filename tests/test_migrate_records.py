"""`vmtest migrate` for stores without vectors (issue 16, part 5): a chat history written by
LangChain in Redis migrated into a SQLite table and a PostgreSQL table, with a schema mapping,
then validated with the same mapping and the conversation checks; what cannot be migrated
(vectors into a table, a table into a vector store, a value the mapping cannot convert) is
refused before anything is written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests import chat_writers
from tests.support import QUIET, fresh_redis_db
from vmtest.compare import Comparison
from vmtest.errors import PlanRefusedError
from vmtest.migrate import MigrationOptions, migrate
from vmtest.settings import Settings
from vmtest.stores import CollectionSpec, RecordBatch, open_store

SUITE = str(Path(__file__).resolve().parents[1] / "suites")
MAPPING = """
[rename]
role = "speaker"

[add]
channel = "web"
"""


@pytest.fixture(scope="module")
def chat(redis_server) -> str:
    db = fresh_redis_db(redis_server)
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    for session, n in (("alice", 5), ("bob", 3)):
        chat_writers.langchain(url, session, [
            ("human" if i % 2 == 0 else "ai", f"{session} says {i}",
             {"timestamp": f"2024-05-01T10:00:{i:02d}.250+02:00"}) for i in range(n)], ttl=600)
    return redis_server.uri(db, "langchain")


def validate(source: str, target: str, mapping: Path | None) -> dict[str, str]:
    """The fidelity checks' statuses under the mapping (the conversation checks run in the
    suite run below)."""
    with open_store(source) as s, open_store(target) as t:
        results = Comparison(s, t, Settings(mapping=mapping, conversation=True)).fidelity
    return {name: r.status for name, r in results.items()}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_chat_history_migrates_into_a_table_with_its_mapping(chat, tmp_path, kind, request):
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    if kind == "sqlite":
        target = f"sqlite://{tmp_path}/chat.db?table=messages"
    else:
        server = request.getfixturevalue("postgres_server")
        target = server.uri(f"chat_{tmp_path.name[-8:]}".lower().replace("-", "_")) \
            + "&vector_column=none"
    with open_store(chat) as source:
        report = migrate(source, target, MigrationOptions(mapping=mapping))
    assert report.copied == 8
    with open_store(target) as t:
        row = t.fetch(["alice#1"])
    assert row.metadatas[0] == {"session_id": "alice", "seq": 1, "speaker": "ai",
                                "timestamp": "2024-05-01T10:00:01.250+02:00",
                                "channel": "web"}
    assert row.documents == ["alice says 1"]
    statuses = validate(chat, target, mapping)
    assert {n for n, s in statuses.items() if s == "failed"} == set(), statuses
    # without the mapping the copy is not what the source holds: the metadata check says so
    assert validate(chat, target, None)["metadata"] == "failed"


def test_vmtest_migrate_verify_checks_the_copy_with_the_mapping_and_conversations(
        pytester, chat, tmp_path):
    mapping = tmp_path / "mapping.toml"
    mapping.write_text(MAPPING)
    target = f"sqlite://{tmp_path}/chat.db?table=messages"
    report = tmp_path / "report.json"
    result = pytester.run(
        sys.executable, "-m", "vmtest", "migrate", f"--source={chat}", f"--target={target}",
        f"--mapping={mapping}", "--verify", SUITE, "--vmtest-conversation",
        "--vmtest-window=3", f"--vmtest-json={report}", "--vmtest-html=none", "-W", "error",
        "-m", "not latency", *QUIET)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["copied 8 records*"])
    checks = {c["name"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    assert {n for n, s in checks.items() if s == "failed"} == set(), checks
    assert checks["conversation_window"] == "passed" and checks["metadata"] == "passed"


def test_what_cannot_be_migrated_is_refused_before_writing(chat, tmp_path):
    import numpy as np

    vectors = f"jsonl://{tmp_path}/v.jsonl?metric=cosine"
    with open_store(vectors, create=CollectionSpec(2, "cosine")) as store:
        store.upsert(RecordBatch(["a"], np.ones((1, 2), np.float32), [{"n": "x"}], [None]))
    bad_mapping = tmp_path / "bad.toml"
    bad_mapping.write_text('[convert]\nsession_id = "int"\n')
    cases = [
        (vectors, f"sqlite://{tmp_path}/t1.db?table=t", None, "holds no vectors: the source's "
         "vectors would be lost"),
        (chat, f"jsonl://{tmp_path}/t2.jsonl?metric=cosine", None, "is a vector store"),
        (chat, f"sqlite://{tmp_path}/t3.db?table=t", bad_mapping,
         "cannot convert session_id (8 records; first alice#0: <'alice' cannot be converted"),
    ]
    for source_uri, target, mapping, says in cases:
        with open_store(source_uri) as source, pytest.raises(PlanRefusedError) as caught:
            migrate(source, target, MigrationOptions(mapping=mapping))
        assert says in str(caught.value), caught.value
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "v.jsonl",
                                                         "v.jsonl.meta.json"]
