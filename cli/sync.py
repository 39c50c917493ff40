"""`gitops sync`, `gitops diff` and `gitops status`. The exit code is 0 only when
everything succeeded; `--json` prints one document that scripts can rely on."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.report import SyncFailed, SyncReport
from cli.tables import print_result, print_table

err = Console(stderr=True)

REPO = typer.Option(..., "--repo", help="Git repository block name.")
REVISION = typer.Option(None, "--revision", help="Branch, tag or SHA; the block's branch by default.")
APPS = typer.Option([], "--app", help="Only this app (repeatable).")
CLUSTERS = typer.Option([], "--cluster", help="Only this cluster (repeatable).")
AS_JSON = typer.Option(False, "--json", help="Print one JSON document.")


def sync_command(repo: str = REPO, revision: str | None = REVISION, app: list[str] = APPS,
                 cluster: list[str] = CLUSTERS, as_json: bool = AS_JSON) -> None:
    """Apply a revision to every target cluster: diff, apply, prune, wait for health."""
    _run(repo, revision, app, cluster, as_json, dry_run=False)


def diff_command(repo: str = REPO, revision: str | None = REVISION, app: list[str] = APPS,
                 cluster: list[str] = CLUSTERS, as_json: bool = AS_JSON) -> None:
    """Show what a sync would change (server-side dry-run), writing nothing."""
    _run(repo, revision, app, cluster, as_json, dry_run=True)


def _run(repo: str, revision: str | None, apps: list[str], clusters: list[str], as_json: bool,
         dry_run: bool) -> None:
    from flows.sync import gitops_sync

    state = gitops_sync(repo=repo, apps=apps or None, clusters=clusters or None, revision=revision,
                        dry_run=dry_run, return_state=True)
    outcome = state.result(raise_on_failure=False)
    report = outcome.report if isinstance(outcome, SyncFailed) else outcome
    if not isinstance(report, SyncReport):  # gitops.yaml invalid, or the fetch failed: no app ran
        message = str(report) if isinstance(report, BaseException) else (state.message or "sync failed")
        if as_json:
            print(json.dumps({"revision": None, "results": [], "message": message}))
        else:
            err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
        raise typer.Exit(1)
    print(report.to_json()) if as_json else _print_report(report, dry_run)
    raise typer.Exit(0 if report.ok else 1)


def _print_report(report: SyncReport, dry_run: bool) -> None:
    for result in report.results:
        print_result(err, result)
        for obj in result.objects:
            if dry_run or obj.action != "unchanged" or obj.health not in ("", "Current"):
                detail = f" ({obj.reason})" if obj.reason else ""
                err.print(f"    {obj.action:<10} {obj.ref} {obj.health}{detail}", highlight=False)
    err.print(f"revision {report.revision[:12]}: "
              f"{'all succeeded' if report.ok else str(len(report.failed())) + ' failed'}")


def status_command(repo: str = REPO, as_json: bool = AS_JSON) -> None:
    """Per app and cluster: the revision applied, whether it is the branch head, health, last run."""
    from cli.status import app_statuses

    rows = app_statuses(repo)
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table("app", "cluster", "revision", "in sync", "health", "last run")
        for row in rows:
            table.add_row(row["app"], row["cluster"], (row["revision"] or "-")[:12],
                          "yes" if row["inSync"] else "no", row["health"], row["lastRun"] or "-")
        print_table(table)
    raise typer.Exit(0 if all(r["inSync"] and r["health"] == "Current" for r in rows) else 1)
