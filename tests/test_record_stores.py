"""Stores of records without vectors (issue 16): a SQLite or PostgreSQL table of documents, a
Redis chat history in LangChain's or LlamaIndex's layout. They go through the same registry
and URIs as the vector stores (the contract suite covers the tables); here: the suite's
fidelity checks work on them and the vector checks say they do not apply, each defect fails
the check it should, the chat layouts read as their libraries wrote them, and bad input is
one line and exit 4 with nothing created."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests import chat_writers
from tests.support import QUIET
from vmtest.compare import Comparison
from vmtest.errors import (
    ConfigError,
    InvalidURIError,
    SchemaMismatchError,
    StoreNotFoundError,
    StoreUnreachableError,
)
from vmtest.settings import Settings
from vmtest.stores import CollectionSpec, RecordBatch, open_store

SUITE = str(Path(__file__).resolve().parents[1] / "suites")
DOCS = RecordBatch(
    ids=["d1", "d2", "d3", "d4"], vectors=None,
    metadatas=[{"title": "Refunds", "lang": "en", "year": 2021, "tags": ["billing"],
                "draft": False, "score": 0.1},
               {"title": "Lieferung", "lang": "de", "year": 2022, "tags": [], "draft": True,
                "score": 0.25},
               {"title": "Tokens", "lang": "en", "year": 2023, "tags": ["api", "auth"],
                "draft": False, "score": 1e-7},
               {"title": "Limits", "lang": "en", "year": 2024, "tags": ["api"],
                "draft": False, "score": 3.5}],
    documents=["How refunds work.", "Wie Lieferungen laufen.", "Rotate your tokens.", None])


def table(uri: str, batch: RecordBatch = DOCS) -> str:
    with open_store(uri, create=CollectionSpec(0, "cosine")) as store:
        store.upsert(batch)
    return uri


def changed(**edits) -> RecordBatch:
    """DOCS with one record's fields, document or presence changed."""
    metas = [dict(m) for m in DOCS.metadatas]
    docs = list(DOCS.documents)
    ids = list(DOCS.ids)
    if "year_as_text" in edits:
        metas[1]["year"] = str(metas[1]["year"])
    if "truncate" in edits:
        docs[2] = docs[2][:6]
    if "lose" in edits:
        del ids[3], metas[3], docs[3]
    return RecordBatch(ids, None, metas, docs)


def test_sqlite_to_a_postgresql_table_passes_and_the_vector_checks_do_not_apply(
        tmp_path, postgres_server):
    """(The suite run in tests/test_conversation.py shows the skips as a user sees them.)"""
    source = table(f"sqlite://{tmp_path}/docs.db?table=docs")
    target = table(postgres_server.uri("docs_copy") + "&vector_column=none")
    with open_store(source) as s, open_store(target) as t:
        comparison = Comparison(s, t, Settings())
        statuses = {name: r.status for name, r in comparison.fidelity.items()}
        reason = comparison.without_vectors
    assert statuses == {"ids": "passed", "metadata": "passed", "documents": "passed"}
    assert reason == ("the source (SQLite) and the target (PostgreSQL) hold no vectors: "
                      "vectors, search and their index are not compared")


@pytest.mark.parametrize(("defect", "fails"), [
    ({}, set()),  # the faithful twin
    ({"year_as_text": True}, {"metadata"}),
    ({"truncate": True}, {"documents"}),
    ({"lose": True}, {"ids"}),
])
def test_each_defect_of_a_table_fails_its_check(tmp_path, defect, fails):
    source = table(f"sqlite://{tmp_path}/a.db?table=docs")
    target = table(f"sqlite://{tmp_path}/b.db?table=docs", changed(**defect))
    with open_store(source) as s, open_store(target) as t:
        comparison = Comparison(s, t, Settings())
        results = comparison.fidelity
        assert "vectors" not in results
        assert comparison.without_vectors
        failed = {name for name, r in results.items() if r.status == "failed"}
    assert failed == fails, {n: r.summary for n, r in results.items()}


def test_a_table_someone_else_made_is_read_by_its_column_types(tmp_path):
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT, pinned BOOLEAN, "
                     "labels JSON, weight REAL)")
        conn.execute("INSERT INTO notes VALUES (7, 'hi', 1, '[\"a\", {\"b\": 2}]', 0.5)")
        conn.execute("INSERT INTO notes VALUES (8, NULL, 0, NULL, NULL)")
    conn.close()
    with open_store(f"sqlite://{path}?table=notes&document_column=body") as store:
        batch = next(store.iter_batches(10))
        assert store.describe().dimension is None
    assert batch.ids == [7, 8] and batch.vectors is None
    assert batch.documents == ["hi", None]
    assert batch.metadatas == [{"pinned": True, "labels": ["a", {"b": 2}], "weight": 0.5},
                               {"pinned": False}]


