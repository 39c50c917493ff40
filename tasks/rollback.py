"""The Git half of a rollback: one pushed commit that reverts what changed an
app after a revision (engine/source/rollback.py)."""

from __future__ import annotations

from prefect import task

from prefect_gitops.engine.source.git import GitSource
from prefect_gitops.engine.source.rollback import RollbackResult, rollback_in_git
from prefect_gitops.tasks.options import STAGE


@task(name="git-rollback", task_run_name="roll {app} back to {to}", **STAGE)
def git_rollback(repo: GitSource, app: str, to: str) -> RollbackResult:
    """Not retried: a refusal (unknown revision, conflicts) is final, and the push retries itself."""
    return rollback_in_git(repo, app, to)
