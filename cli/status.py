"""The state of every app on every cluster, read from the clusters themselves
(their inventories) and compared with the branch head: no flow run needed."""

from __future__ import annotations

import contextlib

from prefect_gitops.blocks import GitRepository
from prefect_gitops.blocks.registry import load_clusters
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.health.cel_rules import CelHealthChecks
from prefect_gitops.engine.health.rules import HealthStatus
from prefect_gitops.engine.health.wait import refs_of, wait_for_health
from prefect_gitops.engine.source.git import fetch
from prefect_gitops.engine.spec.appspec import load_appspec
from prefect_gitops.engine.spec.sync_windows import window_status
from prefect_gitops.engine.spec.targets import select_targets
from prefect_gitops.engine.state.inventory import read_inventory
from prefect_gitops.engine.state.suspend import suspension


def app_statuses(repo: str) -> list[dict]:
    fetched = fetch(GitRepository.load(repo).source())
    spec = load_appspec(fetched.tree)
    clusters = load_clusters()
    targets, _ = select_targets(spec, {n: c.labels for n, c in clusters.items()}, None, None)
    rows = []
    with contextlib.ExitStack() as stack:
        # One client per cluster: its discovery serves every app there.
        kubes = {name: stack.enter_context(KubeClient.for_cluster(clusters[name])) for name in {t.cluster for t in targets}}
        for target in targets:
            kube = kubes[target.cluster]
            inventory = read_inventory(kube, target.app.name)
            rows.append(_row(target, fetched.sha, inventory, _health(kube, inventory, target.app),
                             window_status(spec, target.app, target.cluster)))
    return rows


def _row(target, head: str, inventory, health: str, window: dict) -> dict:
    last = inventory.history[-1] if inventory and inventory.history else None
    return {
        "app": target.app.name, "cluster": target.cluster, "head": head,
        "revision": inventory.revision if inventory else None,
        "inSync": bool(inventory and inventory.revision == head),
        "lastHealthyRevision": inventory.last_healthy_revision if inventory else None,
        "health": health,
        "lastRun": f"{last.time} {last.result}" if last else None,
        "suspended": suspended.to_json() if (suspended := suspension(target.app, inventory)) else None,
        "syncWindow": window,
    }


def _health(kube: KubeClient, inventory, app) -> str:
    """One look at every member (by the app's CEL rules too): the worst status among them."""
    if inventory is None:
        return HealthStatus.NOT_FOUND.value
    report = wait_for_health(kube, refs_of(inventory.members), timeout_s=0,
                             custom=CelHealthChecks(app.health_checks_in_effect))
    if report.ok:
        return HealthStatus.CURRENT.value
    worst = report.failed or report.pending
    return worst[0].health.status.value if worst else HealthStatus.UNKNOWN.value
