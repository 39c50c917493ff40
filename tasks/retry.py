"""Which failures a stage is retried for, by Prefect's task retries (visible as
AwaitingRetry / Retrying in the UI): those that may pass by themselves - a
connection refused or reset, a timeout, 429, a 5xx, an unreachable Git remote.
What will not go away (a 403, a 422, a bad manifest) fails the stage at once.
Every stage is safe to run twice."""

from __future__ import annotations

import urllib3

from prefect_gitops.engine.cluster.kube import is_retryable
from prefect_gitops.engine.source.git import GitError


class TransientError(Exception):
    """A stage failed for reasons that may pass; its task is retried."""


def is_transient(error: BaseException) -> bool:
    if isinstance(error, TransientError):
        return True
    if isinstance(error, GitError):
        return error.retryable
    return is_retryable(error) or isinstance(error, (TimeoutError, urllib3.exceptions.TimeoutError))


def retry_if_transient(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as error:  # the failure of the attempt that just ended
        return is_transient(error)
    return False


# Backoff over about 25 s: long enough for an API server restart or a dropped
# connection, short enough that a broken cluster fails the sync soon.
TRANSIENT_RETRIES = dict(retries=3, retry_delay_seconds=[2, 6, 15], retry_jitter_factor=0.2,
                         retry_condition_fn=retry_if_transient)
