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

from vmtest.checks.result import (
    MAX_LISTED,
    WARNING,
    CheckResult,
    Offender,
    not_applicable,
    verdict,
)
from vmtest.checks.stats import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    bootstrap_interval,
    clopper_pearson_interval,
    decide,
    more_samples_to_decide,
    wilson_interval,
)
from vmtest.knn import distances
from vmtest.stores.base import Inventory

#: Relative slack on the k-th true distance for a hit to count (ties, float rounding).
EPSILON = 1e-3
#: How much lower than the source's the target's mean recall may be and still count as "no
#: worse" (two runs of the same ANN engine differ by about this much).
RECALL_SLACK = 0.01


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
    ``min_query_recall``, judged as a migration gate:

    - the mean is decided on its Wilson interval: it fails when the whole interval lies
      below ``min_recall``, and is inconclusive (a warning) when it straddles it;
    - a target below the gate that is no worse than the source (within RECALL_SLACK) is a
      warning, not a failure: the copy did not make search worse, the source's own index was
      already below the gate;
    - a query below ``min_query_recall`` fails only when the source answered it above the
      floor (a regression); a query both stores answer badly is a warning.

    Agreement with the source and the source's own recall are shown."""
    n = len(outcomes)
    if n == 0:
        return CheckResult(name=name, status="failed", summary="no queries to run",
                           thresholds={"min_recall": min_recall})
    target = np.array([o.target_recall for o in outcomes])
    source = np.array([o.source_recall for o in outcomes])
    agree = np.array([o.agreement for o in outcomes])
    low, high = wilson_interval(float(target.sum() * k), n * k, confidence)
    below = [o for o in outcomes if o.target_recall < min_query_recall]
    regressed = [o for o in below if o.source_recall >= min_query_recall]
    gate = decide(-high, -low, -min_recall)  # "recall >= min" as "-recall <= -min"
    no_worse = float(target.mean()) >= float(source.mean()) - RECALL_SLACK
    notes: list[str] = []
    if gate == FAIL and no_worse:
        notes.append(f"below the gate {min_recall:g}, but no worse than the source "
                     f"({source.mean():.3f}): the source's own index is below it too")
    elif gate == INCONCLUSIVE:
        notes.append(f"inconclusive: the interval straddles the gate {min_recall:g}; more "
                     "queries (--vmtest-queries) would decide")
    if len(below) > len(regressed):
        notes.append(f"{len(below) - len(regressed)} queries below the floor "
                     f"{min_query_recall:g} in both stores (not a regression)")
    failed = (gate == FAIL and not no_worse) or bool(regressed)
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
        "queries_regressed": len(regressed),
        "decision": FAIL if failed else (INCONCLUSIVE if gate == INCONCLUSIVE else PASS),
    }
    summary = (
        f"target recall@{k} {target.mean():.3f} (95% CI {low:.3f}-{high:.3f}), source "
        f"{source.mean():.3f}, agreement {agree.mean():.3f} over {n} queries"
    )
    if regressed:
        summary += (f"; {len(regressed)} queries fell below the floor {min_query_recall:g} "
                    "that the source answered above it")
    if notes:
        summary += "; " + "; ".join(notes)
    return CheckResult(
        name=name,
        status=verdict(failed, bool(notes)),
        warnings=notes if not failed else [],
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
            warnings.append(f"{name}: source {_show(s)}, target {_show(t)} (another model)")
        elif s is not None and t is not None and s != t:
            failures.append(Offender(id=name, detail=f"source {s!r}, target {t!r}", source=s,
                                     target=t))
    if source.dtype and target.dtype and source.dtype != target.dtype:
        warnings.append(f"dtype: source {source.dtype}, target {target.dtype}")
    for key in INDEX_KEYS:
        s, t = source.index.get(key), target.index.get(key)
        if plain(s) != plain(t) and ((s is not None and t is not None) or key == "quantization"):
            warnings.append(f"index {key}: source {_show(s)}, target {_show(t)}")
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


def plain(value: Any) -> Any:
    """A value as a person reads it: enums as their values, containers recursively."""
    import enum

    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _show(value: Any) -> str:
    import json

    value = plain(value)
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) \
        else str(value)


