"""Data-fidelity checks: inventory, ids, vectors, metadata, documents.

Each is a pure function over inventories, an alignment and the matched columns, returning a
:class:`~vmtest.checks.result.CheckResult`; the suite only calls and asserts them.
"""

from __future__ import annotations

import math
import struct
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from vmtest.checks.result import (
    MAX_LISTED,
    CheckResult,
    Offender,
    not_applicable,
    verdict,
)
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
    if source.count == 0 and not offenders:
        # a gate that passes on nothing is the worst answer it can give: an empty source is
        # almost always the wrong collection or folder
        offenders.append(Offender(id="count", detail="the source holds no records: nothing "
                                  "can be compared (the wrong collection?)", source=0,
                                  target=target.count))
    figures = {f"source_{n}": getattr(source, n) for n in (*INVENTORY_FIELDS, "model")}
    figures.update({f"target_{n}": getattr(target, n) for n in (*INVENTORY_FIELDS, "model")})
    if source.count == 0:
        summary = "the source holds no records: nothing can be compared (the wrong collection?)"
    elif offenders:
        summary = "the stores differ in " + ", ".join(
            f"{o.id} ({o.source!r} vs {o.target!r})" for o in offenders
        )
    elif all(getattr(side, n) is None for side in (source, target)
             for n in ("dimension", "metric", "dtype")):
        summary = f"both hold {source.count} records, without vectors"
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


def check_ids(alignment: Alignment, *, verified: int = 0, hints: Sequence[str] = (),
              max_listed: int = MAX_LISTED) -> CheckResult:
    """Every source id is in the target once, and the target holds nothing else.
    ``verified`` more pairs were matched beforehand by the checksum fast path
    (:mod:`vmtest.digest`) and count as matched. ``hints``
    (from :func:`suggest_fields`) say which option would match the records."""
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
        if matched == 0:
            summary = "no id matched: " + summary
    else:
        summary = f"all {matched} ids match one to one"
    if hints:
        summary += "; " + "; ".join(hints)
    _note_verified(figures, verified)
    return CheckResult(
        name="ids",
        status=verdict(total > 0),
        summary=summary,
        figures=figures,
        thresholds={"missing": 0, "extra": 0, "duplicates": 0},
        offenders=offenders,
        offending_total=total,
        warnings=list(hints),
    )


def _best_field(rows: Sequence[tuple[dict[str, Any], Any]],
                matches: Callable[[Any, Any], bool]) -> tuple[str, int] | None:
    """The metadata field whose value ``matches(value, expected)`` in most of the rows
    (metadata, expected), with that count."""
    counts: dict[str, int] = {}
    for meta, expected in rows:
        for name, value in meta.items():
            if matches(value, expected):
                counts[str(name)] = counts.get(str(name), 0) + 1
    if not counts:
        return None
    return max(sorted(counts.items()), key=lambda kv: kv[1])


def suggest_id_field(missing: Sequence[str], unmatched_target: Sequence[dict[str, Any]],
                     *, option: str = "--vmtest-id-field") -> list[str]:
    """When source ids are missing from the target: a payload field of the unmatched target
    records whose values are those ids (the copy kept the source id in, say, ``chroma_id``)."""
    lacking = set(missing)
    if not lacking or not unmatched_target:
        return []
    best = _best_field([(meta, None) for meta in unmatched_target],
                       lambda v, _: isinstance(v, (str, int)) and not isinstance(v, bool)
                       and str(v) in lacking)
    if best is None or best[1] * 2 < min(len(unmatched_target), len(lacking)):
        return []
    name, hits = best
    return [f"the target's payload field {name!r} holds the source ids ({hits} of "
            f"{len(unmatched_target)} unmatched target records): add {option}={name}"]


