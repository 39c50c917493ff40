"""The check stage of a scheduled sync: which apps need a sync at all. An app
whose inventory already holds this revision as applied and healthy, and whose
live objects have not drifted from it, is up to date; so is one whose revision
is held after a failed sync (that was reported when it failed), and one that is
suspended (`gitops suspend`, or `suspend: true`). The rendered
manifests come from the render cache: an idle tick renders nothing. The apps and
clusters are checked CHECK_WORKERS at a time: a fleet's idle tick takes about as
long as its slowest check, not the sum of them. A cluster that cannot be read
needs a sync: its own sync then fails, saying why, and the others go on."""

from __future__ import annotations

from prefect import get_run_logger, task

from prefect_gitops.engine.changes.ignore import IgnoreDifferences
from prefect_gitops.engine.cluster.kube import ApiError, ClusterUnreachable, run_bounded
from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.spec.targets import Target
from prefect_gitops.engine.state.drift import desired_objects, detect_drift
from prefect_gitops.engine.state.hand_edits import drift_managers
from prefect_gitops.engine.state.inventory import read_inventory
from prefect_gitops.engine.state.suspend import suspension
from prefect_gitops.engine.workspace import Workspace
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES

# Targets checked at once: each is an inventory read and a LIST per kind and
# namespace, mostly waiting on its cluster.
CHECK_WORKERS = 8


@task(name="check", task_run_name="check {repo}@{revision:.7}", **STAGE, **TRANSIENT_RETRIES)
def find_pending(workspace: Workspace, repo: str, revision: str) -> list[Target]:
    """The targets that are not up to date, in order."""
    up_to_date = run_bounded(lambda target: _up_to_date(workspace, target), workspace.targets, CHECK_WORKERS)
    pending = [t for t, up in zip(workspace.targets, up_to_date) if not up]
    get_run_logger().info("%d of %d app(s) need a sync%s", len(pending), len(workspace.targets),
                          ": " + ", ".join(t.name for t in pending) if pending else "")
    return pending


def _up_to_date(workspace: Workspace, target: Target) -> bool:
    try:
        return _checked(workspace, target)
    except (ClusterUnreachable, ApiError) as error:
        get_run_logger().warning("%s: could not be checked (%s); it gets a sync", target.name, error)
        return False


def _checked(workspace: Workspace, target: Target) -> bool:
    kube, app, revision = workspace.kube(target.cluster), target.app, workspace.revision
    inventory = read_inventory(kube, app.name)
    if suspension(app, inventory):  # its sync would only say so, every tick (drift still reports it)
        return True
    if inventory is None:
        return False
    if revision in inventory.held_revisions:
        return True
    if inventory.revision != revision or inventory.last_healthy_revision != revision:
        return False
    try:  # the live objects, as the app's ServiceAccount if it names one
        kube = workspace.kube_for(app, target.cluster)
    except ProblemsFound:  # its sync refuses it, saying why
        return False
    target.manifests = workspace.rendered(app, target.cluster, revision)
    desired = desired_objects(kube, app.name, target.manifests, app.namespace)
    # Hand edits only with selfHeal: without it a sync leaves them (drift reports them).
    hand_managers = drift_managers(app) if app.sync_policy.self_heal else ()
    return not detect_drift(kube, app.name, inventory, desired, hand_managers, IgnoreDifferences.of(app))

