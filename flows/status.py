"""The state of every app on every cluster, read from the clusters themselves
(their inventories) and compared with the branch head: no flow run needed."""

from __future__ import annotations

from blocks import GitRepository
from blocks.registry import load_clusters
from flows.validate import select_targets
from tasks.appspec import load_appspec
from tasks.git import fetch
from tasks.health import HealthStatus, ObjectRef, wait_for_health
from tasks.inventory import read_inventory
from tasks.kube import KubeClient


def app_statuses(repo: str) -> list[dict]:
    fetched = fetch(GitRepository.load(repo))
    spec = load_appspec(fetched.tree)
    blocks = load_clusters()
    targets, _ = select_targets(spec, {n: b.labels for n, b in blocks.items()}, None, None)
    rows = []
    for target in targets:
        with KubeClient.from_block(blocks[target.cluster]) as kube:
            inventory = read_inventory(kube, target.app.name)
            health = _health(kube, inventory)
        last = inventory.history[-1] if inventory and inventory.history else None
        rows.append({
            "app": target.app.name, "cluster": target.cluster, "head": fetched.sha,
            "revision": inventory.revision if inventory else None,
            "inSync": bool(inventory and inventory.revision == fetched.sha),
            "lastHealthyRevision": inventory.last_healthy_revision if inventory else None,
            "health": health,
            "lastRun": f"{last.time} {last.result}" if last else None,
        })
    return rows


def _health(kube: KubeClient, inventory) -> str:
    """One look at every member: the worst status among them."""
    if inventory is None:
        return HealthStatus.NOT_FOUND.value
    refs = [ObjectRef(m.api_version, m.kind, m.namespace or None, m.name) for m in inventory.members]
    report = wait_for_health(kube.api_client, refs, timeout_s=0, dynamic=kube.dynamic)
    if report.ok:
        return HealthStatus.CURRENT.value
    worst = report.failed or report.pending
    return worst[0].health.status.value if worst else HealthStatus.UNKNOWN.value
