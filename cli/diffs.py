"""`gitops diff`'s output: per object that would change, a header line and its
field diff, `- path: old` / `+ path: new` (Secret values already masked by the
engine), coloured only on a terminal."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from prefect_gitops.engine.report import CHANGING_ACTIONS, ObjectResult, SyncReport, TargetResult

_STYLES = {"+": "green", "-": "red"}


def would_change(report: SyncReport) -> list[tuple[TargetResult, ObjectResult]]:
    return [(r, o) for r in report.results for o in r.objects if o.action in CHANGING_ACTIONS]


def print_diffs(console: Console, report: SyncReport) -> int:
    """Every object that would change, as a unified diff reads; returns how many."""
    changed = would_change(report)
    for result, obj in changed:
        console.print(Text(header(result, obj), style="bold"))
        for line in diff_lines(obj):
            console.print(Text(line, style=_STYLES.get(line[:1], "")))
    return len(changed)


def header(result: TargetResult, obj: ObjectResult) -> str:
    """e.g. `--- Deployment/web/web (apps/web/deployment.yaml:1) web@production`"""
    source = f" ({obj.source})" if obj.source else ""
    return f"--- {obj.ref}{source} {result.app}@{result.cluster}"


def diff_lines(obj: ObjectResult) -> list[str]:
    if obj.diff:
        return obj.diff.splitlines()
    return ["- (the whole object: no longer in Git)"] if obj.action == "pruned" else [f"  ({obj.action})"]