def test_a_field_of_another_kind_and_a_batch_with_vectors_are_refused(tmp_path):
    import numpy as np

    with open_store(f"sqlite://{tmp_path}/t.db?table=t", create=CollectionSpec(0, "l2")) as s:
        s.upsert(RecordBatch(["a"], None, [{"n": 1}], [None]))
        with pytest.raises(SchemaMismatchError, match=r"'n' of .* is a plain column .* True"):
            s.upsert(RecordBatch(["b"], None, [{"n": True}], [None]))
        with pytest.raises(ConfigError, match="holds no vectors"):
            s.upsert(RecordBatch(["c"], np.ones((1, 2), np.float32), [{}], [None]))
        assert s.count() == 1


def test_chat_histories_read_as_their_libraries_wrote_them(redis_server, redis_db):
    url = f"redis://127.0.0.1:{redis_server.port}/{redis_db}"
    stamp = {"timestamp": "2024-05-01T10:00:00.120+02:00"}
    chat_writers.langchain(url, "alice", [("human", "Hi", stamp), ("ai", "Hello!", {}),
                                          ("human", "Bye", {})], ttl=600)
    chat_writers.llamaindex(url, "conv:bob", [("user", "Hey", stamp), ("assistant", "Yo", {})],
                            ttl=900)
    with open_store(redis_server.uri(redis_db, "langchain")) as lc:
        batch = next(lc.iter_batches(10))
        expiry = lc.session_expiry()
        assert lc.count() == 3
    assert batch.ids == ["alice#0", "alice#1", "alice#2"]  # oldest first, though pushed left
    assert batch.documents == ["Hi", "Hello!", "Bye"]
    assert batch.metadatas[0] == {"session_id": "alice", "seq": 0, "role": "human", **stamp}
    assert [m["role"] for m in batch.metadatas] == ["human", "ai", "human"]
    assert set(expiry) == {"alice"} and expiry["alice"] is not None
    with open_store(redis_server.uri(redis_db, "llamaindex", prefix="conv:")) as li:
        batch = next(li.iter_batches(10))
        assert li.session_expiry().keys() == {"bob"}
    assert batch.ids == ["bob#0", "bob#1"]
    assert batch.metadatas == [{"session_id": "bob", "seq": 0, "role": "user", **stamp},
                               {"session_id": "bob", "seq": 1, "role": "assistant"}]
    assert batch.documents == ["Hey", "Yo"]


def _bad_inputs(tmp_path: Path, redis_port: int, pg_uri: str) -> list[tuple[str, type, str]]:
    (tmp_path / "junk.db").write_text("not a database")
    table(f"sqlite://{tmp_path}/ok.db?table=docs")
    return [
        (f"sqlite://{tmp_path}/absent.db?table=docs", StoreNotFoundError, "does not exist"),
        (f"sqlite://{tmp_path}/ok.db", InvalidURIError, "no 'table=' parameter"),
        (f"sqlite://{tmp_path}/ok.db?table=nope", StoreNotFoundError, "tables there: docs"),
        (f"sqlite://{tmp_path}/junk.db?table=docs", ConfigError, "not a SQLite database"),
        (pg_uri + "&vector_column=none", StoreNotFoundError, "has no table 'absent_records'"),
        (f"redis://127.0.0.1:{redis_port}/0", InvalidURIError, "names no chat history layout"),
        (f"redis://127.0.0.1:{redis_port}/0?layout=openai", InvalidURIError, "not one of"),
        (f"redis://127.0.0.1:{redis_port}/0?layout=langchain&prefix=nothing:",
         StoreNotFoundError, "no conversation under the key prefix 'nothing:'"),
        ("redis://127.0.0.1:1/0?layout=langchain", StoreUnreachableError, "cannot reach"),
    ]


def test_bad_input_is_one_line_and_creates_nothing(tmp_path, redis_server, postgres_server):
    cases = _bad_inputs(tmp_path, redis_server.port, postgres_server.uri("absent_records"))
    before = sorted(p.name for p in tmp_path.iterdir())
    for uri, error, words in cases:
        with pytest.raises(error) as caught:
            open_store(uri).close()
        assert words in str(caught.value) and "\n" not in str(caught.value), (uri, caught.value)
    with pytest.raises(ConfigError, match="reads, not a target it writes"):
        open_store(f"redis://127.0.0.1:{redis_server.port}/0?layout=langchain",
                   create=CollectionSpec(0, "cosine"))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_bad_store_uri_ends_the_run_with_exit_4_and_one_line(pytester, tmp_path,
                                                               redis_server):
    source = table(f"sqlite://{tmp_path}/a.db?table=docs")
    result = pytester.runpytest_subprocess(
        SUITE, f"--source={source}",
        f"--target=redis://127.0.0.1:{redis_server.port}/0?layout=langchain&prefix=none:",
        "--vmtest-json=none", "--vmtest-html=none", *QUIET)
    assert result.ret == 4
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1 and "no conversation under the key prefix 'none:'" in errors[0], (
        result.stderr.str())
    assert "Traceback" not in result.stdout.str()
