"""Orphaned writes: records written to the old store after the switch.

``vmtest cutover mark --store=URI`` records the old store's digest inventory at the switch
(every key with the digest of its vector, metadata and document). Later,
``vmtest check --orphans-since=MARK --source=URI`` (or the suite's ``orphans`` check, with
``--vmtest-orphans-since=MARK``) reads the old store again and lists every record created,
changed or deleted since the mark: a write that still lands in the old store is a write the
new one never got.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vmtest.errors import ConfigError
from vmtest.matching import Matching
from vmtest.stores.base import VectorStore

MARK_KIND = "vmtest-cutover-mark"


@dataclass
class Orphans:
    mark: str
    marked_at: str
    store: str
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    marked_count: int = 0
    count: int = 0

    @property
    def total(self) -> int:
        return len(self.created) + len(self.changed) + len(self.deleted)

    def lines(self, limit: int = 50) -> list[str]:
        out = []
        for kind, keys in (("created", self.created), ("changed", self.changed),
                           ("deleted", self.deleted)):
            for key in keys[:limit]:
                out.append(f"{kind} after the mark: {key}")
            if len(keys) > limit:
                out.append(f"... and {len(keys) - limit} more {kind}")
        return out


def _digests(store: VectorStore, batch_size: int) -> tuple[dict[str, str], str | None]:
    """Every record's key and a digest of its exact vector, metadata and document, stable
    across processes (the checks' fast-path digests are per process: Python's ``hash``)."""
    matching = Matching()
    out: dict[str, str] = {}
    for batch in store.iter_batches(batch_size):
        vectors = None if batch.vectors is None else np.ascontiguousarray(batch.vectors,
                                                                          dtype=np.float32)
        for i, (rid, meta, doc) in enumerate(zip(batch.ids, batch.metadatas, batch.documents,
                                                 strict=True)):
            key, rest, document = matching.split(store, rid, meta, doc)
            h = hashlib.blake2b(digest_size=8)
            h.update(json.dumps([key, rest, document], sort_keys=True, default=repr,
                                allow_nan=True).encode())
            if vectors is not None:
                h.update(vectors[i].tobytes())
            out[key] = h.hexdigest()
    return out, store.describe().metric


def mark(store: VectorStore, path: Path, *, batch_size: int = 1000) -> dict[str, Any]:
    """Write the store's digest inventory to ``path`` (atomically); return its header."""
    digests, metric = _digests(store, batch_size)
    document = {"kind": MARK_KIND, "version": 1, "store": str(store.uri),
                "marked_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "metric": metric, "count": len(digests), "digests": digests}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document), encoding="utf-8")
    tmp.replace(path)
    return {k: v for k, v in document.items() if k != "digests"}


def load_mark(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no cutover mark at {path}",
                          hint="vmtest cutover mark --store=URI --out PATH writes one") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a cutover mark ({exc})") from exc
    if not isinstance(document, dict) or document.get("kind") != MARK_KIND:
        raise ConfigError(f"{path} is not a cutover mark",
                          hint="vmtest cutover mark --store=URI --out PATH writes one")
    return document


def orphans_since(path: Path, store: VectorStore, *, batch_size: int = 1000) -> Orphans:
    """What changed in ``store`` since the mark at ``path``."""
    document = load_mark(path)
    if document["store"] != str(store.uri):
        raise ConfigError(
            f"the cutover mark {path} was taken of {document['store']}, not of {store.uri}",
            hint="check the old store the mark was taken of (another store would give a "
            "false all-clear)")
    before: dict[str, str] = document["digests"]
    now, _ = _digests(store, batch_size)
    return Orphans(
        mark=str(path), marked_at=document["marked_at"], store=str(store.uri),
        created=sorted(k for k in now if k not in before),
        changed=sorted(k for k, d in now.items() if k in before and before[k] != d),
        deleted=sorted(k for k in before if k not in now),
        marked_count=len(before), count=len(now))
