"""Hand edits: fields of an object we manage that a person's tool holds.

Server-side apply records who set each field (metadata.managedFields). A field
held by one of kubectl's field managers that Git does not set was added by hand
(`kubectl set env`, `label`, `annotate`, `edit`, `patch`, a client-side
`kubectl apply`, ...). Applying Git again leaves it: an apply removes only the
fields its own manager held. So it is drift, named by its manager and path.
Controllers' fields (the Deployment controller, an autoscaler, defaulting,
admission webhooks) are not: their managers are not listed.

Healing takes such fields over, as Flux does: the listed managers' entries are
merged into our Apply entry (the object PUT back, compare-and-swap, with only its
managedFields rewritten), so that the next apply, which does not set them,
removes them. A field another manager (a controller) also holds stays, its.

The default managers are those kubectl 1.37 writes, read off a local cluster
after each command: `kubectl` (apply --server-side, scale through the scale
subresource, cordon, taint), `kubectl-client-side-apply` (apply without
--server-side), `kubectl-edit`, `kubectl-patch`, `kubectl-set` (env, image,
resources, serviceaccount...), `kubectl-label`, `kubectl-annotate`,
`kubectl-create`, `kubectl-replace`, `kubectl-rollout` (restart, undo),
`kubectl-expose`, `kubectl-run`, `kubectl-autoscale`; plus `kubectl-scale`
(older kubectl) and the API server's `before-first-apply`. An app's
`driftManagers` replaces the list (shell-style patterns allowed: `kubectl*`)."""

from __future__ import annotations

import copy
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ObjectChange
from prefect_gitops.engine.changes.fieldsets import ABSENT, BUILTIN_DEFAULTED_KEYS, applied_part, merge_fields
from prefect_gitops.engine.cluster.kube import FIELD_MANAGER, ApiError, KubeClient, is_retryable
from prefect_gitops.engine.objects import json_path
from prefect_gitops.engine.secrets import SecretMasker, is_secret, scrub
from prefect_gitops.engine.spec.appspec import App

DEFAULT_DRIFT_MANAGERS = (
    "kubectl", "kubectl-client-side-apply", "kubectl-edit", "kubectl-patch", "kubectl-set", "kubectl-label",
    "kubectl-annotate", "kubectl-create", "kubectl-replace", "kubectl-rollout", "kubectl-expose", "kubectl-run",
    "kubectl-autoscale", "kubectl-scale", "before-first-apply",
)
# Subresources whose fields are the object's own (`kubectl scale` writes spec.replicas
# through `scale`); `status` and the others are never Git's.
_SUBRESOURCES = ("", "scale")
# Set by the API server on every object of a kind, whoever wrote it: not a hand edit.
_SERVER_SET = {("Namespace", 'metadata.labels["kubernetes.io/metadata.name"]')}
_TAKE_OVER_TRIES = 3


def drift_managers(app: App) -> tuple[str, ...]:
    """The app's hand-edit managers: its `driftManagers`, else kubectl's."""
    return tuple(DEFAULT_DRIFT_MANAGERS if app.drift_managers is None else app.drift_managers)


def is_hand_manager(manager: str, managers: Collection[str]) -> bool:
    """Whether `manager` is one of `managers` (exact names or patterns); never our own."""
    return manager != FIELD_MANAGER and any(fnmatchcase(manager, m) for m in managers)


@dataclass(frozen=True)
class HandEdit:
    """A field Git does not set, held by a person's tool. `value` is the live one,
    Secret values masked."""

    manager: str
    path: str
    value: Any


# ---- finding them ------------------------------------------------------------------------

def find_hand_edits(desired: dict, live: dict, managers: Collection[str]) -> list[HandEdit]:
    """The fields of `live` that the listed managers hold and `desired` does not set,
    each where it starts (a label, a list item, a field: not every field inside)."""
    shown = SecretMasker().mask(live) or {}
    want = applied_part(desired)
    if is_secret(desired) and isinstance(want.get("stringData"), dict):  # write-only: stored in data
        string_data = want.pop("stringData")
        want["data"] = {**(want.get("data") or {}), **string_data}
    kind = str(live.get("kind") or desired.get("kind") or "")
    edits = {}
    for manager, tree in held_fields(live, managers).items():
        for path, value in _extra_fields(tree, want, shown, ""):
            if (kind, path) not in _SERVER_SET:
                edits.setdefault(path, HandEdit(manager, path, value))
    return sorted(edits.values(), key=lambda e: e.path)


def held_fields(live: dict, managers: Collection[str]) -> dict[str, dict]:
    """fieldsV1 per listed manager (its entries merged), without status (also for
    ignore rules' managedFieldsManagers, engine/changes/ignore.py)."""
    trees: dict[str, dict] = {}
    for entry in _hand_entries(live, managers):
        merge_fields(trees.setdefault(str(entry["manager"]), {}), _without_status(entry.get("fieldsV1") or {}))
    return {m: t for m, t in trees.items() if t}


def _hand_entries(live: dict, managers: Collection[str]) -> list[dict]:
    return [e for e in (live.get("metadata") or {}).get("managedFields") or []
            if is_hand_manager(str(e.get("manager") or ""), managers)
            and (e.get("subresource") or "") in _SUBRESOURCES and e.get("fieldsType", "FieldsV1") == "FieldsV1"]


def _without_status(tree: dict) -> dict:
    return {k: v for k, v in tree.items() if k != "f:status"}


