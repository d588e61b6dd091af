"""Search-side checks: top-k recall against exact ground truth, agreement between the two
stores, schema and index drift, latency.

Recall is tie-tolerant as in ann-benchmarks: a returned record whose true distance to the
query is within ``epsilon`` of the k-th true distance counts as correct, so duplicate
vectors cannot fail a faithful migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vmtest.checks.knn import distances
from vmtest.checks.result import MAX_LISTED, CheckResult, Offender, verdict
from vmtest.checks.stats import wilson_interval
from vmtest.stores.base import Inventory

#: Relative slack on the k-th true distance for a hit to count (ties, float rounding).
EPSILON = 1e-3


@dataclass
class QueryOutcome:
    """One query's figures."""

    label: str
    source_recall: float
    target_recall: float
    agreement: float
    missing: list[str]


def recall_at_k(
    hits: Sequence[str],
    query: np.ndarray,
    kth_distance: float,
    k: int,
    key_index: dict[str, int],
    base: np.ndarray,
    metric: str,
    *,
    epsilon: float = EPSILON,
) -> float:
    """The fraction of the k slots filled by a record at most the k-th true distance away.
    A hit the source does not hold (an extra record) never counts."""
    known = [key_index[h] for h in dict.fromkeys(hits) if h in key_index][:k]
    if not known or k == 0:
        return 0.0
    d = distances(query[None, :], base[known], metric)[0]
    slack = epsilon * max(abs(kth_distance), 1e-6)
    return float(np.count_nonzero(d <= kth_distance + slack)) / k


def score_queries(
    labels: Sequence[str],
    queries: np.ndarray,
    truth: Sequence[Sequence[str]],
    truth_kth: np.ndarray,
    source_hits: Sequence[Sequence[str]],
    target_hits: Sequence[Sequence[str]],
    k: int,
    key_index: dict[str, int],
    base: np.ndarray,
    metric: str,
) -> list[QueryOutcome]:
    out = []
    for i, label in enumerate(labels):
        kk = min(k, len(truth[i]))
        out.append(QueryOutcome(
            label=label,
            source_recall=recall_at_k(source_hits[i], queries[i], float(truth_kth[i]), kk,
                                      key_index, base, metric),
            target_recall=recall_at_k(target_hits[i], queries[i], float(truth_kth[i]), kk,
                                      key_index, base, metric),
            agreement=len(set(source_hits[i][:kk]) & set(target_hits[i][:kk])) / kk if kk
            else 1.0,
            missing=[t for t in truth[i][:kk] if t not in set(target_hits[i][:kk])],
        ))
    return out


