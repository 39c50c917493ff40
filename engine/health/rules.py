"""Health rules: is one object working yet, judged from the object alone (and, for
a workload in progress, its pods)? Pure functions of what was read; the waiting is
engine/health/wait.py.

The vocabulary and most rules are kstatus's (sigs.k8s.io/cli-utils/pkg/kstatus):
an object is Current, InProgress, Failed, Terminating or NotFound. compute_health()
is pure: generic rules first, then one function per kind, then the generic Ready
condition. Where this module departs from kstatus it says so beside the rule.

kstatus judges a workload by its own status only, so a Deployment whose image cannot
be pulled stays InProgress until its progress deadline (10 min by default). Like
Argo CD's Pod rule, workload_pod_failure() looks at the workload's pods, so that the
waiter can fail within seconds, naming the pod and the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, Callable, Iterable, NamedTuple

from prefect_gitops.engine.objects import group_of


# -- the vocabulary --------------------------------------------------------------------


class HealthStatus(str, Enum):
    """kstatus's status of an object."""

    CURRENT = "Current"
    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    NOT_FOUND = "NotFound"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    reason: str = ""
    message: str = ""

    def __str__(self) -> str:
        text = self.status.value
        if self.reason:
            text += f": {self.reason}"
        if self.message:
            text += f" ({self.message})"
        return text


def _current(message: str = "", reason: str = "") -> Health:
    return Health(HealthStatus.CURRENT, reason, message)


def _in_progress(reason: str, message: str = "") -> Health:
    return Health(HealthStatus.IN_PROGRESS, reason, message)


def _failed(reason: str, message: str = "") -> Health:
    return Health(HealthStatus.FAILED, reason, message)


# -- reading objects ---------------------------------------------------------------------


class Condition(NamedTuple):
    status: str
    reason: str
    message: str


def _conditions(obj: dict) -> dict[str, Condition]:
    """status.conditions by type (the last one wins, as in kubectl wait)."""
    status = obj.get("status")
    found: dict[str, Condition] = {}
    if not isinstance(status, dict):
        return found
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type"):
            found[str(c["type"])] = Condition(str(c.get("status", "")), str(c.get("reason") or ""),
                                              str(c.get("message") or ""))
    return found


def _is_true(conditions: dict[str, Condition], kind: str) -> bool:
    return kind in conditions and conditions[kind].status == "True"


def _section(obj: dict, key: str) -> dict:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _int(section: dict, key: str, default: int = 0) -> int:
    value = section.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


# -- compute_health ------------------------------------------------------------------


def compute_health(obj: dict | None, now: datetime | None = None,
                   custom: Callable[[dict], Health | None] | None = None) -> Health:
    """The health of one object as the API server returned it (a dict), or NotFound
    for None. Pure: `now` (UTC, default: the clock) only matters for the Pod rule's
    scheduling grace period. `custom`: the app's CEL rules (engine/health/cel_rules.py),
    None for a kind they do not cover."""
    if obj is None:
        return Health(HealthStatus.NOT_FOUND, "NotFound", "the object does not exist")
    now = now or datetime.now(timezone.utc)
    metadata = _section(obj, "metadata")
    status = _section(obj, "status")
    if metadata.get("deletionTimestamp"):
        finalizers = metadata.get("finalizers") or []
        waiting = f"; waiting for finalizers {', '.join(map(str, finalizers))}" if finalizers else ""
        return Health(HealthStatus.TERMINATING, "Terminating",
                      f"deletion requested at {metadata['deletionTimestamp']}{waiting}")
    # The controller has not acted on the latest spec yet: the rest of status is stale.
    generation, observed = metadata.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return _in_progress("LatestGenerationNotObserved",
                            f"generation {generation} not observed yet (observed: {observed})")
    # As Flux: a kind's CEL rule replaces everything below (conditions, kind rules).
    if custom is not None and (judged := custom(obj)) is not None:
        return judged
    conditions = _conditions(obj)
    # kstatus's "abnormal-true" conditions, for controllers that follow its convention.
    if _is_true(conditions, "Reconciling"):
        c = conditions["Reconciling"]
        return _in_progress(c.reason or "Reconciling", c.message)
    if _is_true(conditions, "Stalled"):
        c = conditions["Stalled"]
        return _failed(c.reason or "Stalled", c.message)
    rule = KIND_RULES.get((group_of(str(obj.get("apiVersion", ""))), str(obj.get("kind", ""))))
    if rule is not None:
        return rule(obj, now)
    return generic_health(obj, now)


