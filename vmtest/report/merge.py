"""``vmtest report merge``: the JSON reports of the N shares of a ``--shard=I/N`` run combined
into one verdict and one report.

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

from vmtest.checks.result import FIDELITY, MAX_LISTED, CheckResult
from vmtest.checks.stats import clopper_pearson_upper
from vmtest.errors import ConfigError
from vmtest.report.model import BAD, verdicts

#: The checks a --shard run splits by record key.
PARTITIONED = ("ids", "vectors", "metadata", "documents")
_RANK = {"error": 4, "failed": 3, "warning": 2, "passed": 1, "not_applicable": 0.5,
         "skipped": 0}


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
            raise ConfigError(f"{path} is not from a --shard=I/N run",
                              hint="merge the reports of one run made with --shard=1/N ... N/N")
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
            checks.append(_merge_partitioned(results, len(shares)))
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


def merge_check_results(results: list[CheckResult], parts: int) -> CheckResult:
    """The results of one record-by-record check over disjoint partitions, as one."""
    if len(results) == 1:
        return results[0]
    merged = _merge_partitioned([r.to_dict() for r in results], parts, unit="partitions")
    return CheckResult.from_dict(merged)


def _merge_partitioned(results: list[dict[str, Any]], shares: int,
                       unit: str = "shares") -> dict[str, Any]:
    status = max((c["status"] for c in results), key=_RANK.__getitem__)
    figures = _merge_figures([c.get("figures") or {} for c in results])
    offenders = sorted((o for c in results for o in c.get("offenders") or []),
                       key=lambda o: str(o["id"]))
    total = sum(int(c.get("offending_total") or 0) for c in results)
    warnings = list(dict.fromkeys(w for c in results for w in c.get("warnings") or []))
    compared = figures.get("compared", figures.get("matched", 0))
    summary = (f"{total} offending records in {compared} compared ({shares} {unit} merged)"
               if total else f"no offending record in {compared} compared "
               f"({shares} {unit} merged)")
    if status == "not_applicable":
        summary = results[0]["summary"]
    if figures.get("sampled") and figures.get("population"):
        confidence = float(results[0]["figures"].get("confidence", 0.95))
        figures["mismatch_rate_upper"] = clopper_pearson_upper(
            int(figures.get("mismatched", 0)), int(figures["compared"]), confidence)
    evidence: dict[str, Any] = {}
    series = sorted(x for c in results for x in (c.get("evidence") or {}).get("abs_error", []))
    if series:
        step = max(1, len(series) // 400)
        evidence["abs_error"] = series[::step]
    return {
        "name": results[0]["name"], "category": results[0].get("category", ""),
        "status": status, "summary": summary, "figures": figures,
        "thresholds": results[0].get("thresholds") or {}, "offending_total": total,
        "offenders": offenders[:MAX_LISTED], "warnings": warnings, "evidence": evidence,
    }


def _merge_figures(parts: list[dict[str, Any]]) -> dict[str, Any]:
    weights = [float(p.get("compared", 0) or 0) for p in parts]
    total_weight: float = sum(weights)
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for p in parts for k in p):
        values = [p[key] for p in parts if key in p]
        if all(isinstance(v, bool) for v in values):
            out[key] = any(values)
        elif key.startswith(("max_", "p99_")) and all(isinstance(v, (int, float))
                                                      for v in values):
            out[key] = max(values)  # p99 of the union is at most the largest share's
        elif key.startswith("mean_") and total_weight:
            out[key] = sum(float(p.get(key, 0)) * w
                           for p, w in zip(parts, weights, strict=True)) / total_weight
        elif all(isinstance(v, int) for v in values):
            out[key] = sum(values)
        elif all(isinstance(v, dict) for v in values):
            merged: dict[str, Any] = {}
            for v in values:
                for k, n in v.items():
                    merged[k] = merged.get(k, 0) + n if isinstance(n, int) else n
            out[key] = merged
        else:
            out[key] = values[0]
    return out
