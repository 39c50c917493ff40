"""Policy rules: what an app may contain and where it may write, and how its pods
may run (privileges, host access, pinned images from allowed registries, limits)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Iterator

from prefect_gitops.engine.cluster.scope import RBAC_GROUP
from prefect_gitops.engine.objects import Manifest, json_path
from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.spec.policy_settings import Enforcement
from prefect_gitops.engine.validation.context import ERROR, WARNING, Context, _is_cluster_scoped, _problem
from prefect_gitops.engine.validation.json_values import _dicts

# Where each workload kind keeps its pod spec.
_POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec",),
    ("", "PodTemplate"): ("template", "spec"),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
}
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
_LIMITED_RESOURCES = ("cpu", "memory")
_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def _allowed_namespace(namespace: str, ctx: Context) -> bool:
    patterns = [ctx.default_namespace, *ctx.policy.allowed_namespaces]
    return any(fnmatch.fnmatchcase(namespace, p) for p in patterns)


def policy_namespace(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """Objects go only to the app's namespaces; a Namespace object is one of them."""
    if (m.group, m.kind) == ("", "Namespace"):
        namespace = m.name
    elif _is_cluster_scoped(m, ctx):
        return
    else:
        namespace = m.namespace
    if namespace and not _allowed_namespace(namespace, ctx):
        allowed = ", ".join([ctx.default_namespace, *ctx.policy.allowed_namespaces])
        yield _problem(m, "policy.namespace-not-allowed",
                       f"app {ctx.app_name!r} may not write to namespace {namespace!r} (allowed: {allowed})")


def policy_kind(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """Only the listed kinds, by name ("Deployment") or with group ("Widget.example.com")."""
    allowed = ctx.policy.allowed_kinds
    if not allowed or not m.kind:
        return
    if m.kind not in allowed and f"{m.kind}.{m.group}" not in allowed:
        yield _problem(m, "policy.kind-not-allowed",
                       f"app {ctx.app_name!r} may not contain kind {m.kind} (allowed: {', '.join(allowed)})")


def policy_cluster_rbac(m: Manifest, ctx: Context) -> Iterator[Problem]:
    if m.group == RBAC_GROUP and m.kind in ("ClusterRole", "ClusterRoleBinding") and not ctx.policy.allow_cluster_rbac:
        yield _problem(m, "policy.cluster-rbac",
                       f"app {ctx.app_name!r} may not contain {m.kind} (set allowClusterRBAC to allow it)")


def policy_privileged(m: Manifest, ctx: Context) -> Iterator[Problem]:
    if ctx.policy.allow_privileged:
        return
    for path, container in _containers(m):
        security = container.get("securityContext")
        if isinstance(security, dict) and security.get("privileged") is True:
            yield _problem(m, "policy.privileged",
                           f"{json_path(path)}.securityContext.privileged: container "
                           f"{container.get('name')!r} may not be privileged")


def policy_host_path(m: Manifest, ctx: Context) -> Iterator[Problem]:
    if ctx.policy.allow_host_path:
        return
    if pod := _pod_spec(m):
        path, spec = pod
        for i, volume in enumerate(_dicts(spec.get("volumes"))):
            if "hostPath" in volume:
                yield _problem(m, "policy.host-path",
                               f"{json_path(path + ['volumes', i])}.hostPath: volume "
                               f"{volume.get('name')!r} may not mount a path of the node")
    if (m.group, m.kind) == ("", "PersistentVolume") and "hostPath" in (m.obj.get("spec") or {}):
        yield _problem(m, "policy.host-path", "spec.hostPath: a PersistentVolume may not use a path of the node")


def policy_host_namespaces(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """hostNetwork, and hostPID and hostIPC with it: all share the node's namespaces."""
    if ctx.policy.allow_host_network or not (pod := _pod_spec(m)):
        return
    path, spec = pod
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key) is True:
            yield _problem(m, "policy.host-network",
                           f"{json_path(path + [key])}: pods may not share the node's namespaces")


def policy_image_tag(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """A pinned image: a tag other than latest, or a digest."""
    if ctx.policy.allow_latest_tag:
        return
    for path, container in _containers(m):
        image = container.get("image")
        if not isinstance(image, str) or not image:
            continue
        ref = parse_image(image)
        if not ref.digest and ref.tag in ("", "latest"):
            why = "has no tag" if not ref.tag else "uses the tag latest"
            yield _problem(m, "policy.image-tag",
                           f"{json_path(path)}.image: {image!r} {why}; pin a version tag or a digest")


def policy_image_registry(m: Manifest, ctx: Context) -> Iterator[Problem]:
    allowed = ctx.policy.allowed_registries
    if not allowed:
        return
    for path, container in _containers(m):
        image = container.get("image")
        if isinstance(image, str) and image and not parse_image(image).allowed_by(allowed):
            yield _problem(m, "policy.image-registry",
                           f"{json_path(path)}.image: {image!r} is from registry {parse_image(image).registry!r} "
                           f"(allowed: {', '.join(allowed)})")


def policy_resource_limits(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """cpu and memory limits on every container, or on the pod as a whole."""
    enforcement = ctx.policy.resource_limits
    if enforcement is Enforcement.OFF or not (pod := _pod_spec(m)):
        return
    severity = ERROR if enforcement is Enforcement.REQUIRE else WARNING
    pod_limits = _limits(pod[1])
    for path, container in _containers(m):
        if path[-2] == "ephemeralContainers":  # they may not have resources
            continue
        limits = pod_limits | _limits(container)
        if missing := [r for r in _LIMITED_RESOURCES if r not in limits]:
            yield _problem(m, "policy.resource-limits",
                           f"{json_path(path)}.resources.limits: container {container.get('name')!r} "
                           f"has no {' or '.join(missing)} limit", severity)


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str
    digest: str

    def allowed_by(self, registries: list[str]) -> bool:
        """Allowed entries are registries ("docker.io") or repository prefixes ("ghcr.io/acme")."""
        full = f"{self.registry}/{self.repository}"
        for entry in registries:
            entry = _normalize_registry(entry.rstrip("/"))
            if self.registry == entry or full.startswith(entry + "/"):
                return True
        return False


def parse_image(image: str) -> ImageRef:
    """Split an image reference; short Docker Hub names ("nginx:1.27") are docker.io/library/nginx."""
    rest, _, digest = image.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = _normalize_registry(first), remainder
    else:
        registry, path = _DOCKER_HUB, rest
    repository, _, tag = path.partition(":")
    if registry == _DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return ImageRef(registry, repository, tag, digest)


def _normalize_registry(registry: str) -> str:
    return _DOCKER_HUB if registry in _DOCKER_HUB_ALIASES else registry


def _pod_spec(m: Manifest) -> tuple[list, dict] | None:
    """The path to the pod spec of a workload and the spec itself."""
    keys = _POD_SPEC_PATHS.get((m.group, m.kind))
    if keys is None:
        return None
    node: Any = m.obj
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return (list(keys), node) if isinstance(node, dict) else None


def _containers(m: Manifest) -> Iterator[tuple[list, dict]]:
    """Every container of a workload's pod spec, with its path."""
    if pod := _pod_spec(m):
        path, spec = pod
        for list_name in _CONTAINER_LISTS:
            for i, container in enumerate(_dicts(spec.get(list_name))):
                yield path + [list_name, i], container


def _limits(holder: dict) -> set[str]:
    resources = holder.get("resources")
    limits = resources.get("limits") if isinstance(resources, dict) else None
    return set(limits) if isinstance(limits, dict) else set()
