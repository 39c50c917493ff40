"""Sync hooks (Argo CD's resource hooks): objects of an app annotated
`gitops.prefect.io/hook: PreSync | PostSync | SyncFail`, usually Jobs (a database
migration, a smoke test, a rollback script), run around a sync instead of being
kept in step with Git. They are not the app's objects: never planned, applied,
pruned, drifted or healed as such, and not in its inventory.

This module says which objects are hooks, of which phase, with which delete
policies, and when a sync runs them; engine/changes/hook_runs.py runs one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from prefect_gitops.engine.changes.changeset import annotations_of
from prefect_gitops.engine.objects import Manifest
from prefect_gitops.engine.report import table_cell

HOOK_ANNOTATION = "gitops.prefect.io/hook"
DELETE_POLICY_ANNOTATION = "gitops.prefect.io/hook-delete-policy"


class Phase(str, Enum):
    PRE_SYNC = "PreSync"  # before anything of the app is applied; a failure stops the sync
    POST_SYNC = "PostSync"  # once the app is healthy; a failure fails the sync (and may revert it)
    SYNC_FAIL = "SyncFail"  # when the sync failed, before an auto-revert


class DeletePolicy(str, Enum):
    BEFORE_HOOK_CREATION = "BeforeHookCreation"  # the previous run's object is deleted before it is created again
    HOOK_SUCCEEDED = "HookSucceeded"  # deleted once it succeeded
    HOOK_FAILED = "HookFailed"  # deleted once it failed (its outcome is logged first)


DEFAULT_DELETE_POLICIES = frozenset({DeletePolicy.BEFORE_HOOK_CREATION})


class HookSpecError(ValueError):
    """A hook annotation with a value we do not know."""


@dataclass(frozen=True)
class Hook:
    """A hook of an app, as rendered from Git."""

    manifest: Manifest
    phase: Phase
    delete_policies: frozenset[DeletePolicy]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def ref(self) -> str:
        return self.manifest.ref


def is_hook(obj: object) -> bool:
    """Annotated as a hook, whatever the value (a bad one is a validation error:
    never is such an object applied as one of the app's)."""
    return isinstance(obj, dict) and HOOK_ANNOTATION in annotations_of(obj)


def app_objects(manifests: Iterable[Manifest]) -> list[Manifest]:
    """The manifests that are the app's objects: all but its hooks."""
    return [m for m in manifests if not is_hook(m.obj)]


def phase_of(obj: dict) -> Phase:
    value = str(annotations_of(obj).get(HOOK_ANNOTATION, "")).strip()
    try:
        return Phase(value)
    except ValueError:
        raise HookSpecError(f"{HOOK_ANNOTATION} {value!r} is not one of {_choices(Phase)}") from None


def delete_policies_of(obj: dict) -> frozenset[DeletePolicy]:
    """A comma-separated list, as Argo CD's; none given: BeforeHookCreation."""
    text = str(annotations_of(obj).get(DELETE_POLICY_ANNOTATION, ""))
    values = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in values if v not in DeletePolicy._value2member_map_]
    if unknown:
        raise HookSpecError(f"{DELETE_POLICY_ANNOTATION} {', '.join(map(repr, unknown))} "
                            f"{'is' if len(unknown) == 1 else 'are'} not among {_choices(DeletePolicy)}")
    return frozenset(DeletePolicy(v) for v in values) or DEFAULT_DELETE_POLICIES


def hooks_of(manifests: Iterable[Manifest], phase: Phase) -> list[Hook]:
    """The app's hooks of one phase, in the order of the manifests (validation has
    refused bad annotations before a sync gets here)."""
    return [Hook(m, phase, delete_policies_of(m.obj)) for m in manifests
            if is_hook(m.obj) and phase_of(m.obj) is phase]


def hooks_run(changes: bool, last_healthy_revision: str | None, revision: str, reverting: bool) -> bool:
    """Whether a sync runs the app's hooks: when it rolls a revision out, i.e. it
    changes objects of the app and that revision is not the app's last healthy
    one there. So a sync that changes nothing, a self-heal or drift heal of the
    revision already out, and an auto-revert (SyncFail hooks are its undo step)
    run none; a retry of a revision that failed runs them again."""
    return changes and not reverting and last_healthy_revision != revision


def _choices(enum: type[Enum]) -> str:
    return ", ".join(e.value for e in enum)


def hooks_markdown(manifests: Iterable[Manifest]) -> str:
    """The app's hooks, for its diff artifact ("" when it has none)."""
    rows = [f"| {phase.value} | `{table_cell(h.ref)}` | {table_cell(str(h.manifest.source))} |"
            for phase in Phase for h in hooks_of(manifests, phase)]
    if not rows:
        return ""
    return "\n".join(["", "## Hooks", "", "Run when a sync rolls a new revision out (not by a heal or a revert).",
                      "", "| phase | object | source |", "|---|---|---|", *rows, ""])
