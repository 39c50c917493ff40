"""`gitops_recover`: bring one cluster - new, emptied or half-restored - back to
the branch head. Every app that targets it is synced in dependsOn order, all at
one commit, each waited healthy before the next; the report says how long each
app and the whole recovery took.

It is the sync pipeline (gitops_sync as a nested run, on this cluster alone) and
so idempotent: a second run changes nothing, and a rerun after an interruption
finishes the job.
A recovery is requested with the event `gitops.recover.requested` (see
`request_recovery`), which the `gitops-recover` deployment is triggered by."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from prefect_gitops.blocks.registry import load_clusters
from prefect_gitops.engine.cluster.kube import NO_RETRY, KubeClient
from prefect_gitops.engine.cluster.kubeconfig import Cluster
from prefect_gitops.engine.report import SyncReport, SyncStatus, table_cell
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.flows.sync import gitops_sync

RECOVER_EVENT = "gitops.recover.requested"
API_WAIT_S = 120
RUN_NAME = "recover {cluster}"


@dataclass
class AppRecovery:
    app: str
    status: SyncStatus
    seconds: float
    changed: int  # objects created, configured or pruned
    message: str


@dataclass
class RecoveryReport:
    cluster: str
    revision: str
    apps: list[AppRecovery] = field(default_factory=list)
    seconds: float = 0.0  # the whole recovery, from the flow's start

    @property
    def ok(self) -> bool:
        return all(a.status is SyncStatus.SUCCEEDED for a in self.apps)

    @property
    def changed(self) -> int:
        return sum(a.changed for a in self.apps)

    def markdown(self) -> str:
        lines = [f"# Recovery of `{self.cluster}` at `{self.revision[:12]}`", "",
                 "| app | result | time | objects changed | message |", "|---|---|---|---|---|"]
        lines += [f"| {a.app} | {a.status.value} | {a.seconds:.1f} s | {a.changed} | {table_cell(a.message)} |"
                  for a in self.apps]
        outcome = "recovered" if self.ok else f"{sum(_not_recovered(a) for a in self.apps)} app(s) not recovered"
        lines += ["", f"**{outcome}** in **{self.seconds:.1f} s** ({len(self.apps)} apps, "
                      f"{self.changed} objects changed)"]
        return "\n".join(lines)


class RecoveryFailed(Exception):
    """Some app did not come back healthy; carries the whole report."""

    def __init__(self, report: RecoveryReport):
        failed = [f"{a.app}: {a.status.value}: {a.message}" for a in report.apps if _not_recovered(a)]
        super().__init__(f"recovery of {report.cluster} incomplete: " + "; ".join(failed))
        self.report = report


@gitops_flow(name="gitops-recover", flow_run_name=RUN_NAME)
def gitops_recover(repo: str, cluster: str) -> RecoveryReport:
    """Apply every app that targets a cluster, in dependsOn order, at the branch head.

    Args:
        repo: The Git repository block holding gitops.yaml and the manifests.
        cluster: The cluster block's name; the cluster may be new and empty.
    """
    started, logger = time.monotonic(), get_run_logger()
    wait_for_api(cluster, load_clusters([cluster])[cluster])
    # The sync pipeline, as a nested run: every app of the cluster at one commit.
    state = gitops_sync(repo=repo, clusters=[cluster], return_state=True)
    sync = state.result(raise_on_failure=False)
    if not isinstance(sync, SyncReport):
        raise RuntimeError(f"recovery of {cluster}: the sync did not run: {state.message}")
    report = RecoveryReport(cluster, sync.revision, seconds=time.monotonic() - started)
    report.apps = [AppRecovery(r.app, r.status, r.seconds, r.changed, r.message) for r in sync.results]
    create_markdown_artifact(key=f"gitops-recover-{cluster}".lower(), markdown=report.markdown(),
                             description=f"recovery of {cluster} at {sync.revision[:12]}")
    logger.info("recovery of %s: %s in %.1f s", cluster, "done" if report.ok else "incomplete", report.seconds)
    if not report.ok:
        raise RecoveryFailed(report)
    return report


@task(name="wait-for-api", task_run_name="wait for {cluster}", cache_policy=NO_CACHE)
def wait_for_api(cluster: str, target: Cluster, timeout_s: float = API_WAIT_S) -> str:
    """A new cluster may still be starting when its recovery is requested: wait
    until its API server answers (its version), at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with KubeClient.for_cluster(target, retry=NO_RETRY) as kube:
                return kube.server_version()
        except Exception as error:  # refused, TLS, 503 while starting: all worth waiting for
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster {cluster}: API server not reachable after {timeout_s:g} s: "
                                   f"{error}") from error
            get_run_logger().info("cluster %s not answering yet (%s); waiting", cluster, type(error).__name__)
            time.sleep(2)


def run_name(cluster: str) -> str:
    """The name the flow gives its run; a run created elsewhere (through the REST
    API) is given it from the start, not Prefect's random one until it runs."""
    return RUN_NAME.format(cluster=cluster)


def request_recovery(cluster: str, reason: str = "") -> None:
    """Emit the event that triggers the `gitops-recover` deployment for `cluster`."""
    emit_event(event=RECOVER_EVENT,
               resource={"prefect.resource.id": f"gitops.cluster.{cluster}", "prefect.resource.name": cluster,
                         "gitops.cluster": cluster},
               payload={"reason": reason})


def _not_recovered(app: AppRecovery) -> bool:
    return app.status is not SyncStatus.SUCCEEDED
