"""The outcome of one check: a verdict, its figures and thresholds, and the offending records.

A :class:`CheckResult` is plain data (JSON-ready through :meth:`CheckResult.to_dict`), so the
same object feeds the assertion message, the JUnit properties and the JSON and HTML reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How many offending records a message lists (the total is always given).
MAX_LISTED = 20

PASSED, FAILED, WARNING = "passed", "failed", "warning"
#: A check that cannot run on this pair (nothing matched, dimensions differ, no documents on
#: either side): never a pass; the verdict fails through the checks that can say why.
NOT_APPLICABLE = "not_applicable"

#: The three verdicts a run gives, and which built-in check decides which. A check a team
#: writes itself counts towards data fidelity unless its result names another category.
FIDELITY, SEARCH, PERFORMANCE = "fidelity", "search", "performance"
CATEGORIES = (FIDELITY, SEARCH, PERFORMANCE)
CATEGORY_OF = {
    "inventory": FIDELITY, "ids": FIDELITY, "vectors": FIDELITY, "metadata": FIDELITY,
    "documents": FIDELITY, "schema": FIDELITY, "orphans": FIDELITY,
    "recall": SEARCH, "filtered_recall": SEARCH, "drift": SEARCH, "search_quality": SEARCH,
    "shadow": SEARCH,
    "latency": PERFORMANCE,
}


def category_of(name: str) -> str:
    return CATEGORY_OF.get(name, FIDELITY)


@dataclass
class Offender:
    """One record (or query) that breaks a check, with what each side holds."""

    id: str
    detail: str
    source: Any = None
    target: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "detail": self.detail, "source": self.source, "target": self.target}


@dataclass
class CheckResult:
    name: str
    status: str
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)
    offenders: list[Offender] = field(default_factory=list)
    offending_total: int = 0
    warnings: list[str] = field(default_factory=list)
    #: Structured evidence for the reports (plot data, inventories, worst queries); not printed.
    evidence: dict[str, Any] = field(default_factory=dict)
    #: fidelity, search or performance: the verdict this check takes part in.
    category: str = ""

    def __post_init__(self) -> None:
        if not self.category:
            self.category = category_of(self.name)

    @property
    def passed(self) -> bool:
        return self.status != FAILED

    def explain(self) -> str:
        """The message a person reads in a CI log when the check fails."""
        lines = [f"{self.name}: {self.summary}"]
        if self.thresholds:
            lines.append(
                "  thresholds: " + ", ".join(f"{k}={_fmt(v)}" for k, v in self.thresholds.items())
            )
        if self.offending_total:
            shown = len(self.offenders)
            lines.append(f"  offending: {self.offending_total} (first {shown} listed)")
            for off in self.offenders:
                lines.append(f"  - {off.id}: {off.detail}")
            if self.offending_total > shown:
                lines.append(f"  ... and {self.offending_total - shown} more")
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "figures": self.figures,
            "thresholds": self.thresholds,
            "offending_total": self.offending_total,
            "offenders": [o.to_dict() for o in self.offenders],
            "warnings": self.warnings,
            "evidence": self.evidence,
            "category": self.category,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        return cls(
            name=data["name"],
            status=data["status"],
            summary=data["summary"],
            figures=dict(data.get("figures") or {}),
            thresholds=dict(data.get("thresholds") or {}),
            offenders=[Offender(**o) for o in data.get("offenders") or []],
            offending_total=int(data.get("offending_total") or 0),
            warnings=list(data.get("warnings") or []),
            evidence=dict(data.get("evidence") or {}),
            category=str(data.get("category") or ""),
        )


def verdict(failed: bool, warned: bool = False) -> str:
    return FAILED if failed else (WARNING if warned else PASSED)


def not_applicable(name: str, reason: str, **figures: Any) -> CheckResult:
    """A check that has nothing to compare on this pair, with the reason (never a pass)."""
    return CheckResult(name=name, status=NOT_APPLICABLE, summary=f"not applicable: {reason}",
                       figures=dict(figures))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
