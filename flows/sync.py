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

A run that a worker of a pool took goes one level further: each cluster with
work is a flow run of its own (flows/sync_cluster.py, `sync fleet@1a2b3c4 →
production`), which any worker of the pool takes; this run waits for them and
reads their apps' results back. Elsewhere (the CLI, `gitops serve`, the demo)
the clusters are threads of this run, and no worker is needed.

The run fails when any app failed or was reverted. A scheduled tick whose head
has not moved and whose clusters have not drifted stops after the check: two
task runs, no artifact, no event."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor

from prefect import runtime
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Completed, State

from prefect_gitops.blocks import GitRepository
from prefect_gitops.engine.problems import ProblemsFound, Severity
from prefect_gitops.engine.report import SyncReport, TargetResult, summary_markdown
from prefect_gitops.engine.spec.targets import Target
from prefect_gitops.engine.workspace import Workspace, opened
from prefect_gitops.flows import cluster_runs, unrecorded, window_gate
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.flows.outcome import final_state, invalid
from prefect_gitops.flows.sync_cluster import load_workspace, sync_cluster_apps
from prefect_gitops.tasks.check import find_pending
from prefect_gitops.tasks.fetch import fetch_revision


@gitops_flow(name="gitops-sync", flow_run_name="sync {repo}")
def gitops_sync(repo: str, apps: list[str] | None = None, clusters: list[str] | None = None,
                revision: str | None = None, dry_run: bool = False, if_changed: bool = False,
                per_cluster_runs: bool | None = None, force_window: bool = False) -> State:
    """Apply one revision of the repository to every cluster its apps target.

    Args:
        repo: The Git repository block (`gitops repo add`) holding gitops.yaml and the manifests.
        apps: Only these apps (all when empty).
        clusters: Only these clusters (all that the apps target when empty).
        revision: A branch, tag or commit SHA; the block's branch when empty.
        dry_run: Only diff every app: write nothing.
        if_changed: The scheduled sync: first check which apps changed or drifted, and stop if none did.
        per_cluster_runs: Run each cluster as a flow run of the gitops-sync-cluster deployment, which any
            worker of the pool takes; by default when this run itself came from a work pool.
        force_window: Sync even where a sync window closes syncs (flows/window_gate.py).
    """
    source = GitRepository.load(repo).source()
    fetched = fetch_revision(repo, source, revision)
    unrecorded.started(fetched.sha)
    verb = "diff" if dry_run else "sync"
    _rename_run(f"{verb} {repo}@{fetched.sha[:7]}")
    try:
        workspace = load_workspace(repo, source, fetched, None)
    except ProblemsFound as found:
        return invalid(found)
    with opened(workspace):
        errors = [p for p in workspace.select(apps, clusters) if p.severity is Severity.ERROR]
        if errors:
            return invalid(ProblemsFound(errors))
        targets = workspace.targets
        if if_changed and not _is_retry():
            targets = find_pending(workspace, repo, fetched.sha)
            if not targets:
                return Completed(message=f"up to date: {fetched.sha[:12]} is applied and healthy everywhere, "
                                         "nothing drifted", data=SyncReport(fetched.sha))
        targets, waiting, stop = window_gate.gate_sync(workspace.spec, targets, fetched.sha, dry_run, force_window)
        if stop is not None:
            return stop
        if per_cluster_runs if per_cluster_runs is not None else _from_a_work_pool():
            apps = {cluster: [t.app.name for t in members] for cluster, members in _by_cluster(targets).items()}
            runs = cluster_runs.wait(cluster_runs.start(repo, fetched.sha, apps, dry_run))
            report = SyncReport(fetched.sha, cluster_runs.results(runs, fetched.sha))
            state = cluster_runs.fleet_state(runs, report)
        else:
            report = SyncReport(fetched.sha, _run_clusters(workspace, targets, dry_run))
            state = final_state(report, dry_run)
        report.results.extend(waiting)  # held by sync windows
    unrecorded.noted(state)
    if not unrecorded.api_lost():  # else it would only wait for its retries to fail
        create_markdown_artifact(key=f"gitops-{verb}-{repo}".lower(),
                                 description=f"{verb} of {repo} at {fetched.sha[:12]}",
                                 markdown=summary_markdown(f"{verb.capitalize()} of `{repo}` at `{fetched.sha[:12]}`",
                                                           report.results))
    return state


def _by_cluster(targets: list[Target]) -> dict[str, list[Target]]:
    by_cluster: dict[str, list[Target]] = {}
    for target in targets:
        by_cluster.setdefault(target.cluster, []).append(target)
    return by_cluster


def _run_clusters(workspace: Workspace, targets: list[Target], dry_run: bool) -> list[TargetResult]:
    """Clusters concurrently (each thread sees this run's context), apps of a
    cluster in order. Results in the targets' order."""
    by_cluster = _by_cluster(targets)
    with ThreadPoolExecutor(max_workers=max(1, len(by_cluster)), thread_name_prefix="cluster") as pool:
        futures = [pool.submit(contextvars.copy_context().run, sync_cluster_apps, workspace, members, dry_run)
                   for members in by_cluster.values()]
        for future in futures:
            future.result()
    return [workspace.results[(t.app.name, t.cluster)] for t in targets]


def _from_a_work_pool() -> bool:
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.work_pool_name)


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