def generic_health(obj: dict, now: datetime) -> Health:
    """Any other kind: the Ready condition if there is one, else Current (a ConfigMap,
    a Role, a custom resource whose controller writes no conditions)."""
    ready = _conditions(obj).get("Ready")
    if ready is None:
        return _current()
    if ready.status == "True":
        return _current(ready.message, ready.reason)
    return _in_progress(ready.reason or "NotReady", ready.message or f"Ready is {ready.status or 'Unknown'}")


# -- kind rules: one function a kind -----------------------------------------------------

KindRule = Callable[[dict, datetime], Health]


def deployment_health(obj: dict, now: datetime) -> Health:
    conditions = _conditions(obj)
    progressing = conditions.get("Progressing")
    # The controller gave up waiting for progress: the rollout will not finish by itself.
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return _failed("ProgressDeadlineExceeded", progressing.message)
    shortfall = _deployment_shortfall(obj)
    # Departure from kstatus (which ignores spec.paused) and Argo (Suspended): a paused
    # rollout that is not finished is InProgress with reason Paused, so a wait times
    # out naming the cause; pausing is deliberate, so it is not Failed. A paused
    # Deployment whose replicas are all up to date is Current.
    if _section(obj, "spec").get("paused"):
        if shortfall is not None:
            return _in_progress("Paused", f"rollout paused: {shortfall.message}")
        return _current("rollout paused; all replicas up to date", "Paused")
    if shortfall is not None:
        return shortfall
    # Set by the controller once the newest ReplicaSet is complete; until then a
    # rollout is still in flight even if the counts look right.
    if progressing is not None and not (progressing.status == "True" and progressing.reason == "NewReplicaSetAvailable"):
        return _in_progress("ReplicaSetNotAvailable", progressing.message or "the new ReplicaSet is not available yet")
    available = conditions.get("Available")
    if available is None or available.status != "True":
        return _in_progress("DeploymentNotAvailable",
                            available.message if available else "the Deployment is not Available yet")
    replicas = _int(_section(obj, "spec"), "replicas", 1)
    return _current(f"{replicas} of {replicas} replicas available")


def _deployment_shortfall(obj: dict) -> Health | None:
    """kstatus's replica checks, in its order."""
    spec_replicas = _int(_section(obj, "spec"), "replicas", 1)  # the API's default
    status = _section(obj, "status")
    replicas, updated = _int(status, "replicas"), _int(status, "updatedReplicas")
    ready, available = _int(status, "readyReplicas"), _int(status, "availableReplicas")
    if spec_replicas > replicas:
        return _in_progress("LessReplicas", f"{replicas} of {spec_replicas} replicas created")
    if spec_replicas > updated:
        return _in_progress("LessUpdated", f"{updated} of {spec_replicas} replicas updated")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"{replicas - spec_replicas} old replicas pending termination")
    if updated > available:
        return _in_progress("LessAvailable", f"{available} of {updated} updated replicas available")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"{ready} of {spec_replicas} replicas ready")
    return None


def statefulset_health(obj: dict, now: datetime) -> Health:
    spec, status = _section(obj, "spec"), _section(obj, "status")
    strategy = _section(spec, "updateStrategy")
    # OnDelete: pods are replaced by the user, never by the controller; nothing to wait for.
    if strategy.get("type") == "OnDelete":
        return _current("OnDelete update strategy: pods are replaced by hand")
    spec_replicas = _int(spec, "replicas", 1)
    replicas, ready = _int(status, "replicas"), _int(status, "readyReplicas")
    current, updated = _int(status, "currentReplicas"), _int(status, "updatedReplicas")
    if spec_replicas > replicas:
        return _in_progress("LessReplicas", f"{replicas} of {spec_replicas} replicas created")
    if spec_replicas > ready:
        return _in_progress("LessReady", f"{ready} of {spec_replicas} replicas ready")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"{replicas - spec_replicas} replicas pending termination")
    partition = _section(strategy, "rollingUpdate").get("partition")
    if isinstance(partition, int) and partition > 0:
        # A partitioned rollout is done when the pods at or above the partition are updated.
        expected = max(spec_replicas - partition, 0)
        if updated < expected:
            return _in_progress("PartitionRollout", f"{updated} of {expected} replicas above the partition updated")
        return _current(f"partitioned rollout complete: {updated} replicas updated")
    if spec_replicas > current:
        return _in_progress("LessCurrent", f"{current} of {spec_replicas} replicas at the current revision")
    if status.get("currentRevision", "") != status.get("updateRevision", ""):
        return _in_progress("RevisionMismatch", "waiting for the update revision to become current")
    return _current(f"{replicas} of {spec_replicas} replicas ready")


