"""Auto-revert: when a sync fails part-way or ends unhealthy, put the app back on
its last healthy revision (re-applied, and what the bad revision added pruned),
wait for health, and make sure the bad revision is not applied again: it is held
in the inventory and, in mode `git`, reverted in Git by a commit.

A revert runs once per failure and never loops: if it fails too, it stops and
says which state the cluster is in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engine.appspec import App, RevertMode
from engine.apply import apply_changes
from engine.changeset import Action, ChangeSet
from engine.diff import plan_changes
from engine.health import HealthReport, refs_of, wait_for_health
from engine.inventory import Inventory, read_inventory, updated_inventory, write_inventory
from engine.kube import KubeClient
from engine.objects import Manifest
from engine.prune import prune_objects


@dataclass
class RevertOutcome:
    ok: bool
    to_revision: str
    message: str
    changeset: ChangeSet | None = None
    health: HealthReport | None = None


def revert_target(kube: KubeClient, app: App, cluster: str, bad_revision: str, reason: str,
                  before: Inventory | None, render_revision: Callable[[str], list[Manifest]],
                  revert_in_git: Callable[[str, str], str] | None) -> RevertOutcome:
    """Re-apply the last healthy revision recorded before the bad sync.

    `before` is the inventory as it was before the bad sync; `render_revision(sha)`
    gives the app's manifests for this cluster at a revision; `revert_in_git(good,
    reason)` pushes a revert commit and says what it did (mode git only)."""
    good = before.last_healthy_revision if before else ""
    if not good or good == bad_revision:
        return RevertOutcome(False, "", "no earlier healthy revision is recorded to revert to")
    after_bad = read_inventory(kube, app.name)
    changeset = plan_changes(kube, app.name, render_revision(good), after_bad, default_namespace=app.namespace)
    if not changeset.ok:
        return RevertOutcome(False, good, "revert plan refused: " + changeset.error_text(), changeset)
    _prune_only_what_the_bad_revision_added(changeset, before)
    apply_changes(kube, changeset)
    if changeset.ok:
        prune_objects(kube, app.name, changeset, allow_empty=app.sync_policy.allow_empty)
    inventory = updated_inventory(app.name, changeset, after_bad, good, "reverted")
    inventory.hold(bad_revision)  # scheduled syncs skip it until a newer commit arrives
    if not changeset.ok:
        write_inventory(kube, inventory)
        return RevertOutcome(False, good, "revert apply failed: " + changeset.error_text(), changeset)
    health = wait_for_health(kube.api_client, refs_of(changeset.desired()), app.sync_policy.health_timeout_seconds,
                             dynamic=kube.dynamic)
    inventory.record(good, "reverted" if health.ok else "revert-unhealthy", healthy=health.ok)
    write_inventory(kube, inventory)
    if not health.ok:
        return RevertOutcome(False, good, f"reverted to {good[:12]} but it is not healthy: {health.summary()}",
                             changeset, health)
    message = f"reverted to {good[:12]}"
    if app.sync_policy.auto_revert.mode is RevertMode.GIT and revert_in_git is not None:
        message += "; " + revert_in_git(good, reason)
    return RevertOutcome(True, good, message, changeset, health)


def _prune_only_what_the_bad_revision_added(changeset: ChangeSet, before: Inventory | None) -> None:
    """Objects that were members before the bad sync are left alone even if the
    good revision lacks them: a revert undoes one sync, nothing older."""
    earlier = before.member_keys() if before else set()
    for change in changeset:
        if change.action is Action.PRUNED and change.key in earlier:
            change.action = Action.SKIPPED
