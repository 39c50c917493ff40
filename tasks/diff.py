"""The diff stage: what a sync would do to each object, from a server-side
dry-run against the live object (engine/changes/diff.py). When something would change,
the diff is published as a markdown artifact: `-`/`+` lines, Secret values masked."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from prefect_gitops.engine.changes.changeset import ChangeSet
from prefect_gitops.engine.changes.diff import diff_markdown, plan_changes
from prefect_gitops.engine.changes.ignore import IgnoreDifferences
from prefect_gitops.engine.changes.hooks import hooks_markdown
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.engine.state.hand_edits import drift_managers, plan_removals
from prefect_gitops.engine.state.inventory import Inventory
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES


@task(name="diff", task_run_name="diff {app.name}@{cluster}", **STAGE, **TRANSIENT_RETRIES)
def diff_target(kube: KubeClient, app: App, cluster: str, revision: str, manifests: list[Manifest],
                previous: Inventory | None, provided: list[Manifest] = ()) -> ChangeSet:
    """The plan; objects the server refuses carry their error (the caller decides)."""
    changeset = plan_changes(kube, app.name, manifests, previous, default_namespace=app.namespace,
                             provided=provided, ignore=IgnoreDifferences.of(app))
    if app.sync_policy.self_heal:  # hand edits go too (engine/state/hand_edits.py)
        plan_removals(changeset, drift_managers(app))
    get_run_logger().info("%s@%s: plan: %s", app.name, cluster, changeset.summary())
    if changeset.changed() or changeset.errors():
        create_markdown_artifact(key=artifact_key("diff", app.name, cluster),
                                 markdown=diff_markdown(app, cluster, changeset) + hooks_markdown(manifests),
                                 description=f"diff of {app.name}@{cluster} at {revision[:12]}: "
                                             f"{changeset.summary()}")
    return changeset


def artifact_key(kind: str, app: str, cluster: str) -> str:
    """Artifact keys take lowercase letters, digits and dashes only."""
    return "".join(ch if ch.isalnum() else "-" for ch in f"gitops-{kind}-{app}-{cluster}".lower())
