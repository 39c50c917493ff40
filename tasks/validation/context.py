"""What every validation rule shares: the run's Context, the Rule signature, which
kinds are cluster-scoped (and so where an object lands), the CRDs in a set, and
how a rule names a Problem."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import jsonschema

from tasks.objects import Manifest
from tasks.policy_settings import PolicySettings
from tasks.problems import Problem, Severity

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


_RBAC = "rbac.authorization.k8s.io"
# Kinds known to be cluster-scoped; other kinds (and CRs of unknown scope) land in
# the app's default namespace when they name none.
_CLUSTER_SCOPED = {
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("", "ComponentStatus"),
    (_RBAC, "ClusterRole"), (_RBAC, "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
    ("storage.k8s.io", "StorageClass"), ("storage.k8s.io", "CSIDriver"), ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"), ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"), ("node.k8s.io", "RuntimeClass"),
    ("networking.k8s.io", "IngressClass"), ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("certificates.k8s.io", "CertificateSigningRequest"), ("certificates.k8s.io", "ClusterTrustBundle"),
    ("resource.k8s.io", "DeviceClass"), ("resource.k8s.io", "ResourceSlice"),
    ("storagemigration.k8s.io", "StorageVersionMigration"),
}


def _effective_namespace(m: Manifest, ctx: Context) -> str:
    if _is_cluster_scoped(m, ctx):
        return ""
    return m.namespace or ctx.default_namespace


def _is_cluster_scoped(m: Manifest, ctx: Context) -> bool:
    if (m.group, m.kind) in _CLUSTER_SCOPED:
        return True
    crd = ctx.crds.get((m.group, m.kind))
    return crd is not None and (crd.obj.get("spec") or {}).get("scope") == "Cluster"


def _crds_in(manifests: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    crds = {}
    for m in manifests:
        if isinstance(m.obj, dict) and (m.group, m.kind) == ("apiextensions.k8s.io", "CustomResourceDefinition"):
            spec = m.obj.get("spec")
            if isinstance(spec, dict) and isinstance(spec.get("names"), dict):
                crds[(str(spec.get("group") or ""), str(spec["names"].get("kind") or ""))] = m
    return crds


def _problem(m: Manifest, rule: str, message: str, severity: Severity = ERROR) -> Problem:
    return Problem(m.source, m.ref, rule, message, severity)
