"""`gitops-app-sync`: one app on one cluster at one revision - the pipeline that
sync, auto-revert, recovery, drift heal and rollback all run:

    render -> validate -> diff -> apply -> prune -> health -> record  [-> revert]

each stage a task run named with the app and cluster. When apply or health
fails and the app's syncPolicy asks for it, the revert is this same flow, nested,
at the last healthy revision (undoing only what the bad sync added, and holding
the bad revision); mode `git` also pushes a revert commit.

The stages' big inputs (manifests, change sets, inventories) are passed in
Prefect's `quote`: Prefect would otherwise walk every object of them looking for
futures (2 s of a no-op sync of 1,000 objects).

The run's state is its outcome: Completed when it succeeded, Failed when it
failed, Failed named `Reverted` when it was reverted, Completed named `Skipped`
(with the reason) when a held revision or a failed dependency skipped it."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from prefect import get_run_logger, runtime
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.states import Completed, Failed, State
from prefect.utilities.annotations import quote

from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ChangeSetError
from prefect_gitops.engine.changes.hooks import Phase
from prefect_gitops.engine.changes.prune import EmptyDesiredState
from prefect_gitops.engine.cluster.kube import ClusterUnreachable
from prefect_gitops.engine.health.wait import HealthReport
from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.report import ObjectResult, SyncStatus, TargetResult, error_line
from prefect_gitops.engine.secrets import scrub
from prefect_gitops.engine.spec.appspec import RevertMode
from prefect_gitops.engine.spec.targets import Target, provided_by_dependencies
from prefect_gitops.engine.state.inventory import Inventory, read_inventory, write_intent
from prefect_gitops.engine.state.lock import LeaseLost, app_lock, holder_identity
from prefect_gitops.engine.state.suspend import suspension
from prefect_gitops.engine.workspace import Workspace, current
from prefect_gitops.flows import unrecorded
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.tasks.apply import apply_target
from prefect_gitops.tasks.diff import diff_target
from prefect_gitops.tasks.health import Unhealthy, health_target
from prefect_gitops.tasks.hooks import sync_hooks
from prefect_gitops.tasks.prune import prune_target
from prefect_gitops.tasks.record import record_target
from prefect_gitops.tasks.render import render_target
from prefect_gitops.tasks.retry import TransientError
from prefect_gitops.tasks.revert import revert_in_git
from prefect_gitops.tasks.validate import validate_target

_GIT_REVERTS = threading.Lock()  # two clusters failing at once revert Git once


def _run_name() -> str:
    p = runtime.flow_run.parameters
    target, short = f"{p['app']}@{p['cluster']}", p["revision"][:7]
    if p.get("revert_of"):
        return f"revert {target} to {short}"
    return f"heal {target} {short}" if p.get("heal") else f"{target} {short}"


@gitops_flow(name="gitops-app-sync", flow_run_name=_run_name)
def sync_app(repo: str, app: str, cluster: str, revision: str, dry_run: bool = False,
             blocked_by: list[str] | None = None, revert_of: str | None = None, heal: bool = False) -> State:
    """One app on one cluster: render, validate, diff, apply, prune, health, record.

    Args:
        repo: The Git repository block the app's manifests come from.
        app: The app's name in gitops.yaml.
        cluster: The cluster block's name.
        revision: The full commit SHA to apply.
        dry_run: Only diff: write nothing.
        blocked_by: Apps this one depends on that did not sync: skip it, saying so.
        revert_of: Set on a revert: the bad revision this run undoes (it is held afterwards).
        heal: A drift heal: sync only if the app is still at `revision` (a sync may have moved it on).
    """
    workspace = current()
    if workspace is None:
        raise RuntimeError("gitops-app-sync runs inside gitops-sync, which prepares its workspace")
    target = workspace.target(app, cluster)
    unrecorded.started(revision)
    started = time.monotonic()
    kube = workspace.kube(cluster)
    before = kube.requests
    result = _sync(workspace, target, revision, dry_run, blocked_by or [], revert_of, heal)
    result.revision, result.seconds = revision, time.monotonic() - started
    result.requests = {verb: kube.requests[verb] - before[verb] for verb in before}
    if not dry_run and not revert_of:
        _emit(result)
    return unrecorded.noted(outcome_state(result), result)


@contextlib.contextmanager
def without_heartbeat() -> Iterator[None]:
    """Flow runs started in the block have no heartbeat thread: a synchronous flow
    run joins it at its end, a second every run. Heartbeats tell an unattended
    run that died from one still running; a nested run has its parent's, and a
    command waiting for its run tells that itself. (Settings are copied only when
    a heartbeat is set: a copy costs about 0.1 s.)"""
    if PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() is None:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def run_app(**parameters) -> TargetResult:
    """Run `sync_app` nested in the current flow run, without a heartbeat; its result."""
    try:
        with without_heartbeat():
            state = sync_app(**parameters, return_state=True)
    except Exception:
        # Prefect could not record the run's end (its API gone): the app's result stands.
        result = unrecorded.result_of_lost_run(parameters["app"], parameters["cluster"])
        if result is None:
            raise
        return result
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - no result kept: see below
        result = None
    if isinstance(result, TargetResult):
        return result
    # A run that crashed, or one Prefect did not run again: a retried flow run keeps
    # the nested runs that completed. Its state says what it was.
    crashed = isinstance(result, BaseException)
    status = SyncStatus.FAILED if crashed else status_of_state(state.name)
    return TargetResult(parameters["app"], parameters["cluster"], status, state.message or str(result),
                        revision=parameters["revision"])


_STATUS_OF_STATE = {"Completed": SyncStatus.SUCCEEDED, "Skipped": SyncStatus.SKIPPED, "Reverted": SyncStatus.REVERTED}


def status_of_state(name: str) -> SyncStatus:
    """What an app run's state, by its name, says happened to the app."""
    return _STATUS_OF_STATE.get(name, SyncStatus.FAILED)


