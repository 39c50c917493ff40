"""`gitops serve`: every deployment of prefect.yaml (cli/deployments.py) served
from one process, without a work pool or worker - the scheduled sync, the
scheduled drift check, the recovery triggered by an event, and the manual
rollback - and the served commands' socket (cli/served.py)."""

from __future__ import annotations

import typer

DEFAULT_LIMIT = 4


def serve_all(repo: str, limit: int = DEFAULT_LIMIT, sync_interval_s: float | None = None,
              drift_cron: str | None = None) -> None:
    """Serve every deployment until stopped; at most `limit` runs at once (the
    default of prefect.serve is unlimited, which a burst of events could exhaust)."""
    from prefect.settings import PREFECT_API_URL

    from prefect_gitops.cli.deployments import deployments
    from prefect_gitops.cli.runner import serve
    from prefect_gitops.cli.served import listening

    served = deployments(repo, sync_interval_s, drift_cron)
    with listening(PREFECT_API_URL.value()):  # `gitops sync`, `diff` and `drift` ask this process to run them
        serve(*served, limit=limit)


def serve_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name the deployments work on."),
    limit: int = typer.Option(DEFAULT_LIMIT, "--limit", min=1, help="At most this many flow runs at once."),
    sync_interval: float = typer.Option(None, "--sync-interval", min=1,
                                        help="Seconds between scheduled syncs (default: prefect.yaml's)."),
    drift_cron: str = typer.Option(None, "--drift-cron",
                                   help="Cron schedule of the drift check (default: prefect.yaml's)."),
) -> None:
    """Serve the deployments of prefect.yaml (sync, drift, recover, rollback) from
    this process (no worker needed)."""
    serve_all(repo, limit=limit, sync_interval_s=sync_interval, drift_cron=drift_cron)
