"""Sync options of one object: the annotation `gitops.prefect.io/sync-options`,
comma-separated, named as Argo CD's `argocd.argoproj.io/sync-options`:

- `IfNotPresent` (Flux's `kustomize.toolkit.fluxcd.io/ssa: IfNotPresent`): created
  when it is missing, never written afterwards: once it exists the live object is
  its owner's (a Secret an operator fills in). Its diff says so instead of a
  change, drift and heal pass it by, and prune still deletes it once it leaves Git.
- `Replace=true` (Argo CD's): a change of the object deletes it and creates it
  again instead of applying it; the `gitops.prefect.io/recreate` annotation does
  that only when an immutable field changes. Both go through apply's one recreate.

An option not listed here is a validation error (rule `object.sync-options`): a
typo must not silently turn a create-only Secret into one that sync overwrites."""

from __future__ import annotations

from typing import Iterator

from prefect_gitops.engine.changes.changeset import Action, ObjectChange, annotations_of
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest, json_path
from prefect_gitops.engine.problems import Problem
from prefect_gitops.engine.validation.context import Context, _problem

SYNC_OPTIONS_ANNOTATION = "gitops.prefect.io/sync-options"
IF_NOT_PRESENT = "IfNotPresent"
REPLACE = "Replace=true"
KNOWN_OPTIONS = (IF_NOT_PRESENT, REPLACE)
RULE = "object.sync-options"
CREATE_ONLY_EXISTS = "create-only (IfNotPresent), exists: left as it is"
REPLACED = "(replaced (Replace=true): deleted and created again)"


def sync_options(obj: dict | None) -> list[str]:
    """The options an object names, in its order; none when the annotation is absent."""
    value = annotations_of(obj).get(SYNC_OPTIONS_ANNOTATION)
    if not isinstance(value, str):
        return []
    return [option.strip() for option in value.split(",") if option.strip()]


def create_only(obj: dict | None) -> bool:
    return IF_NOT_PRESENT in sync_options(obj)


def replaced(obj: dict | None) -> bool:
    return REPLACE in sync_options(obj)


# ---- in the plan ---------------------------------------------------------------------

def leave_if_present(kube: KubeClient, change: ObjectChange, listed: dict | None) -> bool:
    """Skip a create-only object that exists, without a dry-run: `listed` when the
    app's LIST returned it, else one GET (it may lack our label: made by hand
    before the first sync, it is not adopted either). True when skipped."""
    if not create_only(change.desired):
        return False
    live = listed or kube.get_if_readable(change.api_version, change.kind, change.name, change.namespace)
    if live is None:
        return False
    change.action, change.diff = Action.SKIPPED, CREATE_ONLY_EXISTS
    return True


def mark_replaced(change: ObjectChange) -> None:
    """A Replace=true object that changes is deleted and created again; its diff says so."""
    if change.action is Action.CONFIGURED and not change.recreate and replaced(change.desired):
        change.recreate = True
        change.diff = f"{REPLACED}\n{change.diff}" if change.diff else REPLACED


# ---- validation ----------------------------------------------------------------------

def object_sync_options(m: Manifest, ctx: Context) -> Iterator[Problem]:
    """Every option is known, and IfNotPresent and Replace=true are not both given."""
    options = sync_options(m.obj)
    where = json_path(["metadata", "annotations", SYNC_OPTIONS_ANNOTATION])
    for option in options:
        if option not in KNOWN_OPTIONS:
            spelled = next((k for k in KNOWN_OPTIONS if k.lower() == option.lower()), None)
            hint = f"; did you mean {spelled}?" if spelled else ""
            yield _problem(m, RULE, f"{where}: unknown sync option {option!r} "
                                    f"(known: {', '.join(KNOWN_OPTIONS)}){hint}")
    if IF_NOT_PRESENT in options and REPLACE in options:
        yield _problem(m, RULE, f"{where}: {IF_NOT_PRESENT} (never written once it exists) and {REPLACE} "
                                "(re-created on every change) exclude each other")
