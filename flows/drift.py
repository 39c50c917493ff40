"""`gitops_drift`: compare every app on every cluster with the revision it was
last synced to (not the branch head: that is what a diff shows), report what
drifted, and heal it when asked or when the app's syncPolicy.selfHeal says so.

The branch head's gitops.yaml says which apps go where and their policy; each
app's inventory says which revision to render. Clusters are checked
concurrently (a bounded number at once), the apps of a cluster one after
another (each counts its requests on the cluster's client), each a task run
`drift app@cluster`. Healing is the sync pipeline itself (flows/sync_app.py) at
the revision last synced, one nested run a drifted app: it takes the app's
Lease and does nothing if a sync moved the app on meanwhile.

    drift fleet
     ├─ fetch, revisions on staging, revisions on production
     ├─ drift web@staging, drift api@staging, drift web@production ...
     └─ [heal web@staging 1a2b3c4]   nested app runs, when healing

The run's state is its outcome: Completed when nothing drifted (or all of it
was healed), Completed named `Drifted` (with the count) when drift remains,
Failed when some app could not be checked or healed."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.states import Completed, State
from prefect.utilities.annotations import quote

from prefect_gitops.blocks import GitRepository
from prefect_gitops.blocks.decryption import render_options
from prefect_gitops.blocks.registry import load_clusters
from prefect_gitops.engine.changes.ignore import IgnoreDifferences
from prefect_gitops.engine.cluster.kube import KubeClient, run_bounded
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.problems import ProblemsFound, Severity
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.engine.state.drift import DesiredObject, Drift, DriftType, desired_objects, detect_drift
from prefect_gitops.engine.state.hand_edits import drift_managers, take_over
from prefect_gitops.engine.state.inventory import read_inventory
from prefect_gitops.engine.state.suspend import Suspension, suspension
from prefect_gitops.engine.report import (DriftObjectResult, DriftTargetResult, ObjectResult, SyncReport, SyncStatus, error_line,
                           table_cell)
from prefect_gitops.engine.secrets import scrub
from prefect_gitops.engine.workspace import Workspace, opened
from prefect_gitops.flows import window_gate
from prefect_gitops.flows.flow import gitops_flow
from prefect_gitops.flows.sync_app import run_app
from prefect_gitops.tasks.fetch import fetch_revision
from prefect_gitops.tasks.options import STAGE


class DriftCheckFailed(Exception):
    """Some app could not be checked or healed; carries the whole report."""

    def __init__(self, report: SyncReport):
        super().__init__(report.failure_message())
        self.report = report


@dataclass
class DriftTarget:
    """One app on one cluster: its policy from the branch head, its manifests
    rendered at the revision last synced there."""

    app: App
    cluster: str
    revision: str = ""
    manifests: list[Manifest] = field(default_factory=list)
    problem: str = ""  # why it cannot be checked
    desired: list[DesiredObject] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)
    suspended: Suspension | None = None  # reported, never healed

    def heals(self, heal: bool | None) -> bool:
        wanted = self.app.sync_policy.self_heal if heal is None else heal
        return wanted and self.suspended is None and any(d.healable for d in self.drifts)


@gitops_flow(name="gitops-drift", flow_run_name="drift {repo}")
def gitops_drift(repo: str, apps: list[str] | None = None, clusters: list[str] | None = None,
                 heal: bool | None = None) -> State:
    """Check the selected apps for drift from the revision last synced; heal when asked.

    Args:
        repo: The Git repository block holding gitops.yaml and the manifests.
        apps: Only these apps (all when empty).
        clusters: Only these clusters (all that the apps target when empty).
        heal: Re-apply what drifted: yes, no, or (empty) as each app's syncPolicy.selfHeal says.
    """
    source = GitRepository.load(repo).source()
    head = fetch_revision(repo, source)
    workspace = Workspace.load(repo, source, head.sha, head.tree, load_clusters(),
                               checkout=lambda sha: fetch_revision(repo, source, sha).tree,
                               render_options=render_options)
    with opened(workspace):
        errors = [p for p in workspace.select(apps, clusters) if p.severity is Severity.ERROR]
        if errors:
            raise ProblemsFound(errors)
        checks = [DriftTarget(t.app, t.cluster) for t in workspace.targets]
        names = sorted({c.cluster for c in checks})
        revisions = [read_revisions.submit(n, workspace.kube(n), [c.app.name for c in checks if c.cluster == n])
                     for n in names]
        for name, future in zip(names, revisions):
            _set_revisions([c for c in checks if c.cluster == name], future.result())
        _render(workspace, checks)
        by_cluster = run_bounded(lambda name: _check_cluster(workspace, [c for c in checks if c.cluster == name]),
                                 names)
        found = {(r.app, r.cluster): r for results in by_cluster for r in results}
        wanted = [c for c in checks if c.heals(heal)]
        healing = window_gate.heals_now(workspace.spec, wanted, found, manual=heal is True)  # sync windows
        _heal(workspace, checks, healing)
    for check in healing:
        key = (check.app.name, check.cluster)
        found[key] = _drift_result(check, check.desired, check.drifts, found[key].requests)
    report = SyncReport(head.sha, [found[(c.app.name, c.cluster)] for c in checks])
    for check, result in zip(checks, report.results):
        _publish(result, check)
    if any(r.error for r in report.results):
        raise DriftCheckFailed(report)
    return final_state(report)


# ---- which revision, rendered ---------------------------------------------------------

@task(name="read-revisions", task_run_name="revisions on {cluster}", cache_policy=NO_CACHE)
def read_revisions(cluster: str, kube: KubeClient, apps: list[str]) -> dict[str, str] | str:
    """app -> the revision its inventory names ("" before its first sync); or
    why the cluster could not be read."""
    try:
        return {app: (inventory.revision if (inventory := read_inventory(kube, app)) else "") for app in apps}
    except Exception as error:  # one broken cluster must not stop the others
        return f"cannot read the inventories: {error_line(error)}"


def _set_revisions(checks: list[DriftTarget], revisions: dict[str, str] | str) -> None:
    for check in checks:
        if isinstance(revisions, str):
            check.problem = revisions
        else:
            check.revision = revisions[check.app.name]


def _render(workspace: Workspace, checks: list[DriftTarget]) -> None:
    """Each app as it was last synced (unvalidated: it was validated when synced)."""
    for check in checks:
        if not check.revision or check.problem:
            continue
        try:
            check.manifests = workspace.rendered(check.app, check.cluster, check.revision)
        except ProblemsFound as found:
            check.problem = f"cannot render {check.revision[:12]}: {found}"


# ---- one app on one cluster --------------------------------------------------------------

def _check_cluster(workspace: Workspace, checks: list[DriftTarget]) -> list[DriftTargetResult]:
    """The apps of one cluster one after another: each counts the requests of
    the cluster's one client while it runs."""
    # quote: Prefect need not walk the workspace and every manifest looking for futures
    return [check_target(quote(workspace), quote(check)) for check in checks]


