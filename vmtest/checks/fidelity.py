"""Data-fidelity checks: inventory, ids, vectors, metadata, documents.

Each is a pure function over inventories, an alignment and the matched columns, returning a
:class:`~vmtest.checks.result.CheckResult`; the suite only calls and asserts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from vmtest.checks.result import MAX_LISTED, CheckResult, Offender, verdict
from vmtest.checks.stats import clopper_pearson_upper
from vmtest.matching import Alignment
from vmtest.stores.base import Inventory, json_type

INVENTORY_FIELDS = ("count", "dimension", "metric", "dtype")
#: Rows of vectors compared at once.
VECTOR_CHUNK = 4096


def _unit(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return v / norms


def check_inventory(source: Inventory, target: Inventory, *,
                    same_model: bool = True) -> CheckResult:
    """Count, dimension, metric and dtype agree. A side that cannot tell (a file without its
    shape) is a warning, never a silent pass of a mismatch. After a model change
    (``same_model=False``) only the counts must agree: the shape is the new model's."""
    offenders: list[Offender] = []
    warnings: list[str] = []
    if not same_model:
        warnings.append(f"another model ({source.model} -> {target.model}): dimension, "
                        "metric and dtype are the new model's and are not compared")
    for name in INVENTORY_FIELDS if same_model else ("count",):
        s, t = getattr(source, name), getattr(target, name)
        if s is None or t is None:
            if s != t:
                side = "source" if s is None else "target"
                warnings.append(f"{name} unknown on the {side}: cannot compare ({s!r} vs {t!r})")
            continue
        if s != t:
            offenders.append(Offender(id=name, detail=f"source {s!r}, target {t!r}",
                                      source=s, target=t))
    figures = {f"source_{n}": getattr(source, n) for n in (*INVENTORY_FIELDS, "model")}
    figures.update({f"target_{n}": getattr(target, n) for n in (*INVENTORY_FIELDS, "model")})
    if offenders:
        summary = "the stores differ in " + ", ".join(
            f"{o.id} ({o.source!r} vs {o.target!r})" for o in offenders
        )
    elif same_model:
        summary = (
            f"both hold {source.count} records of dimension {source.dimension}, "
            f"metric {source.metric}, dtype {source.dtype}"
        )
    else:
        summary = (f"both hold {source.count} records; vectors of {source.model} "
                   f"(dimension {source.dimension}) became {target.model} "
                   f"(dimension {target.dimension})")
    return CheckResult(
        name="inventory",
        status=verdict(bool(offenders), bool(warnings)),
        summary=summary,
        figures=figures,
        offenders=offenders,
        offending_total=len(offenders),
        warnings=warnings,
        evidence={"source": source.to_dict(), "target": target.to_dict()},
    )


def check_ids(alignment: Alignment, *, verified: int = 0,
              max_listed: int = MAX_LISTED) -> CheckResult:
    """Every source id is in the target once, and the target holds nothing else.
    ``verified`` more pairs were matched beforehand by the checksum fast path
    (:mod:`vmtest.digest`) and count as matched."""
    problems: list[tuple[str, list[str]]] = [
        ("missing in the target", alignment.missing),
        ("extra in the target", alignment.extra),
        ("duplicated in the source", alignment.source_duplicates),
        ("duplicated in the target", alignment.target_duplicates),
    ]
    offenders: list[Offender] = []
    for label, keys in problems:
        room = max(0, max_listed - len(offenders))
        offenders.extend(Offender(id=k, detail=label) for k in keys[:room])
    total = sum(len(keys) for _, keys in problems)
    matched = alignment.matched + verified
    figures = {
        "matched": matched,
        "missing": len(alignment.missing),
        "extra": len(alignment.extra),
        "source_duplicates": len(alignment.source_duplicates),
        "target_duplicates": len(alignment.target_duplicates),
    }
    if total:
        summary = ", ".join(f"{len(keys)} {label}" for label, keys in problems if keys)
    else:
        summary = f"all {matched} ids match one to one"
    _note_verified(figures, verified)
    return CheckResult(
        name="ids",
        status=verdict(total > 0),
        summary=summary,
        figures=figures,
        thresholds={"missing": 0, "extra": 0, "duplicates": 0},
        offenders=offenders,
        offending_total=total,
    )


