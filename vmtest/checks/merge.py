"""Merging the results of one record-by-record check (ids, vectors, metadata, documents) over
disjoint sets of records: the partitions of a streamed comparison, the shares of a
``--shard=I/N`` run. Counts are summed, ``max_*`` and ``p99_*`` take the maximum (for p99 an
upper bound), ``mean_*`` is weighted by the records compared, a sampled run's Clopper-Pearson
bound is recomputed, offenders are the union (sorted by id, the first MAX_LISTED).
"""

from __future__ import annotations

from typing import Any

from vmtest.checks.result import MAX_LISTED, CheckResult
from vmtest.checks.stats import clopper_pearson_upper

#: Status precedence when parts disagree: the worst wins; not applicable only when all are.
_RANK = {"error": 4, "failed": 3, "warning": 2, "passed": 1, "not_applicable": 0.5,
         "skipped": 0}


def merge_check_results(results: list[CheckResult], parts: int) -> CheckResult:
    """The results of one record-by-record check over disjoint partitions, as one."""
    if len(results) == 1:
        return results[0]
    merged = merge_partitioned([r.to_dict() for r in results], parts, unit="partitions")
    return CheckResult.from_dict(merged)


def merge_partitioned(results: list[dict[str, Any]], shares: int,
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
