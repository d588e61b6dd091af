"""Shadow reads: logged queries replayed against both stores, the candidate's answers judged
against the control's own run-to-run noise.

Each query ran three times: twice on the source (the control) and once on the target (the
candidate). Two runs of the same ANN engine need not return the same ids, so the candidate is
not held to an overlap of 1.0 but to the control's agreement with itself (the *noise floor*):
per query, ``drop = overlap(control, control again) - overlap(control, candidate)``, and the
gate decides on a paired bootstrap interval of the mean drop.

The rank agreement is rank-biased overlap (RBO, Webber, Moffat and Zobel 2010), not Kendall's
tau or Spearman's rho: those rank only the ids both lists hold (dropping exactly the ids that
changed) and tau is undefined below two shared ids, while RBO is defined on two top-k lists
that share any number of ids, is 1 for identical lists and 0 for disjoint ones, and weighs the
first ranks most (p = 0.9: about 86% of the weight on the first 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vmtest.checks.result import MAX_LISTED, CheckResult, Offender, verdict
from vmtest.checks.search import percentiles
from vmtest.checks.stats import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    bootstrap_interval,
    clopper_pearson_interval,
    decide,
    more_samples_to_decide,
)

#: RBO's persistence: how much of the weight goes beyond each rank.
RBO_P = 0.9
#: Below this many compared queries the overlap gate does not decide (a bootstrap over a
#: handful of queries says little).
MIN_QUERIES = 10


@dataclass
class ShadowOutcome:
    """One logged query replayed: the record keys each run returned (None: it raised), its
    duration in milliseconds, its error, and the mean distance of its hits to the query (the
    source's vectors and metric; None when not measured)."""

    label: str
    k: int
    control: list[str] | None
    control_again: list[str] | None
    candidate: list[str] | None
    control_ms: float = 0.0
    control_again_ms: float = 0.0
    candidate_ms: float = 0.0
    control_error: str | None = None
    control_again_error: str | None = None
    candidate_error: str | None = None
    control_distance: float | None = None
    control_again_distance: float | None = None
    candidate_distance: float | None = None

    @property
    def source_answered(self) -> bool:
        return self.control is not None and self.control_again is not None

    @property
    def compared(self) -> bool:
        return self.source_answered and self.candidate is not None

    @property
    def noise_overlap(self) -> float:
        return overlap_at_k(self.control or [], self.control_again or [])

    @property
    def candidate_overlap(self) -> float:
        """The candidate against both control runs, averaged (both are the control)."""
        return (overlap_at_k(self.control or [], self.candidate or [])
                + overlap_at_k(self.control_again or [], self.candidate or [])) / 2

    @property
    def noise_rbo(self) -> float:
        return rank_biased_overlap(self.control or [], self.control_again or [])

    @property
    def candidate_rbo(self) -> float:
        return (rank_biased_overlap(self.control or [], self.candidate or [])
                + rank_biased_overlap(self.control_again or [], self.candidate or [])) / 2


def overlap_at_k(a: Sequence[str], b: Sequence[str]) -> float:
    """``|a ∩ b| / k`` with k the longer list (a store may return fewer than k hits, under a
    filter); two empty lists agree fully."""
    first, second = set(a), set(b)
    k = max(len(first), len(second))
    return len(first & second) / k if k else 1.0


def rank_biased_overlap(a: Sequence[str], b: Sequence[str], p: float = RBO_P) -> float:
    """Extrapolated RBO (Webber et al. 2010, eq. 32) of two top-k lists at the depth of the
    longer one: ``X_k/k p^k + (1-p)/p sum_d X_d/d p^d`` with X_d the ids the first d of both
    share. 1 for identical lists, 0 for disjoint ones."""
    a, b = list(dict.fromkeys(a)), list(dict.fromkeys(b))
    depth = max(len(a), len(b))
    if depth == 0:
        return 1.0
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    shared = 0
    total = 0.0
    for d in range(1, depth + 1):
        x = a[d - 1] if d <= len(a) else None
        y = b[d - 1] if d <= len(b) else None
        if x is not None and y is not None and x == y:
            shared += 1
        else:
            shared += (x is not None and x in seen_b) + (y is not None and y in seen_a)
        if x is not None:
            seen_a.add(x)
        if y is not None:
            seen_b.add(y)
        total += shared / d * p ** d
    return float(min(1.0, shared / depth * p ** depth + (1 - p) / p * total))


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _minus(a: Sequence[str] | None, b: Sequence[str] | None) -> list[str]:
    """The ids of ``a`` that ``b`` does not hold, in ``a``'s order."""
    others = set(b or ())
    return [x for x in a or () if x not in others]


def _short(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit})" if len(keys) > limit else "") if keys \
        else "nothing"


