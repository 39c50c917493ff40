"""Prune after apply: delete the previous members no longer desired, in reverse
apply order, and only objects that are still this app's: a live object without
this app's label may have been adopted by someone else, and one annotated
`gitops.prefect.io/prune: "false"` (or Argo's `Prune=false`) is kept."""

from __future__ import annotations

import logging
from itertools import groupby


from prefect_gitops.engine.changes.apply import order_key
from prefect_gitops.engine.changes.changeset import Action, ChangeSet, Fate, ObjectChange, annotations_of, labels_of
from prefect_gitops.engine.cluster.kube import ApiError, KubeClient, UnknownKind
from prefect_gitops.engine.state.inventory import APP_LABEL

PRUNE_ANNOTATION = "gitops.prefect.io/prune"
ARGO_SYNC_OPTIONS = "argocd.argoproj.io/sync-options"

log = logging.getLogger(__name__)


class EmptyDesiredState(Exception):
    """Refused: the desired state is empty, and pruning would delete everything."""


def keep_annotation(obj: dict) -> str | None:
    """The annotation that keeps an object from being pruned, if it has one."""
    annotations = annotations_of(obj)
    if str(annotations.get(PRUNE_ANNOTATION, "")).strip().lower() == "false":
        return f'{PRUNE_ANNOTATION}: "false"'
    options = [o.strip() for o in str(annotations.get(ARGO_SYNC_OPTIONS, "")).split(",")]
    if "Prune=false" in options:
        return f"{ARGO_SYNC_OPTIONS}: Prune=false"
    return None


def prune_objects(kube: KubeClient, app_name: str, changeset: ChangeSet, *, allow_empty: bool = False) -> ChangeSet:
    """Delete the objects the plan marked `pruned`, with propagation Background.
    Each costs one GET (to check ownership) and one DELETE. Nothing is deleted when
    applying failed (the desired state is not all there), nor, unless allow_empty,
    when the desired state is empty. Failed deletes keep their error and, like
    kept objects, stay members of the inventory, so the next sync tries again;
    objects no longer this app's are released from it."""
    candidates = [c for c in changeset if c.action is Action.PRUNED and not c.done]
    if not candidates:
        return changeset
    if any(c.error for c in changeset.desired()):
        log.warning("%s: not pruning %d object(s): applying failed", app_name, len(candidates))
        return changeset
    if not changeset.desired() and not allow_empty:
        raise EmptyDesiredState(
            f"app {app_name}: the desired state is empty; refusing to delete all {len(candidates)} of its "
            "objects (allow_empty permits it)")
    lives = kube.map(lambda c: _deletable(kube, app_name, c), candidates)
    doomed = [(c, live) for c, live in zip(candidates, lives) if live is not None]
    for batch in deletion_batches(doomed):
        kube.map(lambda pair: _delete(kube, *pair), batch)
    return changeset


Doomed = tuple[ObjectChange, dict]  # a change and the live object it deletes


def deletion_batches(doomed: list[Doomed]) -> list[list[Doomed]]:
    """Reverse apply order (the live object's wave counts), in batches deleted
    concurrently: webhooks first, workloads before what they use, namespaces and
    CRDs last."""
    def order(pair: Doomed) -> tuple:
        change, live = pair
        return order_key(change.group, change.kind, change.namespace, change.name, live)

    ordered = sorted(doomed, key=order, reverse=True)
    return [list(group) for _, group in groupby(ordered, key=lambda pair: order(pair)[:3])]


def _deletable(kube: KubeClient, app_name: str, change: ObjectChange) -> dict | None:
    """The live object if it may be deleted; otherwise None, with why on the change."""
    try:
        live = kube.get(change.api_version, change.kind, change.name, change.namespace)
    except UnknownKind:
        live = None  # its kind is gone (CRD deleted): so is the object
    except ApiError as error:
        change.fail("prune", error.describe())
        return None
    except Exception as error:
        change.fail("prune", f"{type(error).__name__}: {error}")
        return None
    if live is None or (live.get("metadata") or {}).get("deletionTimestamp"):
        change.fate, change.diff = Fate.DONE, "- (already gone)"
        return None
    owner = labels_of(live).get(APP_LABEL)
    if owner != app_name:
        change.action, change.released = Action.SKIPPED, True
        change.diff = (f"not deleted: it no longer carries {APP_LABEL}={app_name}"
                       + (f" (it is {owner}'s)" if owner else ""))
        return None
    keep = keep_annotation(live)
    if keep:
        change.action, change.diff = Action.SKIPPED, f"not deleted: annotated {keep}"
        return None
    return live


def _delete(kube: KubeClient, change: ObjectChange, live: dict) -> None:
    uid = (live.get("metadata") or {}).get("uid")
    try:  # the uid precondition: never an object re-created since it was checked
        kube.delete(change.api_version, change.kind, change.name, change.namespace,
                    propagation="Background", uid=uid)
    except ApiError as error:
        change.fail("prune", error.describe())
        return
    except Exception as error:
        change.fail("prune", f"{type(error).__name__}: {error}")
        return
    change.fate, change.diff = Fate.DONE, "- (deleted)"
