"""Cross-store references: in one system, the vector index and the document store agree.

Every vector record names the document it was made from in a field (``--vmtest-reference-field``,
default ``doc_id``): that document must exist in the document store (``--vmtest-documents``),
and every document must be indexed by at least one vector record. Orphans both ways are
listed: a vector pointing to a deleted document answers a search with nothing to show, and a
document no vector points to can never be found.

Given the source's document store too (``--vmtest-source-documents``), the check judges the
migration: an orphan of the target that was already an orphan of the source (the same key, the
same kind) is a warning naming it, "already in the source before migration"; only the orphans
the migration made fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from vmtest.checks.result import MAX_LISTED, CheckResult, Offender, not_applicable, verdict

#: The three kinds of orphan: a vector naming a document the store does not hold, a vector
#: naming none, a document no vector names.
DANGLING, UNREFERENCED, UNINDEXED = "dangling", "unreferenced", "unindexed"


class References(NamedTuple):
    """One side of a system: its vector records' keys, each one's reference (``references[i]``
    is the value of the reference field on ``vector_keys[i]``, None when it has none) and its
    document store's record keys."""

    vector_keys: Sequence[str]
    references: Sequence[Any]
    document_keys: Iterable[str]


def orphans(side: References) -> tuple[dict[tuple[str, str], Any], int]:
    """Every orphan of one side as ``(kind, key) -> reference`` (vector records first, in
    their order, then the unindexed documents sorted), and the number of its documents.
    References compare as text, as record keys do."""
    documents = set(map(str, side.document_keys))
    found: dict[tuple[str, str], Any] = {}
    referenced: set[str] = set()
    for key, ref in zip(side.vector_keys, side.references, strict=True):
        if ref is None:
            found[(UNREFERENCED, key)] = None
            continue
        referenced.add(str(ref))
        if str(ref) not in documents:
            found[(DANGLING, key)] = str(ref)
    found.update(((UNINDEXED, d), d) for d in sorted(documents - referenced))
    return found, len(documents)


def check_references(vector_keys: Sequence[str], references: Sequence[Any],
                     document_keys: Iterable[str], *, field: str,
                     source: References | None = None, max_listed: int = MAX_LISTED
                     ) -> CheckResult:
    """The target's vector records (``vector_keys``, their ``references``) against its
    document store (``document_keys``); with ``source``, the same three of the source, whose
    orphans the target may keep (a warning) but not add to (a failure)."""
    name = "references"
    if not vector_keys:
        return not_applicable(name, "the vector store holds no records")
    if all(ref is None for ref in references):
        return not_applicable(name, f"no vector record holds a {field!r} field "
                              "(--vmtest-reference-field names it)")
    found, n_documents = orphans(References(vector_keys, references, document_keys))
    before = orphans(source)[0] if source is not None else {}
    new = {k: v for k, v in found.items() if k not in before}
    kept = {k: v for k, v in found.items() if k in before}
    broken = sum(1 for kind, _ in new if kind != UNINDEXED)
    unindexed = len(new) - broken
    figures: dict[str, Any] = {
        "vector_records": len(vector_keys), "documents": n_documents,
        "dangling": broken, "unindexed": unindexed, "field": field}
    warnings = []
    if source is not None:
        figures["already_in_source"] = len(kept)
        figures["source_orphans"] = len(before)
        if kept:
            warnings.append(f"{_orphans_word(len(kept))} already in the source before "
                            f"migration (kept, not failed): {_named(kept, field, max_listed)}")
    if new:
        summary = (f"{broken} of {len(vector_keys)} vector records point to no document in "
                   f"the document store; {unindexed} of {n_documents} documents are not "
                   "indexed")
        if source is not None:
            summary += (f", made by the migration ({len(kept)} more "
                        f"{'was' if len(kept) == 1 else 'were'} already in the source before "
                        "migration)" if kept else
                        ", made by the migration (none was in the source before it)")
    elif kept:
        summary = (f"the migration made no orphan: the target's {_orphans_word(len(kept))} "
                   f"{'was' if len(kept) == 1 else 'were'} already in the source before "
                   "migration")
    else:
        summary = (f"all {len(vector_keys)} vector records point to one of the {n_documents} "
                   "documents, and every document is indexed")
    return CheckResult(name=name, status=verdict(bool(new), bool(kept)), summary=summary,
                       figures=figures, offenders=_offenders(new, field, max_listed),
                       offending_total=len(new), warnings=warnings)


def _orphans_word(count: int) -> str:
    return f"{count} orphan{'' if count == 1 else 's'}"


def _detail(kind: str, ref: Any, field: str) -> str:
    if kind == UNREFERENCED:
        return f"no {field!r}: the vector names no document"
    if kind == DANGLING:
        return f"points to the document {ref!r}, which the document store does not hold"
    return "a document no vector record points to: search can never find it"


def _listed(found: dict[tuple[str, str], Any], max_listed: int) -> list[tuple[str, str]]:
    """At most ``max_listed`` orphans, both ways: the unindexed documents keep their share of
    the list when the vector records alone would fill it."""
    vectors = [k for k in found if k[0] != UNINDEXED]
    documents = [k for k in found if k[0] == UNINDEXED]
    room = max(max_listed - len(documents), max_listed // 2)
    shown = vectors[:room]
    return shown + documents[:max_listed - len(shown)]


def _offenders(found: dict[tuple[str, str], Any], field: str,
               max_listed: int) -> list[Offender]:
    return [Offender(key, _detail(kind, found[kind, key], field),
                     found[kind, key] if kind == DANGLING else None,
                     key if kind == UNINDEXED else None)
            for kind, key in _listed(found, max_listed)]


def _named(found: dict[tuple[str, str], Any], field: str, max_listed: int) -> str:
    """The orphans as one line: ``c3 -> 'd2' (dangling), c6 (no 'doc_id'), d4 (unindexed)``."""
    words = {DANGLING: "dangling", UNREFERENCED: f"no {field!r}", UNINDEXED: "not indexed"}
    listed = _listed(found, max_listed)
    text = ", ".join(f"{key} -> {found[kind, key]!r} ({words[kind]})" if kind == DANGLING
                     else f"{key} ({words[kind]})" for kind, key in listed)
    return text + (f", ... and {len(found) - len(listed)} more"
                   if len(found) > len(listed) else "")
