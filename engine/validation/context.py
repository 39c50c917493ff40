"""What every validation rule shares: the run's Context, the Rule signature, which
kinds are cluster-scoped (and so where an object lands), the CRDs in a set, and
how a rule names a Problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import jsonschema

from prefect_gitops.engine.cluster.scope import CLUSTER_SCOPED
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.problems import Problem, Severity
from prefect_gitops.engine.spec.policy_settings import PolicySettings

ERROR, WARNING = Severity.ERROR, Severity.WARNING


@dataclass
class Context:
    """What rules need beyond the object itself, built once per validate() call."""

    app_name: str
    default_namespace: str
    policy: PolicySettings
    schema_dir: str
    # Kinds defined by CustomResourceDefinitions in the same set: (group, kind) -> CRD.
    crds: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    crd_validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = field(default_factory=dict)


Rule = Callable[[Manifest, Context], Iterable[Problem]]


def _effective_namespace(m: Manifest, ctx: Context) -> str:
    if _is_cluster_scoped(m, ctx):
        return ""
    return m.namespace or ctx.default_namespace


def _is_cluster_scoped(m: Manifest, ctx: Context) -> bool:
    if (m.group, m.kind) in CLUSTER_SCOPED:
        return True
    crd = ctx.crds.get((m.group, m.kind))
    return crd is not None and (crd.obj.get("spec") or {}).get("scope") == "Cluster"


def _problem(m: Manifest, rule: str, message: str, severity: Severity = ERROR) -> Problem:
    return Problem(m.source, m.ref, rule, message, severity)
