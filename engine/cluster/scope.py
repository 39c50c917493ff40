"""Which kinds live outside namespaces: the built-in ones, and custom kinds
whose CRD (in the same set of manifests) says `scope: Cluster`."""

from __future__ import annotations

from prefect_gitops.engine.objects import Manifest

RBAC_GROUP = "rbac.authorization.k8s.io"
# Kinds known to be cluster-scoped; other kinds (and CRs of unknown scope) land in
# the app's default namespace when they name none.
CLUSTER_SCOPED = frozenset({
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("", "ComponentStatus"),
    (RBAC_GROUP, "ClusterRole"), (RBAC_GROUP, "ClusterRoleBinding"),
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
})


def crds_by_kind(manifests: list[Manifest]) -> dict[tuple[str, str], Manifest]:
    """The CustomResourceDefinitions among the manifests, by the (group, kind) they define."""
    crds = {}
    for m in manifests:
        if not isinstance(m.obj, dict):  # validation reports it; it defines nothing
            continue
        spec = m.obj.get("spec") if (m.group, m.kind) == ("apiextensions.k8s.io", "CustomResourceDefinition") else None
        if isinstance(spec, dict) and isinstance(spec.get("names"), dict):
            crds[(str(spec.get("group") or ""), str(spec["names"].get("kind") or ""))] = m
    return crds


def cluster_scoped_custom_kinds(manifests: list[Manifest]) -> set[tuple[str, str]]:
    """(group, kind) of every CRD among the manifests whose scope is Cluster."""
    return {kind for kind, crd in crds_by_kind(manifests).items() if crd.obj["spec"].get("scope") == "Cluster"}
