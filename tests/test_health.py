"""Health rules over objects captured from a real cluster (tests/fixtures/health,
made by capture.py there), edge cases of each rule, and wait_for_health against
the real local cluster."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from conftest import kubectl
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.health.rules import (Health, HealthStatus, compute_health, label_selector,
                                                workload_pod_failure)
from prefect_gitops.engine.health.wait import HealthReport, ObjectHealth, ObjectRef, current_as_seen, wait_for_health

FIXTURES = Path(__file__).parent / "fixtures" / "health"

CURRENT, IN_PROGRESS, FAILED = HealthStatus.CURRENT, HealthStatus.IN_PROGRESS, HealthStatus.FAILED
TERMINATING, NOT_FOUND = HealthStatus.TERMINATING, HealthStatus.NOT_FOUND


def load(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def created(obj: dict) -> datetime:
    return datetime.strptime(obj["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


# -- the table: every captured object and its expected health -------------------------------

TABLE: dict[str, tuple[HealthStatus, str]] = {
    "apiservice-available": (CURRENT, ""),
    "apiservice-unavailable": (IN_PROGRESS, "ServiceNotFound"),
    "configmap": (CURRENT, ""),
    "crd-established": (CURRENT, ""),
    "daemonset-current": (CURRENT, ""),
    "deployment-current": (CURRENT, ""),
    "deployment-image-pull-backoff": (IN_PROGRESS, "LessAvailable"),  # its pods tell more: see below
    "deployment-paused": (IN_PROGRESS, "Paused"),
    "deployment-progress-deadline-exceeded": (FAILED, "ProgressDeadlineExceeded"),
    "deployment-rolling-out": (IN_PROGRESS, "LessUpdated"),
    "ingress-no-address": (CURRENT, ""),
    "job-complete": (CURRENT, "Complete"),
    "job-failed": (FAILED, "BackoffLimitExceeded"),
    "job-running": (IN_PROGRESS, "JobRunning"),
    "namespace-terminating": (TERMINATING, "Terminating"),
    "pod-crashloop": (FAILED, "CrashLoopBackOff"),
    "pod-crashloop-running": (IN_PROGRESS, "PodNotReady"),
    "pod-err-image-pull": (FAILED, "ErrImagePull"),
    "pod-image-pull-backoff": (FAILED, "ImagePullBackOff"),
    "pod-job-failed": (FAILED, "PodFailed"),
    "pod-job-succeeded": (CURRENT, "PodSucceeded"),
    "pod-running-ready": (CURRENT, ""),
    "pod-statefulset-image-pull-backoff": (FAILED, "ImagePullBackOff"),
    "pod-unschedulable": (FAILED, "Unschedulable"),  # a minute after creation: past the 15 s window
    "pvc-pending": (IN_PROGRESS, "NotBound"),
    "replicaset-current": (CURRENT, ""),
    "replicaset-image-pull-backoff": (IN_PROGRESS, "LessAvailable"),
    "service-clusterip": (CURRENT, ""),
    "service-loadbalancer": (IN_PROGRESS, "NoLoadBalancerIngress"),
    "statefulset-current": (CURRENT, ""),
    "statefulset-image-pull-backoff": (IN_PROGRESS, "LessReady"),
    "widget-no-status": (CURRENT, ""),
    "widget-not-ready": (IN_PROGRESS, "DependencyNotReady"),
    "widget-ready": (CURRENT, "Reconciled"),
    "widget-reconciling": (IN_PROGRESS, "Provisioning"),
    "widget-stale-generation": (IN_PROGRESS, "LatestGenerationNotObserved"),
    "widget-stalled": (FAILED, "QuotaExceeded"),
}


def test_the_table_lists_every_fixture():
    assert set(TABLE) == {p.stem for p in FIXTURES.glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_captured_object(name):
    status, reason = TABLE[name]
    obj = load(name)
    health = compute_health(obj, now=created(obj) + timedelta(minutes=1))
    assert (health.status, health.reason) == (status, reason), str(health)


def test_messages_say_why():
    assert compute_health(load("deployment-rolling-out")).message == "1 of 3 replicas updated"
    assert compute_health(load("pod-image-pull-backoff")).message == \
        'container pull: Back-off pulling image "unreachable.invalid/app:1.0"'
    assert compute_health(load("pod-job-failed")).message == "container main: exited with code 1 (Error)"
    assert "health.example.com/hold" in compute_health(load("namespace-terminating")).message


# -- generic rules ---------------------------------------------------------------------------


def test_none_is_not_found():
    assert compute_health(None).status is NOT_FOUND


def test_deletion_timestamp_comes_before_everything():
    pod = load("pod-crashloop")
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert compute_health(pod).status is TERMINATING


def test_an_unobserved_generation_is_in_progress_whatever_the_status_says():
    deployment = load("deployment-current")
    deployment["metadata"]["generation"] += 1
    assert compute_health(deployment).reason == "LatestGenerationNotObserved"


def test_observed_generation_is_only_compared_when_present():
    widget = load("widget-no-status")
    widget["metadata"]["generation"] = 7
    assert compute_health(widget).status is CURRENT


def widget_with(*conditions: tuple[str, str], **status) -> dict:
    widget = load("widget-no-status")
    widget["status"] = {"conditions": [{"type": t, "status": s, "reason": f"{t}Reason"} for t, s in conditions],
                        **status}
    return widget


@pytest.mark.parametrize("conditions, expected", [
    ([("Ready", "True")], CURRENT),
    ([("Ready", "False")], IN_PROGRESS),
    ([("Ready", "Unknown")], IN_PROGRESS),
    ([], CURRENT),
    ([("Synced", "False")], CURRENT),  # only Ready counts
    ([("Reconciling", "True"), ("Ready", "True")], IN_PROGRESS),
    ([("Reconciling", "False"), ("Ready", "True")], CURRENT),
    ([("Stalled", "True"), ("Ready", "True")], FAILED),
    ([("Stalled", "False"), ("Ready", "True")], CURRENT),
])
def test_generic_conditions(conditions, expected):
    assert compute_health(widget_with(*conditions)).status is expected


def test_kstatus_conditions_apply_to_built_in_kinds_too():
    deployment = load("deployment-current")
    deployment["status"]["conditions"].append({"type": "Stalled", "status": "True", "reason": "Stuck"})
    assert (compute_health(deployment).status, compute_health(deployment).reason) == (FAILED, "Stuck")


# -- Deployment ------------------------------------------------------------------------------


def deployment(spec_replicas: int | None = 3, paused: bool = False, conditions: list[tuple] = (), **status) -> dict:
    obj = load("deployment-current")
    if spec_replicas is None:
        del obj["spec"]["replicas"]
    else:
        obj["spec"]["replicas"] = spec_replicas
    if paused:
        obj["spec"]["paused"] = True
    obj["status"] = {"observedGeneration": obj["metadata"]["generation"], **status, "conditions": [
        {"type": t, "status": s, "reason": r, "message": f"{t} {r}"} for t, s, r in conditions or [
            ("Available", "True", "MinimumReplicasAvailable"), ("Progressing", "True", "NewReplicaSetAvailable")]]}
    return obj


def counts(replicas, updated, ready, available) -> dict:
    return {"replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available}


@pytest.mark.parametrize("status, reason, message", [
    (counts(2, 2, 2, 2), "LessReplicas", "2 of 3 replicas created"),
    (counts(3, 2, 3, 3), "LessUpdated", "2 of 3 replicas updated"),
    (counts(4, 3, 4, 4), "ExtraPods", "1 old replicas pending termination"),
    (counts(3, 3, 3, 1), "LessAvailable", "1 of 3 updated replicas available"),
    (counts(3, 3, 2, 3), "LessReady", "2 of 3 replicas ready"),
])
def test_deployment_replica_shortfalls(status, reason, message):
    health = compute_health(deployment(**status))
    assert (health.status, health.reason, health.message) == (IN_PROGRESS, reason, message)


def test_deployment_replicas_default_to_one():
    assert compute_health(deployment(None, **counts(1, 1, 1, 1))).status is CURRENT
    assert compute_health(deployment(None, **counts(0, 0, 0, 0))).reason == "LessReplicas"


def test_deployment_scaled_to_zero_is_current():
    assert compute_health(deployment(0)).status is CURRENT


def test_deployment_progress_deadline_wins_over_counts():
    obj = deployment(conditions=[("Progressing", "False", "ProgressDeadlineExceeded")], **counts(3, 3, 0, 0))
    assert compute_health(obj).status is FAILED


def test_deployment_not_available_or_not_finished_progressing():
    not_available = deployment(conditions=[("Available", "False", "MinimumReplicasUnavailable"),
                                           ("Progressing", "True", "NewReplicaSetAvailable")], **counts(3, 3, 3, 3))
    assert compute_health(not_available).reason == "DeploymentNotAvailable"
    still_progressing = deployment(conditions=[("Available", "True", "MinimumReplicasAvailable"),
                                               ("Progressing", "True", "ReplicaSetUpdated")], **counts(3, 3, 3, 3))
    assert compute_health(still_progressing).reason == "ReplicaSetNotAvailable"


def test_paused_deployment():
    unfinished = compute_health(deployment(paused=True, **counts(3, 0, 3, 3)))
    assert (unfinished.status, unfinished.reason) == (IN_PROGRESS, "Paused")
    assert unfinished.message == "rollout paused: 0 of 3 replicas updated"
    finished = deployment(paused=True, conditions=[("Available", "True", "MinimumReplicasAvailable"),
                                                   ("Progressing", "Unknown", "DeploymentPaused")],
                          **counts(3, 3, 3, 3))
    assert compute_health(finished).status is CURRENT


# -- StatefulSet, DaemonSet, ReplicaSet -----------------------------------------------------


def statefulset(**changes) -> dict:
    obj = load("statefulset-current")
    for path, value in changes.items():
        section, key = path.split("__")
        obj[section][key] = value
    return obj


def test_statefulset_rules():
    assert compute_health(statefulset(status__readyReplicas=1)).reason == "LessReady"
    assert compute_health(statefulset(status__replicas=3)).reason == "ExtraPods"
    assert compute_health(statefulset(status__currentReplicas=1)).reason == "LessCurrent"
    assert compute_health(statefulset(status__updateRevision="db-new")).reason == "RevisionMismatch"
    on_delete = statefulset(spec__updateStrategy={"type": "OnDelete"}, status__readyReplicas=0)
    assert compute_health(on_delete).status is CURRENT


def test_statefulset_partitioned_rollout():
    partitioned = {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}
    halfway = statefulset(spec__updateStrategy=partitioned, status__updatedReplicas=0,
                          status__updateRevision="db-new")
    assert compute_health(halfway).reason == "PartitionRollout"
    done = statefulset(spec__updateStrategy=partitioned, status__updatedReplicas=1, status__updateRevision="db-new")
    assert compute_health(done).status is CURRENT


def test_daemonset_rules():
    ds = load("daemonset-current")
    ds["status"]["numberReady"] = 0
    assert compute_health(ds).reason == "LessReady"
    del ds["status"]["desiredNumberScheduled"]
    assert compute_health(ds).reason == "NoDesiredNumber"
    del ds["status"]["observedGeneration"]
    assert compute_health(ds).reason == "NotObserved"


def test_replicaset_rules():
    rs = load("replicaset-current")
    rs["status"]["replicas"] = 4
    assert compute_health(rs).reason == "ExtraPods"
    rs["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
                                   "message": "exceeded quota"}]
    assert (compute_health(rs).status, compute_health(rs).reason) == (IN_PROGRESS, "FailedCreate")


# -- Pod ---------------------------------------------------------------------------------------


def waiting_pod(reason: str, init: bool = False) -> dict:
    pod = load("pod-image-pull-backoff")
    statuses = pod["status"]["containerStatuses"]
    statuses[0]["state"] = {"waiting": {"reason": reason, "message": "why"}}
    if init:
        pod["status"]["initContainerStatuses"] = statuses
        pod["status"]["containerStatuses"] = [{**statuses[0], "state": {"waiting": {"reason": "PodInitializing"}}}]
    return pod


@pytest.mark.parametrize("reason", ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                                    "CreateContainerConfigError", "CreateContainerError", "ErrImageNeverPull",
                                    "RunContainerError"])
def test_failing_waiting_reasons(reason):
    health = compute_health(waiting_pod(reason))
    assert (health.status, health.reason, health.message) == (FAILED, reason, "container pull: why")


@pytest.mark.parametrize("reason", ["ContainerCreating", "PodInitializing"])
def test_starting_waiting_reasons(reason):
    assert compute_health(waiting_pod(reason)).status is IN_PROGRESS


def test_an_init_container_crash_loop_fails_the_pod():
    assert compute_health(waiting_pod("CrashLoopBackOff", init=True)).reason == "CrashLoopBackOff"


def test_unschedulable_pod_gets_fifteen_seconds():
    pod = load("pod-unschedulable")
    assert compute_health(pod, now=created(pod) + timedelta(seconds=5)).status is IN_PROGRESS
    assert compute_health(pod, now=created(pod) + timedelta(seconds=16)).status is FAILED


def test_pod_phases():
    evicted = load("pod-running-ready")
    evicted["status"].update(phase="Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert compute_health(evicted) == Health(FAILED, "Evicted", "The node was low on resource: memory.")
    unobserved = load("pod-running-ready")
    del unobserved["status"]
    assert compute_health(unobserved).reason == "PodNotObserved"
    pending = load("pod-running-ready")
    pending["status"] = {"phase": "Pending"}
    assert compute_health(pending).reason == "PodPending"


# -- PVC, Service, Ingress, Job, CRD, APIService ---------------------------------------------


def test_pvc_rules():
    pvc = load("pvc-pending")
    pvc["status"]["phase"] = "Bound"
    assert compute_health(pvc).status is CURRENT
    pvc["status"]["phase"] = "Lost"
    assert compute_health(pvc).status is FAILED


def test_service_rules():
    lb = load("service-loadbalancer")
    lb["status"]["loadBalancer"] = {"ingress": [{"ip": "203.0.113.7"}]}
    assert compute_health(lb).status is CURRENT
    node_port = load("service-clusterip")
    node_port["spec"]["type"] = "NodePort"
    assert compute_health(node_port).status is CURRENT


def test_ingress_with_an_address_is_current_too():
    ingress = load("ingress-no-address")
    ingress["status"] = {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
    assert compute_health(ingress) == Health(CURRENT)


def job_with(*conditions: tuple[str, str, str], **status) -> dict:
    job = load("job-running")
    job["status"] = {**status, "conditions": [{"type": t, "status": s, "reason": r, "message": r}
                                              for t, s, r in conditions]}
    return job


def test_job_rules():
    assert compute_health(job_with()).reason == "JobNotStarted"
    assert compute_health(job_with(("FailureTarget", "True", "BackoffLimitExceeded"))).status is FAILED
    assert compute_health(job_with(("SuccessCriteriaMet", "True", "CompletionsReached"))).status is CURRENT
    assert compute_health(job_with(("Suspended", "True", "JobSuspended"))).status is CURRENT
    assert compute_health(job_with(("Failed", "False", ""), startTime="2026-01-01T00:00:00Z")).status is IN_PROGRESS


def test_crd_rules():
    crd = load("crd-established")
    conditions = {c["type"]: c for c in crd["status"]["conditions"]}
    conditions["NamesAccepted"].update(status="False", reason="MultipleNamesNotAllowed")
    assert (compute_health(crd).status, compute_health(crd).reason) == (FAILED, "MultipleNamesNotAllowed")
    conditions["NamesAccepted"]["status"] = "True"
    conditions["Established"].update(status="False", reason="Installing")
    assert compute_health(crd).reason == "Installing"
    crd["status"]["conditions"] = []
    assert compute_health(crd).status is IN_PROGRESS


def test_apiservice_without_conditions_is_in_progress():
    api = load("apiservice-unavailable")
    del api["status"]
    assert compute_health(api).status is IN_PROGRESS


# -- the pods of a workload -------------------------------------------------------------------


def test_a_deployment_fails_with_its_pods_reason():
    failure = workload_pod_failure(load("deployment-image-pull-backoff"), [load("pod-image-pull-backoff")],
                                   [load("replicaset-image-pull-backoff")])
    pod_name = load("pod-image-pull-backoff")["metadata"]["name"]
    assert failure == Health(FAILED, "ImagePullBackOff",
                             f'pod {pod_name}: container pull: Back-off pulling image "unreachable.invalid/app:1.0"')


def test_only_the_newest_replicaset_pods_count():
    # The same pod, but its ReplicaSet is an older revision that the rollout replaces.
    old = load("replicaset-image-pull-backoff")
    old["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "0"
    assert workload_pod_failure(load("deployment-image-pull-backoff"), [load("pod-image-pull-backoff")], [old]) is None
    # Without its ReplicaSets, a Deployment's pods cannot be told apart.
    assert workload_pod_failure(load("deployment-image-pull-backoff"), [load("pod-image-pull-backoff")]) is None


def test_a_replicaset_of_another_template_is_not_current_even_if_the_revision_annotation_lags():
    # Right after a rollout is observed, the Deployment's revision annotation may
    # still name the old ReplicaSet: its failing pods must not fail the new template.
    deployment = load("deployment-image-pull-backoff")
    assert workload_pod_failure(deployment, [load("pod-image-pull-backoff")],
                                [load("replicaset-image-pull-backoff")]) is not None
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "acme/web:3.0"
    assert workload_pod_failure(deployment, [load("pod-image-pull-backoff")],
                                [load("replicaset-image-pull-backoff")]) is None


def test_pods_of_other_owners_and_terminating_pods_do_not_count():
    assert workload_pod_failure(load("replicaset-current"), [load("pod-image-pull-backoff")]) is None
    terminating = load("pod-image-pull-backoff")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert workload_pod_failure(load("replicaset-image-pull-backoff"), [terminating]) is None


def test_statefulset_pods_of_the_update_revision():
    sts, pod = load("statefulset-image-pull-backoff"), load("pod-statefulset-image-pull-backoff")
    assert workload_pod_failure(sts, [pod]).reason == "ImagePullBackOff"
    sts["status"]["updateRevision"] = "pulldb-newer"
    assert workload_pod_failure(sts, [pod]) is None


def test_a_failed_or_unschedulable_pod_does_not_fail_its_workload():
    # Controllers replace failed pods (a Job retries up to backoffLimit); an autoscaler may add a node.
    rs = load("replicaset-image-pull-backoff")
    for name in ("pod-job-failed", "pod-unschedulable"):
        pod = load(name)
        pod["metadata"]["ownerReferences"] = load("pod-image-pull-backoff")["metadata"]["ownerReferences"]
        assert workload_pod_failure(rs, [pod]) is None


def test_label_selector():
    assert label_selector({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web", "api"]},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
        {"key": "canary", "operator": "Exists"},
        {"key": "legacy", "operator": "DoesNotExist"},
    ]}) == "a=1,b=2,tier in (web,api),env notin (dev),canary,!legacy"
    assert label_selector({}) is None
    assert label_selector(None) is None


# -- the report --------------------------------------------------------------------------------


def test_report_summaries():
    web = ObjectRef("apps/v1", "Deployment", "web", "web")
    crd = ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "widgets.example.com")
    assert str(web) == "Deployment/web/web" and str(crd) == "CustomResourceDefinition/widgets.example.com"
    ok = HealthReport([ObjectHealth(web, Health(CURRENT)), ObjectHealth(crd, Health(CURRENT))], elapsed_s=2.04)
    assert ok.ok and ok.summary() == "2 objects Current after 2.0 s"
    costed = HealthReport(ok.results, elapsed_s=2.04, cpu_s=0.031)
    assert costed.summary() == "2 objects Current after 2.0 s (0.03 s of CPU)"
    failed = HealthReport([ObjectHealth(web, Health(FAILED, "ImagePullBackOff", "pod web-1: container web: why")),
                           ObjectHealth(crd, Health(CURRENT))])
    assert not failed.ok and failed.summary() == \
        "Deployment/web/web: Failed: ImagePullBackOff: pod web-1: container web: why"
    late = HealthReport([ObjectHealth(web, Health(IN_PROGRESS, "LessAvailable", "1 of 3 updated replicas available")),
                         ObjectHealth(crd, Health(CURRENT))], timed_out=True, elapsed_s=60.2, timeout_s=60)
    assert not late.ok and late.pending == [late.results[0]]
    assert late.summary() == "timed out after 60 s: Deployment/web/web InProgress (1 of 3 updated replicas available)"


# -- against the real cluster --------------------------------------------------------------------


@pytest.fixture(scope="module")
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


def deployment_manifest(namespace: str, name: str, image: str, replicas: int = 3) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec: {{containers: [{{name: {name}, image: "{image}"}}]}}
---
"""


