"""Structure rules: apiVersion and kind, metadata.name and namespace, labels and
annotations, and the same object defined twice."""

from __future__ import annotations

import re
from typing import Callable, Iterator

from prefect_gitops.engine.cluster.scope import RBAC_GROUP
from prefect_gitops.engine.objects import Manifest, json_path
from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.validation.context import Context, _effective_namespace, _problem
from prefect_gitops.engine.validation.json_values import _json_type, _missing_or_type
from prefect_gitops.engine.validation.names import (
    _dns_1035_label_error,
    _dns_label_error,
    _dns_subdomain_error,
    _label_value_error,
    _path_segment_error,
    _qualified_name_error,
)

_API_VERSION = re.compile(r"(?:(?P<group>[^/]+)/)?(?P<version>[^/]+)")
_ANNOTATIONS_MAX_BYTES = 256 * 1024


# Most kinds need a DNS subdomain as name; these need something else.
_NAME_RULES: dict[tuple[str, str], Callable[[str], str | None]] = {
    ("", "Namespace"): _dns_label_error,
    ("", "Service"): _dns_1035_label_error,
    (RBAC_GROUP, "Role"): _path_segment_error,
    (RBAC_GROUP, "RoleBinding"): _path_segment_error,
    (RBAC_GROUP, "ClusterRole"): _path_segment_error,
    (RBAC_GROUP, "ClusterRoleBinding"): _path_segment_error,
}


def structure_type_fields(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """apiVersion and kind: present, strings, well-formed."""
    api_version, kind = m.obj.get("apiVersion"), m.obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        yield _problem(m, "structure.api-version", f"apiVersion {_missing_or_type(api_version)}")
    elif not (match := _API_VERSION.fullmatch(api_version)) or (
        match["group"] is not None and _dns_subdomain_error(match["group"])
    ) or _dns_1035_label_error(match["version"]):
        yield _problem(m, "structure.api-version",
                       f"apiVersion {api_version!r} is not of the form version or group/version")
    if not isinstance(kind, str) or not kind:
        yield _problem(m, "structure.kind", f"kind {_missing_or_type(kind)}")
    elif not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", kind):
        yield _problem(m, "structure.kind", f"kind {kind!r} must be a CamelCase word")


def structure_name(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """metadata is a mapping and metadata.name is valid for the kind."""
    meta = m.obj.get("metadata")
    if not isinstance(meta, dict):
        yield _problem(m, "structure.metadata", f"metadata {_missing_or_type(meta, 'mapping')}")
        return
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        yield _problem(m, "structure.name", f"metadata.name {_missing_or_type(name)}")
    elif error := _NAME_RULES.get((m.group, m.kind), _dns_subdomain_error)(name):
        yield _problem(m, "structure.name", f"metadata.name {name!r} {error}")


def structure_namespace(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """metadata.namespace, when given, is a DNS label."""
    namespace = m.metadata.get("namespace")
    if namespace is None:
        return
    if not isinstance(namespace, str):
        yield _problem(m, "structure.namespace", f"metadata.namespace must be a string, got {_json_type(namespace)}")
    elif error := _dns_label_error(namespace):
        yield _problem(m, "structure.namespace", f"metadata.namespace {namespace!r} {error}")


def structure_labels(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """Label keys are qualified names; values are short strings (not numbers or booleans)."""
    labels = m.metadata.get("labels")
    if labels is None:
        return
    if not isinstance(labels, dict):
        yield _problem(m, "structure.labels", f"metadata.labels must be a mapping, got {_json_type(labels)}")
        return
    for key, value in labels.items():
        path = json_path(["metadata", "labels", key])
        if error := _qualified_name_error(str(key)):
            yield _problem(m, "structure.labels", f"{path}: key {key!r} {error}")
        if not isinstance(value, str):
            yield _problem(m, "structure.labels",
                           f"{path}: value must be a string, got {_json_type(value)} {value!r} (quote it)")
        elif error := _label_value_error(value):
            yield _problem(m, "structure.labels", f"{path}: value {value!r} {error}")


def structure_annotations(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """Annotation keys are qualified names; values are strings, 256 KiB in all."""
    annotations = m.metadata.get("annotations")
    if annotations is None:
        return
    if not isinstance(annotations, dict):
        yield _problem(m, "structure.annotations",
                       f"metadata.annotations must be a mapping, got {_json_type(annotations)}")
        return
    size = 0
    for key, value in annotations.items():
        path = json_path(["metadata", "annotations", key])
        # The API server checks annotation keys lower-cased.
        if error := _qualified_name_error(str(key).lower()):
            yield _problem(m, "structure.annotations", f"{path}: key {key!r} {error}")
        if not isinstance(value, str):
            yield _problem(m, "structure.annotations",
                           f"{path}: value must be a string, got {_json_type(value)} {value!r} (quote it)")
        else:
            size += len(str(key).encode()) + len(value.encode())
    if size > _ANNOTATIONS_MAX_BYTES:
        yield _problem(m, "structure.annotations",
                       f"metadata.annotations total {size} bytes, more than the limit of {_ANNOTATIONS_MAX_BYTES}")


def structure_duplicates(manifests: list[Manifest], ctx: Context) -> Iterator[Problem]:
    """The same object twice; objects without a namespace count as in the default one."""
    first_seen: dict[tuple[str, str, str, str], Manifest] = {}
    for m in manifests:
        if not isinstance(m.obj, dict) or not m.kind or not m.name:
            continue
        key = (m.group, m.kind, _effective_namespace(m, ctx), m.name)
        if (first := first_seen.setdefault(key, m)) is not m:
            yield _problem(m, "structure.duplicate",
                           f"defined more than once: at {m.source} and at {first.source}")