def check_recall(
    outcomes: Sequence[QueryOutcome],
    *,
    k: int,
    min_recall: float,
    min_query_recall: float,
    name: str = "recall",
    confidence: float = 0.95,
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """The target's mean recall@k reaches ``min_recall`` and no query falls below
    ``min_query_recall``. Agreement with the source and the source's own recall are shown."""
    n = len(outcomes)
    if n == 0:
        return CheckResult(name=name, status="failed", summary="no queries to run",
                           thresholds={"min_recall": min_recall})
    target = np.array([o.target_recall for o in outcomes])
    source = np.array([o.source_recall for o in outcomes])
    agree = np.array([o.agreement for o in outcomes])
    low, high = wilson_interval(float(target.sum() * k), n * k, confidence)
    below = [o for o in outcomes if o.target_recall < min_query_recall]
    failed = target.mean() < min_recall or bool(below)
    worst = sorted(outcomes, key=lambda o: (o.target_recall, o.agreement))[:max_listed]
    offenders = [
        Offender(
            id=o.label,
            detail=f"target recall {o.target_recall:.2f} (source {o.source_recall:.2f}, "
            f"agreement {o.agreement:.2f}); missed {', '.join(o.missing[:5]) or 'nothing'}",
            source=o.source_recall, target=o.target_recall,
        )
        for o in worst if o.target_recall < 1.0 or failed
    ]
    figures = {
        "queries": n,
        "k": k,
        "target_recall": round(float(target.mean()), 6),
        "target_recall_ci_low": round(low, 6),
        "target_recall_ci_high": round(high, 6),
        "source_recall": round(float(source.mean()), 6),
        "agreement": round(float(agree.mean()), 6),
        "min_query_recall": round(float(target.min()), 6),
        "queries_below_floor": len(below),
    }
    summary = (
        f"target recall@{k} {target.mean():.3f} (95% CI {low:.3f}-{high:.3f}), source "
        f"{source.mean():.3f}, agreement {agree.mean():.3f} over {n} queries"
    )
    if below:
        summary += f"; {len(below)} queries below the floor {min_query_recall:g}"
    return CheckResult(
        name=name,
        status=verdict(failed),
        summary=summary,
        figures=figures,
        thresholds={"min_recall": min_recall, "min_query_recall": min_query_recall},
        offenders=offenders if failed else offenders[:5],
        offending_total=len([o for o in outcomes if o.target_recall < min_recall]),
        evidence={
            "target_recall": [float(x) for x in target],
            "source_recall": [float(x) for x in source],
            "agreement": [float(x) for x in agree],
        },
    )


#: Index parameters under one vocabulary (each store's describe() maps its own names).
INDEX_KEYS = ("kind", "m", "ef_construct", "ef_search", "quantization")


def check_schema_drift(source: Inventory, target: Inventory, *,
                       same_model: bool = True) -> CheckResult:
    """Metric and dimension must agree (failure); dtype, index kind and parameters,
    quantisation and payload indexes that differ are warnings with both values. After a model
    change (``same_model=False``) a new metric or dimension is a warning, not a failure."""
    failures: list[Offender] = []
    warnings: list[str] = []
    for name in ("metric", "dimension"):
        s, t = getattr(source, name), getattr(target, name)
        if s is not None and t is not None and s != t and not same_model:
            warnings.append(f"{name}: source {s!r}, target {t!r} (another model)")
        elif s is not None and t is not None and s != t:
            failures.append(Offender(id=name, detail=f"source {s!r}, target {t!r}", source=s,
                                     target=t))
    if source.dtype and target.dtype and source.dtype != target.dtype:
        warnings.append(f"dtype: source {source.dtype}, target {target.dtype}")
    for key in INDEX_KEYS:
        s, t = source.index.get(key), target.index.get(key)
        if s != t and ((s is not None and t is not None) or key == "quantization"):
            warnings.append(f"index {key}: source {s!r}, target {t!r}")
    lost = sorted(set(source.payload_indexes) - set(target.payload_indexes))
    if lost:
        warnings.append("payload indexes missing in the target: " + ", ".join(lost))
    diff_count = len(failures) + len(warnings)
    summary = (
        "; ".join(f"{o.id} differs ({o.detail})" for o in failures)
        if failures
        else (f"{len(warnings)} index differences (warnings)" if warnings
              else "metric, dimension, dtype and index parameters agree")
    )
    return CheckResult(
        name="schema",
        status=verdict(bool(failures), bool(warnings)),
        summary=summary,
        figures={"source_index": _flat(source.index), "target_index": _flat(target.index),
                 "differences": diff_count},
        offenders=failures,
        offending_total=len(failures),
        warnings=warnings,
    )


def _flat(index: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(index.items()))


def percentiles(samples_ms: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99]) if len(arr) else (0.0, 0.0, 0.0)
    return {"p50_ms": round(float(p50), 4), "p95_ms": round(float(p95), 4),
            "p99_ms": round(float(p99), 4)}


def check_latency(
    source_ms: Sequence[float],
    target_ms: Sequence[float],
    *,
    max_ratio: float,
    max_p99_ms: float | None = None,
    min_gap_ms: float = 0.0,
) -> CheckResult:
    """The target's p99 is at most ``max_ratio`` times the source's (and under
    ``max_p99_ms`` when given).

    The ratio fails only when the target is also more than ``min_gap_ms`` slower: on stores
    that answer in microseconds, one scheduler hiccup multiplies a p99 several times over
    and means nothing for a cutover."""
    src, tgt = percentiles(source_ms), percentiles(target_ms)
    ratio = tgt["p99_ms"] / src["p99_ms"] if src["p99_ms"] > 0 else float("inf")
    gap = tgt["p99_ms"] - src["p99_ms"]
    within_noise = ratio > max_ratio and not gap > min_gap_ms
    problems = []
    if ratio > max_ratio and not within_noise:
        problems.append(f"p99 ratio {ratio:.2f} > {max_ratio:g}"
                        + (f" and {gap:.2f} ms slower" if min_gap_ms else ""))
    if max_p99_ms is not None and tgt["p99_ms"] > max_p99_ms:
        problems.append(f"target p99 {tgt['p99_ms']:.2f} ms > {max_p99_ms:g} ms")
    thresholds: dict[str, Any] = {"max_latency_ratio": max_ratio, "min_latency_gap_ms": min_gap_ms}
    if max_p99_ms is not None:
        thresholds["max_p99_ms"] = max_p99_ms
    summary = (f"p99 source {src['p99_ms']:.2f} ms, target {tgt['p99_ms']:.2f} ms "
               f"(ratio {ratio:.2f}); p50 {src['p50_ms']:.2f} vs {tgt['p50_ms']:.2f} ms")
    if within_noise:
        summary += f"; the ratio is within noise: {gap:.2f} ms slower, under {min_gap_ms:g} ms"
    if problems:
        summary = "; ".join(problems) + " - " + summary
    return CheckResult(
        name="latency",
        status=verdict(bool(problems)),
        summary=summary,
        figures={**{f"source_{k}": v for k, v in src.items()},
                 **{f"target_{k}": v for k, v in tgt.items()},
                 "p99_ratio": round(ratio, 4), "samples": len(target_ms)},
        thresholds=thresholds,
        offending_total=len(problems),
        evidence={"source_ms": [float(x) for x in source_ms],
                  "target_ms": [float(x) for x in target_ms]},
    )