def _flat(index: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_show(v)}" for k, v in sorted(index.items()))


def percentiles(samples_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    arr = np.asarray(samples_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99]) if len(arr) else (0.0, 0.0, 0.0)
    return {"p50_ms": round(float(p50), 4), "p95_ms": round(float(p95), 4),
            "p99_ms": round(float(p99), 4)}


def _p99(samples: np.ndarray) -> np.ndarray:
    return np.percentile(samples, 99, axis=-1)


def check_latency(
    source_ms: Sequence[float],
    target_ms: Sequence[float],
    *,
    max_ratio: float,
    max_p99_ms: float | None = None,
    min_gap_ms: float = 0.0,
    confidence: float = 0.95,
    seed: int = 0,
) -> CheckResult:
    """Is the target's p99 at most ``max_ratio`` times the source's (and under ``max_p99_ms``
    when given)? Decided on a confidence interval, not on one noisy figure.

    ``source_ms[i]`` and ``target_ms[i]`` were timed back to back (the same query, the same
    moment of the machine), so the pairs are resampled together: a percentile bootstrap gives
    an interval on the p99 ratio and on the p99 gap in milliseconds. The gate fails only when
    the whole ratio interval lies above ``max_ratio`` *and* the whole gap interval above
    ``min_gap_ms`` (on stores that answer in microseconds a ratio of 3 can be 0.1 ms: timer
    noise, not a slower cutover); it passes when either interval lies within its limit; in
    between, it is inconclusive (a warning that says how many more queries would decide)."""
    src = np.asarray(source_ms, dtype=np.float64)
    tgt = np.asarray(target_ms, dtype=np.float64)
    n = min(len(src), len(tgt))
    src, tgt = src[:n], tgt[:n]
    s_pct, t_pct = percentiles(src), percentiles(tgt)
    thresholds: dict[str, Any] = {"max_latency_ratio": max_ratio,
                                  "min_latency_gap_ms": min_gap_ms,
                                  "confidence": confidence}
    if max_p99_ms is not None:
        thresholds["max_p99_ms"] = max_p99_ms
    if n < 20:
        return CheckResult(
            name="latency", status=WARNING,
            summary=f"inconclusive: {n} timed queries are too few for a p99 (20 at least)",
            figures={"samples": n, "decision": INCONCLUSIVE}, thresholds=thresholds)
    floor = 1e-6
    ratio = t_pct["p99_ms"] / max(s_pct["p99_ms"], floor)
    gap = t_pct["p99_ms"] - s_pct["p99_ms"]
    r_low, r_high = bootstrap_interval(
        lambda idx: _p99(tgt[idx]) / np.maximum(_p99(src[idx]), floor), n,
        confidence=confidence, seed=seed)
    g_low, g_high = bootstrap_interval(lambda idx: _p99(tgt[idx]) - _p99(src[idx]), n,
                                       confidence=confidence, seed=seed + 1)
    by_ratio = decide(r_low, r_high, max_ratio)
    by_gap = decide(g_low, g_high, min_gap_ms)
    relative = PASS if PASS in (by_ratio, by_gap) else (
        FAIL if by_ratio == by_gap == FAIL else INCONCLUSIVE)
    gates = [relative]
    problems: list[str] = []
    open_questions: list[str] = []
    if relative == FAIL:
        problems.append(f"p99 ratio {ratio:.2f} (CI {r_low:.2f}-{r_high:.2f}) above "
                        f"{max_ratio:g}, and {gap:.2f} ms slower (CI {g_low:.2f}-{g_high:.2f}) "
                        f"beyond {min_gap_ms:g} ms")
    elif relative == INCONCLUSIVE:
        more = max(more_samples_to_decide(n, ratio, r_low, r_high, max_ratio),
                   0 if by_gap == FAIL else more_samples_to_decide(n, gap, g_low, g_high,
                                                                  min_gap_ms))
        open_questions.append(f"p99 ratio {ratio:.2f} (CI {r_low:.2f}-{r_high:.2f}) straddles "
                              f"{max_ratio:g}" + (f"; about {more} more timed queries would "
                                                  "decide" if more else ""))
    figures: dict[str, Any] = {
        **{f"source_{k}": v for k, v in s_pct.items()},
        **{f"target_{k}": v for k, v in t_pct.items()},
        "p99_ratio": round(ratio, 4), "p99_ratio_ci_low": round(r_low, 4),
        "p99_ratio_ci_high": round(r_high, 4), "p99_gap_ms": round(gap, 4),
        "p99_gap_ci_low_ms": round(g_low, 4), "p99_gap_ci_high_ms": round(g_high, 4),
        "samples": n,
    }
    if max_p99_ms is not None:
        a_low, a_high = bootstrap_interval(lambda idx: _p99(tgt[idx]), n,
                                           confidence=confidence, seed=seed + 2)
        absolute = decide(a_low, a_high, max_p99_ms)
        gates.append(absolute)
        figures.update(target_p99_ci_low_ms=round(a_low, 4), target_p99_ci_high_ms=round(a_high, 4))
        if absolute == FAIL:
            problems.append(f"target p99 {t_pct['p99_ms']:.2f} ms (CI {a_low:.2f}-{a_high:.2f}) "
                            f"above {max_p99_ms:g} ms")
        elif absolute == INCONCLUSIVE:
            open_questions.append(f"target p99 {t_pct['p99_ms']:.2f} ms (CI {a_low:.2f}-"
                                  f"{a_high:.2f}) straddles {max_p99_ms:g} ms")
    decision = FAIL if FAIL in gates else (INCONCLUSIVE if INCONCLUSIVE in gates else PASS)
    figures["decision"] = decision
    summary = (f"p99 source {s_pct['p99_ms']:.2f} ms, target {t_pct['p99_ms']:.2f} ms "
               f"(ratio {ratio:.2f}, {confidence:.0%} CI {r_low:.2f}-{r_high:.2f}); "
               f"p50 {s_pct['p50_ms']:.2f} vs {t_pct['p50_ms']:.2f} ms; {n} timed queries")
    if decision == PASS and by_ratio != PASS:
        summary += (f"; within noise: at most {g_high:.2f} ms slower, under "
                    f"{min_gap_ms:g} ms")
    if problems:
        summary = "; ".join(problems) + " - " + summary
    elif open_questions:
        summary = "inconclusive: " + "; ".join(open_questions) + " - " + summary
    return CheckResult(
        name="latency",
        status=verdict(decision == FAIL, decision == INCONCLUSIVE),
        summary=summary,
        figures=figures,
        thresholds=thresholds,
        offending_total=len(problems),
        warnings=["inconclusive: " + q for q in open_questions] if not problems else [],
        evidence={"source_ms": [float(x) for x in src], "target_ms": [float(x) for x in tgt]},
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


#: How much a pair's distance may change, relative to it, before the pair counts as moved:
#: float rounding (a store that normalises, float16) moves distances by far less.
MAX_PAIR_CHANGE = 0.01
#: The share of moved pairs the drift check tolerates.
MAX_MOVED_SHARE = 0.05


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
    max_pair_change: float = MAX_PAIR_CHANGE,
    max_moved_share: float = MAX_MOVED_SHARE,
    keys: Sequence[str] | None = None,
) -> CheckResult:
    """Do the same pairs of records lie as far apart in the target as in the source?

    ``source[i]`` and ``target[i]`` are the same record. For seeded random pairs (i, j) the
    distance is taken on each side under that side's metric, and the two distances *of the
    same pair* are compared: a pair has moved when its distance changed by more than
    ``max_pair_change`` of itself (of a tenth of the typical distance, for pairs that lie
    very close). The check fails when the exact (Clopper-Pearson) interval on the share of
    moved pairs lies above ``max_moved_share``, passes when it lies within it, and is
    inconclusive in between. Another embedding model, another metric, a truncation (Matryoshka)
    or a renormalisation moves most pairs; a faithful copy, float rounding, a store that
    normalised under cosine and a rotation of the whole space move none. The two-sample
    Kolmogorov-Smirnov statistic of the distance distributions stays as a secondary figure.
    With ``expected`` (the user declared a model change) drift is a warning.
    """
    from scipy.stats import ks_2samp

    n = len(source)
    thresholds = {"max_pair_change": max_pair_change, "max_moved_share": max_moved_share,
                  "confidence": confidence}
    if n < 3:
        return not_applicable("drift", f"{n} matched records: too few to form pairs of "
                              "records", pairs=0)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=pairs)
    j = (i + rng.integers(1, n, size=pairs)) % n  # never a record with itself
    with np.errstate(all="ignore"):
        d_s = pair_distances(source[i], source[j], source_metric)
        d_t = pair_distances(target[i], target[j], target_metric)
    finite = np.isfinite(d_s) & np.isfinite(d_t)
    scale = float(np.median(np.abs(d_s[finite]))) if finite.any() else 1.0
    scale = scale or 1.0
    change = np.abs(d_t - d_s) / np.maximum(np.abs(d_s), 0.1 * scale)
    change[~finite] = np.inf
    moved = int(np.count_nonzero(change > max_pair_change))
    low, high = clopper_pearson_interval(moved, pairs, confidence)
    decision = decide(low, high, max_moved_share)
    # secondary: are the two distributions alike? (asymptotic method chosen explicitly: the
    # exact one warns on ties, and the distances of a faithful copy are all ties)
    ks = ks_2samp(np.round(d_s[finite] / scale, 4), np.round(d_t[finite] / scale, 4),
                  method="asymp") if finite.sum() >= 2 else None
    finite_change = change[np.isfinite(change)]
    figures = {
        "pairs": pairs, "moved": moved, "moved_share": round(moved / pairs, 6),
        "moved_share_ci_low": round(low, 6), "moved_share_ci_high": round(high, 6),
        "median_change": float(np.median(finite_change)) if len(finite_change) else 0.0,
        "p99_change": float(np.quantile(finite_change, 0.99)) if len(finite_change) else 0.0,
        "ks_statistic": float(ks.statistic) if ks is not None else 0.0,
        "source_median_distance": scale,
        "target_median_distance": float(np.median(np.abs(d_t[finite]))) if finite.any()
        else 0.0,
        "source_metric": source_metric, "target_metric": target_metric,
        "decision": decision,
    }
    share = (f"{moved} of {pairs} pairs of records ({moved / pairs:.1%}, {confidence:.0%} CI "
             f"{low:.1%}-{high:.1%}) changed their distance by more than "
             f"{max_pair_change:.0%}")
    metric_note = (f" ({source_metric} -> {target_metric})"
                   if source_metric != target_metric else "")
    if decision == FAIL:
        summary = (f"{share}: median change {figures['median_change']:.1%}, p99 "
                   f"{figures['p99_change']:.1%}; the target's vectors do not keep the "
                   f"source's geometry (another model, metric{metric_note}, a truncation or "
                   "a renormalisation?)")
    elif decision == INCONCLUSIVE:
        summary = (f"inconclusive: {share}, around the tolerated {max_moved_share:.0%}; "
                   "more pairs or a closer look at the vectors would decide")
    else:
        summary = (f"the same pairs of records lie as far apart in both stores: {share}, "
                   f"within the tolerated {max_moved_share:.0%}")
    warnings = []
    if decision != PASS and expected:
        warnings.append("the distances changed, as expected after the declared model change")
    elif decision == INCONCLUSIVE:
        warnings.append(summary)
    worst = [int(w) for w in np.argsort(-np.nan_to_num(change, posinf=1e300))[:5]] \
        if moved else []
    return CheckResult(
        "drift", verdict(decision == FAIL and not expected, bool(warnings)), summary,
        figures=figures, thresholds=thresholds, warnings=warnings,
        offending_total=moved if decision == FAIL and not expected else 0,
        offenders=[Offender(id=f"{_label(keys, i[w])} ~ {_label(keys, j[w])}",
                            detail=f"distance {d_s[w]:.6g} in the source, {d_t[w]:.6g} in the "
                            "target", source=float(d_s[w]), target=float(d_t[w]))
                   for w in worst] if decision == FAIL and not expected else [],
        evidence={"source_distances": [float(x) for x in d_s[finite][:500]],
                  "target_distances": [float(x) for x in d_t[finite][:500]]},
    )


def _label(keys: Sequence[str] | None, row: Any) -> str:
    return str(keys[int(row)]) if keys is not None else f"record #{int(row)}"
