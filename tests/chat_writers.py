"""Chat histories written by the real libraries, as applications write them: LangChain's
RedisChatMessageHistory (langchain-community: a session is a Redis list, newest first) and
LlamaIndex's RedisChatStore (llama-index-storage-chat-store-redis: oldest first, a TTL per
conversation). Tests build their Redis stores only through these."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Sequence
from typing import Any

#: A message as a test writes it: (role, text, extra fields kept by the library).
Turn = tuple[str, str, dict[str, Any]]


def langchain(url: str, session: str, turns: Sequence[Turn], *, ttl: int | None = None,
              prefix: str = "message_store:") -> None:
    """Write a session with LangChain's RedisChatMessageHistory (roles: human, ai, system);
    the extra fields go into the message's additional_kwargs."""
    with warnings.catch_warnings():
        # langchain-community says on import that it is being sunset (a DeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_message_histories import RedisChatMessageHistory
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    kinds = {"human": HumanMessage, "ai": AIMessage, "system": SystemMessage}
    history = RedisChatMessageHistory(session, url=url, key_prefix=prefix, ttl=ttl)
    for role, text, extra in turns:
        history.add_message(kinds[role](content=text, additional_kwargs=dict(extra)))
    history.redis_client.close()


def llamaindex(url: str, key: str, turns: Sequence[Turn], *, ttl: int | None = None) -> None:
    """Write a conversation with LlamaIndex's RedisChatStore (roles: user, assistant,
    system); the extra fields go into the message's additional_kwargs."""
    from llama_index.core.llms import ChatMessage
    from llama_index.storage.chat_store.redis import RedisChatStore

    store = RedisChatStore(redis_url=url, ttl=ttl)
    for role, text, extra in turns:
        store.add_message(key, ChatMessage(role=role, content=text,
                                           additional_kwargs=dict(extra)))
    store._redis_client.close()


def sqlite_table(path: str, table: str, rows: Sequence[dict[str, Any]]) -> str:
    """A table of messages as an application made it (its own column types), and its URI."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(f'CREATE TABLE "{table}" (' + ", ".join(
            f'"{c}" {"TEXT PRIMARY KEY" if c == "id" else ""}' for c in columns) + ")")
        for row in rows:
            names = list(row)
            conn.execute(f'INSERT INTO "{table}" ({", ".join(names)}) VALUES '
                         f'({", ".join("?" * len(names))})', [row[n] for n in names])
    conn.close()
    return f"sqlite://{path}?table={table}"
