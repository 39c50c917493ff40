"""The server-side dry-run of validation: every object sent through the engine's
one dry-run (engine.cluster.kube.dry_run_object, the same request diff makes), and what
the server refuses reported as Problems."""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

from prefect_gitops.engine.cluster.kube import ApiError, KubeClient, dry_run_object, is_immutable_message
from prefect_gitops.engine.cluster.scope import crds_by_kind
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.secrets import scrub
from prefect_gitops.engine.validation.context import WARNING, _problem
from prefect_gitops.engine.validation.hooks import created_anew

# At most this many dry-runs in flight at once (and never more than the KubeClient allows).
DRY_RUN_WORKERS = 8


def dry_run(manifests: list[Manifest], kube: KubeClient, *, default_namespace: str = "default",
            provided: list[Manifest] = ()) -> list[Problem]:
    """Dry-run every object and collect what the server refuses: invalid values,
    immutable fields, admission denials, unknown kinds. Objects that need a CRD or
    Namespace that is not applied yet, from the same set or from `provided` (the
    apps this one depends on), are reported as skipped. Nothing is written."""
    sendable = [m for m in manifests if isinstance(m.obj, dict) and m.api_version and m.kind and m.name]
    available = [*manifests, *provided]
    crds = crds_by_kind(available)
    namespaces = {m.name: m for m in available
                  if isinstance(m.obj, dict) and (m.group, m.kind) == ("", "Namespace")}
    # Each kind looked up once, before sending: a kind not served costs a re-discovery.
    served = {kind: kube.serves(*kind) for kind in sorted({(m.api_version, m.kind) for m in sendable})}

    def check(m: Manifest) -> list[Problem]:
        if not served[(m.api_version, m.kind)]:
            return [_unknown_kind(m, crds)]
        return _dry_run_one(kube, m, default_namespace, namespaces)

    # In the order of the manifests, whatever order the answers came in.
    return [problem for result in kube.map(check, sendable, DRY_RUN_WORKERS) for problem in result]


def _unknown_kind(m: Manifest, crds: dict[tuple[str, str], Manifest]) -> Problem:
    crd = crds.get((m.group, m.kind))
    if crd is not None:
        return _problem(m, "dryrun.skipped",
                        f"not dry-run: the cluster does not serve {m.api_version} {m.kind} until its "
                        f"CustomResourceDefinition {crd.name} (at {crd.source}) is applied", WARNING)
    return _problem(m, "dryrun.unknown-kind",
                    f"the cluster does not serve {m.api_version} {m.kind}: no CustomResourceDefinition "
                    "for it is installed, in this set, or in an app this one depends on")


def _dry_run_one(kube: KubeClient, m: Manifest, default_namespace: str,
                 namespaces: dict[str, Manifest]) -> list[Problem]:
    body = dict(m.obj)
    if kube.namespaced(m.api_version, m.kind):
        body["metadata"] = {**m.metadata, "namespace": m.namespace or default_namespace}
    try:
        dry_run_object(kube, body)
    except ApiError as error:
        missing = error.missing_namespace()
        if missing in namespaces:
            return [_problem(m, "dryrun.skipped",
                             f"not dry-run: namespace {missing!r} does not exist until it is applied "
                             f"(from {namespaces[missing].source})", WARNING)]
        # The server may quote the values it refuses: never a Secret's.
        return [replace(p, message=scrub(p.message, [m.obj])) for p in _refusal_problems(m, error)
                if not (p.rule == "dryrun.immutable-field" and created_anew(m))]
    return []


def _refusal_problems(m: Manifest, error: ApiError) -> Iterator[Problem]:
    """One problem per cause the server gives, or one for the whole answer."""
    if (mismatch := error.schema_mismatch()) is not None:
        rule = "dryrun.unknown-field" if "field not declared in schema" in mismatch else "dryrun.invalid"
        yield _problem(m, rule, mismatch)
        return
    refused = _refusal_rule(error)
    if not error.causes:
        yield _problem(m, refused, error.message or f"HTTP {error.code}")
        return
    for text in error.explanations():
        yield _problem(m, "dryrun.immutable-field" if is_immutable_message(text) else refused, text)


def _refusal_rule(error: ApiError) -> str:
    if "admission webhook" in error.message or "ValidatingAdmissionPolicy" in error.message:
        return "dryrun.admission-denied"
    return {
        400: "dryrun.bad-request", 403: "dryrun.forbidden", 404: "dryrun.not-found",
        409: "dryrun.conflict", 422: "dryrun.invalid",
    }.get(error.code, "dryrun.rejected")
