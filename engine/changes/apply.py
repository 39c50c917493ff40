"""Apply a plan: server-side apply (field manager prefect-gitops, forced) of the
objects the plan found created or configured, nothing else, in stages:

1. CRDs, Namespaces, ClusterRoles and ClusterRoleBindings; then wait until each
   applied CRD is Established and forget discovery, so their kinds resolve;
2. kinds ending in `Class`;
3. everything else by sync wave (ascending), and within a wave by kind order.

Objects of one kind in one wave are applied concurrently; a failure stops the
sync before the next batch, so the cluster is in a known state. When the cluster
cannot be written at all (unreachable, or the Lease lost), the objects of the
batch not yet sent are not attempted either: each says so in the result."""

from __future__ import annotations

import threading
import time
from enum import IntEnum
from itertools import groupby
from typing import Iterable


from prefect_gitops.engine.changes.changeset import Action, ChangeSet, Fate, ObjectChange, annotations_of
from prefect_gitops.engine.changes.diff import immutable_message, plan_object, recreate_allowed
from prefect_gitops.engine.cluster.kube import ApiError, ClusterUnreachable, KubeClient, UnknownKind, is_retryable
from prefect_gitops.engine.cluster.scope import RBAC_GROUP
from prefect_gitops.engine.health.rules import HealthStatus, compute_health
from prefect_gitops.engine.secrets import scrub
from prefect_gitops.engine.state.lock import LeaseLost

SYNC_WAVE_ANNOTATIONS = ("gitops.prefect.io/sync-wave", "argocd.argoproj.io/sync-wave")
CRD_GROUP_KIND = ("apiextensions.k8s.io", "CustomResourceDefinition")
FOUNDATION_KINDS = {CRD_GROUP_KIND, ("", "Namespace"), (RBAC_GROUP, "ClusterRole"), (RBAC_GROUP, "ClusterRoleBinding")}
DEFAULT_TIMEOUT_S = 60.0
POLL_S = 0.1

# Within a wave: what others refer to first (Flux's and Argo's orders); kinds not
# listed (custom resources) after the workloads; webhooks last, so that a webhook
# never blocks objects of the same sync before its backend runs.
KIND_ORDER = [
    "CustomResourceDefinition", "Namespace", "ClusterRole", "ClusterRoleBinding",
    "ResourceQuota", "LimitRange", "PriorityClass", "NetworkPolicy",
    "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Secret",
    "PersistentVolume", "PersistentVolumeClaim", "Service", "Endpoints", "EndpointSlice",
    "Pod", "ReplicationController", "ReplicaSet", "Deployment", "StatefulSet", "DaemonSet",
    "Job", "CronJob", "IngressClass", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    None,  # every kind not listed
    "APIService", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]
_KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}


class Stage(IntEnum):
    FOUNDATION = 1  # CRDs, Namespaces, cluster RBAC
    CLASSES = 2  # *Class kinds
    WAVES = 3  # everything else, by sync wave


def stage_of(group: str, kind: str) -> Stage:
    if (group, kind) in FOUNDATION_KINDS:
        return Stage.FOUNDATION
    if kind.endswith("Class"):
        return Stage.CLASSES
    return Stage.WAVES


def sync_wave(obj: dict | None) -> int:
    annotations = annotations_of(obj)
    for key in SYNC_WAVE_ANNOTATIONS:
        if key in annotations:
            try:
                return int(str(annotations[key]).strip())
            except ValueError:
                return 0
    return 0


def kind_rank(kind: str) -> int:
    return _KIND_RANK.get(kind, _KIND_RANK[None])


def batch_key(group: str, kind: str, obj: dict | None) -> tuple[int, int, int]:
    """Objects with the same key are applied together: (stage, wave, kind rank)."""
    stage = stage_of(group, kind)
    wave = sync_wave(obj) if stage is Stage.WAVES else 0
    return (int(stage), wave, kind_rank(kind))


def order_key(group: str, kind: str, namespace: str, name: str, obj: dict | None) -> tuple:
    """The apply order of an object; prune goes in reverse."""
    return (*batch_key(group, kind, obj), kind, namespace, name)


def _change_order(change: ObjectChange) -> tuple:
    return order_key(change.group, change.kind, change.namespace, change.name, change.desired)


def batches(changes: Iterable[ObjectChange]) -> list[list[ObjectChange]]:
    """Changes in apply order, grouped into batches applied concurrently."""
    ordered = sorted(changes, key=_change_order)
    return [list(group) for _, group in groupby(ordered, key=lambda c: _change_order(c)[:3])]


# ---- applying ------------------------------------------------------------------------

def apply_changes(kube: KubeClient, changeset: ChangeSet, *, allow_recreate: bool = False,
                  timeout: float = DEFAULT_TIMEOUT_S) -> ChangeSet:
    """Write what the plan says changes, stage by stage; returns the ChangeSet with
    `done` and per-object errors filled in. Nothing is written while the plan has
    errors; a failure stops before the next batch."""
    if not changeset.ok:
        return changeset
    namespaces = {c.name for c in changeset.desired() if (c.group, c.kind) == ("", "Namespace")}
    # Not what an earlier attempt already wrote: a retried stage goes on where it stopped.
    pending = [c for c in changeset.desired() if c.action in (Action.CREATED, Action.CONFIGURED) and not c.done]
    crds_ready = False
    halt = threading.Event()  # set when the cluster can take no more writes
    for batch in batches(pending):
        if _change_order(batch[0])[0] > Stage.FOUNDATION and not crds_ready:
            crds_ready = True
            if not _wait_for_crds(kube, changeset, timeout):
                return changeset
        # Dry-run what waited for a CRD now served. What waited for its namespace
        # cannot exist yet: it is written directly (the apply refuses what the
        # dry-run would have, with the same message).
        deferred = [c for c in batch if c.deferred and not c.in_new_namespace]
        kube.map(lambda c: plan_object(kube, c, namespaces, allow_recreate), deferred)
        writes = [c for c in batch if c.action in (Action.CREATED, Action.CONFIGURED) and not c.error]
        kube.map(lambda c: apply_object(kube, c, allow_recreate, timeout, halt), writes)
        changeset.halted = halt.is_set()
        if any(c.error for c in batch):
            return changeset
    if not crds_ready:
        _wait_for_crds(kube, changeset, timeout)
    return changeset