def suggest_document_field(pairs: Sequence[tuple[str | None, str | None, dict[str, Any]]],
                           *, option: str = "--vmtest-document-field") -> list[str]:
    """When matched target records lack the document the source has: a payload field that
    holds it (``text``, ``page_content``). ``pairs`` is (source document, target document,
    target metadata) per matched record."""
    lost = [(s, meta) for s, t, meta in pairs if isinstance(s, str) and s and t is None]
    if not lost:
        return []
    best = _best_field([(meta, s) for s, meta in lost], lambda v, s: v == s)
    if best is None or best[1] * 2 < len(lost):
        return []
    name, hits = best
    return [f"the target's payload field {name!r} holds the source's documents ({hits} of "
            f"{len(lost)} records without one): add {option}={name}"]


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
    figures: dict[str, Any] = {"compared": n + verified}
    thresholds = {"atol": atol, "rtol": rtol}
    if n + verified == 0:
        return not_applicable("vectors", "no record matched by id, so no vector was compared "
                              "(the ids check says why)", compared=0)
    if n and s.shape[1] != t.shape[1]:
        return CheckResult(
            name="vectors", status="failed",
            summary=f"the vectors have {s.shape[1]} dimensions in the source and "
            f"{t.shape[1]} in the target"
            + (" (truncated)" if t.shape[1] < s.shape[1] else " (padded)"),
            figures=figures, thresholds=thresholds, offending_total=n,
            offenders=[Offender(id=k, detail=f"{s.shape[1]} dimensions in the source, "
                                f"{t.shape[1]} in the target") for k in keys[:max_listed]],
        )
    cosine = metric == "cosine"
    figures["compared_as"] = "normalised (cosine metric)" if cosine else "raw"
    per_record = np.zeros(n, dtype=np.float64)
    bad_parts: list[np.ndarray] = []
    offenders: list[Offender] = []
    seen_s: list[np.ndarray] = []
    seen_t: list[np.ndarray] = []
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
        room = DIAGNOSE_ROWS - sum(len(x) for x in seen_s)
        if room > 0 and len(rows):
            seen_s.append(np.asarray(raw_s[differ[rows[:room]]], dtype=np.float64))
            seen_t.append(np.asarray(raw_t[differ[rows[:room]]], dtype=np.float64))
        scale = " (both normalised: cosine metric)" if cosine else ""
        for row in rows[: max(0, max_listed - len(offenders))]:
            dim = int(np.argmax(np.where(bad_mask[row], np.nan_to_num(err[row], nan=np.inf)
                                         - allowed[row], -np.inf)))
            offenders.append(Offender(
                id=keys[start + differ[row]],
                detail=f"max |delta| {per_record[start + differ[row]]:.3g}{scale} at dim "
                f"{dim}: source {sc[row, dim]:.9g}, target {tc[row, dim]:.9g}",
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
    total = n + verified
    summary = (f"{bad} of {total} vectors differ beyond tolerance" if bad
               else f"all {total} vectors agree within tolerance")
    bad_keys = [keys[int(i)] for part in bad_parts for i in part[:DIAGNOSE_ROWS]]
    patterns = _diagnose(bad_keys[:DIAGNOSE_ROWS], seen_s, seen_t, dimension=s.shape[1]
                         if s.ndim == 2 else 0) if bad else []
    if patterns:
        summary += ": " + "; ".join(patterns)
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


#: Mismatched rows kept to name a systematic pattern (a flipped sign, a scale, float16).
DIAGNOSE_ROWS = 2000


def _diagnose(keys: Sequence[str], seen_s: list[np.ndarray], seen_t: list[np.ndarray], *,
              dimension: int) -> list[str]:
    """Name what the mismatched vectors have in common, in words a person can act on."""
    if not seen_s:
        return []
    s = np.concatenate(seen_s)
    t = np.concatenate(seen_t)
    if not (np.isfinite(s).all() and np.isfinite(t).all()):
        return []
    out: list[str] = []
    by_bytes = {np.asarray(row, dtype=np.float64).tobytes(): k for k, row in zip(keys, s,
                                                                                  strict=False)}
    swapped = [(k, by_bytes[row.tobytes()]) for k, row in zip(keys, t, strict=False)
               if row.tobytes() in by_bytes and by_bytes[row.tobytes()] != k]
    if swapped and len(swapped) * 2 >= len(s):
        shown = ", ".join(f"{a} holds {b}'s" for a, b in swapped[:3])
        return [f"{len(swapped)} records hold another record's vector ({shown}): ids remapped "
                "wrongly"]
    flipped = np.isclose(t, -s, rtol=1e-6, atol=1e-7) & ~np.isclose(t, s, rtol=1e-6, atol=1e-7)
    dims = np.flatnonzero(flipped.mean(axis=0) > 0.5)
    if len(dims) and np.allclose(np.delete(t, dims, axis=1), np.delete(s, dims, axis=1),
                                 rtol=1e-6, atol=1e-7):
        listed = ", ".join(map(str, dims[:5])) + (" ..." if len(dims) > 5 else "")
        out.append(f"the sign of dimension {listed} is flipped in every mismatched vector "
                   "(distances between records are unchanged, so search cannot tell; the "
                   "stored values are wrong)")
        return out
    for name, dtype in (("float16", np.float16),):
        if np.array_equal(t, s.astype(dtype).astype(np.float64)):
            out.append(f"every mismatched vector equals the source's rounded to {name} "
                       "(re-quantised)")
            return out
    ns, nt = np.linalg.norm(s, axis=1), np.linalg.norm(t, axis=1)
    ok = ns > 0
    if ok.any():
        ratio = nt[ok] / ns[ok]
        cos = (s[ok] * t[ok]).sum(1) / np.maximum(ns[ok] * nt[ok], 1e-30)
        if np.allclose(cos, 1.0, atol=1e-6) and abs(float(np.median(ratio)) - 1) > 1e-3:
            if np.allclose(nt[ok], 1.0, rtol=1e-4):
                out.append("the target holds the source's vectors normalised to unit length "
                           "(same directions; compare under --metric cosine or keep the norms)")
            else:
                out.append(f"the target's vectors point the same way but are scaled "
                           f"(norm ratio {np.median(ratio):.4g})")
            return out
    if dimension:
        per_dim = (~np.isclose(s, t, rtol=0, atol=0)).mean(axis=0)
        few = np.flatnonzero(per_dim > 0.5)
        if 0 < len(few) <= max(1, dimension // 20) and (per_dim <= 0.5).sum() >= dimension // 2:
            listed = ", ".join(map(str, few[:5])) + (" ..." if len(few) > 5 else "")
            out.append(f"the differences sit in dimension {listed}")
    return out


def _error_series(per_record: np.ndarray, points: int = 400) -> list[float]:
    """Up to ``points`` quantiles of the per-record error, for a report's distribution plot."""
    if not len(per_record):
        return []
    if len(per_record) <= points:
        return [float(x) for x in np.sort(per_record)]
    return [float(x) for x in np.quantile(per_record, np.linspace(0, 1, points))]


def same_value(a: Any, b: Any, *, lenient_numbers: bool = False, float_ulps: int = 0) -> bool:
    """Equal values of equal JSON types: 42 and "42" differ, True and 1 differ, 1 and 1.0
    differ unless ``lenient_numbers``. NaN equals NaN (a faithful copy of a NaN). Floats
    within ``float_ulps`` units in the last place count as equal (a store's declared
    rounding)."""
    ta, tb = json_type(a), json_type(b)
    if ta != tb:
        return lenient_numbers and {ta, tb} == {"int", "float"} and float(a) == float(b)
    if ta == "float":
        return bool(a == b or (math.isnan(a) and math.isnan(b))
                    or (float_ulps and ulps_apart(a, b) <= float_ulps))
    if ta == "list":
        return len(a) == len(b) and all(
            same_value(x, y, lenient_numbers=lenient_numbers, float_ulps=float_ulps)
            for x, y in zip(a, b, strict=True))
    if ta == "dict":
        return a.keys() == b.keys() and all(
            same_value(a[k], b[k], lenient_numbers=lenient_numbers, float_ulps=float_ulps)
            for k in a)
    return bool(a == b)


def ulps_apart(a: float, b: float) -> int:
    """How many representable doubles lie between a and b (0: the same double); a huge
    number for NaN against a number, or for opposite signs far from zero."""
    if math.isnan(a) or math.isnan(b) or math.isinf(a) or math.isinf(b):
        return 0 if (a == b or (math.isnan(a) and math.isnan(b))) else 1 << 62

    def ordered(x: float) -> int:
        bits = struct.unpack("<q", struct.pack("<d", x))[0]
        return bits if bits >= 0 else -(bits & 0x7FFFFFFFFFFFFFFF)

    return abs(ordered(a) - ordered(b))


def largest_ulps(a: Any, b: Any) -> int:
    """The largest distance in ulps between the floats of two values of the same shape."""
    if isinstance(a, float) and isinstance(b, float):
        return ulps_apart(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return max((largest_ulps(x, y) for x, y in zip(a, b, strict=False)), default=0)
    if isinstance(a, dict) and isinstance(b, dict):
        return max((largest_ulps(a[k], b[k]) for k in a.keys() & b.keys()), default=0)
    return 0


def show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({json_type(value)})"


def metadata_difference(
    source: dict[str, Any], target: dict[str, Any], *, lenient_numbers: bool = False,
    float_ulps: int = 0,
) -> dict[str, str]:
    """What differs between two metadata dicts: field -> a phrase saying how."""
    out: dict[str, str] = {}
    for key in sorted(source.keys() | target.keys(), key=str):
        if key not in target:
            out[key] = f"{key!r} missing in the target (source {show(source[key])})"
        elif key not in source:
            out[key] = f"{key!r} extra in the target ({show(target[key])})"
        elif not same_value(source[key], target[key], lenient_numbers=lenient_numbers,
                            float_ulps=float_ulps):
            out[key] = f"{key!r}: source {show(source[key])}, target {show(target[key])}"
    return out


def check_metadata(
    keys: Sequence[str],
    source: Sequence[dict[str, Any]],
    target: Sequence[dict[str, Any]],
    *,
    lenient_numbers: bool = False,
    verified: int = 0,
    float_ulps: int = 0,
    strict_floats: bool = False,
    engine: str = "the target",
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """Equal key sets and equal values with their types, record by record (``verified``
    more were equal by digest).

    ``float_ulps`` is the rounding the target store declares for float values (Chroma and a
    Qdrant server parse doubles the fast, inexact way): records whose only differences are
    floats within it are counted and reported as a warning, with the largest difference in
    ulps, never silently; ``strict_floats`` fails them. A larger difference (a float32 round
    trip is about 1e8 ulps) fails as any other."""
    offenders: list[Offender] = []
    total = 0
    rounded = 0
    most_ulps = 0
    keys_affected: dict[str, int] = {}
    for key, s, t in zip(keys, source, target, strict=True):
        diff = metadata_difference(s, t, lenient_numbers=lenient_numbers)
        if diff and float_ulps and not metadata_difference(
                s, t, lenient_numbers=lenient_numbers, float_ulps=float_ulps):
            rounded += 1
            most_ulps = max(most_ulps, largest_ulps(s, t))
            if not strict_floats:
                continue
        if diff:
            total += 1
            for name in diff:
                keys_affected[str(name)] = keys_affected.get(str(name), 0) + 1
            if len(offenders) < max_listed:
                offenders.append(
                    Offender(id=key, detail="; ".join(diff.values()), source=s, target=t)
                )
    compared = len(keys) + verified
    if compared == 0:
        return not_applicable("metadata", "no record matched by id, so no metadata was "
                              "compared (the ids check says why)", compared=0)
    summary = (
        f"{total} of {compared} records have different metadata"
        + (" (fields: " + ", ".join(f"{k} x{n}" for k, n in sorted(keys_affected.items())) + ")"
           if keys_affected else "")
        if total
        else f"metadata equal, with types, on all {compared} records"
        if not rounded else f"metadata equal, with types, on {compared - rounded} of "
        f"{compared} records"
    )
    figures: dict[str, Any] = {"compared": compared, "mismatched": total,
                               "fields_affected": keys_affected}
    warnings: list[str] = []
    if rounded:
        figures.update(floats_rounded=rounded, float_rounding_ulps=most_ulps)
        warnings.append(
            f"{rounded} records hold float values that {engine} rounded by at most {most_ulps} "
            f"ulp{'s' if most_ulps != 1 else ''} (it declares up to {float_ulps}: it parses "
            "doubles the fast, inexact way)"
            + ("; --vmtest-strict-floats counts them as differences" if strict_floats
               else "; --vmtest-strict-floats would fail them"))
        summary += f"; {warnings[-1]}"
    _note_verified(figures, verified)
    thresholds: dict[str, Any] = {"lenient_numbers": lenient_numbers}
    if float_ulps:
        thresholds.update(float_rounding_ulps=float_ulps, strict_floats=strict_floats)
    return CheckResult(
        name="metadata",
        status=verdict(total > 0, bool(rounded)),
        summary=summary,
        figures=figures,
        thresholds=thresholds,
        offenders=offenders,
        offending_total=total,
        warnings=warnings,
    )


def check_documents(
    keys: Sequence[str],
    source: Sequence[str | None],
    target: Sequence[str | None],
    *,
    verified: int = 0,
    verified_with_document: int = 0,
    hints: Sequence[str] = (),
    max_listed: int = MAX_LISTED,
) -> CheckResult:
    """Equal document text (a missing document differs from an empty one); ``verified`` more
    were equal by digest, ``verified_with_document`` of them with a document. Not applicable
    when nothing matched or neither side holds any document."""
    offenders: list[Offender] = []
    total = 0
    causes: dict[str, int] = {}
    for key, s, t in zip(keys, source, target, strict=True):
        if s != t:
            total += 1
            cause = document_difference(s, t)
            causes[cause] = causes.get(cause, 0) + 1
            if len(offenders) < max_listed:
                offenders.append(Offender(id=key, detail=_doc_diff(s, t, cause), source=s,
                                          target=t))
    compared = len(keys) + verified
    with_document = verified_with_document + sum(1 for d in source if d is not None)
    if compared == 0:
        return not_applicable("documents", "no record matched by id, so no document was "
                              "compared (the ids check says why)", compared=0)
    if not with_document and not any(d is not None for d in target):
        return not_applicable("documents", f"neither store holds a document on any of the "
                              f"{compared} matched records", compared=compared,
                              with_document=0)
    summary = (f"{total} of {compared} documents differ" if total
               else f"all {compared} documents equal")
    if causes:
        summary += " (" + ", ".join(f"{n} {c}" for c, n in sorted(
            causes.items(), key=lambda kv: -kv[1])) + ")"
    if hints:
        summary += "; " + "; ".join(hints)
    figures = {"compared": compared, "mismatched": total, "with_document": with_document}
    _note_verified(figures, verified)
    return CheckResult(
        name="documents",
        status=verdict(total > 0),
        summary=summary,
        figures=figures,
        offenders=offenders,
        offending_total=total,
        warnings=list(hints),
    )


def document_difference(s: str | None, t: str | None) -> str:
    """The kind of difference between two documents, in words."""
    if s is None:
        return "extra in the target"
    if t is None:
        return "missing in the target"
    if not isinstance(s, str) or not isinstance(t, str):
        return "of another type"
    if unicodedata.normalize("NFC", s) == unicodedata.normalize("NFC", t):
        return "Unicode normalisation only (NFC/NFD)"
    if s.split() == t.split():
        return "whitespace only"
    if s.casefold() == t.casefold():
        return "letter case only"
    if t and s.startswith(t):
        return "truncated"
    return "text changed"


def _note_verified(figures: dict[str, Any], verified: int) -> None:
    """Say how many records the checksum fast path verified (only when it ran)."""
    if verified:
        figures["verified_by_digest"] = verified
        figures["compared_one_by_one"] = figures.get("compared", figures.get("matched", 0)) \
            - verified


def _doc_diff(s: str | None, t: str | None, cause: str) -> str:
    if not isinstance(s, str) or not isinstance(t, str):  # None, or a payload field of
        # another type read as the document
        return f"{cause}: source {_clip(s)}, target {_clip(t)}"
    at = next((i for i, (a, b) in enumerate(zip(s, t, strict=False)) if a != b), min(len(s),
                                                                                     len(t)))
    if cause.startswith("Unicode"):
        forms = "/".join(f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, t)) or "none"
        return (f"{cause}: the same text, encoded differently from character {at} "
                f"(source {len(s)} code points, target {len(t)}; the target is in form "
                f"{forms}): source {s[at:at + 12]!a}, target {t[at:at + 12]!a}")
    return (f"{cause}: differ at character {at} (source {len(s)} chars, target {len(t)}): "
            f"source {_clip(s[at:at + 40])}, target {_clip(t[at:at + 40])}")


def _clip(text: object) -> str:
    if not isinstance(text, str):
        return repr(text)
    return repr(text if len(text) <= 40 else text[:37] + "...")
