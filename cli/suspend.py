"""`gitops suspend` and `gitops resume`: keep syncs, heals and reverts off an app
on its clusters, and let them back (engine/state/suspend.py). The record is
written in each cluster, so every worker and machine honours it. Exit code 0
done, 1 `resume` left the app suspended by its gitops.yaml field, 2 it could
not run (cli/errors.py)."""

from __future__ import annotations

import contextlib
import getpass
import socket
from typing import Iterator

import typer
from rich.markup import escape

from prefect_gitops.cli.console import err, out
from prefect_gitops.cli.errors import FOUND, OK, fail

APP = typer.Argument(..., help="The app's name in gitops.yaml.")
REPO = typer.Option(..., "--repo", help="Git repository block name (its gitops.yaml says where the app goes).")
CLUSTERS = typer.Option([], "--cluster", help="Only this cluster (repeatable); every cluster the app goes to when "
                                              "not given.")


def suspend_command(app: str = APP, repo: str = REPO, cluster: list[str] = CLUSTERS,
                    reason: str = typer.Option("", "--reason", help="Why, shown by gitops status.")) -> None:
    """Suspend an app: no sync, heal or revert touches it until `gitops resume`; drift is still reported."""
    from prefect_gitops.engine.state.suspend import suspend

    try:
        by = f"{getpass.getuser()}@{socket.gethostname()}"
        with _clusters_of(repo, app, cluster) as (spec_app, kubes):
            for name, kube in kubes.items():
                record = suspend(kube, app, by, reason)
                out.print(escape(f"{app} on {name}: {record.describe()}"))
    except Exception as failure:  # Git, a block, a cluster unreachable...
        fail(failure)
    if spec_app.suspend:
        err.print(escape(f"{app} is also suspended by its gitops.yaml (suspend: true)"))
    raise typer.Exit(OK)


def resume_command(app: str = APP, repo: str = REPO, cluster: list[str] = CLUSTERS) -> None:
    """Resume an app suspended by `gitops suspend`; the next sync applies what it missed."""
    from prefect_gitops.engine.state.suspend import resume

    try:
        with _clusters_of(repo, app, cluster) as (spec_app, kubes):
            for name, kube in kubes.items():
                record = resume(kube, app)
                out.print(escape(f"{app} on {name}: " + (f"resumed (was {record.describe()})" if record
                                                         else "was not suspended by gitops suspend")))
    except Exception as failure:
        fail(failure)
    if spec_app.suspend:
        err.print(escape(f"{app} stays suspended everywhere: its gitops.yaml sets suspend: true; "
                         "change that in Git to resume it"))
        raise typer.Exit(FOUND)
    raise typer.Exit(OK)


@contextlib.contextmanager
def _clusters_of(repo: str, app: str, clusters: list[str]) -> Iterator[tuple]:
    """The app as the branch head's gitops.yaml defines it, and a client for each
    selected cluster it goes to. ProblemsFound for an unknown app or cluster, or
    a cluster the app does not go to."""
    from prefect_gitops.blocks import GitRepository
    from prefect_gitops.blocks.registry import load_clusters
    from prefect_gitops.engine.cluster.kube import KubeClient
    from prefect_gitops.engine.objects import Source
    from prefect_gitops.engine.problems import Problem, ProblemsFound, Severity
    from prefect_gitops.engine.source.git import fetch
    from prefect_gitops.engine.spec.appspec import load_appspec
    from prefect_gitops.engine.spec.targets import select_targets

    spec = load_appspec(fetch(GitRepository.load(repo).source()).tree)
    saved = load_clusters()
    targets, problems = select_targets(spec, {n: c.labels for n, c in saved.items()}, [app], clusters or None)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    goes_to = {t.cluster for t in targets}
    errors += [Problem(Source("gitops.yaml"), f"app/{app}", "select.not-a-target",
                       f"app {app} does not go to cluster {name!r}") for name in clusters
               if name in saved and name not in goes_to]
    if not goes_to and not errors:
        errors.append(Problem(Source("gitops.yaml"), f"app/{app}", "select.not-a-target",
                              f"app {app} goes to no saved cluster"))
    if errors:
        raise ProblemsFound(errors)
    with contextlib.ExitStack() as stack:
        kubes = {name: stack.enter_context(KubeClient.for_cluster(saved[name])) for name in sorted(goes_to)}
        yield spec.app(app), kubes
