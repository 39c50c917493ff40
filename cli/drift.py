"""`gitops drift`: is the live state still what was last synced? Exit code 0 when
nothing drifted (or, with --heal, once healed), 1 when drift was found, 2 when
something could not be checked or healed or nothing could run (cli/errors.py).
`--json` prints the document of `gitops sync --json`, each object with the
`changes` found in it."""

from __future__ import annotations

import typer
from rich.markup import escape

from prefect_gitops.cli import logs
from prefect_gitops.cli.console import err, is_verbose, out
from prefect_gitops.cli.errors import ERROR, fail
from prefect_gitops.cli.progress import stage_lines
from prefect_gitops.cli.served import run_served
from prefect_gitops.cli.tables import print_result
from prefect_gitops.engine.report import SyncReport, SyncStatus

NO_DRIFT, DRIFT = 0, 1
EMPTY = {"revision": None, "results": []}  # the --json document when nothing could run


def drift_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name."),
    app: list[str] = typer.Option([], "--app", help="Only this app (repeatable)."),
    cluster: list[str] = typer.Option([], "--cluster", help="Only this cluster (repeatable)."),
    heal: bool = typer.Option(False, "--heal", help="Re-apply what drifted (missing and modified objects)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Compare each app with the revision last synced to its clusters; report, and with --heal undo, what drifted."""
    # Without --heal the command only looks, whatever the apps' selfHeal says.
    parameters = {"repo": repo, "apps": app or None, "clusters": cluster or None, "heal": heal}
    report, incomplete = run_served("drift", parameters, as_json, EMPTY) or _run_here(parameters, as_json)
    print(report.to_json()) if as_json else _print_report(report)
    raise typer.Exit(ERROR if incomplete else NO_DRIFT if report.ok else DRIFT)


def _run_here(parameters: dict, as_json: bool) -> tuple[SyncReport, bool]:
    """The drift check run in this process: its report, and whether some app could not be checked."""
    from prefect_gitops.flows.drift import DriftCheckFailed, gitops_drift
    from prefect_gitops.flows.sync_app import without_heartbeat

    logs.apply()  # prefect is imported by now
    try:
        with stage_lines(err, shown=not is_verbose()), without_heartbeat():
            return gitops_drift(**parameters), False
    except DriftCheckFailed as failed:
        return failed.report, True
    except Exception as failure:  # gitops.yaml invalid, a block missing, Git unreachable...
        fail(failure, as_json, EMPTY)


def _print_report(report: SyncReport) -> None:
    for result in report.results:
        print_result(out, result)
        for obj in result.objects:
            if obj.action == "unchanged":
                continue
            out.print(escape(f"    {obj.action:<10} {obj.ref}: {obj.reason}"))
            for change in getattr(obj, "changes", []):
                out.print(escape(f"        {change}"))
    drifted = sum(r.status is SyncStatus.FAILED for r in report.results)
    out.print(f"{drifted} of {len(report.results)} app(s) drifted" if drifted else "no drift")
