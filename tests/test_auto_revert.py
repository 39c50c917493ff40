"""Auto-revert, as the README's "Auto-revert" and "Reliability" sections tell it,
against real clusters, a real Git remote and Prefect's own server: an apply the
server refuses part-way and a health timeout are reverted (what the bad revision
added pruned), mode `cluster` leaves Git alone, an unreachable cluster is not
reverted, and a revert that fails stops and says so; each with its event.

One repository of small plain apps for the module, each app a namespace of its
own, synced healthy once; each scenario then pushes its app's bad change and
syncs that app alone (tests/test_revert.py covers a health failure of the
sample app and mode `git`)."""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

from conftest import kubectl
from prefect_gitops.engine.cluster.kube import KubeClient
from example_repo import ExampleRepo
from prefect_gitops.engine.report import SyncReport, SyncStatus, TargetResult
from prefect_gitops.engine.report import SyncFailed
from prefect_gitops.flows.sync import gitops_sync
from plain_repo import (configmap, configmap_quota, deployment, flow_run_named, forget_apps, gitops_yaml,
                        make_plain_repo, namespace_object, now, remote_head, state_of, wait_for_events)
from tcp_proxy import TcpProxy, proxied_kubeconfig
from test_prefect_view import child_runs
from test_revert import inventory

pytestmark = pytest.mark.cluster

HEALTH_TIMEOUT_S = 5
APPS = ("partial", "slow", "fragile", "newcomer", "remote")
BROKEN_IMAGE = "unreachable.invalid/nginx:1.27"


@dataclass
class Fleet:
    repo: ExampleRepo
    clusters: dict  # block name -> LocalCluster
    namespaces: dict[str, str]  # app -> namespace
    proxied: str  # the block reaching staging through a TCP proxy
    proxy: TcpProxy
    good: str  # the revision every app but newcomer was synced healthy at

    def live(self, cluster: str, kind: str, name: str, app: str) -> dict | None:
        found = kubectl(self.clusters[cluster].kubeconfig, "get", kind, name, "-n", self.namespaces[app],
                        "-o", "json", check=False)
        return json.loads(found.stdout) if found.returncode == 0 else None


def spec(namespaces: dict[str, str], proxied: str) -> str:
    def app(name: str, clusters: list[str], **more) -> dict:
        policy = {"prune": True, "autoRevert": {"enabled": True, "mode": "cluster"},
                  "healthTimeoutSeconds": HEALTH_TIMEOUT_S if name == "slow" else 120}
        return {"name": name, **more, "clusters": clusters, "namespace": namespaces[name], "syncPolicy": policy}

    return gitops_yaml(
        app("partial", ["staging", "production"], path="partial/{cluster}",
            policy={"allowedNamespaces": [f"{namespaces['partial']}-extra"]}),
        app("slow", ["staging"], path="slow"),
        app("fragile", ["staging"], path="fragile"),
        app("newcomer", ["staging"], path="newcomer"),
        app("remote", [proxied], path="remote"),
    )


@pytest.fixture(scope="module")
def fleet(registered_clusters, tmp_path_factory):
    from prefect_gitops.blocks import KubernetesCluster

    suffix = secrets.token_hex(3)
    namespaces = {app: f"revert-{app}-{suffix}" for app in APPS}
    staging, production = registered_clusters["staging"], registered_clusters["production"]
    root = tmp_path_factory.mktemp("auto-revert")
    proxy, proxied_config = proxied_kubeconfig(staging.kubeconfig, root / "proxied-kubeconfig")
    proxied = f"proxied-{suffix}"
    hello = configmap("settings", greeting="hello")
    files = {"gitops.yaml": spec(namespaces, proxied), "partial/staging/settings.yaml": hello,
             "partial/production/settings.yaml": hello, "slow/settings.yaml": hello,
             "fragile/one.yaml": configmap("one", n="1"), "fragile/two.yaml": configmap("two", n="2"),
             "newcomer/settings.yaml": hello, "remote/settings.yaml": hello}
    try:
        KubernetesCluster.from_kubeconfig_file(proxied_config).save(proxied, overwrite=True)
        for namespace in namespaces.values():
            kubectl(staging.kubeconfig, "create", "namespace", namespace)
        kubectl(production.kubeconfig, "create", "namespace", namespaces["partial"])
        repo = make_plain_repo(root, "auto-revert", files)
        good = gitops_sync(repo=repo.block_name, apps=[a for a in APPS if a != "newcomer"])
        assert good.ok, good.failure_message()
        yield Fleet(repo, {"staging": staging, "production": production, proxied: staging}, namespaces, proxied,
                    proxy, good.revision)
    finally:
        proxy.stop()
        for cluster in (staging, production):
            kubectl(cluster.kubeconfig, "delete", "namespace", *namespaces.values(), f"{namespaces['partial']}-extra",
                    "--ignore-not-found", "--wait=false", check=False)
            forget_apps(cluster, *APPS)


@dataclass
class Outcome:
    """A sync of one app's bad revision: its report, when it started, and the
    remote's branch head right after it."""

    bad: str
    report: SyncReport
    since: datetime
    head_after: str

    def result(self, cluster: str) -> TargetResult:
        [found] = [r for r in self.report.results if r.cluster == cluster]
        return found