def daemonset_health(obj: dict, now: datetime) -> Health:
    status = _section(obj, "status")
    # The DaemonSet controller always writes observedGeneration; without it, it has
    # not looked at this DaemonSet yet.
    if "observedGeneration" not in status:
        return _in_progress("NotObserved", "the DaemonSet controller has not observed it yet")
    desired = status.get("desiredNumberScheduled")
    if not isinstance(desired, int):
        return _in_progress("NoDesiredNumber", "status.desiredNumberScheduled is not set yet")
    for key, reason, what in (("currentNumberScheduled", "LessCurrent", "scheduled"),
                              ("updatedNumberScheduled", "LessUpdated", "updated"),
                              ("numberAvailable", "LessAvailable", "available"),
                              ("numberReady", "LessReady", "ready")):
        have = _int(status, key)
        if desired > have:
            return _in_progress(reason, f"{have} of {desired} pods {what}")
    return _current(f"{desired} of {desired} pods ready")


def replicaset_health(obj: dict, now: datetime) -> Health:
    conditions = _conditions(obj)
    # e.g. a quota refusing pods: kstatus keeps it InProgress (the quota may change).
    if _is_true(conditions, "ReplicaFailure"):
        c = conditions["ReplicaFailure"]
        return _in_progress(c.reason or "ReplicaFailure", c.message)
    spec_replicas = _int(_section(obj, "spec"), "replicas", 1)
    status = _section(obj, "status")
    for key, reason, what in (("fullyLabeledReplicas", "LessLabelled", "labelled"),
                              ("availableReplicas", "LessAvailable", "available"),
                              ("readyReplicas", "LessReady", "ready")):
        have = _int(status, key)
        if spec_replicas > have:
            return _in_progress(reason, f"{have} of {spec_replicas} replicas {what}")
    replicas = _int(status, "replicas")
    if replicas > spec_replicas:
        return _in_progress("ExtraPods", f"{replicas - spec_replicas} replicas pending termination")
    return _current(f"{spec_replicas} of {spec_replicas} replicas available")


# How long a Pending pod may stay unschedulable before it is Failed (kstatus's window).
SCHEDULE_WINDOW = timedelta(seconds=15)
# Waiting reasons that are normal steps of a container's start.
_STARTING_REASONS = frozenset({"ContainerCreating", "PodInitializing"})


def _is_failing_waiting_reason(reason: str) -> bool:
    """Argo's rule: ErrImagePull and friends start with "Err", the kubelet's retry
    loops end with "BackOff"; the kubelet's other refusals end with "Error"
    (CreateContainerConfigError, RunContainerError, ...)."""
    if not reason or reason in _STARTING_REASONS:
        return False
    return (reason in {"InvalidImageName"} or reason.startswith("Err")
            or reason.endswith("BackOff") or reason.endswith("Error"))


def pod_container_failure(pod: dict) -> Health | None:
    """Failed, naming the container, when one of the pod's containers is stuck in a
    failing wait (ImagePullBackOff, CrashLoopBackOff, ...); None otherwise."""
    status = _section(pod, "status")
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            if not isinstance(cs, dict):
                continue
            waiting = _section(_section(cs, "state"), "waiting")
            reason = str(waiting.get("reason") or "")
            if _is_failing_waiting_reason(reason):
                message = str(waiting.get("message") or "")
                text = f"container {cs.get('name')}: {message}" if message else f"container {cs.get('name')}"
                return _failed(reason, text)
    return None


def pod_health(obj: dict, now: datetime) -> Health:
    status = _section(obj, "status")
    phase = str(status.get("phase") or "")
    conditions = _conditions(obj)
    if phase == "Succeeded":
        return _current("the pod completed successfully", "PodSucceeded")
    # Departure from kstatus (which calls a Failed pod Current, "completed"): for a
    # GitOps wait a pod that failed is a failure.
    if phase == "Failed":
        return _failed(str(status.get("reason") or "PodFailed"),
                       str(status.get("message") or "") or _terminated_summary(obj))
    if phase == "Running" and _is_true(conditions, "Ready"):
        return _current("the pod is Running and Ready")
    if (failure := pod_container_failure(obj)) is not None:
        return failure
    if phase == "Pending":
        scheduled = conditions.get("PodScheduled")
        if scheduled is not None and scheduled.status == "False" and scheduled.reason == "Unschedulable":
            created = _parse_time(_section(obj, "metadata").get("creationTimestamp"))
            # The scheduler may find room soon (a node joining): give it the window.
            if created is None or now - created > SCHEDULE_WINDOW:
                return _failed("Unschedulable", scheduled.message)
            return _in_progress("PodNotScheduled", scheduled.message)
        return _in_progress("PodPending", "the pod is Pending")
    if phase == "Running":
        ready = conditions.get("Ready")
        return _in_progress("PodNotReady", ready.message if ready and ready.message else "the pod is not Ready")
    return _in_progress("PodNotObserved", "the pod has no phase yet")


