"""The local cluster behaves like a real one, seen through the real kubectl."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes.utils import parse_quantity

from conftest import kubectl

pytestmark = pytest.mark.cluster


def deployment(name: str, image: str, replicas: int = 1) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: 600
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: main
        image: {image}
"""


def get_json(kubeconfig, *args) -> dict:
    return json.loads(kubectl(kubeconfig, "get", *args, "-o", "json").stdout)


def wait_for(what: str, condition, timeout: float = 60, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def test_reports_the_stamped_version(local_cluster):
    version = json.loads(kubectl(local_cluster.kubeconfig, "version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"


def test_node_is_ready_with_capacity_and_a_fresh_lease(local_cluster):
    node = get_json(local_cluster.kubeconfig, "node", local_cluster.node_name)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}
    assert ready["Ready"] == "True"
    assert parse_quantity(node["status"]["allocatable"]["pods"]) >= 110
    lease = get_json(local_cluster.kubeconfig, "lease", "-n", "kube-node-lease", local_cluster.node_name)
    renewed = lease["spec"]["renewTime"]
    # The kubelet renews every 10 s; a fresh renewTime shows it is still doing so.
    wait_for("the node lease to be renewed",
             lambda: get_json(local_cluster.kubeconfig, "lease", "-n", "kube-node-lease",
                              local_cluster.node_name)["spec"]["renewTime"] != renewed, timeout=25)


def test_deployment_rolls_out_with_running_ready_pods(local_cluster, namespace):
    kc = local_cluster.kubeconfig
    kubectl(kc, "apply", "-n", namespace, "-f", "-", input=deployment("web", "nginx:1.27", replicas=3))
    kubectl(kc, "rollout", "status", "-n", namespace, "deployment/web", "--timeout=90s")
    pods = get_json(kc, "pods", "-n", namespace, "-l", "app=web")["items"]
    assert len(pods) == 3
    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running"
        assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
        assert status["podIP"].startswith("10.244.") and status["hostIP"] == "127.0.0.1"
        [container] = status["containerStatuses"]
        assert container["ready"] and "running" in container["state"]
    assert len({p["status"]["podIP"] for p in pods}) == 3


def test_deleting_a_namespace_with_pods_finishes(local_cluster):
    kc = local_cluster.kubeconfig
    kubectl(kc, "create", "namespace", "doomed")
    kubectl(kc, "apply", "-n", "doomed", "-f", "-", input=deployment("web", "nginx:1.27", replicas=2))
    kubectl(kc, "rollout", "status", "-n", "doomed", "deployment/web", "--timeout=90s")
    kubectl(kc, "delete", "namespace", "doomed", "--timeout=90s")
    assert kubectl(kc, "get", "namespace", "doomed", check=False).returncode != 0


def test_server_side_apply(local_cluster, namespace):
    kc = local_cluster.kubeconfig
    config_map = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {namespace}\ndata:\n  a: '1'\n"
    kubectl(kc, "apply", "--server-side", "--field-manager=test", "-f", "-", input=config_map)
    kubectl(kc, "apply", "--server-side", "--field-manager=test", "-f", "-", input=config_map.replace("'1'", "'2'"))
    live = get_json(kc, "configmap", "-n", namespace, "settings", "--show-managed-fields")
    assert live["data"] == {"a": "2"}
    assert [m["manager"] for m in live["metadata"]["managedFields"]] == ["test"]
    assert live["metadata"]["managedFields"][0]["operation"] == "Apply"


CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
"""


def test_crd_becomes_established_and_serves_its_kind(local_cluster, namespace):
    kc = local_cluster.kubeconfig
    kubectl(kc, "apply", "-f", "-", input=CRD)
    kubectl(kc, "wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=60s")
    widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n"
    wait_for("the Widget kind to be served",
             lambda: kubectl(kc, "apply", "-n", namespace, "-f", "-", input=widget, check=False).returncode == 0)
    assert get_json(kc, "widget", "-n", namespace, "w1")["spec"]["size"] == 3


def test_unreachable_image_never_becomes_available(local_cluster, namespace):
    kc = local_cluster.kubeconfig
    kubectl(kc, "apply", "-n", namespace, "-f", "-",
            input=deployment("broken", "unreachable.invalid/app:1.0", replicas=2))

    def reasons():
        pods = get_json(kc, "pods", "-n", namespace, "-l", "app=broken")["items"]
        waiting = [c["state"].get("waiting", {}).get("reason")
                   for p in pods for c in p["status"].get("containerStatuses", [])]
        return waiting if len(waiting) == 2 else None

    first = wait_for("pods to report an image pull failure", reasons)
    assert set(first) <= {"ErrImagePull", "ImagePullBackOff"}
    wait_for("ImagePullBackOff", lambda: set(reasons() or []) == {"ImagePullBackOff"}, timeout=15)
    status = kubectl(kc, "rollout", "status", "-n", namespace, "deployment/broken", "--timeout=5s", check=False)
    assert status.returncode != 0
    live = get_json(kc, "deployment", "-n", namespace, "broken")
    assert live["status"].get("availableReplicas", 0) == 0
    pods = get_json(kc, "pods", "-n", namespace, "-l", "app=broken")["items"]
    assert all(p["status"]["phase"] == "Pending" for p in pods)


def test_crashloop_tag_restarts_with_growing_count(local_cluster, namespace):
    kc = local_cluster.kubeconfig
    kubectl(kc, "apply", "-n", namespace, "-f", "-", input=deployment("crashy", "busybox:crashloop"))

    def container():
        pods = get_json(kc, "pods", "-n", namespace, "-l", "app=crashy")["items"]
        statuses = pods[0]["status"].get("containerStatuses") if pods else None
        return statuses[0] if statuses else None

    backoff = wait_for("CrashLoopBackOff",
                       lambda: (c := container()) and c["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff" and c)
    assert backoff["restartCount"] >= 1
    assert backoff["lastState"]["terminated"]["exitCode"] == 1
    wait_for("the restart count to grow", lambda: (c := container()) and c["restartCount"] > backoff["restartCount"],
             timeout=20)
    assert not container()["ready"]


def test_job_completes(local_cluster, namespace):
    kc = local_cluster.kubeconfig
    job = ("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  template:\n    spec:\n"
           "      restartPolicy: Never\n      containers:\n      - name: main\n        image: busybox:1.36\n")
    kubectl(kc, "apply", "-n", namespace, "-f", "-", input=job)
    kubectl(kc, "wait", "-n", namespace, "--for=condition=Complete", "job/once", "--timeout=60s")
    [pod] = get_json(kc, "pods", "-n", namespace, "-l", "job-name=once")["items"]
    assert pod["status"]["phase"] == "Succeeded"


def test_rbac_is_enforced(local_cluster, namespace):
    kc = local_cluster.kubeconfig
    kubectl(kc, "create", "serviceaccount", "-n", namespace, "nobody")
    allowed = kubectl(kc, "auth", "can-i", "list", "secrets", "-n", namespace,
                      f"--as=system:serviceaccount:{namespace}:nobody", check=False)
    assert allowed.stdout.strip() == "no"
    assert kubectl(kc, "auth", "can-i", "list", "secrets", "-A").stdout.strip() == "yes"
