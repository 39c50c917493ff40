"""`gitops-sync-cluster`: one cluster's share of a sync, as a flow run of its own
that any worker of the pool can take (flows/sync.py starts one per cluster with
work when its own run came from a work pool):

    sync fleet@1a2b3c4 → production
     ├─ fetch
     ├─ web@production 1a2b3c4       render → validate → diff → apply → prune → health → record [→ revert]
     └─ api@production 1a2b3c4

Its parameters are plain JSON (repository block, commit SHA, cluster, apps): it
loads its blocks and the commit itself and needs nothing from the run that
started it, so it runs in another process or on another machine. It holds the
cluster's global concurrency slot (`gitops-cluster-NAME`, limit 1) while it
works: two fleet runs never sync one cluster at once, whichever workers took
them. Its state is the cluster's outcome, named as the fleet run's is."""

from __future__ import annotations

import contextlib
from typing import Iterator

from prefect import get_run_logger, runtime
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.states import State

from prefect_gitops.blocks import GitRepository
from prefect_gitops.blocks.decryption import render_options
from prefect_gitops.blocks.registry import load_clusters
from prefect_gitops.engine.problems import ProblemsFound, Severity
from prefect_gitops.engine.report import SyncReport, SyncStatus
from prefect_gitops.engine.source.git import FetchResult, GitSource
from prefect_gitops.engine.spec.targets import Target, dependencies
from prefect_gitops.engine.workspace import Workspace, opened
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.flows.outcome import final_state, invalid
from prefect_gitops.flows.sync_app import run_app
from prefect_gitops.tasks.fetch import fetch_revision

# prefect.yaml's deployment of this flow, which a fleet run on a work pool starts.
CLUSTER_DEPLOYMENT = "gitops-sync-cluster/gitops-sync-cluster"
# Prefect's shortest lease on a concurrency slot: the slot of a run whose worker
# died is free again after it, as the app's Lease in the cluster is (60 s).
SLOT_LEASE_S = 60


def slot_name(cluster: str) -> str:
    return f"gitops-cluster-{cluster}"


def _run_name() -> str:
    p = runtime.flow_run.parameters
    return f"{'diff' if p.get('dry_run') else 'sync'} {p['repo']}@{p['revision'][:7]} → {p['cluster']}"


@gitops_flow(name="gitops-sync-cluster", flow_run_name=_run_name)
def gitops_sync_cluster(repo: str, revision: str, cluster: str, apps: list[str] | None = None,
                        dry_run: bool = False) -> State:
    """Apply one commit to one cluster: its apps in dependsOn order.

    Args:
        repo: The Git repository block holding gitops.yaml and the manifests.
        revision: The full commit SHA the fleet run resolved.
        cluster: The cluster block's name.
        apps: Only these apps (all that target the cluster when empty).
        dry_run: Only diff every app: write nothing.
    """
    source = GitRepository.load(repo).source()
    fetched = fetch_revision(repo, source, revision)
    try:
        workspace = load_workspace(repo, source, fetched, [cluster])
    except ProblemsFound as found:
        return invalid(found)
    with opened(workspace), cluster_slot(cluster):
        errors = [p for p in workspace.select(apps, [cluster]) if p.severity is Severity.ERROR]
        if errors:
            return invalid(ProblemsFound(errors))
        sync_cluster_apps(workspace, workspace.targets, dry_run)
        report = SyncReport(fetched.sha, [workspace.results[(t.app.name, cluster)] for t in workspace.targets])
    return final_state(report, dry_run)


def load_workspace(repo: str, source: GitSource, fetched: FetchResult, clusters: list[str] | None) -> Workspace:
    """The workspace of one commit, with the named cluster blocks (all when None).
    Raises ProblemsFound when gitops.yaml is invalid."""
    return Workspace.load(repo, source, fetched.sha, fetched.tree, load_clusters(clusters),
                          checkout=lambda sha: fetch_revision(repo, source, sha).tree,
                          render_options=render_options)


def sync_cluster_apps(workspace: Workspace, targets: list[Target], dry_run: bool) -> None:
    """The apps of one cluster in order, each a nested run; an app whose
    dependency did not succeed is skipped, saying so."""
    for target in targets:
        needs = dependencies(workspace.spec, target.app)
        blocked = sorted(app for (app, cluster), result in workspace.results.items()
                         if cluster == target.cluster and app in needs and result.status is not SyncStatus.SUCCEEDED
                         and not result.suspended)  # a suspended dependency stays as it is: no reason to wait
        workspace.results[(target.app.name, target.cluster)] = run_app(
            repo=workspace.repo_name, app=target.app.name, cluster=target.cluster, revision=workspace.revision,
            dry_run=dry_run, blocked_by=blocked or None)


@contextlib.contextmanager
def cluster_slot(cluster: str) -> Iterator[None]:
    """Hold the cluster's slot (a global concurrency limit of 1, made on first use)."""
    name = slot_name(cluster)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:  # another run of this cluster made it meanwhile
                pass
    get_run_logger().debug("waiting for the slot %s", name)
    with concurrency(name, occupy=1, lease_duration=SLOT_LEASE_S, strict=True):
        yield