def check_vectors(
    keys: Sequence[str],
    source: np.ndarray,
    target: np.ndarray,
    *,
    atol: float = 1e-6,
    rtol: float = 0.0,
    metric: str | None = None,
    population: int | None = None,
    confidence: float = 0.95,
    verified: int = 0,
    grid: float | None = None,
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """Each matched vector agrees element-wise: ``|s - t| <= atol + rtol * |s|``.

    Under the cosine metric both sides are compared normalised, since a store may keep them
    so (Qdrant does) and the direction is all the metric sees. ``population`` > len(keys)
    marks a sample: the result then states the Clopper-Pearson bound on the mismatch rate.
    ``verified`` more pairs agreed by digest (on a grid of step ``grid``, 0 for exact bits):
    they count as compared and agreeing; the error figures are of the pairs given here.
    """
    s = np.asarray(source)
    t = np.asarray(target)
    n = len(keys)
    figures: dict[str, Any] = {"compared": n}
    thresholds = {"atol": atol, "rtol": rtol}
    if n and s.shape[1] != t.shape[1]:
        return CheckResult(
            name="vectors", status="failed",
            summary=f"the vectors have {s.shape[1]} dimensions in the source and "
            f"{t.shape[1]} in the target",
            figures=figures, thresholds=thresholds, offending_total=n,
        )
    cosine = metric == "cosine"
    figures["compared_as"] = "normalised (cosine metric)" if cosine else "raw"
    per_record = np.zeros(n, dtype=np.float64)
    bad_parts: list[np.ndarray] = []
    offenders: list[Offender] = []
    # In chunks of rows, in float64: memory stays a few MB above the inputs at any size.
    for start in range(0, n, VECTOR_CHUNK):
        # bit-identical rows (most of a faithful copy) have error 0: only the others are
        # worked out in float64 (NaN is never equal, so NaN rows take the long way)
        raw_s, raw_t = s[start : start + VECTOR_CHUNK], t[start : start + VECTOR_CHUNK]
        differ = np.flatnonzero(~(raw_s == raw_t).all(axis=1))
        if not len(differ):
            bad_parts.append(differ)
            continue
        sc = np.asarray(raw_s[differ], dtype=np.float64)
        tc = np.asarray(raw_t[differ], dtype=np.float64)
        if cosine:
            sc, tc = _unit(sc), _unit(tc)
        err = np.abs(sc - tc)
        allowed = atol + rtol * np.abs(sc)
        both_nan = np.isnan(sc) & np.isnan(tc)
        bad_mask = ~(err <= allowed) & ~both_nan  # NaN on one side only is a difference
        per_record[start + differ] = np.where(both_nan, 0.0, np.nan_to_num(
            err, nan=np.inf)).max(axis=1)
        rows = np.flatnonzero(bad_mask.any(axis=1))
        bad_parts.append(differ[rows] + start)
        for row in rows[: max(0, max_listed - len(offenders))]:
            dim = int(np.argmax(np.where(bad_mask[row], np.nan_to_num(err[row], nan=np.inf)
                                         - allowed[row], -np.inf)))
            offenders.append(Offender(
                id=keys[start + differ[row]],
                detail=f"max |delta| {per_record[start + differ[row]]:.3g} at dim {dim}: "
                f"source {sc[row, dim]:.9g}, target {tc[row, dim]:.9g}",
                source=float(sc[row, dim]), target=float(tc[row, dim]),
            ))
    bad = int(sum(len(p) for p in bad_parts))
    finite = per_record[np.isfinite(per_record)]  # a NaN on one side only counts as inf
    figures.update(
        mismatched=bad,
        max_abs_error=float(finite.max()) if len(finite) else 0.0,
        mean_abs_error=float(finite.mean()) if len(finite) else 0.0,
        p99_abs_error=float(np.quantile(finite, 0.99)) if len(finite) else 0.0,
        nan_mismatches=int(n - len(finite)),
    )
    figures["compared"] = n + verified
    total = n + verified
    summary = (f"{bad} of {total} vectors differ beyond tolerance" if bad
               else f"all {total} vectors agree within tolerance")
    _note_verified(figures, verified)
    if verified and grid is not None:
        figures["digest_grid"] = grid
    if population is not None and population > n:
        bound = clopper_pearson_upper(bad, n, confidence)
        figures.update(population=population, sampled=True, confidence=confidence,
                       mismatch_rate_upper=bound)
        summary += (
            f" (a seeded sample of {n} of {population}: with {confidence:.0%} confidence "
            f"fewer than {bound:.3%} of all records differ)"
        )
    return CheckResult(
        name="vectors",
        status=verdict(bad > 0),
        summary=summary,
        figures=figures,
        thresholds=thresholds,
        offenders=offenders,
        offending_total=bad,
        evidence={"abs_error": _error_series(finite)},
    )


def _error_series(per_record: np.ndarray, points: int = 400) -> list[float]:
    """Up to ``points`` quantiles of the per-record error, for a report's distribution plot."""
    if not len(per_record):
        return []
    if len(per_record) <= points:
        return [float(x) for x in np.sort(per_record)]
    return [float(x) for x in np.quantile(per_record, np.linspace(0, 1, points))]


def same_value(a: Any, b: Any, *, lenient_numbers: bool = False) -> bool:
    """Equal values of equal JSON types: 42 and "42" differ, True and 1 differ, 1 and 1.0
    differ unless ``lenient_numbers``. NaN equals NaN (a faithful copy of a NaN)."""
    ta, tb = json_type(a), json_type(b)
    if ta != tb:
        return lenient_numbers and {ta, tb} == {"int", "float"} and float(a) == float(b)
    if ta == "float":
        return bool(a == b or (math.isnan(a) and math.isnan(b)))
    if ta == "list":
        return len(a) == len(b) and all(
            same_value(x, y, lenient_numbers=lenient_numbers) for x, y in zip(a, b, strict=True)
        )
    if ta == "dict":
        return a.keys() == b.keys() and all(
            same_value(a[k], b[k], lenient_numbers=lenient_numbers) for k in a
        )
    return bool(a == b)


def show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({json_type(value)})"


def metadata_difference(
    source: dict[str, Any], target: dict[str, Any], *, lenient_numbers: bool = False
) -> dict[str, str]:
    """What differs between two metadata dicts: field -> a phrase saying how."""
    out: dict[str, str] = {}
    for key in sorted(source.keys() | target.keys(), key=str):
        if key not in target:
            out[key] = f"{key!r} missing in the target (source {show(source[key])})"
        elif key not in source:
            out[key] = f"{key!r} extra in the target ({show(target[key])})"
        elif not same_value(source[key], target[key], lenient_numbers=lenient_numbers):
            out[key] = f"{key!r}: source {show(source[key])}, target {show(target[key])}"
    return out


def check_metadata(
    keys: Sequence[str],
    source: Sequence[dict[str, Any]],
    target: Sequence[dict[str, Any]],
    *,
    lenient_numbers: bool = False,
    verified: int = 0,
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """Equal key sets and equal values with their types, record by record (``verified``
    more were equal by digest)."""
    offenders: list[Offender] = []
    total = 0
    keys_affected: dict[str, int] = {}
    for key, s, t in zip(keys, source, target, strict=True):
        diff = metadata_difference(s, t, lenient_numbers=lenient_numbers)
        if diff:
            total += 1
            for name in diff:
                keys_affected[str(name)] = keys_affected.get(str(name), 0) + 1
            if len(offenders) < max_listed:
                offenders.append(
                    Offender(id=key, detail="; ".join(diff.values()), source=s, target=t)
                )
    compared = len(keys) + verified
    summary = (
        f"{total} of {compared} records have different metadata"
        + (" (fields: " + ", ".join(f"{k} x{n}" for k, n in sorted(keys_affected.items())) + ")"
           if keys_affected else "")
        if total
        else f"metadata equal, with types, on all {compared} records"
    )
    figures = {"compared": compared, "mismatched": total, "fields_affected": keys_affected}
    _note_verified(figures, verified)
    return CheckResult(
        name="metadata",
        status=verdict(total > 0),
        summary=summary,
        figures=figures,
        thresholds={"lenient_numbers": lenient_numbers},
        offenders=offenders,
        offending_total=total,
    )


def check_documents(
    keys: Sequence[str],
    source: Sequence[str | None],
    target: Sequence[str | None],
    *,
    verified: int = 0,
    verified_with_document: int = 0,
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """Equal document text (a missing document differs from an empty one); ``verified`` more
    were equal by digest, ``verified_with_document`` of them with a document."""
    offenders: list[Offender] = []
    total = 0
    for key, s, t in zip(keys, source, target, strict=True):
        if s != t:
            total += 1
            if len(offenders) < max_listed:
                offenders.append(Offender(id=key, detail=_doc_diff(s, t), source=s, target=t))
    compared = len(keys) + verified
    summary = (f"{total} of {compared} documents differ" if total
               else f"all {compared} documents equal")
    figures = {"compared": compared, "mismatched": total,
               "with_document": verified_with_document + sum(1 for d in source if d is not None)}
    _note_verified(figures, verified)
    return CheckResult(
        name="documents",
        status=verdict(total > 0),
        summary=summary,
        figures=figures,
        offenders=offenders,
        offending_total=total,
    )


def _note_verified(figures: dict[str, Any], verified: int) -> None:
    """Say how many records the checksum fast path verified (only when it ran)."""
    if verified:
        figures["verified_by_digest"] = verified
        figures["compared_one_by_one"] = figures.get("compared", figures.get("matched", 0)) \
            - verified


def _doc_diff(s: str | None, t: str | None) -> str:
    if not isinstance(s, str) or not isinstance(t, str):  # None, or a payload field of
        # another type read as the document
        return f"source {_clip(s)}, target {_clip(t)}"
    at = next((i for i, (a, b) in enumerate(zip(s, t, strict=False)) if a != b), min(len(s),
                                                                                     len(t)))
    return (f"differ at character {at} (source {len(s)} chars, target {len(t)}): "
            f"source {_clip(s[at:at + 40])}, target {_clip(t[at:at + 40])}")


def _clip(text: object) -> str:
    if not isinstance(text, str):
        return repr(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")
