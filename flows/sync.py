"""`gitops-sync`: the control loop. Fetch one revision, then for every selected
app on every target cluster run the app pipeline (flows/sync_app.py) as a
nested run named `app@cluster sha`: clusters concurrently, the apps of a
cluster in dependsOn order, an app whose dependency did not sync skipped.

    sync fleet@1a2b3c4
     ├─ fetch
     ├─ [check]                      scheduled ticks only: who needs a sync at all
     ├─ web@staging 1a2b3c4          render → validate → diff → apply → prune → health → record [→ revert]
     ├─ web@production 1a2b3c4
     └─ summary artifact

The run fails when any app failed or was reverted. A scheduled tick whose head
has not moved and whose clusters have not drifted stops after the check: two
task runs, no artifact, no event."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor

from prefect import get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed, State

from prefect_gitops.blocks import GitRepository
from prefect_gitops.blocks.decryption import render_options
from prefect_gitops.blocks.registry import load_clusters
from prefect_gitops.engine.problems import ProblemsFound, Severity
from prefect_gitops.engine.report import SyncFailed, SyncReport, SyncStatus, TargetResult, summary_markdown
from prefect_gitops.engine.spec.targets import Target, dependencies
from prefect_gitops.engine.workspace import Workspace, opened
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.flows.sync_app import run_app
from prefect_gitops.tasks.check import find_pending
from prefect_gitops.tasks.fetch import fetch_revision


@gitops_flow(name="gitops-sync", flow_run_name="sync {repo}")
def gitops_sync(repo: str, apps: list[str] | None = None, clusters: list[str] | None = None,
                revision: str | None = None, dry_run: bool = False, if_changed: bool = False) -> State:
    """Apply one revision of the repository to every cluster its apps target.

    Args:
        repo: The Git repository block (`gitops repo add`) holding gitops.yaml and the manifests.
        apps: Only these apps (all when empty).
        clusters: Only these clusters (all that the apps target when empty).
        revision: A branch, tag or commit SHA; the block's branch when empty.
        dry_run: Only diff every app: write nothing.
        if_changed: The scheduled sync: first check which apps changed or drifted, and stop if none did.
    """
    source = GitRepository.load(repo).source()
    fetched = fetch_revision(repo, source, revision)
    _rename_run(f"{'diff' if dry_run else 'sync'} {repo}@{fetched.sha[:7]}")
    try:
        workspace = Workspace.load(repo, source, fetched.sha, fetched.tree, load_clusters(),
                                   checkout=lambda sha: fetch_revision(repo, source, sha).tree,
                                   render_options=render_options)
    except ProblemsFound as found:
        return _invalid(found)
    with opened(workspace):
        errors = [p for p in workspace.select(apps, clusters) if p.severity is Severity.ERROR]
        if errors:
            return _invalid(ProblemsFound(errors))
        targets = workspace.targets
        if if_changed and not _is_retry():
            targets = find_pending(workspace, repo, fetched.sha)
            if not targets:
                return Completed(message=f"up to date: {fetched.sha[:12]} is applied and healthy everywhere, "
                                         "nothing drifted", data=SyncReport(fetched.sha))
        report = SyncReport(fetched.sha, _run_targets(workspace, targets, dry_run))
    verb = "diff" if dry_run else "sync"
    create_markdown_artifact(key=f"gitops-{verb}-{repo}".lower(), description=f"{verb} of {repo} at {fetched.sha[:12]}",
                             markdown=summary_markdown(f"{verb.capitalize()} of `{repo}` at `{fetched.sha[:12]}`",
                                                       report.results))
    return final_state(report, dry_run)


def _run_targets(workspace: Workspace, targets: list[Target], dry_run: bool) -> list[TargetResult]:
    """Clusters concurrently (each thread sees this run's context), apps of a
    cluster in order. Results in the targets' order."""
    by_cluster: dict[str, list[Target]] = {}
    for target in targets:
        by_cluster.setdefault(target.cluster, []).append(target)
    with ThreadPoolExecutor(max_workers=max(1, len(by_cluster)), thread_name_prefix="cluster") as pool:
        futures = [pool.submit(contextvars.copy_context().run, _run_cluster, workspace, members, dry_run)
                   for members in by_cluster.values()]
        for future in futures:
            future.result()
    return [workspace.results[(t.app.name, t.cluster)] for t in targets]


def _run_cluster(workspace: Workspace, targets: list[Target], dry_run: bool) -> None:
    for target in targets:
        needs = dependencies(workspace.spec, target.app)
        blocked = sorted(app for (app, cluster), result in workspace.results.items()
                         if cluster == target.cluster and app in needs and result.status is not SyncStatus.SUCCEEDED)
        workspace.results[(target.app.name, target.cluster)] = run_app(
            repo=workspace.repo_name, app=target.app.name, cluster=target.cluster, revision=workspace.revision,
            dry_run=dry_run, blocked_by=blocked or None)


def final_state(report: SyncReport, dry_run: bool = False) -> State:
    """Failed when any app failed or was reverted (named Reverted when all of
    those were reverted); when a held revision kept anything from going out,
    named Skipped: a run that did not apply its revision never says Completed."""
    failed = report.failed()
    if failed:
        reverted = all(r.status is SyncStatus.REVERTED for r in failed)
        return Failed(name="Reverted" if reverted else "Failed", message=report.failure_message(),
                      data=SyncFailed(report))
    held = [r for r in report.results if r.held]
    if held and not dry_run:
        names = ", ".join(f"{r.app}@{r.cluster}" for r in held)
        return Failed(name="Skipped", data=SyncFailed(report),
                      message=f"not applied: revision {report.revision[:12]} is held on {names} after a failed "
                              f"sync; push a newer commit")
    return Completed(message=f"{len(report.results)} app(s) at {report.revision[:12]}", data=report)


def _invalid(found: ProblemsFound) -> State:
    """gitops.yaml or the selection is wrong: nothing runs; the problems are the error."""
    get_run_logger().error("%s", found)
    return Failed(message=f"invalid desired state: {found}", data=found)


def _is_retry() -> bool:
    """Run again from the UI's Retry (or a flow retry): do the whole sync, however the tick was set up."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.run_count > 1)


def _rename_run(name: str) -> None:
    """The revision is known only after the fetch: the run's name gets it then."""
    run_id = runtime.flow_run.id
    if run_id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=name)
