"""Auto-revert against real clusters: a change that fails on health is undone in
the cluster (what it added pruned), the bad revision is held so it is never
applied twice, and a revert that cannot happen stops and says so."""

from __future__ import annotations

import json

import pytest

from conftest import kubectl
from example_repo import example_repo  # noqa: F401  (fixture)
from prefect_gitops.engine.report import SyncStatus
from prefect_gitops.engine.report import SyncFailed
from prefect_gitops.flows.sync import gitops_sync
from test_sync import clean_clusters  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster

BROKEN_IMAGE = "unreachable.invalid/nginx:1.27"


def set_revert_mode(example_repo, mode: str) -> dict[str, str]:
    return {"gitops.yaml": example_repo.read("gitops.yaml").replace("mode: git", f"mode: {mode}")}


def break_web(example_repo, extra: dict[str, str] | None = None) -> str:
    files = {"apps/web/base/deployment.yaml": example_repo.read("apps/web/base/deployment.yaml")
             .replace("image: nginx:1.27", f"image: {BROKEN_IMAGE}"), **(extra or {})}
    return example_repo.commit(files, "an image nobody can pull")


def live_image(cluster) -> str:
    return kubectl(cluster.kubeconfig, "get", "deployment", "web", "-n", "web",
                   "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout


def inventory(cluster, app: str) -> dict:
    configmap = json.loads(kubectl(cluster.kubeconfig, "get", "configmap", f"gitops-app-{app}", "-n", "gitops-system",
                                   "-o", "json").stdout)
    return configmap["data"]


def test_a_change_that_fails_on_health_is_reverted_in_the_cluster_and_held(example_repo, clean_clusters):
    example_repo.commit(set_revert_mode(example_repo, "cluster"), "revert in the cluster only")
    good = gitops_sync(repo=example_repo.block_name, clusters=["staging"])
    assert good.ok
    staging = clean_clusters["staging"]
    added = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  a: b\n")
    bad = break_web(example_repo, {"apps/web/base/extra.yaml": added,
                                   "apps/web/base/kustomization.yaml": example_repo.read(
                                       "apps/web/base/kustomization.yaml") + "  - extra.yaml\n"})

    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=example_repo.block_name, clusters=["staging"], apps=["web"])
    [web] = failure.value.report.results
    assert web.status is SyncStatus.REVERTED
    assert "ImagePullBackOff" in web.message or "ErrImagePull" in web.message
    assert f"reverted to {good.revision[:12]}" in web.message
    assert live_image(staging) == "nginx:1.27"
    # What the bad revision added is pruned by the revert.
    assert kubectl(staging.kubeconfig, "get", "configmap", "extra", "-n", "web", check=False).returncode != 0
    data = inventory(staging, "web")
    assert bad in json.loads(data["heldRevisions"])
    assert good.revision in data["revision"]

    # The next sync of the same bad revision is skipped: no second revert, and
    # the run does not say Completed, since nothing went out.
    with pytest.raises(SyncFailed) as again:
        gitops_sync(repo=example_repo.block_name, clusters=["staging"], apps=["web"])
    [skipped] = again.value.report.results
    assert skipped.status is SyncStatus.SKIPPED and skipped.held and "held" in skipped.message
    assert skipped.requests["PATCH"] == 0 and skipped.requests["DELETE"] == 0
    assert live_image(staging) == "nginx:1.27"

    # A newer commit (the fix) is synced as usual.
    example_repo.commit({"apps/web/base/deployment.yaml": example_repo.read("apps/web/base/deployment.yaml")
                        .replace(BROKEN_IMAGE, "nginx:1.28")}, "fix the image")
    fixed = gitops_sync(repo=example_repo.block_name, clusters=["staging"], apps=["web"])
    assert fixed.ok and live_image(staging) == "nginx:1.28"


def test_without_a_healthy_revision_the_revert_stops_and_says_so(example_repo, clean_clusters):
    break_web(example_repo)
    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=example_repo.block_name, clusters=["staging"])
    web = next(r for r in failure.value.report.results if r.app == "web")
    assert web.status is SyncStatus.FAILED
    assert "auto-revert failed: no earlier healthy revision" in web.message
    assert "is held" in web.message


def test_mode_git_pushes_one_revert_commit_even_when_both_clusters_fail(example_repo, clean_clusters):
    good = gitops_sync(repo=example_repo.block_name)
    assert good.ok
    bad = break_web(example_repo)
    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=example_repo.block_name, apps=["web"])
    results = failure.value.report.results
    assert {r.cluster: r.status for r in results} == {"staging": SyncStatus.REVERTED,
                                                      "production": SyncStatus.REVERTED}
    messages = " ".join(r.message for r in results)
    assert messages.count("Git reverted by") == 1 and "Git already reverted" in messages

    example_repo.git_pull()
    log = example_repo.log()
    assert log[0].startswith("Roll back app web to") and "Auto-revert by prefect-gitops" in log[0]
    assert "unreachable.invalid" not in example_repo.read("apps/web/base/deployment.yaml")
    assert bad[:12] in log[0]  # the reverted commit is named
    for cluster in clean_clusters.values():
        assert live_image(cluster) == "nginx:1.27"
    # The next sync of the branch head (the revert commit) is clean and changes nothing.
    head = gitops_sync(repo=example_repo.block_name, apps=["web"])
    assert head.ok and {o.action for r in head.results for o in r.objects} == {"unchanged"}
