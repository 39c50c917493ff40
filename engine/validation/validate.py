"""Validation of rendered objects, every problem at once: structure, schema and
policy offline, then a server-side dry-run against the cluster.

Each rule is one function taking a Manifest (and the run's context) and yielding
Problems that name file:line, the object and a stable rule id. Nothing here writes
anything: the dry-run sends every object with dryRun=All.

This is the stage the flow uses; the rules live in engine.validation: names,
structure, schema, policy and dry_run, sharing engine.validation.context.
"""

from __future__ import annotations

from prefect_gitops.engine.changes.sync_options import object_sync_options
from prefect_gitops.engine.cluster.kube import FIELD_MANAGER, KubeClient
from prefect_gitops.engine.cluster.scope import crds_by_kind
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.spec.policy_settings import PolicySettings
from prefect_gitops.engine.validation.context import ERROR, WARNING, Context, Rule
from prefect_gitops.engine.validation.dry_run import DRY_RUN_WORKERS, dry_run
from prefect_gitops.engine.validation.hooks import hook_namespaces, object_hook
from prefect_gitops.engine.validation.json_values import _json_type
from prefect_gitops.engine.validation.policy import (
    ImageRef,
    parse_image,
    policy_cluster_rbac,
    policy_host_namespaces,
    policy_host_path,
    policy_image_registry,
    policy_image_tag,
    policy_kind,
    policy_namespace,
    policy_privileged,
    policy_resource_limits,
)
from prefect_gitops.engine.validation.schema import (_crd_validators, _schema_dir, builtin_validator, remember_valid,
                                                     schema_object)
from prefect_gitops.engine.validation.structure import (
    structure_annotations,
    structure_duplicates,
    structure_labels,
    structure_name,
    structure_namespace,
    structure_type_fields,
)

# Imported from here by the flow, tests and bench; the rules are in engine.validation.
__all__ = [
    "DRY_RUN_WORKERS", "ERROR", "FIELD_MANAGER", "OBJECT_RULES", "WARNING", "Context", "ImageRef", "Rule",
    "builtin_validator", "check_desired_state", "dry_run", "parse_image", "validate",
]


OBJECT_RULES: list[Rule] = [
    structure_type_fields, structure_name, structure_namespace, structure_labels, structure_annotations,
    schema_object, object_sync_options, object_hook,
    policy_namespace, policy_kind, policy_cluster_rbac, policy_privileged, policy_host_path,
    policy_host_namespaces, policy_image_tag, policy_image_registry, policy_resource_limits,
]


def validate(
    manifests: list[Manifest],
    app_name: str,
    default_namespace: str,
    policy: PolicySettings,
    kubernetes_version: str = "1.37",
) -> list[Problem]:
    """Every structure, schema and policy problem of an app's objects, offline."""
    schema_dir, version_problem = _schema_dir(kubernetes_version)
    ctx = Context(app_name, default_namespace, policy, schema_dir)
    ctx.crds = crds_by_kind(manifests)
    ctx.crd_validators = _crd_validators(ctx.crds)
    problems = [version_problem] if version_problem else []
    for manifest in manifests:
        if not isinstance(manifest.obj, dict):
            problems.append(Problem(manifest.source, "", "structure.not-an-object",
                                    f"expected a mapping (an object), got {_json_type(manifest.obj)}"))
            continue
        for rule in OBJECT_RULES:
            problems.extend(rule(manifest, ctx))
    problems.extend(structure_duplicates(manifests, ctx))
    problems.extend(hook_namespaces(manifests, ctx))
    remember_valid()
    return problems


def check_desired_state(
    manifests: list[Manifest],
    app_name: str,
    default_namespace: str,
    policy: PolicySettings,
    kube: KubeClient | None = None,
    kubernetes_version: str | None = None,
    provided: list[Manifest] = (),
) -> list[Problem]:
    """validate() offline then, given a cluster (`kube`; None: offline), dry_run()
    there: every problem at once. The schemas are those of the cluster's version
    unless one is given. `provided` are the objects of the apps this one depends
    on (their CRDs and Namespaces may not exist yet)."""
    if kube is not None and kubernetes_version is None:
        kubernetes_version = kube.server_version()
    problems = validate(manifests, app_name, default_namespace, policy, kubernetes_version or "1.37")
    if kube is not None:
        # Objects with structure errors are not sent: they are reported already.
        flawed = {(p.source, p.object_ref) for p in problems
                  if p.rule.startswith("structure.") and p.rule != "structure.duplicate"}
        sendable = [m for m in manifests if isinstance(m.obj, dict) and (m.source, m.ref) not in flawed]
        problems += dry_run(sendable, kube, default_namespace=default_namespace, provided=provided)
    return problems
