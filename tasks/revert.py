"""The Git half of an auto-revert in mode `git`: one commit on the tracked
branch that reverts what the bad revision changed in the app, naming app,
cluster, run and reason (engine/source/rollback.py makes and pushes it). The cluster
half is the sync pipeline itself, run at the last healthy revision."""

from __future__ import annotations

from prefect import task

from prefect_gitops.engine.source.git import GitSource
from prefect_gitops.engine.source.rollback import RollbackError, rollback_in_git
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES


@task(name="revert", task_run_name="revert {app.name}@{cluster} in Git", **STAGE, **TRANSIENT_RETRIES)
def revert_in_git(repo: GitSource, app: App, cluster: str, bad: str, good: str, reason: str, run: str) -> str:
    """What was done, as a phrase for the app's result."""
    why = (f"Auto-revert by prefect-gitops: app {app.name} on cluster {cluster} failed in flow run {run} "
           f"at {bad[:12]}: {reason}")
    try:
        result = rollback_in_git(repo, app.name, good, why)
    except RollbackError as error:
        return f"Git not reverted: {error}"
    return f"Git reverted by {result.commit[:12]}" if result.pushed else "Git already reverted"
