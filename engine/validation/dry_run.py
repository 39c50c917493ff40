"""The server-side dry-run: every object sent as a server-side apply with
dryRun=All, and what the server refuses reported as Problems."""

from __future__ import annotations

import json
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, Iterator

import kubernetes
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError, ResourceNotUniqueError

from engine.objects import Manifest
from engine.problems import Problem
from engine.scope import crds_by_kind
from engine.secrets import scrub
from engine.validation.context import WARNING, _problem

FIELD_MANAGER = "prefect-gitops"
DRY_RUN_WORKERS = 8


def dry_run(
    manifests: list[Manifest],
    api_client: kubernetes.client.ApiClient,
    field_manager: str = FIELD_MANAGER,
    default_namespace: str = "default",
    max_workers: int = DRY_RUN_WORKERS,
    provided: list[Manifest] = (),
) -> list[Problem]:
    """Send every object as a server-side apply with dryRun=All and collect what the
    server refuses: invalid values, immutable fields, admission denials, unknown kinds.
    Objects that need a CRD or Namespace that is not applied yet, from the same set
    or from `provided` (the apps this one depends on), are reported as skipped."""
    sendable = [m for m in manifests if isinstance(m.obj, dict) and m.api_version and m.kind and m.name]
    available = [*manifests, *provided]
    crds = crds_by_kind(available)
    namespaces = {m.name: m for m in available
                  if isinstance(m.obj, dict) and (m.group, m.kind) == ("", "Namespace")}
    # A private discovery cache: fresh for every run (CRDs come and go) and not shared.
    with tempfile.TemporaryDirectory(prefix="gitops-discovery-") as cache_dir:
        client = DynamicClient(api_client, cache_file=os.path.join(cache_dir, "discovery.json"))
        # Discovery is not thread-safe: resolve every kind first, then send concurrently.
        kinds = {(m.api_version, m.kind) for m in sendable}
        resolved = {kind: _resolve(client, *kind) for kind in sorted(kinds)}
        resources = [resolved[(m.api_version, m.kind)] for m in sendable]

        def check(m: Manifest, resource: Any) -> list[Problem]:
            if resource is None:
                return [_unknown_kind(m, crds)]
            return _dry_run_one(client, m, resource, field_manager, default_namespace, namespaces)

        with ThreadPoolExecutor(max_workers=max_workers) as pool:
            results = list(pool.map(check, sendable, resources))
    # In the order of the manifests, whatever order the answers came in.
    return [problem for result in results for problem in result]


def _resolve(client: DynamicClient, api_version: str, kind: str) -> Any | None:
    try:
        return client.resources.get(api_version=api_version, kind=kind)
    except (ResourceNotFoundError, ResourceNotUniqueError):
        return None


def _unknown_kind(m: Manifest, crds: dict[tuple[str, str], Manifest]) -> Problem:
    crd = crds.get((m.group, m.kind))
    if crd is not None:
        return _problem(m, "dryrun.skipped",
                        f"not dry-run: the cluster does not serve {m.api_version} {m.kind} until its "
                        f"CustomResourceDefinition {crd.name} (at {crd.source}) is applied", WARNING)
    return _problem(m, "dryrun.unknown-kind",
                    f"the cluster does not serve {m.api_version} {m.kind}: no CustomResourceDefinition "
                    "for it is installed, in this set, or in an app this one depends on")


def _dry_run_one(client: DynamicClient, m: Manifest, resource: Any, field_manager: str,
                 default_namespace: str, namespaces: dict[str, Manifest]) -> list[Problem]:
    body = dict(m.obj)
    namespace = None
    if resource.namespaced:
        namespace = m.namespace or default_namespace
        body["metadata"] = {**m.metadata, "namespace": namespace}
    try:
        client.server_side_apply(
            resource, body=body, name=m.name, namespace=namespace,
            field_manager=field_manager, force_conflicts=True, dry_run="All",
            # Unknown or duplicate fields are errors, as with kubectl; never silently dropped.
            query_params=[("fieldValidation", "Strict")],
        )
    except DynamicApiError as error:
        status = _status(error)
        details = status.get("details") or {}
        if error.status == 404 and details.get("kind") == "namespaces" and details.get("name") in namespaces:
            source = namespaces[details["name"]].source
            return [_problem(m, "dryrun.skipped",
                             f"not dry-run: namespace {details['name']!r} does not exist until it is applied "
                             f"(from {source})", WARNING)]
        # The server may quote the values it refuses: never a Secret's.
        return [replace(p, message=scrub(p.message, [m.obj])) for p in _status_problems(m, error.status, status)]
    return []


def _status(error: DynamicApiError) -> dict:
    """The Status object the server answered with (or a stand-in for a non-JSON body)."""
    body = error.body.decode() if isinstance(error.body, bytes) else (error.body or "")
    try:
        status = json.loads(body)
    except ValueError:
        status = None
    if not isinstance(status, dict):
        status = {"message": body.strip() or f"{error.status} {error.reason}"}
    return status


_TYPED_PATCH_ERROR = re.compile(r"failed to create typed patch object \([^)]*\): (?P<detail>.*)", re.DOTALL)


def _status_problems(m: Manifest, code: int, status: dict) -> Iterator[Problem]:
    """One problem per cause the server gives, or one for the whole answer."""
    message = str(status.get("message") or "")
    causes = [c for c in (status.get("details") or {}).get("causes") or [] if isinstance(c, dict)]
    if typed := _TYPED_PATCH_ERROR.match(message):
        # Server-side apply answers a field the schema lacks (or of the wrong type) with a 500.
        detail = typed["detail"].lstrip(".")
        rule = "dryrun.unknown-field" if "field not declared in schema" in detail else "dryrun.invalid"
        yield _problem(m, rule, detail)
        return
    if not causes:
        yield _problem(m, _status_rule(code, message), message)
        return
    for cause in causes:
        field_path = str(cause.get("field") or "")
        text = _shorten_value(str(cause.get("message") or cause.get("reason") or ""))
        rule = "dryrun.immutable-field" if _is_immutable(text) else _status_rule(code, message)
        yield _problem(m, rule, f"{field_path}: {text}" if field_path else text)


def _status_rule(code: int, message: str) -> str:
    if "admission webhook" in message or "ValidatingAdmissionPolicy" in message:
        return "dryrun.admission-denied"
    return {
        400: "dryrun.bad-request", 403: "dryrun.forbidden", 404: "dryrun.not-found",
        409: "dryrun.conflict", 422: "dryrun.invalid",
    }.get(code, "dryrun.rejected")


def _is_immutable(text: str) -> bool:
    return any(s in text for s in ("immutable", "may not change once set", "may not be changed"))


def _shorten_value(text: str, limit: int = 300) -> str:
    """The server quotes whole Go structs as the invalid value; keep the verdict."""
    if len(text) <= limit or not text.startswith("Invalid value:"):
        return text
    return f"Invalid value: (elided): {text.rpartition(': ')[2]}"