def outcome_state(result: TargetResult) -> State:
    """The run's state, named for what happened; the result rides along as its data."""
    message = f"{result.app}@{result.cluster}: {result.message}"
    if result.status is SyncStatus.SUCCEEDED:
        return Completed(message=message, data=result)
    if result.status is SyncStatus.SKIPPED:
        return Completed(name="Skipped", message=message, data=result)
    if result.status is SyncStatus.REVERTED:
        return Failed(name="Reverted", message=message, data=result)
    return Failed(message=message, data=result)


def _sync(workspace: Workspace, target: Target, revision: str, dry_run: bool, blocked_by: list[str],
          revert_of: str | None, heal: bool) -> TargetResult:
    if blocked_by:
        return _result(target, SyncStatus.SKIPPED, f"skipped: {', '.join(blocked_by)} did not sync")
    kube = workspace.kube(target.cluster)
    if revert_of:  # the run being reverted holds the app's Lease
        return _revert_locked(workspace, target, revision, revert_of)
    try:
        workspace.kube_for(target.app, target.cluster)  # a fencing cluster refuses it before the Lease is written
        with app_lock(kube, target.app.name, holder=holder_identity(_holder())):
            return _sync_locked(workspace, target, revision, dry_run, heal)
    except ProblemsFound as found:  # the cluster requires an account the app does not name
        return _result(target, SyncStatus.FAILED, f"refused: {found.one_line()}")
    except Exception as error:  # e.g. the cluster unreachable: this app fails, the others go on
        return _result(target, SyncStatus.FAILED, _describe(error, target))