def apply_object(kube: KubeClient, change: ObjectChange, allow_recreate: bool = False,
                 timeout: float = DEFAULT_TIMEOUT_S, halt: threading.Event | None = None) -> None:
    """Server-side apply one object; on an immutable field, delete and create it
    again if allowed, else a clear error. Errors are recorded on the change. Once
    `halt` is set the object is not attempted; an unreachable cluster or a lost
    Lease sets it."""
    if halt is not None and halt.is_set():
        return
    try:
        _apply_or_recreate(kube, change, allow_recreate, timeout)
    except (ClusterUnreachable, LeaseLost) as error:
        change.fail("apply", str(error), transient=is_retryable(error),
                    maybe_done=isinstance(error, ClusterUnreachable) and error.may_have_landed)
        if halt is not None:
            halt.set()
    except ApiError as error:
        change.fail("apply", scrub(error.describe(), [change.desired]), transient=is_retryable(error))
    except UnknownKind as error:
        change.fail("apply", str(error))
    except Exception as error:  # e.g. the connection lost: say which object
        change.fail("apply", f"{type(error).__name__}: {scrub(str(error), [change.desired])}",
                    transient=is_retryable(error))


def _apply_or_recreate(kube: KubeClient, change: ObjectChange, allow_recreate: bool, timeout: float) -> None:
    if change.recreate:
        _recreate(kube, change, allow_recreate, timeout)
        return
    try:
        applied = kube.apply(change.desired or {})
    except ApiError as error:
        fields = error.immutable_fields()
        if not fields:
            raise
        if not recreate_allowed(change, allow_recreate):
            change.fail("apply", immutable_message(fields))
            return
        _recreate(kube, change, allow_recreate, timeout)
        return
    _done(change, applied)


def _done(change: ObjectChange, applied: dict) -> None:
    change.fate = Fate.DONE
    change.current_when_applied = compute_health(applied).status is HealthStatus.CURRENT


def _recreate(kube: KubeClient, change: ObjectChange, allow_recreate: bool, timeout: float) -> None:
    if not recreate_allowed(change, allow_recreate):
        change.fail("apply", immutable_message(["<immutable field>"]))
        return
    change.recreate = True
    live = kube.get(change.api_version, change.kind, change.name, change.namespace)
    if live is not None:
        kube.delete(change.api_version, change.kind, change.name, change.namespace,
                    propagation="Background", uid=(live.get("metadata") or {}).get("uid"))
        if not _wait_gone(kube, change, timeout):
            change.fail("recreate", f"still present {timeout:.0f}s after its deletion")
            return
    _done(change, kube.apply(change.desired or {}))


def _wait_gone(kube: KubeClient, change: ObjectChange, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while kube.get(change.api_version, change.kind, change.name, change.namespace) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


# ---- CRDs ------------------------------------------------------------------------------

def _wait_for_crds(kube: KubeClient, changeset: ChangeSet, timeout: float) -> bool:
    """Wait until every CRD written in this sync is Established, then forget
    discovery so that their kinds resolve. False if one is not."""
    crds = [c for c in changeset.desired() if (c.group, c.kind) == CRD_GROUP_KIND and c.done]
    if not crds:
        return True
    kube.map(lambda c: _wait_established_or_fail(kube, c, timeout), crds)
    kube.invalidate_discovery()
    return not any(c.error for c in crds)


def _wait_established_or_fail(kube: KubeClient, change: ObjectChange, timeout: float) -> None:
    try:
        _wait_established(kube, change, timeout)
    except Exception as error:
        change.fail("wait", f"{type(error).__name__}: {error}")


def _wait_established(kube: KubeClient, change: ObjectChange, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        crd = kube.get(change.api_version, change.kind, change.name) or {}
        conditions = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
        names = conditions.get("NamesAccepted") or {}
        if names.get("status") == "False":
            change.fail("wait", f"names not accepted: {names.get('message') or names.get('reason')}")
            return
        if (conditions.get("Established") or {}).get("status") == "True":
            _wait_served(kube, change, crd, deadline, timeout)
            return
        if time.monotonic() > deadline:
            change.fail("wait", f"not Established after {timeout:.0f}s")
            return
        time.sleep(POLL_S)


def _wait_served(kube: KubeClient, change: ObjectChange, crd: dict, deadline: float, timeout: float) -> None:
    """Until discovery lists the CRD's kind: the API server sets Established before
    its group's discovery has it (4 syncs in 24 here), and its objects' dry-runs
    would find the kind unknown."""
    spec = crd.get("spec") or {}
    version = next((v.get("name") for v in spec.get("versions") or [] if v.get("served")), None)
    kind = (spec.get("names") or {}).get("kind")
    if not (spec.get("group") and version and kind):
        return  # refused by the API server already
    while not kube.serves(f"{spec['group']}/{version}", kind):
        if time.monotonic() > deadline:
            change.fail("wait", f"Established but its kind not served after {timeout:.0f}s")
            return
        time.sleep(POLL_S)