def _extra_fields(node: dict, desired: Any, live: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Down a manager's field set beside the desired and live values: what it
    holds where Git sets nothing, and is there."""
    for name, child in node.items():
        if name == ".":
            continue
        want, have, where = _step(name, desired, live, path)
        if have is ABSENT:
            continue  # held once, gone since
        if want is ABSENT and (name[:2] != "f:" or not set(child or {}) - {"."}):
            yield where, have  # a field, a list item or a value Git lacks: whole
        elif child:
            yield from _extra_fields(child, want, have, where)


def _step(name: str, desired: Any, live: Any, path: str) -> tuple[Any, Any, str]:
    """The desired and live values under one fieldsV1 name, and its path."""
    kind, text = name[:2], name[2:]
    if kind == "f:":
        return _field(desired, text), _field(live, text), json_path([text], path)
    try:
        key = json.loads(text)
    except ValueError:
        return ABSENT, ABSENT, path
    if kind == "k:" and isinstance(key, dict):
        where = f"{path}[{','.join(f'{f}={v}' for f, v in key.items())}]"
        return _item(desired, key, BUILTIN_DEFAULTED_KEYS), _item(live, key, {}), where
    if kind == "v:":
        return _value(desired, key), _value(live, key), f"{path}[{json.dumps(key)}]"
    if kind == "i:" and isinstance(key, int):
        return _index(desired, key), _index(live, key), f"{path}[{key}]"
    return ABSENT, ABSENT, path


def _field(obj: Any, key: str) -> Any:
    return obj.get(key, ABSENT) if isinstance(obj, dict) else ABSENT


def _item(items: Any, key: dict, defaults: dict) -> Any:
    """The item of a keyed list with these key fields (an item of Git's may leave
    out one the server defaults, e.g. a port's protocol)."""
    if not isinstance(items, list):
        return ABSENT
    return next((i for i in items if isinstance(i, dict)
                 and all(i.get(f, defaults.get(f, ABSENT)) == v for f, v in key.items())), ABSENT)


def _value(items: Any, value: Any) -> Any:
    return value if isinstance(items, list) and value in items else ABSENT


def _index(items: Any, index: int) -> Any:
    return items[index] if isinstance(items, list) and 0 <= index < len(items) else ABSENT


# ---- taking them over ------------------------------------------------------------------

def taken_over(live: dict, managers: Collection[str], api_version: str) -> dict | None:
    """`live` with the listed managers' fields moved into our Apply entry (the
    object's own: not status), or None when they hold nothing."""
    entries = (live.get("metadata") or {}).get("managedFields") or []
    taken = _hand_entries(live, managers)
    if not taken:
        return None
    ours = next((e for e in entries if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
                 and not e.get("subresource")), None)
    fields = copy.deepcopy((ours or {}).get("fieldsV1") or {})
    for entry in taken:
        merge_fields(fields, _without_status(entry.get("fieldsV1") or {}))
    entry = {**(ours or {"manager": FIELD_MANAGER, "operation": "Apply", "apiVersion": api_version,
                         "fieldsType": "FieldsV1"}), "fieldsV1": fields}
    body = copy.deepcopy(live)
    body["metadata"]["managedFields"] = [e for e in entries if e is not ours and e not in taken] + [entry]
    return body


def take_over(kube: KubeClient, desired: dict, managers: Collection[str]) -> bool:
    """Make the hand-edited fields of the live object ours, so that applying
    `desired` removes them. False when there were none (or no object). A PUT
    with the resourceVersion read: a conflict (a controller wrote meanwhile) reads
    the object again."""
    meta = desired.get("metadata") or {}
    api_version, kind = str(desired.get("apiVersion")), str(desired.get("kind"))
    for attempt in range(_TAKE_OVER_TRIES):
        live = kube.get(api_version, kind, str(meta.get("name")), str(meta.get("namespace") or ""))
        body = taken_over(live, managers, api_version) if live else None
        if body is None:
            return False
        try:
            kube.update(body)
            return True
        except ApiError as error:
            if error.code != 409 or attempt == _TAKE_OVER_TRIES - 1:
                raise
    return False


# ---- in a sync of an app with selfHeal ---------------------------------------------------

def plan_removals(changeset: ChangeSet, managers: Collection[str]) -> None:
    """An object holding hand edits is configured, its diff naming the fields
    that go (`- path: value`); the dry-run result says who holds what."""
    for change in changeset.desired():
        if change.action not in (Action.UNCHANGED, Action.CONFIGURED) or change.recreate or change.error:
            continue
        edits = find_hand_edits(change.desired or {}, change.dry_run_result or {}, managers)
        if edits:
            change.action = Action.CONFIGURED
            removed = [f"- {e.path}: {json.dumps(e.value, sort_keys=True, default=str)}" for e in edits]
            change.diff = "\n".join([change.diff, *removed] if change.diff else removed)


def take_over_planned(kube: KubeClient, changeset: ChangeSet, managers: Collection[str]) -> None:
    """Before the apply: take over the hand edits of every object about to be
    configured, so that its apply removes them. A failure is the object's error."""
    def one(change: ObjectChange) -> None:
        try:
            take_over(kube, change.desired or {}, managers)
        except Exception as error:  # recorded on the object: the apply then writes nothing
            change.fail("take over", scrub(f"{type(error).__name__}: {error}", [change.desired]),
                        transient=is_retryable(error))

    pending = [c for c in changeset.desired() if c.action is Action.CONFIGURED and not c.done and not c.recreate
               and find_hand_edits(c.desired or {}, c.dry_run_result or {}, managers)]
    kube.map(one, pending)
