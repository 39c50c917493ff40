"""`gitops drift`: is the live state still what was last synced? Exit code 0 when
nothing drifted (or, with --heal, once healed), 1 when drift was found, 2 when
something could not be checked or healed or nothing could run (cli/errors.py).
`--json` prints the document of `gitops sync --json`, each object with the
`changes` found in it."""

from __future__ import annotations

import typer
from rich.markup import escape

from cli import logs
from cli.console import err, out
from cli.errors import ERROR, fail
from cli.progress import stage_lines
from cli.tables import print_result
from engine.report import SyncReport, SyncStatus

NO_DRIFT, DRIFT = 0, 1


def drift_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name."),
    app: list[str] = typer.Option([], "--app", help="Only this app (repeatable)."),
    cluster: list[str] = typer.Option([], "--cluster", help="Only this cluster (repeatable)."),
    heal: bool = typer.Option(False, "--heal", help="Re-apply what drifted (missing and modified objects)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Compare each app with the revision last synced to its clusters; report, and with --heal undo, what drifted."""
    from flows.drift import DriftCheckFailed, gitops_drift

    logs.apply()  # prefect is imported by now
    code = None
    try:
        # Without --heal the command only looks, whatever the apps' selfHeal says.
        with stage_lines(err, shown=not logs.is_verbose()):
            report = gitops_drift(repo=repo, apps=app or None, clusters=cluster or None, heal=heal)
    except DriftCheckFailed as failed:
        report, code = failed.report, ERROR
    except Exception as failure:  # gitops.yaml invalid, a block missing, Git unreachable...
        fail(failure, as_json, {"revision": None, "results": []})
    print(report.to_json()) if as_json else _print_report(report)
    raise typer.Exit(code if code is not None else NO_DRIFT if report.ok else DRIFT)


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
