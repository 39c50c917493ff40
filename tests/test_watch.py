"""The health wait follows objects with watches (engine/cluster/watch.py), against
the session's local cluster: it reads nothing more while nothing changes, hears of
a change at once, resumes its watches when the kube-apiserver restarts (and lists
again when the server no longer has the resourceVersion it watched from), and
lists in pages. The client never opens more connections than its pool holds."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import yaml

from conftest import kubectl
from prefect_gitops.engine.cluster import kube as kube_module
from prefect_gitops.engine.cluster.kube import DEFAULT_WORKERS, KubeClient
from prefect_gitops.engine.cluster.watch import Follower, Scope
from prefect_gitops.engine.health.rules import HealthStatus
from prefect_gitops.engine.health.wait import ObjectRef, wait_for_health
from test_apply import crd as crd_of

pytestmark = pytest.mark.cluster


@pytest.fixture
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


def configmaps(namespace: str, names: list[str]) -> str:
    return "".join(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\n---\n"
                   for name in names)


def test_a_wait_on_objects_that_do_not_change_sends_one_list_and_one_watch(local_cluster, kube, namespace):
    names = [f"c-{n}" for n in range(50)]
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=configmaps(namespace, names))
    refs = [ObjectRef("v1", "ConfigMap", namespace, name) for name in [*names, "missing"]]
    kube.resource("v1", "ConfigMap")  # discovery done: its GETs are not what is counted here
    kube.reset_requests()
    report = wait_for_health(kube, refs, timeout_s=3)
    assert report.timed_out and [r.ref.name for r in report.pending] == ["missing"]
    # One LIST of the namespace's ConfigMaps, then one watch of them for the 3 s: not a LIST a second.
    assert kube.requests["LIST"] == 1 and kube.requests["WATCH"] == 1 and kube.requests["GET"] == 0, kube.requests


def test_an_object_that_becomes_current_during_the_wait_is_seen_at_once(local_cluster, kube, namespace):
    refs = [ObjectRef("v1", "ConfigMap", namespace, name) for name in ("a", "b")]
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=configmaps(namespace, ["a"]))
    created_at: list[float] = []

    def create_b_later() -> None:
        time.sleep(2)
        with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as other:
            other.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": namespace}})
        created_at.append(time.monotonic())

    creator = threading.Thread(target=create_b_later, daemon=True)
    creator.start()
    kube.reset_requests()
    report = wait_for_health(kube, refs, timeout_s=60)
    ended_at = time.monotonic()
    creator.join()
    assert report.ok, report.summary()
    # Heard through the watch, not found by a later look: within a second of the
    # server's answer to the create (the figure; it takes about JUDGE_EVERY_S).
    assert ended_at - created_at[0] < 1.0, ended_at - created_at[0]
    assert kube.requests["LIST"] == 1, kube.requests


def test_a_deployment_that_becomes_available_during_the_wait_is_seen_when_kubectl_wait_sees_it(
        local_cluster, kube, namespace):
    manifest = f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {namespace}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: "acme/web:1.0"}}]}}
"""
    kubectl_ended: list[float] = []

    def create_then_kubectl_wait() -> None:
        time.sleep(1)  # the wait is watching by now, and finds nothing yet
        kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=manifest)
        # The reference: kubectl wait watches the Deployment for its Available condition.
        kubectl(local_cluster.kubeconfig, "wait", "-n", namespace, "--for=condition=Available", "deployment/web",
                "--timeout=60s")
        kubectl_ended.append(time.monotonic())

    kube.resource("apps/v1", "Deployment"), kube.resource("v1", "Pod")  # discovery is not what is counted
    kube.reset_requests()
    creator = threading.Thread(target=create_then_kubectl_wait, daemon=True)
    creator.start()
    report = wait_for_health(kube, [ObjectRef("apps/v1", "Deployment", namespace, "web")], timeout_s=60)
    ours_ended = time.monotonic()
    creator.join(60)
    assert report.ok, report.summary()
    # Seen when kubectl wait saw it available, give or take a second (the figure).
    assert ours_ended - kubectl_ended[0] < 1.0, ours_ended - kubectl_ended[0]
    # Its own LIST (by name), and at most one of its pods while it was in progress: the rest came by watch.
    assert kube.requests["LIST"] <= 2 and kube.requests["GET"] == 0, kube.requests


