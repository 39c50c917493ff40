"""The record stage: the app's inventory in the cluster (an ApplySet parent)
learns the members, the revision, the result and the last healthy revision."""

from __future__ import annotations

from prefect import task

from prefect_gitops.engine.changes.changeset import ChangeSet
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.engine.state.inventory import Inventory, updated_inventory, write_inventory
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES


@task(name="record", task_run_name="record {app.name}@{cluster}", **STAGE, **TRANSIENT_RETRIES)
def record_target(kube: KubeClient, app: App, cluster: str, changeset: ChangeSet, previous: Inventory | None,
                  revision: str, result: str, healthy: bool = False, hold: str | None = None) -> Inventory:
    """`hold`: a revision never to apply automatically again (the one a revert undid)."""
    inventory = updated_inventory(app.name, changeset, previous, revision, result, healthy)
    if hold:
        inventory.hold(hold)
    write_inventory(kube, inventory)
    return inventory