def sync_bad(fleet: Fleet, app: str, files: dict[str, str | None], message: str) -> Outcome:
    bad = fleet.repo.commit(files, message)
    since = now()
    with pytest.raises(SyncFailed) as failure:
        gitops_sync(repo=fleet.repo.block_name, apps=[app])
    return Outcome(bad, failure.value.report, since, remote_head(fleet.repo))


def assert_events(prefect_api: str, outcome: Outcome, *wanted: tuple[str, str]) -> None:
    found = wait_for_events(prefect_api, outcome.since, set(wanted))
    assert set(wanted) <= found, found


# ---- an apply refused part-way, in mode cluster --------------------------------------------


@pytest.fixture(scope="module")
def partial(fleet) -> Outcome:
    """On staging the bad revision adds a namespace and, in it, a ConfigMap whose
    key the API server refuses (objects in a namespace the sync creates have no
    dry-run before the apply): the Namespace and the changed `settings` are
    applied, then `extra` is refused. On production it only changes `settings`,
    and goes out."""
    changed = {f"partial/{c}/settings.yaml": configmap("settings", greeting="bonjour")
               for c in ("staging", "production")}
    added = added_namespace(fleet)
    return sync_bad(fleet, "partial", {**changed, "partial/staging/namespace.yaml": namespace_object(added),
                                       "partial/staging/extra.yaml": configmap("extra", namespace=added,
                                                                               **{"not a key!": "x"})},
                    "greet in French; on staging a namespace, and a ConfigMap the server refuses in it")


def added_namespace(fleet: Fleet) -> str:
    return f"{fleet.namespaces['partial']}-extra"


def test_an_apply_refused_part_way_is_reverted_to_the_last_healthy_revision(fleet, partial, prefect_api):
    staging, added = partial.result("staging"), added_namespace(fleet)
    assert staging.status is SyncStatus.REVERTED, staging.message
    assert staging.message.startswith(f"reverted to {fleet.good[:12]} after apply failed: "
                                      f"ConfigMap/{added}/extra: "), staging.message
    assert "not a key!" in staging.message
    outcomes = {o.name: o.outcome for o in staging.objects}
    assert outcomes == {added: "done", "settings": "done", "extra": "failed"}  # part-way

    # Back on the good revision: what changed is put back, what the bad revision added is pruned.
    assert fleet.live("staging", "configmap", "settings", "partial")["data"] == {"greeting": "hello"}
    gone = kubectl(fleet.clusters["staging"].kubeconfig, "get", "namespace", added, "-o", "json", check=False)
    assert gone.returncode != 0 or json.loads(gone.stdout)["metadata"].get("deletionTimestamp"), gone.stdout
    data = inventory(fleet.clusters["staging"], "partial")
    assert data["revision"] == fleet.good and json.loads(data["heldRevisions"]) == [partial.bad]
    assert added not in data["members"]

    # As Prefect shows it: the app run Failed named Reverted, its revert nested and Completed.
    run = flow_run_named(prefect_api, f"partial@staging {partial.bad[:7]}")
    assert state_of(run) == ("FAILED", "Reverted")
    [revert] = child_runs(prefect_api, run["id"])
    assert revert["name"] == f"revert partial@staging to {fleet.good[:7]}"
    assert state_of(revert) == ("COMPLETED", "Completed")
    sync = flow_run_named(prefect_api, f"sync {fleet.repo.block_name}@{partial.bad[:7]}")
    assert state_of(sync) == ("FAILED", "Reverted")
    assert_events(prefect_api, partial, ("gitops.sync.reverted", "partial@staging"))


def test_mode_cluster_leaves_git_alone_and_holds_the_bad_revision_only_where_it_failed(fleet, partial,
                                                                                       prefect_api):
    assert partial.result("staging").status is SyncStatus.REVERTED
    assert partial.head_after == partial.bad  # no revert commit pushed
    assert json.loads(inventory(fleet.clusters["staging"], "partial")["heldRevisions"]) == [partial.bad]

    # Where the bad revision went out healthy, it stays until a newer commit arrives.
    production = partial.result("production")
    assert production.status is SyncStatus.SUCCEEDED, production.message
    assert fleet.live("production", "configmap", "settings", "partial")["data"] == {"greeting": "bonjour"}
    data = inventory(fleet.clusters["production"], "partial")
    assert data["revision"] == partial.bad and json.loads(data["heldRevisions"]) == []
    assert_events(prefect_api, partial, ("gitops.sync.applied", "partial@production"))


# ---- a health timeout ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow(fleet) -> Outcome:
    """A changed ConfigMap and a Deployment paused from its creation: it never
    rolls out, fails nothing, and the health stage times out."""
    return sync_bad(fleet, "slow", {"slow/settings.yaml": configmap("settings", greeting="bonjour"),
                                    "slow/stuck.yaml": deployment("stuck", paused=True)},
                    "a Deployment that never rolls out")