def configmap_manifest(namespace: str, name: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\n---\n"


@pytest.mark.cluster
def test_healthy_objects_become_current(local_cluster, kube, namespace):
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=deployment_manifest(namespace, "web", "acme/web:1.0") + f"""
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {namespace}}}
spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate, namespace: {namespace}}}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: migrate, image: "acme/migrate:1.0"}}]
""")
    refs = [("apps/v1", "Deployment", namespace, "web"), ("v1", "Service", namespace, "web"),
            ("batch/v1", "Job", namespace, "migrate"), ("v1", "Namespace", None, namespace)]
    report = wait_for_health(kube, refs, timeout_s=60)
    assert report.ok, report.summary()
    assert [r.health.status for r in report.results] == [CURRENT] * 4


@pytest.mark.cluster
def test_an_image_that_cannot_be_pulled_fails_fast_naming_the_pod(local_cluster, kube, namespace):
    # Two Deployments in one namespace are read with one LIST: each still judged as a Deployment.
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-",
            input=deployment_manifest(namespace, "web", "unreachable.invalid/app:1.0")
            + deployment_manifest(namespace, "api", "acme/api:1.0", replicas=1))
    refs = [("apps/v1", "Deployment", namespace, "web"), ("apps/v1", "Deployment", namespace, "api")]
    # Not timed out: kstatus alone would wait for the 10 min progress deadline.
    report = wait_for_health(kube, refs, timeout_s=120)
    assert not report.ok and not report.timed_out
    [failed] = report.failed
    assert failed.ref.name == "web"
    assert failed.health.reason in ("ImagePullBackOff", "ErrImagePull")
    assert failed.health.message.startswith("pod web-")
    assert "unreachable.invalid/app:1.0" in failed.health.message
    assert report.summary().startswith(f"Deployment/{namespace}/web: Failed: {failed.health.reason}: pod web-")


