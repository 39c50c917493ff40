"""The health stage: wait until what was applied is Current (kstatus rules,
engine/health/); fail as soon as one object Failed or the time is up."""

from __future__ import annotations

from prefect import get_run_logger, task

from prefect_gitops.engine.changes.changeset import Action, ChangeSet
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.health.cel_rules import CelHealthChecks
from prefect_gitops.engine.health.wait import HealthReport, ObjectHealth, current_as_seen, refs_of, wait_for_health
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.tasks.options import STAGE
from prefect_gitops.tasks.retry import TRANSIENT_RETRIES


class Unhealthy(Exception):
    """What was applied did not become healthy; carries the report."""

    def __init__(self, app: str, cluster: str, report: HealthReport):
        super().__init__(f"{app}@{cluster}: health: {report.summary()}")
        self.report = report


@task(name="health", task_run_name="health {app.name}@{cluster}", **STAGE, **TRANSIENT_RETRIES)
def health_target(kube: KubeClient, app: App, cluster: str, changeset: ChangeSet) -> HealthReport:
    """The report when every object is Current; raises Unhealthy otherwise."""
    logger = get_run_logger()
    logged: list[tuple[int, list[str]]] = []

    def progress(waiting: list[ObjectHealth], of: int, elapsed: float) -> None:
        shown = (len(waiting), [str(r) for r in waiting[:10]])
        if shown not in logged[-1:]:  # log what changed, not every second
            logged[:] = [shown]
            logger.info("after %.0f s, waiting for %d of %d: %s", elapsed, len(waiting), of,
                        "; ".join(shown[1]) + (" ..." if len(waiting) > 10 else ""))

    # What was Current a moment ago is not read again: an unchanged object as the
    # diff read it, an applied one in the apply's answer (a ConfigMap, a Service).
    # The apply judged its answer without the app's CEL rules: their kinds are read again.
    checks = CelHealthChecks(app.health_checks_in_effect)
    unchanged = [c for c in changeset.desired() if c.action is Action.UNCHANGED and c.dry_run_result]
    seen = current_as_seen(dict(zip(refs_of(unchanged), (c.dry_run_result for c in unchanged))), checks)
    seen |= set(refs_of(c for c in changeset.desired()
                        if c.current_when_applied and not checks.covers(c.api_version, c.kind)))
    report = wait_for_health(kube, refs_of(changeset.desired()), app.sync_policy.health_timeout_seconds,
                             on_progress=progress, seen_current=seen, custom=checks)
    if not report.ok:
        raise Unhealthy(app.name, cluster, report)
    logger.info("%s@%s: health: %s", app.name, cluster, report.summary())
    return report
