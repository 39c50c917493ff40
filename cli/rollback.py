"""`gitops rollback`: roll an app back in Git and sync it (flows/rollback.py)."""

from __future__ import annotations

import typer

from cli import logs
from cli.console import error, out


def rollback_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name."),
    app: str = typer.Option(..., "--app", help="The app to roll back."),
    to: str = typer.Option(..., "--to", help="The revision (SHA, tag) to roll the app back to."),
) -> None:
    """Roll an app back: revert in Git the commits after a revision that changed it, push, sync it."""
    from engine.git import GitError  # these import Prefect: only when the command runs
    from engine.rollback import RollbackError
    from flows.rollback import RollbackIncomplete, gitops_rollback

    logs.apply()
    try:
        result = gitops_rollback(repo=repo, app=app, to=to)
    except (RollbackError, GitError) as refused:
        error(str(refused), label="rollback refused")
        raise typer.Exit(1)
    except RollbackIncomplete as incomplete:
        error(str(incomplete))
        raise typer.Exit(1)
    out.print(f"[green]rolled back[/green] {app} to {result.to[:12]} by {result.commit[:12]} "
              f"(reverted {len(result.reverted)} commit(s)); synced: "
              f"{'; '.join(f'{r.cluster}: {r.status.value}' for r in result.sync.results)}")
