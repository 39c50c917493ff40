"""`gitops recover`: rebuild a cluster from Git, here or through the API. Exit
code 0 recovered, 1 not every app came back, 2 it could not run (cli/errors.py)."""

from __future__ import annotations

import typer

from prefect_gitops.cli import logs
from prefect_gitops.cli.console import out
from prefect_gitops.cli.errors import FOUND, OK, fail

DEPLOYMENT = "gitops-recover/gitops-recover"
RUN_TIMEOUT_S = 900


def recover_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name."),
    cluster: str = typer.Option(..., "--cluster", help="Cluster block name (the cluster may be new and empty)."),
    via_api: bool = typer.Option(False, "--via-api", help=f"Start the {DEPLOYMENT} deployment through Prefect's "
                                                          "API and wait for it, instead of running here."),
) -> None:
    """Apply every app that targets the cluster at the branch head, until healthy."""
    if via_api:
        _via_api(repo, cluster)
        return
    from prefect_gitops.flows.recovery import RecoveryFailed, gitops_recover

    logs.apply()
    try:
        report = gitops_recover(repo=repo, cluster=cluster)
    except RecoveryFailed as failed:
        report = failed.report
    except Exception as failure:  # a block missing, Git or the cluster unreachable...
        fail(failure)
    for app in report.apps:
        out.print(f"  {app.status.value:<9} {app.app}: {app.seconds:.1f} s, {app.changed} objects changed")
    out.print(f"{cluster}: {'recovered' if report.ok else 'not recovered'} in {report.seconds:.1f} s")
    raise typer.Exit(OK if report.ok else FOUND)


def _via_api(repo: str, cluster: str) -> None:
    try:
        run = start_recovery(repo, cluster)
    except Exception as failure:  # no such deployment, the Prefect API unreachable...
        fail(failure)
    out.print(f"flow run {run.name} ({run.id}): {run.state.name if run.state else 'unknown'}")
    raise typer.Exit(OK if run.state and run.state.is_completed() else FOUND)


def start_recovery(repo: str, cluster: str, timeout_s: float = RUN_TIMEOUT_S):
    """A flow run of the recovery deployment, named as the flow names its runs
    from the start; returned once it has ended, or after timeout_s."""
    from prefect.deployments import run_deployment

    from prefect_gitops.flows.recovery import run_name

    return run_deployment(DEPLOYMENT, parameters={"repo": repo, "cluster": cluster}, flow_run_name=run_name(cluster),
                          timeout=timeout_s, poll_interval=1)