def _sync_locked(workspace: Workspace, target: Target, revision: str, dry_run: bool, heal: bool) -> TargetResult:
    kube, app = workspace.kube(target.cluster), target.app
    previous = read_inventory(kube, app.name)
    workspace.before[(app.name, target.cluster)] = previous
    suspended = suspension(app, previous)
    if suspended and not dry_run:  # a diff still shows what resuming would apply
        get_run_logger().info("%s: %s; not synced", target.name, suspended.describe())
        return _result(target, SyncStatus.SKIPPED, f"{suspended.describe()}; not synced", suspended=True)
    if heal and (previous is None or previous.revision != revision):
        return _result(target, SyncStatus.SKIPPED, "the app was synced to another revision meanwhile")
    if previous and revision in previous.held_revisions:
        get_run_logger().warning("%s: revision %s is held after a failed sync; skipped until a newer commit",
                                 target.name, revision[:12])
        return _result(target, SyncStatus.SKIPPED, f"revision {revision[:12]} is held after a failed sync "
                                                   "(reverted); waiting for a newer commit", held=True)
    try:
        return _pipeline(workspace, target, revision, previous, dry_run)
    except _Wrote as failure:
        # With auto-revert on, a failed revision is never applied automatically
        # again, whether or not the revert succeeds.
        hold = revision if app.sync_policy.auto_revert.enabled else None
        _record_failure(workspace, target, revision, previous, failure, hold=hold)
        return _maybe_revert(workspace, target, revision, previous, failure)


def _revert_locked(workspace: Workspace, target: Target, good: str, bad: str) -> TargetResult:
    """Back to `good`, pruning only what the bad sync added; `bad` is held
    whatever happens, so it is never applied (or reverted) twice."""
    after_bad = read_inventory(workspace.kube(target.cluster), target.app.name)
    suspended = suspension(target.app, after_bad)
    if suspended:  # suspended while the failed sync ran: left as it is for whoever did it
        return _result(target, SyncStatus.FAILED, f"not reverted: {suspended.describe()}", suspended=True)
    try:
        return _pipeline(workspace, target, good, after_bad, dry_run=False,
                         undo=workspace.before.get((target.app.name, target.cluster)), hold=bad)
    except _Wrote as failure:
        _record_failure(workspace, target, good, after_bad, failure, hold=bad)
        return failure.result


class _Wrote(Exception):
    """A stage failed after the cluster was written to: recorded, and maybe reverted."""

    def __init__(self, result: TargetResult, changeset: ChangeSet, unhealthy: bool):
        super().__init__(result.message)
        self.result, self.changeset, self.unhealthy = result, changeset, unhealthy


def _pipeline(workspace: Workspace, target: Target, revision: str, previous: Inventory | None, dry_run: bool,
              undo: Inventory | None = None, hold: str | None = None) -> TargetResult:
    """The stages, in order. Failures before anything is written return a failed
    result; after, they raise _Wrote."""
    app, cluster, kube = target.app, target.cluster, workspace.kube_for(target.app, target.cluster)
    try:
        target.manifests = render_target(workspace.tree_at(revision), app, cluster, revision)
        provided = provided_by_dependencies(workspace.spec, target, workspace.targets)
        validate_target(quote(target.manifests), app, cluster, provided=quote(provided))
        changeset = diff_target(kube, app, cluster, revision, quote(target.manifests), quote(previous), quote(provided))
    except ProblemsFound as found:
        return _result(target, SyncStatus.FAILED, f"invalid desired state: {found}")
    except Exception as error:
        return _result(target, SyncStatus.FAILED, _describe(error, target))
    if not changeset.ok:
        return _result(target, SyncStatus.FAILED, "dry-run refused: " + changeset.error_text(), changeset)
    _limit_prunes(changeset, app.sync_policy.prune, undo)
    hooks = sync_hooks(kube, app, cluster, target.manifests, changeset, previous, revision, reverting=bool(hold))
    if dry_run:
        return _result(target, SyncStatus.SUCCEEDED, f"diff: {changeset.summary()}{hooks.planned()}", changeset)
    if failed_hook := hooks.run(Phase.PRE_SYNC):  # nothing of the app written: nothing to revert
        return _result(target, SyncStatus.FAILED, failed_hook + hooks.after_failure(), changeset)
    try:
        health = _write(workspace, target, changeset, previous)
        if failed_hook := hooks.run(Phase.POST_SYNC):
            raise _Wrote(_result(target, SyncStatus.FAILED, failed_hook, changeset, health), changeset,
                             unhealthy=False)
    except _Wrote as failure:  # SyncFail hooks run before the failure is recorded and maybe reverted
        failure.result.message += hooks.after_failure()
        raise
    if changeset.changed() or previous is None or previous.revision != revision or hold:
        record_target(workspace.kube(cluster), app, cluster, quote(changeset), quote(previous), revision,
                      "reverted" if hold else "healthy", healthy=True, hold=hold)
    return _result(target, SyncStatus.SUCCEEDED, f"{changeset.summary()}; {health.summary()}{hooks.ran()}",
                   changeset, health)