def test_a_health_timeout_is_reverted_and_what_it_added_pruned(fleet, slow, prefect_api):
    result = slow.result("staging")
    assert result.status is SyncStatus.REVERTED, result.message
    assert result.message.startswith(f"reverted to {fleet.good[:12]} after health: "
                                      f"timed out after {HEALTH_TIMEOUT_S} s: "), result.message
    assert f"Deployment/{fleet.namespaces['slow']}/stuck InProgress" in result.message
    assert fleet.live("staging", "deployment", "stuck", "slow") is None
    assert fleet.live("staging", "configmap", "settings", "slow")["data"] == {"greeting": "hello"}
    assert json.loads(inventory(fleet.clusters["staging"], "slow")["heldRevisions"]) == [slow.bad]
    assert_events(prefect_api, slow, ("gitops.sync.reverted", "slow@staging"))


# ---- a revert that fails, and one that cannot happen ---------------------------------------


@pytest.fixture(scope="module")
def fragile(fleet) -> Outcome:
    """The bad revision removes ConfigMap `two` (pruned), adds a quota that the
    remaining ConfigMaps fill, and a Deployment whose image cannot be pulled:
    health fails, and the revert cannot create `two` again under the quota."""
    return sync_bad(fleet, "fragile", {"fragile/two.yaml": None, "fragile/quota.yaml": configmap_quota(2),
                                       "fragile/broken.yaml": deployment("broken", image=BROKEN_IMAGE)},
                    "a quota, one ConfigMap less, an image nobody can pull")


def test_a_revert_that_fails_stops_says_so_and_emits_revert_failed(fleet, fragile, prefect_api):
    result = fragile.result("staging")
    assert result.status is SyncStatus.FAILED, result.message
    assert result.message.startswith("health: "), result.message
    assert "ErrImagePull" in result.message or "ImagePullBackOff" in result.message
    assert f"; auto-revert to {fleet.good[:12]} failed: " in result.message
    assert f"ConfigMap/{fleet.namespaces['fragile']}/two" in result.message
    assert result.message.endswith(f"revision {fragile.bad[:12]} is held"), result.message
    assert json.loads(inventory(fleet.clusters["staging"], "fragile")["heldRevisions"]) == [fragile.bad]
    run = flow_run_named(prefect_api, f"fragile@staging {fragile.bad[:7]}")
    assert state_of(run) == ("FAILED", "Failed")
    [revert] = child_runs(prefect_api, run["id"])
    assert revert["name"] == f"revert fragile@staging to {fleet.good[:7]}" and revert["state"]["type"] == "FAILED"
    assert_events(prefect_api, fragile, ("gitops.revert.failed", "fragile@staging"),
                  ("gitops.sync.failed", "fragile@staging"))


def test_a_revert_that_cannot_happen_emits_revert_failed(fleet, prefect_api):
    outcome = sync_bad(fleet, "newcomer", {"newcomer/broken.yaml": deployment("broken", image=BROKEN_IMAGE)},
                       "a first revision that fails")
    result = outcome.result("staging")
    assert result.status is SyncStatus.FAILED
    assert "auto-revert failed: no earlier healthy revision is recorded to revert to" in result.message
    # Both would be emitted by the same run at once: the one that comes shows the other would have too.
    found = wait_for_events(prefect_api, outcome.since, {("gitops.sync.failed", "newcomer@staging")})
    assert ("gitops.sync.failed", "newcomer@staging") in found, found
    assert ("gitops.revert.failed", "newcomer@staging") in found, found


# ---- an unreachable cluster ----------------------------------------------------------------


@pytest.fixture(scope="module")
def unreachable(fleet) -> Outcome:
    """The bad revision adds 100 ConfigMaps; the proxy to the cluster stops for
    good as soon as the first of them exists (watched on the cluster itself)."""
    namespace = fleet.namespaces["remote"]

    def stop_when_applied() -> None:
        with KubeClient.from_kubeconfig(fleet.clusters["staging"].kubeconfig) as kube:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if any(o["metadata"]["name"].startswith("w-") for o in kube.list("v1", "ConfigMap", namespace)):
                    fleet.proxy.stop()
                    return
                time.sleep(0.02)

    watcher = threading.Thread(target=stop_when_applied, daemon=True)
    watcher.start()
    outcome = sync_bad(fleet, "remote", {f"remote/w-{i:03d}.yaml": configmap(f"w-{i:03d}", n=str(i))
                                         for i in range(100)}, "100 ConfigMaps")
    watcher.join(timeout=30)
    return outcome


def test_an_unreachable_cluster_is_not_reverted(fleet, unreachable, prefect_api):
    result = unreachable.result(fleet.proxied)
    assert result.status is SyncStatus.FAILED, result.message
    assert "is unreachable: " in result.message
    assert result.message.endswith("; not reverted: the cluster can take no writes now"), result.message
    assert "auto-revert" not in result.message
    run = flow_run_named(prefect_api, f"remote@{fleet.proxied} {unreachable.bad[:7]}")
    assert state_of(run) == ("FAILED", "Failed")
    assert child_runs(prefect_api, run["id"]) == []  # no revert run
    assert_events(prefect_api, unreachable, ("gitops.sync.failed", f"remote@{fleet.proxied}"))
