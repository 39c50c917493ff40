"""The fetch stage: one revision of the GitOps repository, resolved to a commit
and checked out read-only (engine/source/git.py)."""

from __future__ import annotations

from prefect import get_run_logger, runtime, task

from prefect_gitops.engine.source.git import FetchResult, GitSource, fetch
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES


def _run_name() -> str:
    parameters = runtime.task_run.parameters
    revision = parameters.get("revision")
    return f"fetch {parameters['name']}@{revision[:12] if revision else 'head'}"


@task(name="fetch", task_run_name=_run_name, **STAGE, **TRANSIENT_RETRIES)
def fetch_revision(name: str, repo: GitSource, revision: str | None = None) -> FetchResult:
    """`name`: the repository block's name; `revision`: a branch, tag or SHA (the
    block's branch when None)."""
    result = fetch(repo, revision)
    get_run_logger().info("%s: %s is %s", result.url, result.ref, result.sha)
    return result