def pair_distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Row-wise distances between a[i] and b[i] under a metric."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if metric == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        return 1.0 - (a * b).sum(1) / np.maximum(na * nb, 1e-30)
    if metric == "ip":
        return -(a * b).sum(1)
    if metric == "l2":
        return np.linalg.norm(a - b, axis=1)
    if metric == "l1":
        return np.abs(a - b).sum(1)
    raise ValueError(f"unknown metric {metric!r}")


#: The smallest two-sample KS statistic that counts as drift, whatever the p-value: with
#: thousands of pairs a test detects shifts too small to matter.
MIN_DRIFT = 0.05


def check_distance_drift(
    source: np.ndarray,
    target: np.ndarray,
    *,
    source_metric: str,
    target_metric: str,
    pairs: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    expected: bool = False,
) -> CheckResult:
    """Do the same pairs of records lie as far apart in the target as in the source?

    ``source[i]`` and ``target[i]`` are the same record. Seeded random pairs (i, j) give two
    samples of distances, each under its own store's metric; a two-sample Kolmogorov-Smirnov
    test compares their distributions. A faithful copy gives the same distances (statistic
    0); another embedding model or another metric moves the whole distribution, even when
    every id matches. Distances are compared to 4 significant digits of their typical size,
    so float rounding (a store that normalises) is not drift. With ``expected`` (the user
    declared a model change), drift is reported as a warning, not a failure.
    """
    from scipy.stats import ks_2samp

    n = len(source)
    thresholds = {"alpha": round(1 - confidence, 6), "min_statistic": MIN_DRIFT}
    if n < 3:
        return CheckResult("drift", verdict(False, True), "too few matched records to compare "
                           "distance distributions", figures={"pairs": 0},
                           thresholds=thresholds,
                           warnings=["fewer than 3 matched records"])
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=pairs)
    j = (i + rng.integers(1, n, size=pairs)) % n  # never a record with itself
    d_s = pair_distances(source[i], source[j], source_metric)
    d_t = pair_distances(target[i], target[j], target_metric)
    scale = float(np.median(np.abs(d_s))) or 1.0
    d_s = np.round(d_s / scale, 4)
    d_t = np.round(d_t / scale, 4)
    result = ks_2samp(d_s, d_t)
    statistic, p_value = float(result.statistic), float(result.pvalue)
    drifted = p_value < 1 - confidence and statistic >= MIN_DRIFT
    figures = {
        "pairs": pairs, "ks_statistic": statistic, "p_value": p_value,
        "source_median_distance": float(np.median(d_s) * scale),
        "target_median_distance": float(np.median(d_t) * scale),
        "source_metric": source_metric, "target_metric": target_metric,
    }
    if drifted:
        summary = (f"the distances between the same {pairs} pairs of records changed "
                   f"(KS statistic {statistic:.3f}, p={p_value:.2g}): another embedding model "
                   f"or metric ({source_metric} -> {target_metric})?")
    else:
        summary = (f"the same {pairs} pairs of records lie as far apart in both stores "
                   f"(KS statistic {statistic:.3f}, p={p_value:.2g})")
    warnings = [summary + " -- expected: the models differ"] if drifted and expected else []
    quantiles = np.linspace(0, 1, 101)
    return CheckResult(
        "drift", verdict(drifted and not expected, bool(warnings)), summary, figures=figures,
        thresholds=thresholds, warnings=warnings,
        evidence={"source_quantiles": [float(x) for x in np.quantile(d_s * scale, quantiles)],
                  "target_quantiles": [float(x) for x in np.quantile(d_t * scale, quantiles)]},
    )