@task(name="drift", task_run_name="drift {check.app.name}@{check.cluster}", **STAGE)
def check_target(workspace: Workspace, check: DriftTarget) -> DriftTargetResult:
    """Detect drift of one app on one cluster; the requests it cost are counted
    into its result. Errors are the result's, Secret values scrubbed."""
    kube = workspace.kube(check.cluster)
    before = kube.requests
    bodies = [m.obj for m in check.manifests]
    try:
        result = _check(workspace, check)
    except Exception as error:  # a failure of this app must not stop the others
        get_run_logger().error("%s on %s: drift check failed: %s", check.app.name, check.cluster,
                               scrub(error_line(error), bodies))
        result = _result(check, SyncStatus.FAILED, scrub(error_line(error), bodies), error=True)
    result.requests = {verb: kube.requests[verb] - before[verb] for verb in before}
    return result


def _check(workspace: Workspace, check: DriftTarget) -> DriftTargetResult:
    app = check.app
    if check.problem:
        return _result(check, SyncStatus.FAILED, check.problem, error=True)
    if not check.revision:
        return _result(check, SyncStatus.SKIPPED, "never synced here: nothing to compare")
    inventory = read_inventory(workspace.kube(check.cluster), app.name)  # the engine's own bookkeeping
    if inventory is None or inventory.revision != check.revision:
        return _result(check, SyncStatus.SKIPPED, "synced again during the check: checked next time")
    kube = workspace.kube_for(app, check.cluster)  # the live objects, as the app's ServiceAccount
    check.desired = desired_objects(kube, app.name, check.manifests, app.namespace)
    check.drifts = detect_drift(kube, app.name, inventory, check.desired, drift_managers(app),
                                IgnoreDifferences.of(app))
    get_run_logger().info("%s on %s: %s", app.name, check.cluster, _summary(check.drifts) or "no drift")
    result = _drift_result(check, check.desired, check.drifts)
    check.suspended = suspension(app, inventory)
    if check.suspended:
        result.suspended = True
        result.message += f" ({check.suspended.describe()}: not healed)"
    return result


