"""The hook stages of a sync (engine/changes/hooks.py): each hook a task run of its
own, named with its phase, name, app and cluster (`PreSync migrate web@production`),
whose logs tell how its Job went, pod by pod. Hooks of a phase run one after
another, by sync wave, then in the order of the manifests; the first that fails
stops its phase. Not retried: a hook run twice is a migration run twice."""

from __future__ import annotations

from dataclasses import dataclass, field

from prefect import get_run_logger, runtime, task
from prefect.utilities.annotations import quote

from prefect_gitops.engine.changes.apply import sync_wave
from prefect_gitops.engine.changes.hook_runs import HookOutcome, run_hook
from prefect_gitops.engine.changes.changeset import ChangeSet
from prefect_gitops.engine.changes.hooks import Hook, Phase, hooks_of, hooks_run
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.health.wait import ObjectHealth
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.report import error_line
from prefect_gitops.engine.secrets import scrub
from prefect_gitops.engine.spec.appspec import App
from prefect_gitops.engine.state.inventory import Inventory
from prefect_gitops.tasks.options import STAGE


class HookFailed(Exception):
    """A hook did not succeed; its message says which and why."""


def _run_name() -> str:
    p = runtime.task_run.parameters
    return f"{p['hook'].phase.value} {p['hook'].name} {p['app'].name}@{p['cluster']}"


@task(name="hook", task_run_name=_run_name, **STAGE)
def hook_target(kube: KubeClient, app: App, cluster: str, hook: Hook, scrub_with: list[dict]) -> HookOutcome:
    """Raises HookFailed when the hook failed, timed out or could not be created."""
    logger = get_run_logger()

    def progress(waiting: list[ObjectHealth], of: int, elapsed: float) -> None:
        logger.info("after %.0f s: %s", elapsed, "; ".join(str(w) for w in waiting))

    outcome = run_hook(kube, hook, app.name, app.namespace, app.sync_policy.health_timeout_seconds,
                       on_progress=progress, scrub_with=scrub_with)
    log = logger.info if outcome.ok else logger.error
    for line in [outcome.health, *outcome.pods]:
        log("%s", line)
    if not outcome.ok:
        raise HookFailed(f"{hook.phase.value} hook {hook.ref} failed: {outcome.describe()}")
    return outcome


@dataclass
class SyncHooks:
    """The hooks of one sync of an app on a cluster; `due`: whether this sync runs
    them at all (engine/changes/hooks.py: hooks_run)."""

    kube: KubeClient
    app: App
    cluster: str
    manifests: list[Manifest]
    due: bool
    succeeded: list[str] = field(default_factory=list)  # "PreSync Job/web/migrate", in the order they ran

    def run(self, phase: Phase) -> str | None:
        """Run the phase's hooks; why the first that failed did, or None."""
        if not self.due:
            return None
        secrets = [m.obj for m in self.manifests]
        for hook in sorted(hooks_of(self.manifests, phase), key=lambda h: sync_wave(h.manifest.obj)):
            try:
                hook_target(self.kube, self.app, self.cluster, hook, quote(secrets))
                self.succeeded.append(f"{phase.value} {hook.ref}")
            except HookFailed as failed:
                return str(failed)
            except Exception as error:  # e.g. the cluster out of reach: this hook failed, said in one line
                return f"{phase.value} hook {hook.ref} failed: {scrub(error_line(error), secrets)}"
        return None

    def after_failure(self) -> str:
        """Run the SyncFail hooks of a sync that failed; what to add to its message."""
        failed = self.run(Phase.SYNC_FAIL)
        return f"; {failed}" if failed else ""

    def ran(self) -> str:
        """For the result's message: the hooks that ran, e.g. "; hooks succeeded: PreSync Job/web/migrate"."""
        return f"; hooks succeeded: {', '.join(self.succeeded)}" if self.succeeded else ""

    def planned(self) -> str:
        """For a dry run: the hooks a sync would run, e.g. "; hooks to run: PreSync Job/web/migrate"."""
        hooks = [f"{h.phase.value} {h.ref}" for phase in Phase for h in hooks_of(self.manifests, phase)]
        return f"; hooks to run: {', '.join(hooks)}" if hooks and self.due else ""


def sync_hooks(kube: KubeClient, app: App, cluster: str, manifests: list[Manifest], changeset: ChangeSet,
               previous: Inventory | None, revision: str, reverting: bool) -> SyncHooks:
    """The hooks of this sync, due when it rolls the revision out."""
    last_healthy = previous.last_healthy_revision if previous else None
    return SyncHooks(kube, app, cluster, manifests,
                     due=hooks_run(bool(changeset.changed()), last_healthy, revision, reverting))
