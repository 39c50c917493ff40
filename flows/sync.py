"""`gitops_sync`: the whole pipeline. Fetch once, render and validate every app,
then for each target cluster concurrently, app after app in dependsOn order:
lock, diff, apply, prune, wait for health, record the inventory.

Nothing is written for an app while anything about it is wrong, and an app
whose dependency failed on a cluster is skipped there. The run fails, naming
what failed, if any app failed on any cluster."""

from __future__ import annotations

import threading

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.events import emit_event

from blocks import GitRepository, KubernetesCluster
from engine.report import ObjectResult, SyncReport, SyncStatus, TargetResult, objects_table
from flows.validate import Target, dependencies, prepare_desired_state
from engine.appspec import AppSpec
from engine.changeset import Action, ChangeSet
from engine.diff import diff_markdown, plan_changes
from engine.drift import desired_objects, detect_drift
from engine.apply import apply_changes
from engine.health import HealthReport, refs_of, wait_for_health
from engine.git import fetch
from engine.inventory import Inventory, read_inventory, updated_inventory, write_inventory
from engine.kube import KubeClient
from engine.lock import app_lock
from engine.objects import Manifest
from engine.problems import Severity
from engine.prune import EmptyDesiredState, prune_objects
from engine.render import render_app
from engine.revert import revert_target
from engine.secrets import scrub


_GIT_REVERTS = threading.Lock()


class SyncFailed(Exception):
    """Some app failed on some cluster; carries the whole report."""

    def __init__(self, report: SyncReport):
        super().__init__(report.failure_message())
        self.report = report


@flow(name="gitops-sync", log_prints=False)
def gitops_sync(repo: str, apps: list[str] | None = None, clusters: list[str] | None = None,
                revision: str | None = None, dry_run: bool = False, if_changed: bool = False) -> SyncReport:
    """Sync the selected apps to their clusters (or, with dry_run, only diff them).
    With if_changed (the scheduled sync), an app whose inventory already holds this
    revision as healthy and whose live state has not drifted costs a few LISTs and
    is not dry-run object by object."""
    desired = prepare_desired_state(repo, apps, clusters, revision, server_dry_run=False)
    report = SyncReport(desired.revision)
    spec_errors = [p for p in desired.problems if p.severity is Severity.ERROR]
    if spec_errors:
        report.results = [_failed(t, "; ".join(map(str, spec_errors))) for t in desired.targets]
        raise SyncFailed(report)
    by_cluster: dict[str, list[Target]] = {}
    for target in desired.targets:
        by_cluster.setdefault(target.cluster, []).append(target)
    futures = [sync_cluster.submit(name, desired.clusters[name], targets, desired.revision, desired.spec, dry_run, repo,
                                   if_changed)
               for name, targets in by_cluster.items()]
    for future in futures:
        report.results += future.result()
    order = {(t.app.name, t.cluster): i for i, t in enumerate(desired.targets)}
    report.results.sort(key=lambda r: order[(r.app, r.cluster)])
    if not report.ok:
        raise SyncFailed(report)
    return report


@task(name="sync-cluster", task_run_name="sync {cluster}", cache_policy=NO_CACHE)
def sync_cluster(cluster: str, block: KubernetesCluster, targets: list[Target], revision: str, spec: AppSpec,
                 dry_run: bool, repo: str, if_changed: bool = False) -> list[TargetResult]:
    """Every app of one cluster, in dependsOn order, through one counted client."""
    results: dict[str, TargetResult] = {}
    with KubeClient.from_block(block) as kube:
        for target in targets:
            failed_deps = [d for d in sorted(dependencies(spec, target.app))
                           if d in results and results[d].status is not SyncStatus.SUCCEEDED]
            if failed_deps:
                result = TargetResult(target.app.name, cluster, SyncStatus.SKIPPED,
                                      f"skipped: {', '.join(failed_deps)} did not sync")
            else:
                provided = [m for t in targets if t.app.name in dependencies(spec, target.app) for m in t.manifests]
                result = sync_target(kube, target, revision, dry_run, provided, repo, if_changed)
            results[target.app.name] = result
            _publish(result, revision, dry_run)
    return list(results.values())


