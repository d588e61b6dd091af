"""Cross-store references: in one system, the vector index and the document store agree.

Every vector record names the document it was made from in a field (``--vmtest-reference-field``,
default ``doc_id``): that document must exist in the document store (``--vmtest-documents``),
and every document must be indexed by at least one vector record. Orphans both ways are
listed: a vector pointing to a deleted document answers a search with nothing to show, and a
document no vector points to can never be found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vmtest.checks.result import CheckResult, Offender, not_applicable, verdict


def check_references(vector_keys: Sequence[str], references: Sequence[Any],
                     document_keys: Iterable[str], *, field: str, max_listed: int = 20
                     ) -> CheckResult:
    """``references[i]`` is the value of ``field`` on the vector record ``vector_keys[i]``
    (None: it has none); ``document_keys`` the document store's record keys. References
    compare as text, as record keys do."""
    name = "references"
    documents = set(map(str, document_keys))
    dangling: list[Offender] = []
    unreferenced = 0
    referenced: set[str] = set()
    for key, ref in zip(vector_keys, references, strict=True):
        if ref is None:
            unreferenced += 1
            if len(dangling) < max_listed:
                dangling.append(Offender(key, f"no {field!r}: the vector names no document",
                                         None, None))
            continue
        text = str(ref)
        referenced.add(text)
        if text not in documents and len(dangling) < max_listed:
            dangling.append(Offender(key, f"points to the document {text!r}, which the "
                                     "document store does not hold", text, None))
    missing_refs = sum(1 for ref in references if ref is not None
                       and str(ref) not in documents)
    if not vector_keys:
        return not_applicable(name, "the vector store holds no records")
    if unreferenced == len(vector_keys):
        return not_applicable(name, f"no vector record holds a {field!r} field "
                              "(--vmtest-reference-field names it)")
    unindexed = sorted(documents - referenced)
    offenders = dangling + [Offender(d, "a document no vector record points to: search "
                                     "can never find it", None, d)
                            for d in unindexed[:max(0, max_listed - len(dangling))]]
    broken = missing_refs + unreferenced
    total = broken + len(unindexed)
    summary = (f"{broken} of {len(vector_keys)} vector records point to no document in the "
               f"document store; {len(unindexed)} of {len(documents)} documents are not "
               "indexed" if total else
               f"all {len(vector_keys)} vector records point to one of the {len(documents)} "
               "documents, and every document is indexed")
    return CheckResult(name=name, status=verdict(bool(total)), summary=summary,
                       figures={"vector_records": len(vector_keys), "documents": len(documents),
                                "dangling": broken, "unindexed": len(unindexed),
                                "field": field},
                       offenders=offenders, offending_total=total)