@pytest.mark.cluster
def test_a_crash_looping_deployment_fails(local_cluster, kube, namespace):
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-",
            input=deployment_manifest(namespace, "worker", "busybox:crashloop", replicas=1))
    report = wait_for_health(kube, [("apps/v1", "Deployment", namespace, "worker")], timeout_s=120)
    assert not report.timed_out
    assert [r.health.reason for r in report.failed] == ["CrashLoopBackOff"], report.summary()


@pytest.mark.cluster
def test_timeout_reports_what_was_still_waited_for(local_cluster, kube, namespace):
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=f"""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data, namespace: {namespace}}}
spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}
---
""" + configmap_manifest(namespace, "settings"))
    # Two ConfigMaps are read with one LIST; one of them does not exist.
    refs = [("v1", "PersistentVolumeClaim", namespace, "data"), ("v1", "ConfigMap", namespace, "settings"),
            ("v1", "ConfigMap", namespace, "missing"), ("example.com/v1", "Gadget", namespace, "g")]
    report = wait_for_health(kube, refs, timeout_s=3)
    assert report.timed_out and not report.ok and not report.failed
    assert report.elapsed_s >= 3
    assert [(r.health.status, r.health.reason) for r in report.results] == [
        (IN_PROGRESS, "NotBound"), (CURRENT, ""), (NOT_FOUND, "NotFound"), (IN_PROGRESS, "KindNotServed")]
    assert report.summary().startswith(
        f"timed out after 3 s: PersistentVolumeClaim/{namespace}/data InProgress (phase Pending, not Bound); "
        f"ConfigMap/{namespace}/missing NotFound")


