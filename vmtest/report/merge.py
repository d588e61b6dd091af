"""``vmtest report merge``: the JSON reports of the N shares of a ``--vmtest-shard=I/N`` run
combined into one verdict and one report.

A sharded run splits the record-by-record checks (ids, vectors, metadata, documents) by a hash
of each record's key, so every record is checked in exactly one share: their merged figures
are sums (maxima for ``max_*`` and ``p99_*``, weighted means for ``mean_*``), their offenders
the union. The other checks (inventory, schema) are the same in every share, and the search
checks run in share 1 only: the merge takes the first share that ran them.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from vmtest.checks.merge import merge_partitioned
from vmtest.checks.result import FIDELITY
from vmtest.errors import ConfigError
from vmtest.report.model import BAD, verdicts

#: The checks a --vmtest-shard run splits by record key.
PARTITIONED = ("ids", "vectors", "metadata", "documents")


def load_shares(paths: list[Path]) -> list[dict[str, Any]]:
    """The reports of one sharded run, in share order; refuses anything else."""
    documents = []
    for path in paths:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the report {path}: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("schema") != "vmtest-report":
            raise ConfigError(f"{path} is not a vmtest JSON report")
        shard = (doc.get("settings") or {}).get("shard")
        if not shard or "/" not in str(shard):
            raise ConfigError(f"{path} is not from a --vmtest-shard=I/N run",
                              hint="merge the reports of one run made with --vmtest-shard=1/N "
                              "... N/N")
        documents.append((tuple(int(x) for x in str(shard).split("/")), path, doc))
    counts = {n for (_, n), _, _ in documents}
    if len(counts) != 1:
        raise ConfigError("the reports come from runs with different shard counts: "
                          + ", ".join(f"{p} ({i}/{n})" for (i, n), p, _ in documents))
    n = counts.pop()
    have = sorted(i for (i, _), _, _ in documents)
    if have != list(range(1, n + 1)):
        missing = sorted(set(range(1, n + 1)) - set(have))
        twice = sorted({i for i in have if have.count(i) > 1})
        raise ConfigError(f"a merge needs each of the {n} shares exactly once"
                          + (f"; missing: {missing}" if missing else "")
                          + (f"; given twice: {twice}" if twice else ""))
    pairs = {(d["settings"].get("source"), d["settings"].get("target")) for _, _, d in documents}
    if len(pairs) != 1:
        raise ConfigError("the reports compare different stores: "
                          + "; ".join(f"{s} -> {t}" for s, t in sorted(pairs, key=str)))
    return [doc for _, _, doc in sorted(documents, key=lambda item: item[0][0])]


def merge_documents(shares: list[dict[str, Any]]) -> dict[str, Any]:
    """One report document for the whole run."""
    first = shares[0]
    names = [c["name"] for c in first["checks"]]
    for doc in shares[1:]:
        names += [c["name"] for c in doc["checks"] if c["name"] not in names]
    checks = []
    for name in names:
        results = [c for doc in shares for c in doc["checks"] if c["name"] == name]
        if name in PARTITIONED:
            checks.append(merge_partitioned(results, len(shares)))
        else:
            ran = [c for c in results if c["status"] != "skipped"]
            checks.append((ran or results)[0])
    failed = [c["name"] for c in checks if c["status"] in BAD]
    settings = dict(first["settings"], shard=f"merged {len(shares)}")
    by_category = verdicts(checks)
    return {
        **first,
        "verdict": "failed" if failed else "passed",
        "faithful": by_category[FIDELITY]["verdict"] in ("passed", "warning"),
        "verdicts": by_category,
        "failed_checks": failed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "checks": checks,
        "shares": [{"shard": d["settings"]["shard"], "verdict": d["verdict"],
                    "created": d["created"]} for d in shares],
    }
