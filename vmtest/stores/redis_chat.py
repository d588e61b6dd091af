"""Chat histories kept in Redis, read as records without vectors:
``redis://[:PASS@]HOST:PORT/DB?layout=langchain|llamaindex[&prefix=KEYS]``.

Two layouts, each as its library writes it, a conversation (session) being one Redis list:

- ``langchain``: LangChain's ``RedisChatMessageHistory`` (langchain-community), the list
  ``message_store:SESSION`` (``prefix=`` for another ``key_prefix``), each message the JSON of
  ``message_to_dict`` (``{"type": "human", "data": {"content": ..., ...}}``) pushed on the
  left: the newest message first.
- ``llamaindex``: LlamaIndex's ``RedisChatStore``, a list per conversation key pushed on the
  right (oldest first), each message a ``ChatMessage``'s JSON (``role``, ``blocks``,
  ``additional_kwargs``); the keys have no prefix of their own, so ``prefix=`` (default: every
  list in the database) says which keys are conversations.

A message is a record: its id is ``SESSION#SEQ``; its document is the message's text; its
metadata is ``session_id``, ``seq`` (the message's place in its conversation, from 0, oldest
first), ``role`` (LangChain's ``type``: human, ai, ...; LlamaIndex's ``role``: user,
assistant, ...), every ``additional_kwargs`` field under its own name (where applications
keep a timestamp), and the other fields the library wrote that are not empty (LangChain's
``name``, ``id``, ``tool_calls``...; LlamaIndex's non-text ``blocks``). A conversation's
time to live is the key's, read by :meth:`RedisChatStore.session_expiry` (it is not
metadata: it shrinks while it is read).

vmtest reads these stores; it does not write them (migrate from them into a table).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from vmtest.errors import (
    ConfigError,
    InvalidURIError,
    MissingDriverError,
    StoreNotFoundError,
    StoreUnreachableError,
)
from vmtest.stores.base import (
    CollectionSpec,
    Inventory,
    RecordBatch,
    RecordId,
    dist_version,
    metadata_types,
)
from vmtest.stores.tables import RecordStore
from vmtest.uri import StoreURI

LAYOUTS = ("langchain", "llamaindex")
#: Where each layout keeps its conversations unless ``prefix=`` says otherwise.
DEFAULT_PREFIX = {"langchain": "message_store:", "llamaindex": ""}
#: The metadata fields vmtest gives every message.
MESSAGE_FIELDS = ("session_id", "seq", "role")
#: LangChain's message fields left out when they hold the empty value it writes by default.
TIMEOUT_S = 30


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == [] or value == ""


class RedisChatStore(RecordStore):
    scheme = "redis"
    ENGINE = "Redis"
    URI_HELP = ("redis://[:PASS@]HOST:PORT/DB?layout=langchain|llamaindex[&prefix=KEYS] "
                "(LangChain's RedisChatMessageHistory keys default to message_store:)")
    CONNECTION_ERRORS = frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"})
    IDEMPOTENT_WRITES = True

    def __init__(self, uri: StoreURI, client: Any, layout: str, prefix: str) -> None:
        self.uri = uri
        self._client = client
        self.layout = layout
        self.prefix = prefix

    @classmethod
    def from_uri(cls, uri: StoreURI, *, create: CollectionSpec | None = None) -> RedisChatStore:
        layout = uri.param("layout")
        if layout not in LAYOUTS:
            raise InvalidURIError(
                f"{uri} names no chat history layout" if layout is None
                else f"{uri}: layout={layout!r} is not one of {', '.join(LAYOUTS)}",
                hint=cls.URI_HELP)
        if create is not None:
            raise ConfigError(f"{uri} is a chat history vmtest reads, not a target it writes",
                              hint="migrate it into a table: sqlite:///ABS/FILE.db?table=NAME "
                              "or postgresql://...?table=NAME&vector_column=none")
        if uri.host is None:
            raise InvalidURIError(f"{uri} names no host", hint=cls.URI_HELP)
        db_text = (uri.path or "/0").strip("/") or "0"
        if not db_text.isdigit():
            raise InvalidURIError(f"{uri}: the database {db_text!r} is not a number",
                                  hint=cls.URI_HELP)
        try:
            import redis
        except ImportError as exc:
            raise MissingDriverError("redis", "redis", "conversation") from exc
        client = redis.Redis(host=uri.host, port=uri.port or 6379, db=int(db_text),
                             username=uri.username or None, password=uri.password or None,
                             socket_timeout=TIMEOUT_S, socket_connect_timeout=10)
        try:
            client.ping()
        except Exception as exc:
            client.close()
            raise StoreUnreachableError(f"cannot reach the Redis store {uri}: {exc}",
                                        hint="check that Redis is running on that host and "
                                        "port, and the password") from exc
        prefix = uri.param("prefix", DEFAULT_PREFIX[layout]) or ""
        store = cls(uri, client, layout, prefix)
        if not store.session_keys():
            lists = sorted(k.decode("utf-8", "replace") for k in
                           client.scan_iter(count=1000, _type="list"))[:5]
            client.close()
            raise StoreNotFoundError(
                f"the Redis store {uri} holds no conversation under the key prefix "
                f"{prefix!r}", hint="lists there: " + (", ".join(lists) or "none")
                + " (name their prefix with &prefix=)")
        return store

    # -- the conversations -----------------------------------------------------------------

    def session_keys(self) -> list[bytes]:
        """The Redis keys of the conversations, sorted."""
        pattern = self._escape(self.prefix) + "*"
        return sorted(self._call(lambda: list(self._client.scan_iter(
            match=pattern, count=1000, _type="list"))))

    @staticmethod
    def _escape(text: str) -> str:
        return "".join("\\" + c if c in "*?[]\\" else c for c in text)

    def _session(self, key: bytes) -> str:
        return key.decode("utf-8")[len(self.prefix):]

    def session_expiry(self) -> dict[str, float | None]:
        """Each conversation's expiry as a Unix time (None: it never expires)."""
        keys = self.session_keys()
        now = time.time()
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
        ttls = self._call(pipe.execute)
        return {self._session(k): (now + ms / 1000 if ms is not None and ms >= 0 else None)
                for k, ms in zip(keys, ttls, strict=True)}

    def _messages(self, key: bytes) -> list[tuple[RecordId, dict[str, Any], str | None]]:
        session = self._session(key)
        raw = self._call(self._client.lrange, key, 0, -1)
        if self.layout == "langchain":
            raw = list(reversed(raw))  # pushed on the left: newest first
        out: list[tuple[RecordId, dict[str, Any], str | None]] = []
        for seq, item in enumerate(raw):
            try:
                message = json.loads(item)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{self.uri}: message {seq} of {key!r} is not JSON "
                                  f"({exc.msg})", hint=self.URI_HELP) from exc
            meta, document = self._read_message(message, key, seq)
            out.append((f"{session}#{seq}", {"session_id": session, "seq": seq, **meta},
                        document))
        return out

    def _read_message(self, message: Any, key: bytes, seq: int
                      ) -> tuple[dict[str, Any], str | None]:
        if not isinstance(message, dict):
            raise ConfigError(f"{self.uri}: message {seq} of {key!r} is not a "
                              f"{self.layout} message", hint=self.URI_HELP)
        if self.layout == "langchain":
            data = message.get("data") or {}
            role, document = message.get("type"), data.get("content")
            extras = {k: v for k, v in data.items()
                      if k not in ("content", "type", "additional_kwargs") and not _empty(v)}
            kwargs = data.get("additional_kwargs") or {}
        else:
            blocks = message.get("blocks") or []
            texts = [b.get("text") for b in blocks if b.get("block_type") == "text"]
            role = message.get("role")
            document = "".join(t or "" for t in texts) if texts else message.get("content")
            others = [b for b in blocks if b.get("block_type") != "text"]
            extras = {"blocks": others} if others else {}
            extras.update({k: v for k, v in message.items()
                           if k not in ("role", "blocks", "additional_kwargs", "content")
                           and not _empty(v)})
            kwargs = message.get("additional_kwargs") or {}
        if not isinstance(document, str) and document is not None:
            extras["content"] = document  # a list of parts: kept whole, as metadata
            document = None
        meta: dict[str, Any] = {"role": role}
        for name, value in (*kwargs.items(), *extras.items()):
            if name in MESSAGE_FIELDS or name in meta:
                raise ConfigError(f"{self.uri}: message {seq} of {key!r} has a field "
                                  f"{name!r}, a name vmtest gives every message")
            meta[name] = value
        return meta, document

    # -- the store -------------------------------------------------------------------------

    def count(self) -> int:
        keys = self.session_keys()
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        return int(sum(self._call(pipe.execute)))

    def iter_batches(self, batch_size: int, *, with_vectors: bool = True) -> Iterator[RecordBatch]:
        rows: list[tuple[RecordId, dict[str, Any], str | None]] = []
        for key in self.session_keys():
            rows += self._messages(key)
            while len(rows) >= batch_size:
                yield self._batch(rows[:batch_size])
                rows = rows[batch_size:]
        if rows:
            yield self._batch(rows)

    @staticmethod
    def _batch(rows: Sequence[tuple[RecordId, dict[str, Any], str | None]]) -> RecordBatch:
        return RecordBatch([r[0] for r in rows], None, [r[1] for r in rows],
                           [r[2] for r in rows])

    def fetch(self, ids: Sequence[RecordId]) -> RecordBatch:
        wanted = {str(i) for i in ids}
        sessions = {w.rpartition("#")[0] for w in wanted}
        rows = [r for s in sorted(sessions)
                if self._call(self._client.type, (self.prefix + s).encode()) == b"list"
                for r in self._messages((self.prefix + s).encode()) if r[0] in wanted]
        return self._batch(rows)

    def upsert(self, batch: RecordBatch) -> None:
        raise ConfigError(f"{self.uri} is a chat history vmtest reads, not a target it writes",
                          hint="migrate it into a table (sqlite:// or postgresql://)")

    def describe(self) -> Inventory:
        peek = next(self.iter_batches(256), self._batch([]))
        server = self._call(self._client.info, "server").get("redis_version", "?")
        return Inventory(kind=f"redis-{self.layout}", uri=str(self.uri), count=self.count(),
                         dimension=None, metric=None, dtype=None,
                         index={"sessions": len(self.session_keys())},
                         metadata_types=metadata_types(peek.metadatas),
                         versions={"redis-py": dist_version("redis"), "redis": str(server)})

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
