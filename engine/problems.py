"""Problems found in the desired state: each names where (file:line), what
(the object) and which rule, so a person can fix it without searching."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from prefect_gitops.engine.objects import Source


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    source: Source
    object_ref: str  # e.g. "Deployment/web/api"; "" when the problem is not about one object
    rule: str  # a stable identifier, e.g. "yaml.duplicate-key", "policy.no-privileged"
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        about = f" {self.object_ref}:" if self.object_ref else ""
        return f"{self.source}:{about} {self.message} [{self.rule}]"


class ProblemsFound(Exception):
    """Raised with every problem found at once; nothing was written anywhere."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity is Severity.ERROR]
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{len(errors)} error(s) in the desired state:\n{lines}")

    def one_line(self) -> str:
        """Every problem on one line, for a result's message."""
        return "; ".join(str(p) for p in self.problems)