def test_a_wait_across_a_kube_apiserver_restart_resumes_lists_again_and_ends_right(
        local_cluster, kube, namespace, caplog):
    caplog.set_level(logging.DEBUG, logger="prefect_gitops.engine.cluster.watch")
    refs = [ObjectRef("v1", "ConfigMap", namespace, name) for name in ("a", "b")]
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=configmaps(namespace, ["a"]))

    def restart_then_create_b() -> None:
        time.sleep(1)  # the wait is watching by now
        local_cluster.stop_component("apiserver")
        local_cluster.start_component("apiserver")
        kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=configmaps(namespace, ["b"]))

    restarter = threading.Thread(target=restart_then_create_b, daemon=True)
    restarter.start()
    report = wait_for_health(kube, refs, timeout_s=120)
    restarter.join()
    assert report.ok, report.summary()
    # The watch from before the restart could not go on: the new server does not
    # keep that resourceVersion (410 Gone), so the ConfigMaps were listed again.
    assert any("expired, listing again" in r.getMessage() for r in caplog.records), caplog.text
    assert kube.requests["LIST"] >= 2


def test_a_follower_lists_in_pages(local_cluster, kube, namespace, monkeypatch):
    monkeypatch.setattr(kube_module, "LIST_PAGE_SIZE", 5)
    names = [f"p-{n:02d}" for n in range(12)]
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input="".join(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{paged: 'yes'}}}}\n---\n"
        for name in names))
    kube.resource("v1", "ConfigMap")
    kube.reset_requests()
    listed = Follower(kube, Scope("v1", "ConfigMap", namespace, "paged=yes"), lambda *_: None, follow=False).start()
    assert listed.listed.wait(30)
    # 12 ConfigMaps in pages of 5: 3 LISTs, one snapshot.
    assert sorted(obj["metadata"]["name"] for obj in listed.objects()) == names
    assert kube.requests["LIST"] == 3 and kube.requests["WATCH"] == 0, kube.requests


def test_more_threads_than_connections_wait_for_one_and_nothing_is_discarded(local_cluster):
    warnings: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    pool_log = logging.getLogger("urllib3.connectionpool")  # urllib3's own: Prefect's logging may not pass it on
    pool_log.addHandler(handler)
    try:
        with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as kube:
            kube.resource("v1", "Namespace")
            # Three times the pool's connections at once, as a stage's workers, a Lease
            # renewal and a health wait together may be.
            answers = kube_module.run_bounded(lambda _: kube.get("v1", "Namespace", "default"), range(500),
                                              max_workers=3 * DEFAULT_WORKERS)
    finally:
        pool_log.removeHandler(handler)
    assert all(answer["metadata"]["name"] == "default" for answer in answers)
    assert not [w for w in warnings if "Connection pool is full" in w], warnings


def test_a_kind_served_only_after_the_wait_began_is_followed_once_served(local_cluster, kube, namespace):
    group = f"w{namespace[-6:]}.example.com"
    crd = yaml.safe_dump(crd_of(group, "Gizmo"))
    gizmo = f"apiVersion: {group}/v1\nkind: Gizmo\nmetadata: {{name: g, namespace: {namespace}}}\n"

    def serve_then_create() -> None:
        time.sleep(1)
        kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=crd)
        kubectl(local_cluster.kubeconfig, "wait", "--for=condition=Established", f"crd/gizmos.{group}")
        kubectl(local_cluster.kubeconfig, "apply", "-f", "-", input=gizmo)

    threading.Thread(target=serve_then_create, daemon=True).start()
    try:
        report = wait_for_health(kube, [ObjectRef(f"{group}/v1", "Gizmo", namespace, "g")], timeout_s=60)
        assert report.ok, report.summary()
        assert report.results[0].health.status is HealthStatus.CURRENT
    finally:
        kubectl(local_cluster.kubeconfig, "delete", "crd", f"gizmos.{group}", "--wait=false", check=False)
