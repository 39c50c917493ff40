"""How a sync's run ends, for the fleet run and a cluster run alike: its state
says what happened to the apps it ran."""

from __future__ import annotations

from prefect import get_run_logger
from prefect.states import Completed, Failed, State

from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.report import SyncFailed, SyncReport, SyncStatus


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


def invalid(found: ProblemsFound) -> State:
    """gitops.yaml or the selection is wrong: nothing runs; the problems are the error."""
    get_run_logger().error("%s", found)
    return Failed(message=f"invalid desired state: {found}", data=found)
