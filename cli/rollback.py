"""`gitops rollback`: roll an app back in Git and sync it (flows/rollback.py).
Exit code 0 rolled back and synced, 1 refused (an unknown revision, not an
ancestor, nothing to revert, a conflict) or the sync after it failed, 2 it
could not run (cli/errors.py: Git unreachable or refusing, a block missing)."""

from __future__ import annotations

import typer

from prefect_gitops.cli import logs
from prefect_gitops.cli.console import error, out
from prefect_gitops.cli.errors import FOUND, fail, one_line


def rollback_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name."),
    app: str = typer.Option(..., "--app", help="The app to roll back."),
    to: str = typer.Option(..., "--to", help="The revision (SHA, tag) to roll the app back to."),
) -> None:
    """Roll an app back: revert in Git the commits after a revision that changed it, push, sync it."""
    from prefect_gitops.engine.source.rollback import RollbackError  # these import Prefect: only when the command runs
    from prefect_gitops.flows.rollback import RollbackIncomplete, gitops_rollback

    logs.apply()
    try:
        result = gitops_rollback(repo=repo, app=app, to=to)
    except RollbackError as refused:
        error(one_line(str(refused)), label="rollback refused")
        raise typer.Exit(FOUND)
    except RollbackIncomplete as incomplete:
        error(one_line(str(incomplete)))
        raise typer.Exit(FOUND)
    except Exception as failure:  # Git unreachable or refusing, a block missing...
        fail(failure)
    out.print(f"[green]rolled back[/green] {app} to {result.to[:12]} by {result.commit[:12]} "
              f"(reverted {len(result.reverted)} commit(s)); synced: "
              f"{'; '.join(f'{r.cluster}: {r.status.value}' for r in result.sync.results)}")