def sync_target(kube: KubeClient, target: Target, revision: str, dry_run: bool,
                provided: list[Manifest] = (), repo: str = "", if_changed: bool = False) -> TargetResult:
    """One app on one cluster: the requests it cost are counted into its result.
    `provided`: what the apps it depends on apply before it on this cluster."""
    errors = [p for p in target.problems if p.severity is Severity.ERROR]
    if errors:
        return _failed(target, "invalid desired state: " + "; ".join(map(str, errors)))
    before = kube.requests
    try:
        with app_lock(kube.api_client, target.app.name, holder=_run_name()):
            result = _sync_locked(kube, target, revision, dry_run, provided, repo, if_changed)
    except Exception as error:  # a failure of this app must not stop the others
        # No traceback in the log: frames and messages may carry the app's Secret values.
        message = scrub(f"{type(error).__name__}: {error}", [m.obj for m in target.manifests])
        get_run_logger().error("%s on %s failed: %s", target.app.name, target.cluster, message)
        result = _failed(target, message)
    result.requests = {verb: kube.requests[verb] - before[verb] for verb in before}
    return result


def _sync_locked(kube: KubeClient, target: Target, revision: str, dry_run: bool,
                 provided: list[Manifest], repo: str, if_changed: bool = False) -> TargetResult:
    app, logger = target.app, get_run_logger()
    previous = read_inventory(kube, app.name)
    if previous and revision in previous.held_revisions:
        return TargetResult(app.name, target.cluster, SyncStatus.SKIPPED,
                            f"revision {revision[:12]} is held after a failed sync; waiting for a newer commit")
    if if_changed and _up_to_date(kube, target, revision, previous):
        return TargetResult(app.name, target.cluster, SyncStatus.SUCCEEDED,
                            f"up to date: {revision[:12]} is applied, healthy and has not drifted")
    changeset = plan_changes(kube, app.name, target.manifests, previous, default_namespace=app.namespace,
                             provided=provided)
    create_markdown_artifact(key=_key("diff", target), markdown=diff_markdown(app, target.cluster, changeset),
                             description=f"diff of {app.name} on {target.cluster} at {revision[:12]}")
    logger.info("%s on %s: plan: %s", app.name, target.cluster, changeset.summary())
    if not changeset.ok:
        return _result(target, SyncStatus.FAILED, "dry-run refused: " + changeset.error_text(), changeset)
    if not app.sync_policy.prune:
        _skip_prunes(changeset)
    if dry_run:
        return _result(target, SyncStatus.SUCCEEDED, f"diff: {changeset.summary()}", changeset)

    apply_changes(kube, changeset)
    if changeset.ok and app.sync_policy.prune:
        try:
            prune_objects(kube, app.name, changeset, allow_empty=app.sync_policy.allow_empty)
        except EmptyDesiredState as error:
            return _result(target, SyncStatus.FAILED, str(error), changeset)
    if not changeset.ok:
        _record(kube, app.name, changeset, previous, revision, "failed")
        failed = _result(target, SyncStatus.FAILED, "apply failed: " + changeset.error_text(), changeset)
        return _maybe_revert(kube, target, revision, failed, previous, repo)

    health = wait_for_health(kube.api_client, refs_of(changeset.desired()), app.sync_policy.health_timeout_seconds,
                             dynamic=kube.dynamic)
    logger.info("%s on %s: health: %s", app.name, target.cluster, health.summary())
    if changeset.changed() or previous is None or previous.revision != revision or not health.ok:
        _record(kube, app.name, changeset, previous, revision, "healthy" if health.ok else "unhealthy",
                healthy=health.ok)
    if health.ok:
        return _result(target, SyncStatus.SUCCEEDED, f"{changeset.summary()}; {health.summary()}", changeset, health)
    failed = _result(target, SyncStatus.FAILED, f"health: {health.summary()}", changeset, health)
    return _maybe_revert(kube, target, revision, failed, previous, repo)


