"""The fetch stage: one revision of the GitOps repository, resolved to a commit
and checked out read-only (engine/git.py)."""

from __future__ import annotations

from prefect import get_run_logger, task

from blocks import GitRepository
from engine.git import FetchResult, fetch
from tasks.options import STAGE
from tasks.retry import TRANSIENT_RETRIES


@task(name="fetch", task_run_name="fetch {name}@{revision}", **STAGE, **TRANSIENT_RETRIES)
def fetch_revision(name: str, repo: GitRepository, revision: str | None = None) -> FetchResult:
    """`name`: the repository block's name; `revision`: a branch, tag or SHA (the
    block's branch when None)."""
    result = fetch(repo, revision)
    get_run_logger().info("%s: %s is %s", result.url, result.ref, result.sha)
    return result