# ---- healing: the sync pipeline at the revision last synced ----------------------------

def _heal(workspace: Workspace, checks: list[DriftTarget], healing: list[DriftTarget]) -> None:
    """One nested app run a drifted app (`heal web@production 1a2b3c4`), clusters
    concurrently; the drifts learn whether they were healed."""
    for check in checks:  # what the apps depend on, as last synced, for their validation
        workspace.target(check.app.name, check.cluster).manifests = check.manifests
    by_cluster: dict[str, list[DriftTarget]] = {}
    for check in healing:
        by_cluster.setdefault(check.cluster, []).append(check)
    with ThreadPoolExecutor(max_workers=max(1, len(by_cluster)), thread_name_prefix="heal") as pool:
        futures = [pool.submit(contextvars.copy_context().run, _heal_cluster, workspace, members)
                   for members in by_cluster.values()]
        for future in futures:
            future.result()


def _heal_cluster(workspace: Workspace, checks: list[DriftTarget]) -> None:
    for check in checks:
        _take_over_hand_edits(workspace.kube_for(check.app, check.cluster), check)  # as the app acts
        synced = run_app(repo=workspace.repo_name, app=check.app.name, cluster=check.cluster,
                         revision=check.revision, heal=True)
        for drift in (d for d in check.drifts if d.healable and not d.error):
            if synced.status is SyncStatus.SUCCEEDED:
                drift.healed = True
            else:
                drift.error = f"{drift.ref}: not healed: {synced.message}"


def _take_over_hand_edits(kube: KubeClient, check: DriftTarget) -> None:
    """Hand-edited fields become ours, so that the app run's apply removes them
    (its diff then shows them going). Only managedFields change: harmless if a
    sync moved the app on meanwhile, whose apply removes them as well."""
    bodies = {d.key: d.body for d in check.desired}
    for drift in (d for d in check.drifts if d.hand_edits):
        try:
            take_over(kube, bodies[drift.key], drift_managers(check.app))
        except Exception as error:  # this object stays drifted; the others are healed
            drift.error = f"{drift.ref}: not healed: cannot take over the hand-edited fields: " + \
                          scrub(error_line(error), [bodies[drift.key]])


# ---- the report -------------------------------------------------------------------------

HEALED = ("created", "configured")  # a drift report's objects change only when healed


def final_state(report: SyncReport) -> State:
    """Completed named `Drifted` while drift remains, so that the runs list tells
    it from a clean check (a finding, not a failure: the check itself worked);
    plain Completed when nothing drifted or all was healed. The report rides along."""
    drifted = _per_target(report, lambda o: o.action == "skipped")  # found and not healed
    healed = _per_target(report, lambda o: o.action in HEALED)
    if drifted:
        message = _told(drifted, "drifted") + (f"; {_told(healed, 'healed')}" if healed else "")
        return Completed(name="Drifted", message=message, data=report)
    if healed:
        return Completed(message=_told(healed, "healed"), data=report)
    return Completed(message=f"no drift in {_count(len(report.results), 'app')}", data=report)


def _per_target(report: SyncReport, counted) -> dict[str, int]:
    """app@cluster -> how many of its objects are `counted`, for the targets that have any."""
    counts = {f"{r.app}@{r.cluster}": sum(map(counted, r.objects)) for r in report.results}
    return {target: n for target, n in counts.items() if n}


