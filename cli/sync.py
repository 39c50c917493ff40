"""`gitops sync`, `gitops diff` and `gitops status`: results on stdout, the
rest on stderr; `--json` prints one document that scripts can rely on, also on
an error (cli/errors.py). `gitops sync` exits 0 when everything succeeded, 1
when an app failed, 2 when nothing could run; `gitops diff` exits as `kubectl
diff` does: 0 nothing would change, 1 something would, 2 error."""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from prefect_gitops.cli import logs
from prefect_gitops.cli.console import err, is_verbose, out
from prefect_gitops.cli.diffs import print_diffs
from prefect_gitops.cli.errors import ERROR, describe, fail
from prefect_gitops.cli.progress import stage_lines
from prefect_gitops.cli.served import run_served
from prefect_gitops.cli.tables import print_result, print_table
from prefect_gitops.engine.report import SyncFailed, SyncReport

REPO = typer.Option(..., "--repo", help="Git repository block name.")
REVISION = typer.Option(None, "--revision", help="Branch, tag or SHA; the block's branch by default.")
APPS = typer.Option([], "--app", help="Only this app (repeatable).")
CLUSTERS = typer.Option([], "--cluster", help="Only this cluster (repeatable).")
AS_JSON = typer.Option(False, "--json", help="Print one JSON document.")
FORCE_WINDOW = typer.Option(False, "--force-window", help="Sync even where a sync window closes syncs now.")

NO_CHANGES, CHANGES = 0, 1  # gitops diff's exit codes, and ERROR
EMPTY = {"revision": None, "results": []}  # the --json document when nothing could run


def sync_command(repo: str = REPO, revision: str | None = REVISION, app: list[str] = APPS,
                 cluster: list[str] = CLUSTERS, as_json: bool = AS_JSON, force_window: bool = FORCE_WINDOW) -> None:
    """Apply a revision to every target cluster: diff, apply, prune, wait for health.
    Exit code 0: every app succeeded, 1: an app failed, 2: nothing could run (a sync window refused it too)."""
    report, recorded = _run(repo, revision, app, cluster, as_json, dry_run=False, force_window=force_window)
    print(report.to_json()) if as_json else _print_report(report)
    _exit(0 if report.ok else 1, recorded)


def diff_command(repo: str = REPO, revision: str | None = REVISION, app: list[str] = APPS,
                 cluster: list[str] = CLUSTERS, as_json: bool = AS_JSON) -> None:
    """Show what a sync would change (server-side dry-run), writing nothing.
    Exit code 0: no changes, 1: changes, 2: error."""
    report, recorded = _run(repo, revision, app, cluster, as_json, dry_run=True)
    if as_json:
        print(report.to_json())
        changed = sum(r.changed for r in report.results)
    else:
        changed = print_diffs(out, report)
        _print_diff_summary(report, changed)
    _exit(ERROR if not report.ok else CHANGES if changed else NO_CHANGES, recorded)


def _run(repo: str, revision: str | None, apps: list[str], clusters: list[str], as_json: bool,
         dry_run: bool, force_window: bool = False) -> tuple[SyncReport, bool]:
    """The run's report, from `gitops serve` when it serves the sync deployment
    (cli/served.py), else from a run in this process; and whether Prefect recorded
    it (flows/unrecorded.py). When no app could run (gitops.yaml invalid, the
    fetch failed, a block missing), the error is printed and the command exits 2."""
    parameters = {"repo": repo, "apps": apps or None, "clusters": clusters or None, "revision": revision,
                  "dry_run": dry_run, "if_changed": False, "force_window": force_window}
    served = run_served("sync", parameters, as_json, EMPTY)
    if served is not None:
        return served[0], True
    outcomes = None
    try:
        from prefect_gitops.flows import unrecorded
        from prefect_gitops.flows.sync import gitops_sync
        from prefect_gitops.flows.sync_app import without_heartbeat

        logs.apply()  # prefect is imported by now
        unrecorded.record_late()
        with (stage_lines(err, shown=not is_verbose()), without_heartbeat(), unrecorded.collect() as outcomes,
              unrecorded.brief_retries()):
            state = gitops_sync(**parameters, return_state=True)
        outcome = state.result(raise_on_failure=False)
    except Exception as failure:  # before the flow ran (the Prefect API unreachable) or a crash
        report = outcomes.report() if outcomes is not None and describe(failure).kind == "prefect" else None
        if report is None:
            fail(failure, as_json, EMPTY)
        outcomes.keep()
        err.print(escape(f"note: Prefect did not record this run: {describe(failure).message}; the runs' "
                         "final states are kept and written by the next command that reaches it"))
        return report, False
    report = outcome.report if isinstance(outcome, SyncFailed) else outcome
    if isinstance(report, SyncReport):
        return report, True
    fail(report if isinstance(report, BaseException) else RuntimeError(state.message or "sync failed"),
         as_json, EMPTY)


