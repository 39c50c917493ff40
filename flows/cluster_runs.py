"""A fleet run's clusters as flow runs of their own (flows/sync_cluster.py):
started through the `gitops-sync-cluster` deployment, so that any worker of the
pool takes any of them, then waited for together and read back as the apps'
results, from the app runs each cluster run nested."""

from __future__ import annotations

import time
from dataclasses import dataclass

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Completed, Failed, State

from prefect_gitops.engine.report import SyncFailed, SyncReport, SyncStatus, TargetResult
from prefect_gitops.flows.sync_app import status_of_state
from prefect_gitops.flows.sync_cluster import CLUSTER_DEPLOYMENT

# How often the fleet run reads its cluster runs' states: one request for all of them.
POLL_S = 2.0
# A page of the API's flow run filter (it caps `limit` at 200).
PAGE = 200

@dataclass
class ClusterRun:
    cluster: str
    run: FlowRun


def start(repo: str, revision: str, apps_by_cluster: dict[str, list[str]], dry_run: bool) -> list[ClusterRun]:
    """One flow run of the cluster deployment per cluster, nested under this run; at once."""
    verb = "diff" if dry_run else "sync"
    started = []
    for cluster, apps in apps_by_cluster.items():
        run = run_deployment(CLUSTER_DEPLOYMENT, timeout=0, flow_run_name=f"{verb} {repo}@{revision[:7]} → {cluster}",
                             parameters={"repo": repo, "revision": revision, "cluster": cluster, "apps": apps,
                                         "dry_run": dry_run})
        started.append(ClusterRun(cluster, run))
    get_run_logger().info("started %d cluster run(s): %s", len(started), ", ".join(apps_by_cluster))
    return started


def wait(runs: list[ClusterRun]) -> list[ClusterRun]:
    """The runs once every one of them has ended, as the API has them then."""
    by_id = {r.run.id: r for r in runs}
    with get_client(sync_client=True) as client:
        while True:
            pending = [i for i, r in by_id.items() if not (r.run.state and r.run.state.is_final())]
            if not pending:
                return list(by_id.values())
            time.sleep(POLL_S)
            for run in _read(client, FlowRunFilter(id=FlowRunFilterId(any_=pending))):
                by_id[run.id].run = run


def results(runs: list[ClusterRun], revision: str) -> list[TargetResult]:
    """The apps' results, read from the app runs each cluster run nested; a
    cluster run that ended before running an app is one failed result of its own."""
    with get_client(sync_client=True) as client:
        app_runs = _read(client, FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(
            any_=[r.run.id for r in runs])))
    found: list[TargetResult] = []
    for cluster_run in runs:
        mine = [run for run in app_runs if run.parameters["cluster"] == cluster_run.cluster]
        found += [_app_result(run) for run in sorted(mine, key=lambda r: r.expected_start_time or r.created)]
        if not mine and not cluster_run.run.state.is_completed():
            state = cluster_run.run.state
            found.append(TargetResult("-", cluster_run.cluster, SyncStatus.FAILED,
                                      f"cluster run {state.name}: {state.message or ''}".strip(), revision=revision))
    return found


def fleet_state(runs: list[ClusterRun], report: SyncReport) -> State:
    """Completed when every cluster run completed; otherwise Failed, named
    Reverted or Skipped when every cluster run that did not complete was."""
    ended = [r for r in runs if not r.run.state.is_completed()]
    if not ended:
        return Completed(message=f"{len(report.results)} app(s) on {len(runs)} cluster(s) at {report.revision[:12]}",
                         data=report)
    names = {r.run.state.name for r in ended}
    name = names.pop() if len(names) == 1 and names <= {"Reverted", "Skipped"} else "Failed"
    return Failed(name=name, data=SyncFailed(report),
                  message="; ".join(f"{r.cluster}: {r.run.state.message or r.run.state.name}" for r in ended))


def _app_result(run: FlowRun) -> TargetResult:
    p, state = run.parameters, run.state
    message = (state.message or "").removeprefix(f"{p['app']}@{p['cluster']}: ")
    result = TargetResult(p["app"], p["cluster"], status_of_state(state.name), message,
                          revision=p["revision"])
    result.seconds = run.total_run_time.total_seconds()
    return result


def _read(client: SyncPrefectClient, flow_runs: FlowRunFilter) -> list[FlowRun]:
    found, offset = [], 0
    while True:
        page = client.read_flow_runs(flow_run_filter=flow_runs, limit=PAGE, offset=offset)
        found += page
        if len(page) < PAGE:
            return found
        offset += PAGE
