"""`gitops_rollback`: put one app back as it was at an earlier revision, the GitOps
way - in Git first (engine/source/rollback.py: the commits after that revision that
changed the app are reverted by one pushed commit), then the app is synced at
that commit as a nested `gitops-sync` flow run, visible under this one."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact

from prefect_gitops.blocks import GitRepository
from prefect_gitops.engine.report import SyncFailed
from prefect_gitops.engine.source import rollback
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.flows.sync import gitops_sync
from prefect_gitops.tasks.rollback import git_rollback


class RollbackIncomplete(Exception):
    """Git is rolled back (the commit is pushed) but the app's sync failed."""

    def __init__(self, result: rollback.RollbackResult, why: str):
        super().__init__(f"{result.app}: rolled back in Git by {result.commit[:12]}, but the sync failed: {why}")
        self.result = result


@gitops_flow(name="gitops-rollback", flow_run_name="rollback {app} to {to}")
def gitops_rollback(repo: str, app: str, to: str) -> rollback.RollbackResult:
    """Roll one app back to an earlier revision: revert in Git the commits after
    it that changed the app, push one commit, then sync the app at that commit.

    Args:
        repo: Name of the GitOps Git Repository block whose tracked branch gets
            the rollback commit.
        app: The app (as named in gitops.yaml) to roll back; other apps' changes stay.
        to: The revision to roll the app back to: a commit SHA (full or short), a tag
            or a branch the tracked branch went through.
    """
    result = git_rollback(GitRepository.load(repo).source(), app, to)
    create_markdown_artifact(key=f"gitops-rollback-{app}", markdown=result.markdown(),
                             description=f"rollback of {app} to {result.to[:12]}")
    state = gitops_sync(repo=repo, apps=[app], revision=result.commit, return_state=True)
    outcome = state.result(raise_on_failure=False)
    result.sync = outcome.report if isinstance(outcome, SyncFailed) else (
        None if isinstance(outcome, BaseException) else outcome)
    if not state.is_completed():
        raise RollbackIncomplete(result, state.message or f"the sync run ended {state.name}")
    return result