def _exit(code: int, recorded: bool) -> NoReturn:
    """Exit with `code`; when Prefect did not record the run, at once: the exit
    handlers would first wait for Prefect's client to fail to deliver each log
    line and event queued for its API, seconds each (cli/entry.py ends the others)."""
    if not recorded:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def _print_report(report: SyncReport) -> None:
    """Each app and cluster, then its objects that changed or are not healthy;
    a change not carried out says so (failed, unknown, not attempted)."""
    for result in report.results:
        print_result(out, result)
        for obj in result.objects:
            if obj.action != "unchanged" or obj.health not in ("", "Current"):
                fate = f"[{obj.outcome}]" if obj.outcome not in ("", "done") else ""
                detail = f"({why})" if (why := _why(obj)) else ""
                words = " ".join(w for w in (obj.ref, fate, obj.health, detail) if w)
                out.print(escape(f"    {obj.action:<10} {words}"))
    out.print(f"revision {report.revision[:12]}: "
              f"{'all succeeded' if report.ok else str(len(report.failed())) + ' failed'}")


def _why(obj) -> str:
    """Why an object is as it is: its error or health reason; for one skipped
    on purpose (create-only and present, kept from prune), the note its diff is."""
    note = obj.action == "skipped" and not obj.diff.startswith(("-", "+"))
    return obj.reason or (obj.diff if note else "")


def _print_diff_summary(report: SyncReport, changed: int) -> None:
    """On stderr, so that stdout holds the diff alone: each app and cluster, what
    could not be planned, and a count."""
    for result in report.results:
        print_result(err, result)
        for obj in result.objects:
            if why := _why(obj):
                err.print(escape(f"    {obj.action:<10} {obj.ref}: {why}"))
    failed = len(report.failed())
    err.print(f"revision {report.revision[:12]}: "
              + (f"{failed} failed" if failed else f"{changed} object(s) would change" if changed else "no changes"))


def status_command(repo: str = REPO, as_json: bool = AS_JSON) -> None:
    """Per app and cluster: the revision applied, whether it is the branch head, health, last run.
    Exit code 0: all in sync and healthy, 1: not, 2: error."""
    from prefect_gitops.cli.status import app_statuses

    try:
        rows = app_statuses(repo)
    except Exception as failure:  # a block missing, Git or a cluster unreachable...
        fail(failure, as_json, {"apps": []})
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table("app", "cluster", "revision", "in sync", "health", "last run", "sync window", "suspended")
        for row in rows:
            table.add_row(row["app"], row["cluster"], (row["revision"] or "-")[:12],
                          "yes" if row["inSync"] else "no", row["health"], row["lastRun"] or "-",
                          escape(row["syncWindow"]["summary"]), escape(_suspended_cell(row["suspended"])))
        print_table(table)
    raise typer.Exit(0 if all(r["inSync"] and r["health"] == "Current" for r in rows) else 1)


def _suspended_cell(suspended: dict | None) -> str:
    """`by alice@laptop since 2026-05-01T10:00:00+00:00 (incident 42)`, or `-`."""
    if not suspended:
        return "-"
    from prefect_gitops.engine.state.suspend import Suspension

    return Suspension(**suspended).describe().removeprefix("suspended ")
