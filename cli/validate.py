"""`gitops validate`: fetch, render and validate a revision for every target
cluster, writing nothing; exit 0 when clean, 1 when anything is wrong (an
invalid gitops.yaml too), 2 when it could not run (cli/errors.py). The problems
are its result: on stdout."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from prefect_gitops.cli import logs
from prefect_gitops.cli.console import err, is_verbose, out
from prefect_gitops.cli.errors import FOUND, OK, fail, problem_json
from prefect_gitops.cli.progress import stage_lines
from prefect_gitops.engine.problems import Problem, ProblemsFound, Severity


def validate_command(
    repo: str = typer.Option(..., "--repo", help="Git repository block name."),
    revision: str | None = typer.Option(None, "--revision", help="Branch, tag or SHA; the block's branch by default."),
    app: list[str] = typer.Option([], "--app", help="Only this app (repeatable)."),
    cluster: list[str] = typer.Option([], "--cluster", help="Only this cluster (repeatable)."),
    offline: bool = typer.Option(False, "--offline", help="Skip the server-side dry-run."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Validate the desired state of a revision without writing to any cluster."""
    from prefect_gitops.flows.validate import ValidationFailed, gitops_validate

    logs.apply()  # prefect is imported by now
    try:
        with stage_lines(err, shown=not is_verbose()):
            desired = gitops_validate(repo=repo, apps=app or None, clusters=cluster or None,
                                      revision=revision, server_dry_run=not offline)
    except ValidationFailed as failed:
        desired = failed.desired
    except ProblemsFound as found:  # the spec itself is invalid
        _report(None, [], found.problems, as_json)
        raise typer.Exit(FOUND)
    except Exception as failure:  # a block missing, Git or a cluster unreachable, an unknown revision...
        fail(failure, as_json, {"revision": None, "results": [], "problems": []})
    _report(desired.revision, desired.targets, desired.all_problems(), as_json)
    raise typer.Exit(FOUND if desired.errors() else OK)


def _report(revision: str | None, targets: list, problems: list[Problem], as_json: bool) -> None:
    if as_json:
        print(json.dumps({
            "revision": revision,
            "results": [{"app": t.app.name, "cluster": t.cluster, "objects": len(t.manifests),
                         "problems": [problem_json(p) for p in t.problems]} for t in targets],
            "problems": [problem_json(p) for p in problems],
        }, indent=2))
        return
    for t in targets:
        mark = "[red]✗[/red]" if any(p.severity is Severity.ERROR for p in t.problems) else "[green]✓[/green]"
        out.print(f"{mark} {escape(t.app.name)} on {escape(t.cluster)}: {len(t.manifests)} objects")
    for p in problems:
        colour = "red" if p.severity is Severity.ERROR else "yellow"
        out.print(f"[{colour}]{p.severity.value}[/{colour}] {escape(str(p))}")
    if revision:
        errors = sum(p.severity is Severity.ERROR for p in problems)
        out.print(f"revision {revision[:12]}: {errors} error(s), {len(problems) - errors} warning(s)")

