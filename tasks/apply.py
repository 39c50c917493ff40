"""The apply stage: server-side apply of what the plan found created or
configured, staged (engine/changes/apply.py). A retried attempt goes on where the last
one stopped: objects already written are not written again."""

from __future__ import annotations

from prefect import get_run_logger, task

from prefect_gitops.engine.changes.apply import apply_changes
from prefect_gitops.engine.changes.changeset import ChangeSet, ChangeSetError
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.engine.state.hand_edits import drift_managers, take_over_planned
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES, TransientError


@task(name="apply", task_run_name="apply {app.name}@{cluster}", **STAGE, **TRANSIENT_RETRIES)
def apply_target(kube: KubeClient, app: App, cluster: str, changeset: ChangeSet) -> ChangeSet:
    """Raises ChangeSetError (the ChangeSet says what was done) when an object is
    refused, TransientError (retried) when every failure may pass."""
    for change in changeset.errors():
        if change.transient:  # from the attempt before this one
            change.clear_error()
    if app.sync_policy.self_heal:  # hand-edited fields become ours, for the apply to remove them
        take_over_planned(kube, changeset, drift_managers(app))
    apply_changes(kube, changeset)
    done = sum(c.done for c in changeset.changed())
    get_run_logger().info("%s@%s: applied %d of %d changes", app.name, cluster, done, len(changeset.changed()))
    if changeset.only_transient_errors():
        raise TransientError(f"{app.name}@{cluster}: {changeset.error_text()}")
    if not changeset.ok:
        raise ChangeSetError(changeset)
    return changeset