def _maybe_revert(kube: KubeClient, target: Target, revision: str, failed: TargetResult,
                  previous: Inventory | None, repo: str) -> TargetResult:
    """With auto-revert on, put the app back on its last healthy revision. The run
    still ends Failed: the change did not go out."""
    app = target.app
    if not app.sync_policy.auto_revert.enabled:
        return failed

    def render_revision(sha: str) -> list[Manifest]:
        return render_app(fetch(GitRepository.load(repo), sha).tree, app, target.cluster)

    def revert_in_git(good: str, reason: str) -> str:
        from flows.rollback import RollbackError, rollback_in_git  # rollback imports this module

        why = (f"Auto-revert by prefect-gitops: app {app.name} on cluster {target.cluster} failed in flow run "
               f"{_run_name()} at {revision[:12]}: {reason}")
        with _GIT_REVERTS:  # two clusters failing at once revert Git once
            try:
                result = rollback_in_git.fn(GitRepository.load(repo), app.name, good, why)
            except RollbackError as error:
                return f"Git not reverted: {error}"
        return f"Git reverted by {result.commit[:12]}" if result.pushed else "Git already reverted"

    outcome = revert_target(kube, app, target.cluster, revision, failed.message, previous, render_revision,
                            revert_in_git)
    get_run_logger().warning("%s on %s: %s", app.name, target.cluster, outcome.message)
    if outcome.ok:
        failed.status = SyncStatus.REVERTED
        failed.message = f"{outcome.message} after {failed.message}"
        return failed
    state = read_inventory(kube, app.name)
    failed.message = (f"{failed.message}; auto-revert failed: {outcome.message}; the cluster is on revision "
                      f"{(state.revision if state else revision)[:12]} as last recorded, and the revision "
                      f"{revision[:12]} is held")
    _emit("gitops.revert.failed", failed, revision)
    return failed


def _up_to_date(kube: KubeClient, target: Target, revision: str, previous: Inventory | None) -> bool:
    """This revision was applied and healthy last time, and nothing drifted since."""
    if previous is None or previous.revision != revision or previous.last_healthy_revision != revision:
        return False
    desired = desired_objects(kube, target.app.name, target.manifests, target.app.namespace)
    return not detect_drift(kube, target.app.name, previous, desired)


def _skip_prunes(changeset: ChangeSet) -> None:
    """Without prune in the app's policy, objects gone from Git stay (and are reported)."""
    for change in changeset:
        if change.action is Action.PRUNED:
            change.action = Action.SKIPPED


def _record(kube: KubeClient, app: str, changeset: ChangeSet, previous, revision: str, result: str,
            healthy: bool = False) -> None:
    write_inventory(kube, updated_inventory(app, changeset, previous, revision, result, healthy))


def _result(target: Target, status: SyncStatus, message: str, changeset: ChangeSet,
            health: HealthReport | None = None) -> TargetResult:
    healths = {(str(r.ref)): r.health for r in (health.results if health else [])}
    objects = []
    for change in changeset:
        state = healths.get(change.ref)
        objects.append(ObjectResult(
            apiVersion=change.api_version, kind=change.kind, namespace=change.namespace, name=change.name,
            source=str(change.source) if change.source else "", action=change.action.value,
            health=state.status.value if state else "", reason=change.error or (state.reason if state else ""),
        ))
    return TargetResult(target.app.name, target.cluster, status, message, objects)


def _failed(target: Target, message: str) -> TargetResult:
    return TargetResult(target.app.name, target.cluster, SyncStatus.FAILED, message)


def _publish(result: TargetResult, revision: str, dry_run: bool) -> None:
    """The objects table as an artifact, and an event naming app, cluster and revision."""
    create_table_artifact(key=_key("objects", result), table=objects_table(result),
                          description=f"{result.app} on {result.cluster}: {result.status.value}: {result.message}")
    if not dry_run and result.status is not SyncStatus.SKIPPED:
        _emit(f"gitops.sync.{result.status.value}", result, revision)


def _emit(event: str, result: TargetResult, revision: str) -> None:
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"gitops.app.{result.app}.{result.cluster}",
                  "gitops.app": result.app, "gitops.cluster": result.cluster, "gitops.revision": revision},
        payload={"status": result.status.value, "message": result.message},
    )


def _key(kind: str, target) -> str:
    """Artifact keys: lowercase letters, digits and dashes only."""
    app = target.app if isinstance(target.app, str) else target.app.name
    return f"gitops-{kind}-{app}-{target.cluster}".lower()


def _run_name() -> str:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else "gitops-cli"
