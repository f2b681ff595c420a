"""Check results and Nagios statuses (OK 0, WARN 1, CRIT 2, UNKNOWN 3)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Status(IntEnum):
    OK = 0
    WARN = 1
    CRIT = 2
    UNKNOWN = 3


# How bad each status is when results are combined: a check that could not run (UNKNOWN)
# is worse than OK but never hides a WARN or a CRIT.
SEVERITY: Mapping[Status, int] = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARN: 2,
                                  Status.CRIT: 3}


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status (OK for none); its value is the process exit code."""
    return max(statuses, key=SEVERITY.__getitem__, default=Status.OK)


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.name, "summary": self.summary,
                "details": dict(self.details), "duration_s": round(self.duration_s, 6)}


def ok(name: str, summary: str, **details: Any) -> CheckResult:
    return CheckResult(name, Status.OK, f"{name}: {summary}", details)


def warn(name: str, summary: str, **details: Any) -> CheckResult:
    return CheckResult(name, Status.WARN, f"{name}: {summary}", details)


def crit(name: str, summary: str, **details: Any) -> CheckResult:
    return CheckResult(name, Status.CRIT, f"{name}: {summary}", details)


def unknown(name: str, summary: str, **details: Any) -> CheckResult:
    return CheckResult(name, Status.UNKNOWN, f"{name}: {summary}", details)


SUMMARY_PROBLEMS = 8  # a summary names this many problems; the details keep them all


def from_problems(name: str, problems: list[str], good: str, status: Status = Status.CRIT,
                  **details: Any) -> CheckResult:
    """OK with ``good`` when there are no problems, else ``status`` naming the problems
    (the first few, then how many more)."""
    if not problems:
        return ok(name, good, **details)
    shown = problems[:SUMMARY_PROBLEMS]
    if len(problems) > SUMMARY_PROBLEMS:
        shown.append(f"... {len(problems) - SUMMARY_PROBLEMS} more")
    return CheckResult(name, status, f"{name}: {'; '.join(shown)}", details)