def _told(counts: dict[str, int], what: str) -> str:
    """`3 objects drifted in 2 apps: web@staging (2), api@prod (1)`"""
    listed = ", ".join(f"{target} ({n})" for target, n in counts.items())
    return f"{_count(sum(counts.values()), 'object')} {what} in {_count(len(counts), 'app')}: {listed}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _drift_result(check: DriftTarget, desired: list[DesiredObject], drifts: list[Drift],
                  requests: dict[str, int] | None = None) -> DriftTargetResult:
    by_key = {d.key: d for d in drifts}
    objects = [_object(d, by_key.get(d.key)) for d in desired]
    objects += [_object(None, d) for d in drifts if d.type is DriftType.UNEXPECTED]
    failures = [d.error for d in drifts if d.error]
    remaining = [d for d in drifts if not d.healed]
    healed = [d for d in drifts if d.healed]
    revision = check.revision[:12]
    if failures:
        status, message = SyncStatus.FAILED, f"heal failed at {revision}: " + "; ".join(failures)
    elif remaining:
        status, message = SyncStatus.FAILED, f"drift from {revision}: {_summary(remaining)}"
    else:
        status = SyncStatus.SUCCEEDED
        message = f"healed to {revision}: {_summary(healed)}" if healed else f"no drift from {revision}"
    result = _result(check, status, message, objects, error=bool(failures))
    if requests is not None:
        result.requests = requests
    return result


def _object(desired: DesiredObject | None, drift: Drift | None) -> DriftObjectResult:
    """created / configured when healed, skipped when drifted and not, else unchanged."""
    if drift is None:
        action, reason = "unchanged", ""
    elif drift.healed:
        action, reason = ("created" if drift.type is DriftType.MISSING else "configured"), drift.describe()
    else:
        action, reason = "skipped", drift.error or drift.describe()
    ref = desired or drift
    source = desired.source if desired else None
    return DriftObjectResult(apiVersion=ref.api_version, kind=ref.kind, namespace=ref.namespace, name=ref.name,
                             source=str(source) if source else "", action=action, health="", reason=reason,
                             changes=list(drift.changes) if drift else [])


def _result(check: DriftTarget, status: SyncStatus, message: str, objects: list[ObjectResult] = (),
            error: bool = False) -> DriftTargetResult:
    return DriftTargetResult(check.app.name, check.cluster, status, message, list(objects),
                             revision=check.revision, error=error)


def _summary(drifts: list[Drift]) -> str:
    counts = {t: sum(d.type is t for d in drifts) for t in DriftType}
    return ", ".join(f"{n} {t.value}" for t, n in counts.items() if n)


def drift_markdown(result: DriftTargetResult) -> str:
    """The Prefect artifact: a summary, a table of drifted objects, then what changed in each."""
    lines = [f"# Drift: app `{result.app}` on cluster `{result.cluster}`", "",
             f"Compared with `{result.revision[:12] or '-'}`, the revision last synced: "
             f"**{result.status.value}**: {table_cell(result.message)}", ""]
    drifted = [o for o in result.objects if o.action != "unchanged"]
    if drifted:
        lines += ["| action | object | reason |", "|---|---|---|"]
        lines += [f"| {o.action} | `{table_cell(o.ref)}` | {table_cell(o.reason)} |" for o in drifted]
    for obj in drifted:
        if getattr(obj, "changes", None):
            lines += ["", f"## `{obj.ref}`", "", "```", *obj.changes, "```"]
    return "\n".join(lines)



def _publish(result: DriftTargetResult, check: DriftTarget) -> None:
    """When something drifted or could not be checked: the markdown artifact and an
    event. A clean check publishes nothing: every artifact version is kept, and a
    scheduled check every few minutes would bury the one that mattered."""
    drifted = [o.ref for o in result.objects if o.action != "unchanged"]
    if not drifted and result.status is not SyncStatus.FAILED:
        return
    create_markdown_artifact(key=f"gitops-drift-{result.app}-{result.cluster}".lower(),
                             markdown=drift_markdown(result),
                             description=f"drift of {result.app} on {result.cluster}: {result.status.value}")
    if not drifted:
        return
    emit_event(
        event="gitops.drift.detected",
        resource={"prefect.resource.id": f"gitops.app.{result.app}.{result.cluster}",
                  "prefect.resource.name": f"{result.app}@{result.cluster}",
                  "gitops.app": result.app, "gitops.cluster": result.cluster, "gitops.revision": check.revision},
        payload={"objects": drifted, "healed": [o.ref for o in result.objects if o.action in ("created", "configured")],
                 "status": result.status.value},
    )