def _terminated_summary(pod: dict) -> str:
    for cs in _section(pod, "status").get("containerStatuses") or []:
        terminated = _section(_section(cs, "state"), "terminated") if isinstance(cs, dict) else {}
        if terminated and terminated.get("exitCode", 0) != 0:
            return (f"container {cs.get('name')}: exited with code {terminated.get('exitCode')}"
                    f" ({terminated.get('reason') or 'Error'})")
    return "the pod failed"


def pvc_health(obj: dict, now: datetime) -> Health:
    phase = str(_section(obj, "status").get("phase") or "")
    if phase == "Bound":
        return _current(f"bound to {_section(obj, 'spec').get('volumeName') or 'a volume'}")
    # Lost: its bound volume is gone; no controller will bring it back (Argo: Degraded).
    if phase == "Lost":
        return _failed("ClaimLost", "the bound PersistentVolume no longer exists")
    return _in_progress("NotBound", f"phase {phase or 'not set'}, not Bound")


def service_health(obj: dict, now: datetime) -> Health:
    # A LoadBalancer Service is usable once the cloud controller wrote its address
    # (stricter than kstatus, which only wants a cluster IP; as Argo does).
    if _section(obj, "spec").get("type") == "LoadBalancer":
        ingress = _section(_section(obj, "status"), "loadBalancer").get("ingress")
        if not ingress:
            return _in_progress("NoLoadBalancerIngress", "waiting for the load balancer's address")
    return _current()


def ingress_health(obj: dict, now: datetime) -> Health:
    # kstatus, not Argo: Current even without status.loadBalancer.ingress, because many
    # ingress controllers never write it and a cluster may have no controller at all;
    # waiting for it would time out every sync that carries an Ingress.
    ingress = _section(_section(obj, "status"), "loadBalancer").get("ingress")
    return _current("" if ingress else "no address reported (not waited for)")


def job_health(obj: dict, now: datetime) -> Health:
    conditions = _conditions(obj)
    # SuccessCriteriaMet / FailureTarget come first (1.31+), Complete / Failed once pods are gone.
    for kind in ("Complete", "SuccessCriteriaMet"):
        if _is_true(conditions, kind):
            succeeded = _int(_section(obj, "status"), "succeeded")
            return _current(f"succeeded: {succeeded}", kind)
    for kind in ("Failed", "FailureTarget"):
        if _is_true(conditions, kind):
            c = conditions[kind]
            return _failed(c.reason or "JobFailed", c.message)
    # Suspended on purpose: nothing will run until resumed (as kstatus).
    if _is_true(conditions, "Suspended"):
        return _current("the Job is suspended", "Suspended")
    # Departure from kstatus (a started Job is Current): a Job synced by GitOps is
    # usually a migration or a hook, and what matters is that it completes.
    status = _section(obj, "status")
    if not status.get("startTime"):
        return _in_progress("JobNotStarted", "the Job has not started yet")
    return _in_progress("JobRunning", f"{_int(status, 'active')} active, {_int(status, 'succeeded')} succeeded, "
                                      f"{_int(status, 'failed')} failed")


def crd_health(obj: dict, now: datetime) -> Health:
    conditions = _conditions(obj)
    names = conditions.get("NamesAccepted")
    if names is not None and names.status == "False":
        return _failed(names.reason or "NamesNotAccepted", names.message)
    established = conditions.get("Established")
    if established is not None and established.status == "True":
        return _current("the CRD is established")
    if established is not None and established.status == "False" and established.reason not in ("", "Installing"):
        return _failed(established.reason, established.message)
    return _in_progress("Installing", "waiting for the CRD to be established")


def apiservice_health(obj: dict, now: datetime) -> Health:
    available = _conditions(obj).get("Available")
    if available is not None and available.status == "True":
        return _current(available.message)
    # Not Failed: the Service and pods behind an APIService usually come up after it
    # in the same sync (e.g. metrics-server); a timeout reports the reason.
    if available is None:
        return _in_progress("NotAvailable", "the APIService has no Available condition yet")
    return _in_progress(available.reason or "NotAvailable", available.message)