def _write(workspace: Workspace, target: Target, changeset: ChangeSet, previous: Inventory | None) -> HealthReport:
    app, cluster, kube = target.app, target.cluster, workspace.kube_for(target.app, target.cluster)
    stage = "apply"
    try:  # a stage with nothing to do does not run: a no-op sync reads render, validate, diff, health
        if any(c.action in (Action.CREATED, Action.CONFIGURED) for c in changeset):
            # Written ahead: if this run is killed, the next one knows what it created.
            write_intent(workspace.kube(cluster), app.name, changeset, previous)
            apply_target(kube, app, cluster, quote(changeset))
        stage = "prune"
        if any(c.action is Action.PRUNED for c in changeset):
            prune_target(kube, app, cluster, quote(changeset))
        stage = "health"
        return health_target(kube, app, cluster, quote(changeset))
    except Unhealthy as unhealthy:
        failed = _result(target, SyncStatus.FAILED, f"health: {unhealthy.report.summary()}", changeset,
                         unhealthy.report)
        raise _Wrote(failed, changeset, unhealthy=True) from unhealthy
    except EmptyDesiredState as error:
        raise _Wrote(_result(target, SyncStatus.FAILED, str(error), changeset), changeset, unhealthy=False) from error
    except Exception as error:
        # The apply's own failure, refused or still transient after its retries, is
        # told by its changeset: the first error, then what became of each change.
        own = isinstance(error, (ChangeSetError, TransientError))
        cause = changeset.failure_text() if own else _describe(error, target)
        failed = _result(target, SyncStatus.FAILED, f"{stage} failed: {cause}", changeset)
        changeset.halted = changeset.halted or isinstance(error, (ClusterUnreachable, LeaseLost))
        raise _Wrote(failed, changeset, unhealthy=False) from error


def _record_failure(workspace: Workspace, target: Target, revision: str, previous: Inventory | None,
                    failure: _Wrote, hold: str | None = None) -> None:
    """The inventory learns what the failed sync wrote, so a revert (or the next
    sync) can prune it."""
    # Not retried: the first error is the one that counts, and what the run was
    # about to write is in the inventory already (written ahead).
    try:
        record_target.with_options(retries=0)(
            workspace.kube(target.cluster), target.app, target.cluster, quote(failure.changeset), quote(previous),
            revision, "unhealthy" if failure.unhealthy else "failed", hold=hold)
    except Exception as error:  # the first error is the one to report; this one is logged after it
        get_run_logger().error("%s: recording the failed sync failed too: %s", target.name,
                               _describe(error, target))