def check_shadow(
    outcomes: Sequence[ShadowOutcome],
    *,
    k: int,
    tolerance: float,
    max_error_rate: float,
    confidence: float = 0.95,
    seed: int = 0,
    max_listed: int = MAX_LISTED,
    min_queries: int = MIN_QUERIES,
) -> CheckResult:
    """Is the candidate's overlap@k with the control within ``tolerance`` of the control's
    overlap with itself? Decided on evidence:

    - per query, ``drop = noise floor - candidate overlap`` (the candidate's overlap is its
      mean over both control runs); a percentile bootstrap over the queries (paired: a query's
      two figures are resampled together) gives an interval on the mean drop. It **fails**
      when the whole interval lies above ``tolerance``, **passes** when it lies at or below,
      and is **inconclusive** (a warning) otherwise, or with fewer than ``min_queries``;
    - a query on which the candidate raised while the source answered is a candidate error:
      the check fails when the exact (Clopper-Pearson) interval on the error rate lies wholly
      above ``max_error_rate``; fewer errors are a warning.

    The worst queries (largest drop) are listed with both sides' ids."""
    n = len(outcomes)
    thresholds = {"tolerance": tolerance, "max_error_rate": max_error_rate,
                  "confidence": confidence}
    if n == 0:
        return CheckResult(name="shadow", status="failed", summary="no logged query to replay",
                           thresholds=thresholds)
    asked = [o for o in outcomes if o.control is not None]
    compared = [o for o in outcomes if o.compared]
    candidate_failed = [o for o in asked if o.candidate is None]
    control_errors = sum((o.control_error is not None) + (o.control_again_error is not None)
                         for o in outcomes)
    candidate_errors = sum(o.candidate_error is not None for o in outcomes)
    first_source_error = next((e for o in outcomes for e in (o.control_error,
                               o.control_again_error) if e), None)

    noise = np.array([o.noise_overlap for o in compared], dtype=np.float64)
    cand = np.array([o.candidate_overlap for o in compared], dtype=np.float64)
    drop = noise - cand
    m = len(compared)
    if m:
        low, high = bootstrap_interval(lambda idx: drop[idx].mean(axis=1), m,
                                       confidence=confidence, seed=seed)
    else:
        low, high = 0.0, 1.0
    gate = decide(low, high, tolerance) if m >= min_queries else INCONCLUSIVE
    mean_drop = float(drop.mean()) if m else 0.0

    e_low, e_high = clopper_pearson_interval(len(candidate_failed), len(asked), confidence) \
        if asked else (0.0, 1.0)
    error_gate = decide(e_low, e_high, max_error_rate) if candidate_failed else PASS

    problems: list[str] = []
    notes: list[str] = []
    if not asked:
        problems.append(f"the source answered none of the {n} logged queries (first error: "
                        f"{first_source_error})")
    if gate == FAIL:
        problems.append(f"the candidate's overlap@{k} is {mean_drop:.3f} below the control's "
                        f"own ({confidence:.0%} CI {low:.3f}-{high:.3f}), beyond the tolerated "
                        f"{tolerance:g}")
    elif gate == INCONCLUSIVE and asked:
        if m < min_queries:
            notes.append(f"inconclusive: {m} compared queries are too few to decide "
                         f"({min_queries} at least)")
        else:
            more = more_samples_to_decide(m, mean_drop, low, high, tolerance)
            notes.append(f"inconclusive: the overlap drop {mean_drop:.3f} ({confidence:.0%} CI "
                         f"{low:.3f}-{high:.3f}) straddles the tolerated {tolerance:g}"
                         + (f"; about {more} more logged queries would decide" if more else ""))
    if error_gate == FAIL:
        problems.append(f"the candidate raised on {len(candidate_failed)} of {len(asked)} "
                        f"queries the source answered ({confidence:.0%} CI {e_low:.1%}-"
                        f"{e_high:.1%}), above the tolerated {max_error_rate:.1%}")
    elif candidate_failed:
        notes.append(f"the candidate raised on {len(candidate_failed)} of {len(asked)} queries "
                     f"(first: {candidate_failed[0].candidate_error})")
    if control_errors:
        notes.append(f"the source raised {control_errors} times (those queries are not "
                     f"compared; first: {first_source_error})")
    failed = bool(problems)
    decision = FAIL if failed else (INCONCLUSIVE if gate == INCONCLUSIVE else PASS)

    source_ms = [o.control_ms for o in outcomes if o.control_error is None] + \
        [o.control_again_ms for o in outcomes if o.control_again_error is None]
    target_ms = [o.candidate_ms for o in outcomes if o.candidate_error is None]
    s_pct, t_pct = percentiles(source_ms), percentiles(target_ms)
    distance_delta = _mean([o.candidate_distance - o.control_distance for o in compared
                            if o.candidate_distance is not None
                            and o.control_distance is not None])
    distance_noise = _mean([o.control_again_distance - o.control_distance for o in compared
                            if o.control_again_distance is not None
                            and o.control_distance is not None])
    noise_rbo = _mean([o.noise_rbo for o in compared])
    cand_rbo = _mean([o.candidate_rbo for o in compared])
    figures = {
        "queries": n, "compared": m, "k": k,
        "overlap": _round(float(cand.mean()) if m else None),
        "overlap_noise_floor": _round(float(noise.mean()) if m else None),
        "overlap_drop": _round(mean_drop if m else None),
        "overlap_drop_ci_low": _round(low if m else None),
        "overlap_drop_ci_high": _round(high if m else None),
        "rbo": _round(cand_rbo), "rbo_noise_floor": _round(noise_rbo),
        "distance_delta": _round(distance_delta), "distance_delta_noise": _round(distance_noise),
        "candidate_errors": candidate_errors, "source_errors": control_errors,
        "candidate_error_rate": _round(len(candidate_failed) / len(asked) if asked else None),
        "candidate_error_rate_ci_low": _round(e_low if asked else None),
        "candidate_error_rate_ci_high": _round(e_high if asked else None),
        **{f"source_{name}": value for name, value in s_pct.items()},
        **{f"target_{name}": value for name, value in t_pct.items()},
        "decision": decision,
    }

    ranked = sorted(compared, key=lambda o: (o.candidate_overlap - o.noise_overlap,
                                             o.candidate_rbo))
    worse = [o for o in ranked if o.candidate_overlap < o.noise_overlap]
    offenders = [Offender(
        id=o.label,
        detail=f"overlap@{o.k} {o.candidate_overlap:.2f} (control vs control "
        f"{o.noise_overlap:.2f}); the candidate missed {_short(_minus(o.control, o.candidate))}"
        f", returned instead {_short(_minus(o.candidate, o.control))}",
        source=o.control, target=o.candidate) for o in worse[:max_listed]]
    offenders += [Offender(id=o.label, detail=f"the candidate raised: {o.candidate_error}",
                           source=o.control, target=None)
                  for o in candidate_failed[:max(0, max_listed - len(offenders))]]

    figures_text = (
        (f"candidate overlap@{k} {cand.mean():.3f}, control vs control {noise.mean():.3f} "
         f"(noise floor); RBO {cand_rbo:.3f} vs {noise_rbo:.3f}; {m} of {n} queries compared"
         if m else f"none of {n} queries compared")
        + f"; candidate errors {candidate_errors}; p99 source {s_pct['p99_ms']:.2f} ms, "
        f"target {t_pct['p99_ms']:.2f} ms")
    if problems:
        lead = "; ".join(problems)
    elif gate == INCONCLUSIVE and notes:
        lead = notes[0]
    else:
        lead = (f"as good as the source's own agreement: {mean_drop:.3f} lower "
                f"({confidence:.0%} CI {low:.3f}-{high:.3f}), within the tolerated "
                f"{tolerance:g}")
    summary = f"{lead} - {figures_text}"
    return CheckResult(
        name="shadow",
        status=verdict(failed, bool(notes)),
        summary=summary,
        figures=figures,
        thresholds=thresholds,
        offenders=offenders if failed else offenders[:5],
        offending_total=len(worse) + len(candidate_failed),
        warnings=notes if not failed else [],
        evidence={
            "queries": [o.label for o in compared],
            "overlap": [float(x) for x in cand],
            "overlap_noise_floor": [float(x) for x in noise],
            "source_latency_ms": [float(x) for x in source_ms],
            "target_latency_ms": [float(x) for x in target_ms],
        },
    )
