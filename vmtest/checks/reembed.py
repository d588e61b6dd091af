"""Checks for a migration that changed the embedding model (``--vmtest-source-model`` and
``--vmtest-target-model`` differ). Vectors of two models are not comparable, so two other questions
are asked instead:

- **Does every target vector belong to its record?** Each (sampled) record's document is
  embedded again with the target's model (``--vmtest-target-embedder``) and must be within
  ``--vmtest-reembed-tolerance`` (cosine distance) of the vector the target holds. A vector written
  for another record, by another model or from a changed document fails.
- **Is search as good as before?** Known-item search: each query is the first half of a
  record's document, and a hit is that record in the top k. The target's hit rate (with the
  new model) must not fall more than ``--vmtest-max-quality-drop`` below the source's (with the old
  model, when ``--vmtest-source-embedder`` is given); the target's top-k must also reach
  ``--vmtest-min-recall`` against exact ground truth in its own vector space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vmtest.checks.result import MAX_LISTED, CheckResult, Offender, verdict
from vmtest.checks.stats import clopper_pearson_upper, wilson_interval


def known_item_query(document: str) -> str:
    """The first half of a document's words (at least two), as a person would search it."""
    words = document.split()
    return " ".join(words[: max(2, (len(words) + 1) // 2)])


def check_reembedded_vectors(
    keys: Sequence[str],
    expected: np.ndarray,
    stored: np.ndarray,
    *,
    tolerance: float,
    model: str,
    population: int | None = None,
    confidence: float = 0.95,
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """Each stored vector against its document's embedding by the target model."""
    n = len(keys)
    thresholds = {"max_cosine_distance": tolerance}
    if n == 0:
        return CheckResult("vectors", verdict(False, True), "no records to compare",
                           figures={"compared": 0}, thresholds=thresholds,
                           warnings=["no record with a document was found to compare"])
    if expected.shape != stored.shape:
        return CheckResult(
            "vectors", "failed",
            f"the target holds {stored.shape[1]}-dimensional vectors; {model} makes "
            f"{expected.shape[1]}-dimensional ones: not this model's vectors",
            figures={"compared": n}, thresholds=thresholds, offending_total=n)
    a = expected / np.maximum(np.linalg.norm(expected, axis=1, keepdims=True), 1e-30)
    b = stored / np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-30)
    dist = 1.0 - np.sum(a * b, axis=1)
    bad = np.flatnonzero(~(dist <= tolerance))
    offenders = [Offender(id=keys[i], detail=f"cosine distance {dist[i]:.4g} from the "
                          f"embedding of its document by {model}")
                 for i in bad[:max_listed]]
    figures: dict[str, object] = {
        "compared": n, "mismatched": len(bad), "model": model,
        "max_cosine_distance": float(np.nanmax(dist)),
        "mean_cosine_distance": float(np.nanmean(dist)),
    }
    summary = (f"{len(bad)} of {n} target vectors are not {model}'s embedding of their "
               f"document" if len(bad) else
               f"all {n} target vectors are {model}'s embedding of their document")
    if population is not None and population > n:
        bound = clopper_pearson_upper(len(bad), n, confidence)
        figures.update(population=population, sampled=True, mismatch_rate_upper=bound)
        summary += (f" (a seeded sample of {n} of {population}: with {confidence:.0%} "
                    f"confidence fewer than {bound:.3%} of all records differ)")
    return CheckResult("vectors", verdict(len(bad) > 0), summary, figures=figures,
                       thresholds=thresholds, offenders=offenders, offending_total=len(bad))


@dataclass
class KnownItem:
    """One known-item query: the record it should find, and each side's top k."""

    key: str
    query: str
    target_hits: list[str]
    #: The target's recall@k against exact ground truth in its own space (tie-tolerant).
    target_recall: float
    source_hits: list[str] | None = None


def check_search_quality(
    items: Sequence[KnownItem],
    *,
    k: int,
    source_model: str,
    target_model: str,
    max_drop: float,
    min_recall: float,
    confidence: float = 0.95,
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """Known-item hit rates of both models, their agreement, and the target's recall against
    exact ground truth in its own space."""
    n = len(items)
    thresholds: dict[str, object] = {"max_quality_drop": max_drop, "min_recall": min_recall}
    if n == 0:
        return CheckResult("search_quality", verdict(False, True), "no queries",
                           thresholds=thresholds,
                           warnings=["no record with a document to make a query from"])
    target_hit = np.array([it.key in it.target_hits[:k] for it in items], dtype=float)
    recall = np.array([it.target_recall for it in items])
    lo, hi = wilson_interval(float(target_hit.sum()), n, confidence)
    figures: dict[str, object] = {
        "queries": n, "k": k, "source_model": source_model, "target_model": target_model,
        "target_hit_rate": float(target_hit.mean()), "target_hit_rate_ci_low": lo,
        "target_hit_rate_ci_high": hi, "target_recall": float(recall.mean()),
    }
    failures: list[str] = []
    offenders: list[Offender] = []
    compared = [it for it in items if it.source_hits is not None]
    if compared:
        source_hit = np.array([it.key in (it.source_hits or [])[:k] for it in compared],
                              dtype=float)
        agreement = np.mean([len(set(it.target_hits[:k]) & set((it.source_hits or [])[:k])) / k
                             for it in compared])
        figures.update(source_hit_rate=float(source_hit.mean()),
                       model_agreement=float(agreement))
        drop = float(source_hit.mean() - target_hit.mean())  # both over every query
        figures["hit_rate_drop"] = drop
        if drop > max_drop:
            failures.append(f"known-item hit rate fell from {source_hit.mean():.3f} "
                            f"({source_model}) to {target_hit.mean():.3f} ({target_model})")
        lost = [it for it in compared if it.key in (it.source_hits or [])[:k]
                and it.key not in it.target_hits[:k]]
        offenders = [Offender(id=it.key, detail=f"found by {source_model}, not by "
                              f"{target_model}, for {it.query!r}") for it in lost[:max_listed]]
    if recall.mean() < min_recall:
        failures.append(f"the target's top-{k} recall against exact ground truth in its own "
                        f"space is {recall.mean():.3f} < {min_recall}")
    warnings = [] if compared else [
        "no --vmtest-source-embedder: the source's hit rate is unknown, so a drop cannot be "
        "measured"]
    summary = "; ".join(failures) if failures else (
        f"known-item hit@{k} {target_hit.mean():.3f} with {target_model} "
        f"(95% CI {lo:.3f}-{hi:.3f})"
        + (f" vs {figures['source_hit_rate']:.3f} with {source_model}" if compared else "")
        + f", recall@{k} {recall.mean():.3f} over {n} queries")
    return CheckResult("search_quality", verdict(bool(failures), bool(warnings)), summary,
                       figures=figures, thresholds=thresholds, offenders=offenders,
                       offending_total=len(offenders), warnings=warnings)
