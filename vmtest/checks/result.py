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
        )


def verdict(failed: bool, warned: bool = False) -> str:
    return FAILED if failed else (WARNING if warned else PASSED)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
