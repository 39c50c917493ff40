"""The gate that sync windows (engine/spec/sync_windows.py) put before every
write of a sync or a heal:

- a scheduled sync (a run Prefect's scheduler made: `auto_scheduled`) leaves
  the apps whose windows are closed alone, each logged with the window and when
  it opens; when that is every app with work, the run ends Completed named
  `Skipped`, with no artifact;
- a person's sync (the CLI, the UI, the REST API, a recovery or a rollback) is
  refused as a whole, nothing written, naming each app's window and when it
  opens, unless every closed window lets manual syncs through (`manualSync`)
  or `force_window` is given;
- a heal (selfHeal, or `gitops drift --heal`, a person's) waits while closed;
  the drift is reported all the same.

A diff (dry run) writes nothing and is never held."""

from __future__ import annotations

from datetime import datetime

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed, State

from prefect_gitops.engine.report import SyncReport, SyncStatus, TargetResult
from prefect_gitops.engine.spec.appspec import AppSpec
from prefect_gitops.engine.spec.sync_windows import WindowState, state_for
from prefect_gitops.engine.spec.targets import Target


class SyncWindowClosed(Exception):
    """A person's sync that sync windows refuse (an expected error: exit code 2)."""

    def __init__(self, closed: dict[str, WindowState]):
        self.closed = closed
        told = "; ".join(f"{name}: {state.reason()}" for name, state in closed.items())
        super().__init__(f"refused by sync windows, nothing synced: {told} "
                         "(--force-window or the window's manualSync lets a manual sync through)")


def is_scheduled() -> bool:
    """Whether this run was made by a deployment's schedule (Prefect's scheduler), not asked for."""
    context = FlowRunContext.get()
    return bool(context and context.flow_run and context.flow_run.auto_scheduled)


def gate_sync(spec: AppSpec, targets: list[Target], revision: str, dry_run: bool, force: bool,
              now: datetime | None = None) -> tuple[list[Target], list[TargetResult], State | None]:
    """The targets that may sync now; a skipped result for each that may not
    (a scheduled run); and the state to end the run with when none may, or
    when a person's run is refused."""
    if dry_run:
        return targets, [], None
    try:
        admitted, waiting = _admit(spec, targets, revision, not is_scheduled(), force, now)
    except SyncWindowClosed as closed:
        get_run_logger().error("%s", closed)
        return [], [], Failed(message=str(closed), data=closed)
    if waiting and not admitted:
        told = "; ".join(f"{r.app}@{r.cluster}: {r.message}" for r in waiting)
        return [], waiting, Completed(name="Skipped", message=f"not applied ({revision[:12]}): {told}",
                                      data=SyncReport(revision, waiting))
    return admitted, waiting, None


def _admit(spec: AppSpec, targets: list[Target], revision: str, manual: bool, force: bool,
           now: datetime | None) -> tuple[list[Target], list[TargetResult]]:
    logger = get_run_logger()
    states = {t.name: state_for(spec, t.app, t.cluster, now) for t in targets}
    closed = {name: s for name, s in states.items() if not s.allows(manual)}
    if closed and manual and not force:
        raise SyncWindowClosed(closed)
    for name, state in states.items():
        if not state.open and manual:
            how = "--force-window" if name in closed else "the window lets manual syncs through (manualSync)"
            logger.warning("%s: syncing although %s: %s", name, state.reason(), how)
    if manual:
        return targets, []
    waiting = [TargetResult(t.app.name, t.cluster, SyncStatus.SKIPPED, f"not synced: {closed[t.name].reason()}",
                            revision=revision) for t in targets if t.name in closed]
    for result in waiting:
        logger.warning("%s@%s: %s", result.app, result.cluster, result.message)
    return [t for t in targets if t.name not in closed], waiting


def heals_now(spec: AppSpec, checks: list, results: dict, manual: bool, now: datetime | None = None) -> list:
    """The drift checks (flows/drift.py) whose heal may run now; the result of
    each other (in `results`, by app and cluster) says why its heal waits."""
    admitted = []
    for check in checks:
        state = state_for(spec, check.app, check.cluster, now)
        if state.allows(manual):
            admitted.append(check)
            continue
        result = results[(check.app.name, check.cluster)]
        result.message += f"; heal waits: {state.reason()}"
        get_run_logger().warning("%s@%s: heal waits: %s", check.app.name, check.cluster, state.reason())
    return admitted
