"""gitops_sync end to end: a real Git remote, Prefect's own server and two real
local clusters registered as `staging` and `production`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import kubectl
from example_repo import example_repo, remove_sample_apps  # noqa: F401  (fixture)
from prefect_gitops.engine.report import SyncStatus
from prefect_gitops.engine.report import SyncFailed
from prefect_gitops.flows.sync import gitops_sync

pytestmark = pytest.mark.cluster

GITOPS = str(Path(sys.executable).parent / "gitops")


@pytest.fixture
def clean_clusters(registered_clusters):
    """Each test starts from clusters without the sample apps."""
    yield registered_clusters
    remove_sample_apps(*registered_clusters.values())


def resource_versions(cluster, namespace: str) -> dict[str, str]:
    items = json.loads(kubectl(cluster.kubeconfig, "get", "configmap,service,deployment,widget", "-n", namespace,
                               "-o", "json").stdout)["items"]
    return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}


def result(report, app: str, cluster: str):
    return next(r for r in report.results if (r.app, r.cluster) == (app, cluster))


def test_sample_repository_syncs_healthy_and_a_resync_writes_nothing(example_repo, clean_clusters):
    report = gitops_sync(repo=example_repo.block_name)
    assert report.ok, report.failure_message()
    assert [(r.app, r.cluster) for r in report.results] == [
        ("platform", "production"), ("platform", "staging"), ("web", "production"),
        ("web", "staging"), ("widgets", "production"), ("widgets", "staging")]
    web = result(report, "web", "production")
    assert {(o.kind, o.action, o.health) for o in web.objects} == {
        ("ConfigMap", "created", "Current"), ("Service", "created", "Current"), ("Deployment", "created", "Current")}
    assert next(o for o in web.objects if o.kind == "Deployment").source == "apps/web/base/deployment.yaml:1"
    production = clean_clusters["production"]
    replicas = kubectl(production.kubeconfig, "get", "deployment", "web", "-n", "web",
                       "-o", "jsonpath={.status.readyReplicas}").stdout
    assert replicas == "3"
    before = {ns: resource_versions(production, ns) for ns in ("web", "widgets")}

    again = gitops_sync(repo=example_repo.block_name)
    assert again.ok
    assert {o.action for r in again.results for o in r.objects} == {"unchanged"}
    for r in again.results:
        # No dry-run, no create, no delete: every object is proven unchanged from one
        # LIST per kind and namespace (and one of the namespaces); the Lease taken and
        # given back (2 PUTs). GETs are discovery's and the health check's.
        assert r.requests["PATCH"] == r.requests["POST"] == r.requests["DELETE"] == 0, (r.app, r.cluster, r.requests)
        assert r.requests["PUT"] == 2, (r.app, r.cluster, r.requests)
        assert r.requests["LIST"] <= len(r.objects) + 1, (r.app, r.cluster, r.requests)
    assert {ns: resource_versions(production, ns) for ns in ("web", "widgets")} == before


def test_a_change_configures_one_object_prunes_a_removed_one_and_leaves_others_alone(example_repo, clean_clusters):
    assert gitops_sync(repo=example_repo.block_name, clusters=["staging"]).ok
    staging = clean_clusters["staging"]
    kubectl(staging.kubeconfig, "create", "configmap", "by-hand", "-n", "web", "--from-literal=a=b")
    example_repo.commit({
        "apps/web/base/configmap.yaml": example_repo.read("apps/web/base/configmap.yaml").replace("hello", "bonjour"),
        "apps/widgets/widgets.yaml": example_repo.read("apps/widgets/widgets.yaml").split("---")[0],
    }, "greet in French, drop the large widget")
    report = gitops_sync(repo=example_repo.block_name, clusters=["staging"])
    assert report.ok, report.failure_message()
    web = {o.ref: o.action for o in result(report, "web", "staging").objects}
    assert web == {"ConfigMap/web/web-settings": "configured", "Service/web/web": "unchanged",
                   "Deployment/web/web": "unchanged"}
    widgets = {o.ref: o.action for o in result(report, "widgets", "staging").objects}
    assert widgets == {"Widget/widgets/small": "unchanged", "Widget/widgets/large": "pruned"}
    assert kubectl(staging.kubeconfig, "get", "widget", "large", "-n", "widgets", check=False).returncode != 0
    assert kubectl(staging.kubeconfig, "get", "configmap", "by-hand", "-n", "web").returncode == 0
    greeting = kubectl(staging.kubeconfig, "get", "configmap", "web-settings", "-n", "web",
                       "-o", "jsonpath={.data.greeting}").stdout
    assert greeting == "bonjour"


def test_an_unreachable_image_fails_the_sync_on_health_with_the_pods_reason(example_repo, clean_clusters):
    assert gitops_sync(repo=example_repo.block_name, clusters=["staging"]).ok
    example_repo.commit({
        "apps/web/base/deployment.yaml": example_repo.read("apps/web/base/deployment.yaml")
        .replace("image: nginx:1.27", "image: unreachable.invalid/nginx:1.27"),
        # Without auto-revert: this test is about the failure itself (tests/test_revert.py reverts).
        "gitops.yaml": example_repo.read("gitops.yaml").replace("enabled: true", "enabled: false"),
    }, "an image nobody can pull")
    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=example_repo.block_name, clusters=["staging"], apps=["web"])
    [web] = failure.value.report.results
    assert web.status is SyncStatus.FAILED
    assert "ImagePullBackOff" in web.message or "ErrImagePull" in web.message
    deployment = next(o for o in web.objects if o.kind == "Deployment")
    assert deployment.action == "configured" and deployment.health == "Failed"
    assert "pod web-" in web.message


def test_two_syncs_of_one_app_at_once_both_finish(example_repo, clean_clusters):
    assert gitops_sync(repo=example_repo.block_name, clusters=["staging"]).ok
    reports, errors = [], []

    def run() -> None:
        try:
            reports.append(gitops_sync(repo=example_repo.block_name, clusters=["staging"], apps=["web"]))
        except Exception as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(reports) == 2
    assert all(r.ok for r in reports)


def test_cli_sync_diff_and_status_speak_json(example_repo, clean_clusters, prefect_api):
    def gitops(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PREFECT_API_URL": prefect_api})

    diff = gitops("diff", "--repo", example_repo.block_name, "--cluster", "staging", "--json")
    assert diff.returncode == 1, diff.stderr  # as kubectl diff: 1 when something would change
    planned = json.loads(diff.stdout)
    assert {o["action"] for r in planned["results"] for o in r["objects"]} == {"created"}
    assert kubectl(clean_clusters["staging"].kubeconfig, "get", "namespace", "web", check=False).returncode != 0

    synced = gitops("sync", "--repo", example_repo.block_name, "--cluster", "staging", "--json")
    assert synced.returncode == 0, synced.stderr
    document = json.loads(synced.stdout)
    assert len(document["revision"]) == 40
    first = document["results"][0]
    assert set(first) == {"app", "cluster", "status", "message", "objects", "requests", "revision", "seconds",
                          "health", "held", "suspended"}
    assert set(first["requests"]) == {"GET", "LIST", "WATCH", "POST", "PATCH", "PUT", "DELETE"}
    assert set(first["objects"][0]) == {"apiVersion", "kind", "namespace", "name", "source", "action", "health",
                                        "reason", "diff", "outcome"}

    status = gitops("status", "--repo", example_repo.block_name, "--json")
    rows = {(r["app"], r["cluster"]): r for r in json.loads(status.stdout)}
    assert rows[("web", "staging")]["inSync"] and rows[("web", "staging")]["health"] == "Current"
    assert not rows[("web", "production")]["inSync"]
    assert status.returncode == 1  # production was never synced


def test_the_scheduled_sync_returns_at_once_when_nothing_moved_or_drifted(example_repo, clean_clusters):
    assert gitops_sync(repo=example_repo.block_name, clusters=["staging"]).ok
    quiet = gitops_sync(repo=example_repo.block_name, clusters=["staging"], if_changed=True)
    for r in quiet.results:
        assert r.status is SyncStatus.SUCCEEDED and r.message.startswith("up to date"), r.message
        assert r.requests["PATCH"] == 0 and r.requests["POST"] == 0 and r.requests["DELETE"] == 0, r.requests
    staging = clean_clusters["staging"]
    kubectl(staging.kubeconfig, "scale", "deployment", "web", "-n", "web", "--replicas=4")
    healed = gitops_sync(repo=example_repo.block_name, clusters=["staging"], apps=["web"], if_changed=True)
    [web] = healed.results
    assert not web.message.startswith("up to date")
    assert {o.ref: o.action for o in web.objects}["Deployment/web/web"] == "configured"
    assert kubectl(staging.kubeconfig, "get", "deployment", "web", "-n", "web",
                   "-o", "jsonpath={.spec.replicas}").stdout == "1"
