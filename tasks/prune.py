"""The prune stage: delete what the previous inventory has and the desired
state no longer does (engine/changes/prune.py), only objects still the app's."""

from __future__ import annotations

from prefect import get_run_logger, task

from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ChangeSetError
from prefect_gitops.engine.changes.prune import prune_objects
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES


@task(name="prune", task_run_name="prune {app.name}@{cluster}", **STAGE, **TRANSIENT_RETRIES)
def prune_target(kube: KubeClient, app: App, cluster: str, changeset: ChangeSet) -> ChangeSet:
    """Raises EmptyDesiredState when it would delete everything and the app does
    not allow it, ChangeSetError when a delete failed."""
    for change in changeset.errors():
        if change.action is Action.PRUNED:  # a failed delete of an earlier attempt: try again
            change.clear_error()
    prune_objects(kube, app.name, changeset, allow_empty=app.sync_policy.allow_empty)
    pruned = [c for c in changeset if c.action is Action.PRUNED and c.done]
    get_run_logger().info("%s@%s: pruned %d object(s)", app.name, cluster, len(pruned))
    if not changeset.ok:
        raise ChangeSetError(changeset)
    return changeset