@pytest.mark.cluster
def test_one_look_costs_a_list_per_kind_and_namespace_and_the_pods_of_a_workload_in_progress(
        local_cluster, kube, namespace):
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-",
            input=deployment_manifest(namespace, "web", "unreachable.invalid/app:1.0", replicas=1)
            + "".join(configmap_manifest(namespace, name) for name in ("a", "b", "c")))
    web = ("apps/v1", "Deployment", namespace, "web")
    assert wait_for_health(kube, [web], timeout_s=120).failed
    kube.resource("v1", "ConfigMap")  # discovery done: its GETs are not what is counted here
    kube.reset_requests()
    configmaps = [("v1", "ConfigMap", namespace, name) for name in ("a", "b", "c")]
    report = wait_for_health(kube, [web, *configmaps], timeout_s=0)
    assert [r.health.status for r in report.results] == [FAILED, CURRENT, CURRENT, CURRENT]
    # The Deployment: one LIST by its name; the ConfigMaps: one LIST; the failing pod:
    # a LIST of pods and one of the Deployment's ReplicaSets (which one is current).
    assert kube.requests == {"GET": 0, "LIST": 4, "WATCH": 0, "POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}



@pytest.mark.cluster
def test_workloads_in_progress_in_one_namespace_share_one_list_of_pods_and_of_replicasets(
        local_cluster, kube, namespace):
    names = [f"web-{n}" for n in range(5)]
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input="".join(
        deployment_manifest(namespace, name, f"unreachable.invalid/{name}:1.0", replicas=1) for name in names))
    refs = [("apps/v1", "Deployment", namespace, name) for name in names]
    for ref in refs:
        assert wait_for_health(kube, [ref], timeout_s=120).failed
    kube.reset_requests()
    report = wait_for_health(kube, refs, timeout_s=0)
    # Each judged by its own pod, from the namespace's pods and ReplicaSets listed
    # once: a LIST of the Deployments, of the pods, of the ReplicaSets (not 2 a Deployment).
    assert [(r.ref.name, r.health.status) for r in report.results] == [(name, FAILED) for name in names]
    assert [r.health.message.split("-")[:2] for r in report.results] == [["pod web", str(n)] for n in range(5)]
    assert kube.requests == {"GET": 0, "LIST": 3, "WATCH": 0, "POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}

def test_pod_failures_are_not_judged_before_the_controller_sees_the_new_spec():
    # Right after a rollback is applied, the failing revision is still the newest
    # ReplicaSet until the controller observes the new generation.
    deployment = load("deployment-image-pull-backoff")
    replica_set = load("replicaset-image-pull-backoff")
    pod = load("pod-image-pull-backoff")
    assert workload_pod_failure(deployment, [pod], [replica_set]) is not None
    deployment["metadata"]["generation"] = deployment["status"]["observedGeneration"] + 1
    assert workload_pod_failure(deployment, [pod], [replica_set]) is None


@pytest.mark.cluster
def test_objects_seen_current_moments_ago_are_not_read_again(local_cluster, kube, namespace):
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-",
            input=configmap_manifest(namespace, "settings") + deployment_manifest(namespace, "web", "acme/web:1.0", 1))
    configmap, deployment = ObjectRef("v1", "ConfigMap", namespace, "settings"), \
        ObjectRef("apps/v1", "Deployment", namespace, "web")
    assert wait_for_health(kube, [deployment], timeout_s=60).ok
    live_deployment = kube.get("apps/v1", "Deployment", "web", namespace)
    stale = {**live_deployment, "metadata": {**live_deployment["metadata"],
                                            "generation": live_deployment["metadata"]["generation"] + 1}}
    seen = {configmap: kube.get("v1", "ConfigMap", "settings", namespace), deployment: stale}

    before = kube.requests
    report = wait_for_health(kube, [configmap, deployment], timeout_s=30, seen_current=current_as_seen(seen))
    read = {verb: kube.requests[verb] - before[verb] for verb in before}
    assert report.ok and [r.ref for r in report.results] == [configmap, deployment]
    # The ConfigMap was Current as seen; the Deployment, seen InProgress, is read (a lone object: a LIST by name).
    assert read["GET"] == 0 and read["LIST"] == 1, read