def _maybe_revert(workspace: Workspace, target: Target, revision: str, previous: Inventory | None,
                  failure: _Wrote) -> TargetResult:
    """Put the app back on its last healthy revision: the same pipeline, nested.
    The outcome is Reverted (a failure all the same: the change did not go out).
    Not when the cluster could take no more writes: the revert could not either."""
    app, failed = target.app, failure.result
    if not app.sync_policy.auto_revert.enabled:
        return failed
    if failure.changeset.halted:
        failed.message += "; not reverted: the cluster can take no writes now"
        return failed
    good = previous.last_healthy_revision if previous else ""
    if not good or good == revision:
        return _revert_failed(target, failed, revision, "auto-revert failed: no earlier healthy revision is "
                                                        "recorded to revert to")
    reverted = run_app(repo=workspace.repo_name, app=app.name, cluster=target.cluster, revision=good,
                       revert_of=revision)
    if reverted.status is not SyncStatus.SUCCEEDED:
        return _revert_failed(target, failed, revision, f"auto-revert to {good[:12]} failed: {reverted.message}")
    logger = get_run_logger()
    note = f"reverted to {good[:12]}"
    if app.sync_policy.auto_revert.mode is RevertMode.GIT:
        with _GIT_REVERTS:
            note += "; " + revert_in_git(workspace.repo, app, target.cluster, revision, good, failed.message,
                                         _holder())
    failed.status, failed.message = SyncStatus.REVERTED, f"{note} after {failed.message}"
    logger.warning("%s: %s", target.name, failed.message)
    return failed


def _revert_failed(target: Target, failed: TargetResult, revision: str, why: str) -> TargetResult:
    """The revert could not happen or failed: said in the app's result and the log,
    and as the event `gitops.revert.failed`; the bad revision stays held."""
    failed.message += f"; {why}; revision {revision[:12]} is held"
    failed.revision = revision
    get_run_logger().error("%s: %s", target.name, failed.message)
    _emit(failed, event="gitops.revert.failed")
    return failed


def _limit_prunes(changeset: ChangeSet, prune: bool, undo: Inventory | None) -> None:
    """Without prune in the app's policy, objects gone from Git stay (and are
    reported). A revert prunes only what the bad sync added: objects that were
    members before it are left alone even if the good revision lacks them."""
    earlier = undo.member_keys() if undo else set()
    for change in changeset:
        if change.action is Action.PRUNED and (not prune or change.key in earlier):
            change.action = Action.SKIPPED


def _result(target: Target, status: SyncStatus, message: str, changeset: ChangeSet | None = None,
            health: HealthReport | None = None, held: bool = False, suspended: bool = False) -> TargetResult:
    healths = {str(r.ref): r.health for r in (health.results if health else [])}
    objects = []
    for change in changeset or []:
        state = healths.get(change.ref)
        objects.append(ObjectResult(
            apiVersion=change.api_version, kind=change.kind, namespace=change.namespace, name=change.name,
            source=str(change.source) if change.source else "", action=change.action.value,
            health=state.status.value if state else "", reason=change.error or (state.reason if state else ""),
            diff=change.diff,  # masked by the engine: built from masked objects
            outcome=change.outcome,
        ))
    return TargetResult(target.app.name, target.cluster, status, message, objects,
                        health=health.summary() if health else "", held=held, suspended=suspended)


def _describe(error: BaseException, target: Target) -> str:
    """One line, Secret values of the app scrubbed (no traceback: frames may hold them)."""
    return scrub(error_line(error), [m.obj for m in target.manifests])


def _emit(result: TargetResult, event: str | None = None) -> None:
    """An event when something happened: applied, failed, reverted, skipped for a held revision."""
    if event is None:
        if result.status is SyncStatus.SUCCEEDED and not result.changed:
            return
        if result.status is SyncStatus.SKIPPED and not result.held:
            return
        event = "gitops.sync." + ("applied" if result.status is SyncStatus.SUCCEEDED else result.status.value)
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"gitops.app.{result.app}.{result.cluster}",
                  "prefect.resource.name": f"{result.app}@{result.cluster}",
                  "gitops.app": result.app, "gitops.cluster": result.cluster, "gitops.revision": result.revision},
        payload={"status": result.status.value, "message": result.message, "changed": result.changed},
    )


def _holder() -> str:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else "gitops-cli"
