"""`gitops serve`: every deployment of prefect-gitops served from one process,
without a work pool or worker - the scheduled sync, the scheduled drift check,
the recovery triggered by an event, and the manual rollback. The same
deployments as prefect.yaml (names, schedules, trigger, concurrency), for when
a worker is more than is wanted."""

from __future__ import annotations

import typer
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger

from flows.recovery import RECOVER_EVENT

DRIFT_CRON = "*/10 * * * *"
TAGS = ["gitops"]


def sync_deployment(repo: str, interval_s: float = 60) -> RunnerDeployment:
    from flows.sync import gitops_sync

    # One sync at a time; a tick that finds one still running is dropped, not queued.
    single = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)
    return gitops_sync.to_deployment(name="gitops-sync", interval=interval_s,
                                     parameters={"repo": repo, "if_changed": True},
                                     concurrency_limit=single, tags=[*TAGS, "sync"],
                                     description="Apply the branch head to every cluster.")


def drift_deployment(repo: str, cron: str = DRIFT_CRON) -> RunnerDeployment:
    from flows.drift import gitops_drift  # written apart from this module; imported when served

    return gitops_drift.to_deployment(name="gitops-drift", cron=cron, parameters={"repo": repo},
                                      tags=[*TAGS, "drift"], description="Compare every cluster with Git.")


def recover_trigger() -> DeploymentEventTrigger:
    """A recovery run per `gitops.recover.requested` event, for the cluster it names."""
    return DeploymentEventTrigger(
        name="gitops-recover on request",
        expect={RECOVER_EVENT},
        match={"prefect.resource.id": "gitops.cluster.*"},
        parameters={"cluster": "{{ event.resource['gitops.cluster'] }}"},
    )


def recover_deployment(repo: str) -> RunnerDeployment:
    from flows.recovery import gitops_recover

    # Queued, not dropped: each request may name another cluster.
    return gitops_recover.to_deployment(name="gitops-recover", parameters={"repo": repo}, concurrency_limit=1,
                                        triggers=[recover_trigger()], tags=[*TAGS, "recover"],
                                        description="Bring a new or emptied cluster back to the branch head.")


def rollback_deployment(repo: str) -> RunnerDeployment:
    from flows.rollback import gitops_rollback

    return gitops_rollback.to_deployment(name="gitops-rollback", parameters={"repo": repo},
                                         tags=[*TAGS, "rollback"],
                                         description="Roll an app back to a revision, in Git, then sync it.")


def deployments(repo: str, sync_interval_s: float = 60, drift_cron: str = DRIFT_CRON) -> list[RunnerDeployment]:
    return [sync_deployment(repo, sync_interval_s), drift_deployment(repo, drift_cron),
            recover_deployment(repo), rollback_deployment(repo)]


def serve_all(repo: str, limit: int = 4, sync_interval_s: float = 60, drift_cron: str = DRIFT_CRON) -> None:
    """Serve every deployment until stopped; at most `limit` runs at once (the
    default of prefect.serve is unlimited, which a burst of events could exhaust)."""
    serve(*deployments(repo, sync_interval_s, drift_cron), limit=limit)


def serve_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name the deployments work on."),
    limit: int = typer.Option(4, "--limit", min=1, help="At most this many flow runs at once."),
    sync_interval: float = typer.Option(60, "--sync-interval", min=1, help="Seconds between scheduled syncs."),
    drift_cron: str = typer.Option(DRIFT_CRON, "--drift-cron", help="Cron schedule of the drift check."),
) -> None:
    """Serve the sync, drift, recover and rollback deployments from this process (no worker needed)."""
    serve_all(repo, limit=limit, sync_interval_s=sync_interval, drift_cron=drift_cron)
