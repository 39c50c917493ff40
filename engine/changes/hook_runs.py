"""Running one sync hook (engine/changes/hooks.py) in a cluster: create its object
(under BeforeHookCreation the previous run's is deleted first), wait until it is
done with the health stage's watches (a Job Complete is Current, Failed is
Failed; the app's health timeout bounds the wait), tell what its pods did (each
container's state, reason, exit code and message), then delete it as its
policies ask. Hooks carry `app.kubernetes.io/managed-by` and
`gitops.prefect.io/hook-of`, not the app's label: drift never takes one for an
object of the app."""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable

from prefect_gitops.engine.changes.hooks import DELETE_POLICY_ANNOTATION, DeletePolicy, Hook
from prefect_gitops.engine.cluster.kube import ApiError, KubeClient
from prefect_gitops.engine.cluster.watch import Follower, Scope
from prefect_gitops.engine.health.wait import ObjectHealth, ObjectRef, wait_for_health
from prefect_gitops.engine.objects import group_of
from prefect_gitops.engine.secrets import scrub
from prefect_gitops.engine.state.inventory import MANAGED_BY, MANAGED_BY_LABEL

HOOK_OF_LABEL = "gitops.prefect.io/hook-of"
# The label the Job controller puts on the pods of one Job (this very Job, not an
# earlier one of the same name).
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"


class HookRefused(Exception):
    """The hook's object could not be created."""


@dataclass
class HookOutcome:
    hook: Hook
    ok: bool
    health: str  # e.g. "Job/web/migrate: Failed: BackoffLimitExceeded: ..."
    pods: list[str] = field(default_factory=list)  # a line per pod: what each container did

    def describe(self) -> str:
        """One line, for the app's result."""
        return "; ".join([self.health, *self.pods])


def run_hook(kube: KubeClient, hook: Hook, app_name: str, default_namespace: str, timeout_s: float,
             on_progress: Callable[[list[ObjectHealth], int, float], None] | None = None,
             scrub_with: Iterable[dict] = ()) -> HookOutcome:
    """Create the hook's object, wait for it, tell what its pods did, delete it
    if its policies say so. A refusal (a namespace missing, RBAC) is a failed
    outcome; a cluster out of reach raises."""
    body = hook_body(kube, hook, app_name, default_namespace)
    meta = body["metadata"]
    ref = ObjectRef(body["apiVersion"], body["kind"], meta.get("namespace") or None, meta["name"])
    try:
        created = _create(kube, hook, ref, body, timeout_s)
    except (HookRefused, ApiError) as error:
        why = error.describe() if isinstance(error, ApiError) else str(error)
        return HookOutcome(hook, False, f"{ref}: not created: {scrub(why, [hook.manifest.obj])}")
    report = wait_for_health(kube, [ref], timeout_s, on_progress=on_progress)
    [result] = report.results
    if report.ok:
        health = f"{ref}: {result.health.reason or 'Current'} after {report.elapsed_s:.1f} s"
    else:
        health = report.summary()
    pods = [scrub(line, scrub_with) for line in pod_outcomes(kube, created)]
    if (DeletePolicy.HOOK_SUCCEEDED if report.ok else DeletePolicy.HOOK_FAILED) in hook.delete_policies:
        kube.delete(ref.api_version, ref.kind, ref.name, ref.namespace or "", uid=created["metadata"].get("uid"))
    return HookOutcome(hook, report.ok, health, pods)


def hook_body(kube: KubeClient, hook: Hook, app_name: str, default_namespace: str) -> dict:
    """What is created: the object in its namespace, labelled as a hook of the app."""
    body = copy.deepcopy(hook.manifest.obj)
    meta = body.setdefault("metadata", {})
    if kube.namespaced(hook.manifest.api_version, hook.manifest.kind):
        meta["namespace"] = hook.manifest.namespace or default_namespace
    meta["labels"] = {**(meta.get("labels") or {}), MANAGED_BY_LABEL: MANAGED_BY, HOOK_OF_LABEL: app_name}
    return body


def _create(kube: KubeClient, hook: Hook, ref: ObjectRef, body: dict, timeout_s: float) -> dict:
    try:
        return kube.create(body)
    except ApiError as error:
        if error.code != 409:  # 409: one of that name exists, from an earlier run
            raise
    if DeletePolicy.BEFORE_HOOK_CREATION not in hook.delete_policies:
        raise HookRefused(f"it exists already (from an earlier run) and its {DELETE_POLICY_ANNOTATION} has no "
                          f"{DeletePolicy.BEFORE_HOOK_CREATION.value}: delete it, or add that policy")
    kube.delete(ref.api_version, ref.kind, ref.name, ref.namespace or "")
    if not _wait_gone(kube, ref, timeout_s):
        raise HookRefused(f"the earlier run's object is still there {timeout_s:g} s after its deletion")
    return kube.create(body)


def _wait_gone(kube: KubeClient, ref: ObjectRef, timeout_s: float) -> bool:
    """Until the object is gone (a watch of its name), or the time is up."""
    gone = threading.Event()

    def heard(follower: Follower, names: set[str] | None) -> None:
        if follower.refusal is None and follower.get(ref.name) is None:
            gone.set()

    scope = Scope(ref.api_version, ref.kind, ref.namespace or "", field_selector=f"metadata.name={ref.name}")
    follower = Follower(kube, scope, heard).start()
    try:
        return gone.wait(timeout_s)
    finally:
        follower.stop()


# ---- what its pods did --------------------------------------------------------------------

def pod_outcomes(kube: KubeClient, obj: dict) -> list[str]:
    """A line per pod of a Job (of this Job: by its uid) or of a Pod hook itself."""
    meta = obj.get("metadata") or {}
    kind, namespace = obj.get("kind"), meta.get("namespace") or ""
    if (group_of(obj.get("apiVersion") or ""), kind) == ("batch", "Job"):
        pods = kube.list("v1", "Pod", namespace, label_selector=f"{JOB_UID_LABEL}={meta.get('uid')}")
    elif kind == "Pod" and (pod := kube.get("v1", "Pod", meta.get("name") or "", namespace)) is not None:
        pods = [pod]
    else:
        return []
    return [pod_outcome(p) for p in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")]


def pod_outcome(pod: dict) -> str:
    """e.g. `pod migrate-x7k2p Failed: container migrate terminated (Error, exit code 1): no such table`."""
    status = pod.get("status") or {}
    containers = [cs for key in ("initContainerStatuses", "containerStatuses") for cs in status.get(key) or []
                  if isinstance(cs, dict)]
    states = "; ".join(f"container {cs.get('name')} {_container_state(cs.get('state') or {})}" for cs in containers)
    reason = f" ({status['reason']}: {status.get('message') or ''})" if status.get("reason") else ""
    phase = status.get("phase") or "Pending"
    return f"pod {pod['metadata'].get('name')} {phase}{reason}: {states or 'no container started'}"


def _container_state(state: dict) -> str:
    for name, detail in (("terminated", state.get("terminated")), ("waiting", state.get("waiting"))):
        if isinstance(detail, dict):
            code = f", exit code {detail['exitCode']}" if "exitCode" in detail else ""
            message = f": {detail['message'].strip()}" if detail.get("message") else ""
            return f"{name} ({detail.get('reason') or 'no reason given'}{code}){message}"
    return "running" if state.get("running") else "not started"