KIND_RULES: dict[tuple[str, str], KindRule] = {
    ("apps", "Deployment"): deployment_health,
    ("apps", "StatefulSet"): statefulset_health,
    ("apps", "DaemonSet"): daemonset_health,
    ("apps", "ReplicaSet"): replicaset_health,
    ("", "Pod"): pod_health,
    ("", "PersistentVolumeClaim"): pvc_health,
    ("", "Service"): service_health,
    ("networking.k8s.io", "Ingress"): ingress_health,
    ("batch", "Job"): job_health,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): crd_health,
    ("apiregistration.k8s.io", "APIService"): apiservice_health,
}


# -- pod-aware workload health ---------------------------------------------------------

# Kinds whose pods are looked at while they are InProgress.
POD_OWNERS: frozenset[tuple[str, str]] = frozenset({
    ("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "DaemonSet"), ("apps", "ReplicaSet"), ("batch", "Job"),
})
_REVISION = "deployment.kubernetes.io/revision"


def workload_pod_failure(workload: dict, pods: Iterable[dict], replica_sets: Iterable[dict] = ()) -> Health | None:
    """Failed, naming the pod and container, when a pod of the workload's current
    revision has a container stuck in a failing wait (ImagePullBackOff,
    CrashLoopBackOff, CreateContainerConfigError, ...); None otherwise.

    `pods` are the pods of the workload's namespace (those matching its selector is
    enough); only the ones it owns count, and for a Deployment only those of its
    newest ReplicaSet (from `replica_sets`), so that the old revision's pods that a
    rollout is replacing never fail the new one. A pod's Failed phase and
    Unschedulable are left alone: the controller replaces failed pods (a Job retries
    up to its backoffLimit), and a cluster autoscaler may still add a node.
    """
    if not _spec_observed(workload):
        # The controller has not seen the latest spec: which pods are current is not
        # known yet (right after a rollback the failing new revision is still newest).
        return None
    owners = _current_pod_owners(workload, list(replica_sets))
    if not owners:
        return None
    update_revision = None
    if workload.get("kind") == "StatefulSet":
        update_revision = _section(workload, "status").get("updateRevision")
    for pod in sorted(pods, key=lambda p: str(_section(p, "metadata").get("name", ""))):
        metadata = _section(pod, "metadata")
        if not _owner_uids(pod) & owners or metadata.get("deletionTimestamp"):
            continue
        if update_revision and (metadata.get("labels") or {}).get("controller-revision-hash") != update_revision:
            continue
        failure = pod_container_failure(pod)
        if failure is not None:
            return _failed(failure.reason, f"pod {metadata.get('name')}: {failure.message}")
    return None


def _spec_observed(workload: dict) -> bool:
    """Whether the workload's controller has seen its latest spec."""
    return _section(workload, "status").get("observedGeneration") == _section(workload, "metadata").get("generation")


def _current_pod_owners(workload: dict, replica_sets: list[dict]) -> set[str]:
    """The uids that the pods of the workload's current revision are owned by."""
    metadata = _section(workload, "metadata")
    uid = metadata.get("uid")
    if not uid:
        return set()
    if workload.get("kind") != "Deployment":
        return {uid}
    # The Deployment's revision annotation names its newest ReplicaSet once the
    # controller has observed the spec (compute_health checks observedGeneration).
    # The annotation may still name the previous one for a moment after the status
    # says observed (a watch sees that moment), so the ReplicaSet's pod template
    # must be the Deployment's too, as the controller itself matches them.
    revision = (metadata.get("annotations") or {}).get(_REVISION)
    template = _template_without_hash(_section(workload, "spec").get("template"))
    return {
        rs_meta["uid"] for rs in replica_sets
        if uid in _owner_uids(rs) and (rs_meta := _section(rs, "metadata")).get("uid")
        and revision is not None and (rs_meta.get("annotations") or {}).get(_REVISION) == revision
        and _template_without_hash(_section(rs, "spec").get("template")) == template
    }


def _template_without_hash(template: Any) -> Any:
    """A pod template without the pod-template-hash label a ReplicaSet's carries."""
    if not isinstance(template, dict):
        return template
    metadata = dict(_section(template, "metadata"))
    metadata["labels"] = {k: v for k, v in (metadata.get("labels") or {}).items() if k != "pod-template-hash"}
    return {**template, "metadata": metadata}


def _owner_uids(obj: dict) -> set[str]:
    refs = _section(obj, "metadata").get("ownerReferences") or []
    return {str(r["uid"]) for r in refs if isinstance(r, dict) and r.get("controller") and r.get("uid")}


def label_selector(selector: dict | None) -> str | None:
    """A LabelSelector as the query string of a LIST (None: it selects nothing)."""
    if not isinstance(selector, dict):
        return None
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    # An empty selector selects everything; for a workload that is never meant.
    return ",".join(parts) or None
