"""`healthChecks` in gitops.yaml: CEL health rules for custom resources, per app
and for the whole repository (an app's rule for the same group and kind wins).
How they judge an object: engine/health/cel_rules.py.

    healthChecks:
      - apiVersion: example.com/v1
        kind: Widget
        inProgress: "has(status.observedSize) && status.observedSize != spec.size"   # optional
        failed: "status.conditions.exists(c, c.type == 'Ready' && c.status == 'False')"  # optional
        current: "status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')"

Every problem is rule `app.health-check` (engine/spec/appspec.py), at the line of the
field at fault.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from prefect_gitops.engine.health.cel_rules import CelExpressionError, check_expression
from prefect_gitops.engine.health.rules import KIND_RULES
from prefect_gitops.engine.objects import group_of


class HealthCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)

    api_version: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    # Tried in this order (Flux's); the first true one decides, none true is InProgress.
    in_progress: str | None = None
    failed: str | None = None
    current: str

    @field_validator("in_progress", "failed", "current")
    @classmethod
    def _compiles(cls, expression: str | None) -> str | None:
        if expression is None:
            return None
        if not expression.strip():
            raise ValueError("an empty expression (leave the field out instead)")
        try:
            check_expression(expression)
        except CelExpressionError as error:
            raise ValueError(f"CEL {error}") from None
        return expression

    @model_validator(mode="after")
    def _no_builtin_rule(self) -> HealthCheck:
        if (group_of(self.api_version), self.kind) in KIND_RULES:
            raise ValueError(f"{self.kind} ({self.api_version}) has a built-in health rule; "
                             "healthChecks are for kinds without one (custom resources)")
        return self

    @property
    def group_kind(self) -> tuple[str, str]:
        return group_of(self.api_version), self.kind


def _one_per_kind(checks: list[HealthCheck]) -> list[HealthCheck]:
    """Two rules for one kind in one list would leave which one judges to the order."""
    seen: dict[tuple[str, str], int] = {}
    for index, check in enumerate(checks):
        if check.group_kind in seen:
            raise ValueError(f"entry {index + 1} ({check.kind} of {check.api_version}) repeats entry "
                             f"{seen[check.group_kind] + 1}: one rule per group and kind")
        seen[check.group_kind] = index
    return checks


# The type of the field, at the top level of gitops.yaml and under an app.
HealthChecks = Annotated[list[HealthCheck], AfterValidator(_one_per_kind)]


def in_effect(repository: list[HealthCheck], app: list[HealthCheck]) -> list[HealthCheck]:
    """The repository's rules, each replaced by the app's own for the same group and kind."""
    own = {c.group_kind for c in app}
    return [c for c in repository if c.group_kind not in own] + list(app)
