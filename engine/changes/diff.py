"""Plan a sync: for each desired object, created / configured / unchanged, decided
the Flux way from a server-side dry-run apply against the live object, so that
server defaults never show as differences; previous members no longer desired are
to be pruned. Diffs are readable field lists, with every Secret value masked.

Two shortcuts spare most dry-runs, each only where its answer is certain: an
object whose namespace this sync creates is new (deferred to apply, no dry-run);
an object whose live version (from one LIST per kind and namespace) shows our
Apply owning exactly the desired fields with the desired values is unchanged
(tasks/fieldsets.py). Everything else is dry-run."""

from __future__ import annotations

import copy
import json
import re
from typing import TYPE_CHECKING

import yaml
from deepdiff import DeepDiff

from prefect_gitops.engine.changes.changeset import (RECREATE_ANNOTATION, Action, ChangeSet, ObjectChange,
                                                     annotations_of, labels_of)
from prefect_gitops.engine.changes.fieldsets import BUILTIN_DEFAULTED_KEYS, BUILTIN_GROUPS, reapply_changes_nothing
from prefect_gitops.engine.changes.hooks import app_objects
from prefect_gitops.engine.changes.ignore import IgnoreDifferences, IgnoredFields
from prefect_gitops.engine.changes.sync_options import leave_if_present, mark_replaced, replaced
from prefect_gitops.engine.cluster.kube import ApiError, KubeClient, UnknownKind, dry_run_object
from prefect_gitops.engine.cluster.scope import crds_by_kind
from prefect_gitops.engine.objects import Manifest, ObjectKey
from prefect_gitops.engine.report import table_cell
from prefect_gitops.engine.secrets import SecretMasker, scrub
from prefect_gitops.engine.state.inventory import APP_LABEL, Inventory, ownership_labels

if TYPE_CHECKING:
    from prefect_gitops.engine.spec.appspec import App

# Fields the server owns and changes on its own: never a difference to show.
IGNORED_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp",
                    "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")
MAX_VALUE_CHARS = 300
# libyaml's dumper when PyYAML has it: the same YAML, many times faster.
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


# ---- normalization ------------------------------------------------------------------

def normalize(obj: dict) -> dict:
    """The object without what the server maintains: status, managedFields,
    resourceVersion, uid, generation and timestamps."""
    obj = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in IGNORED_METADATA}
    return {**obj, "metadata": meta}


def field_diff(before: dict, after: dict) -> str:
    """One field a line, as a unified diff reads: `- path: old` then `+ path: new`
    for a change, `+ path: value` for an addition, `- path: value` for a removal."""
    tree = DeepDiff(before, after, view="tree")
    lines: list[tuple[str, str]] = []
    for report, levels in tree.items():
        for level in levels:
            path = _path(level.path(output_format="list"))
            if report.endswith("_added"):
                lines.append((path, f"+ {path}: {_value(level.t2)}"))
            elif report.endswith("_removed"):
                lines.append((path, f"- {path}: {_value(level.t1)}"))
            else:
                lines.append((path, f"- {path}: {_value(level.t1)}\n+ {path}: {_value(level.t2)}"))
    return "\n".join(line for _, line in sorted(lines))


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _path(parts: list) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            text += f".{part}" if text else str(part)
        else:  # e.g. a label key with dots and slashes
            text += f"[{json.dumps(str(part))}]"
    return text


def _value(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def render_new(obj: dict) -> str:
    """A new object, as the YAML to be created, each line marked `+`."""
    text = yaml.dump(obj, Dumper=_YAML_DUMPER, sort_keys=False, default_flow_style=False).rstrip("\n")
    return "\n".join(f"+ {line}" for line in text.splitlines())


# ---- planning -----------------------------------------------------------------------

def desired_body(manifest: Manifest, app_name: str, namespace: str) -> dict:
    """What is sent for a manifest: the object in its namespace, with our
    ownership labels (the dry-run must see exactly what will be applied)."""
    body = copy.deepcopy(manifest.obj)
    meta = body.setdefault("metadata", {})
    if namespace:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    meta["labels"] = {**(meta.get("labels") or {}), **ownership_labels(app_name)}
    return body


def plan_changes(kube: KubeClient, app_name: str, manifests: list[Manifest], inventory: Inventory | None, *,
                 default_namespace: str = "default", allow_recreate: bool = False,
                 provided: list[Manifest] = (), ignore: IgnoreDifferences | None = None) -> ChangeSet:
    """The plan of a sync, writing nothing. One LIST of namespaces (when the sync
    creates some) and one LIST per kind and namespace of the desired objects; then
    each object not provably unchanged from that LIST costs one dry-run PATCH, plus
    one GET when it exists and the LIST did not return it as the dry-run saw it.
    Objects in a namespace this sync creates cost nothing (they are deferred), nor
    do objects to prune. `provided`: objects of the apps this one depends on,
    applied before it, whose CRDs and Namespaces may not exist yet (a dry run of
    the whole repository). `ignore`: the app's ignoreDifferences."""
    # Hooks run apart (tasks/hooks.py); validation reports what is not an object.
    manifests = [m for m in app_objects(manifests) if isinstance(m.obj, dict)]
    available = [*manifests, *(m for m in provided if isinstance(m.obj, dict))]
    crds = crds_by_kind(available)
    namespaces = {m.name for m in available if (m.group, m.kind) == ("", "Namespace")}
    desired = [_desired_change(kube, m, app_name, default_namespace, crds) for m in manifests]
    _defer_in_new_namespaces(kube, desired, namespaces)
    todo = [c for c in desired if not (c.error or c.deferred)]
    listed = _list_live(kube, app_name, todo)
    todo = [c for c in todo if not leave_if_present(kube, c, listed.get(c.key))]  # create-only, exists
    if ignore:  # ignored fields keep their live values (respectIgnoreDifferences)
        ignore.keep_live_values(kube, todo, listed)
    todo = [c for c in todo if not _unchanged_as_listed(c, listed.get(c.key), app_name)]
    kube.map(lambda c: plan_object(kube, c, namespaces, allow_recreate, listed.get(c.key), ignore), todo)
    keys = {c.key for c in desired}
    pruned = [ObjectChange(m.api_version, m.kind, m.namespace, m.name, source=None, action=Action.PRUNED,
                           diff="- (no longer in the desired state: to be deleted)")
              for m in (inventory.members if inventory else []) if m.key not in keys]
    return ChangeSet([*desired, *pruned])


def _desired_change(kube: KubeClient, m: Manifest, app_name: str, default_namespace: str,
                    crds: dict[tuple[str, str], Manifest]) -> ObjectChange:
    """The change for a manifest, before asking the server anything but discovery."""
    change = ObjectChange(m.api_version, m.kind, "", m.name, source=m.source, action=Action.CREATED)
    if not (m.api_version and m.kind and m.name):
        change.action = Action.SKIPPED
        change.fail("plan", "apiVersion, kind and metadata.name are required")
        return change
    try:
        namespaced = kube.namespaced(m.api_version, m.kind)
    except UnknownKind as error:
        crd = crds.get((m.group, m.kind))
        if crd is None:
            change.action = Action.SKIPPED
            change.fail("plan", f"{error}: no CustomResourceDefinition for it is installed, in this app or in one it depends on")
            return change
        namespaced = (crd.obj.get("spec") or {}).get("scope") != "Cluster"
        change.deferred = True
        change.diff = f"(not dry-run yet: {m.api_version} {m.kind} is served once its CRD is applied)"
    change.namespace = (m.namespace or default_namespace) if namespaced else ""
    change.desired = desired_body(m, app_name, change.namespace)
    return change


def _defer_in_new_namespaces(kube: KubeClient, changes: list[ObjectChange], namespaces: set[str]) -> None:
    """Defer, without a dry-run, the objects whose namespace does not exist yet and
    is created before them in this sync: their dry-run could only be refused (and
    the API server's namespace admission makes each such refusal slow)."""
    waiting = [c for c in changes if c.namespace in namespaces and not (c.error or c.deferred)]
    if not waiting:
        return
    try:
        existing = {(n.get("metadata") or {}).get("name") for n in kube.list("v1", "Namespace")}
    except ApiError:  # e.g. not allowed to LIST namespaces: each dry-run finds out
        return
    for change in waiting:
        if change.namespace not in existing:
            change.action, change.deferred, change.in_new_namespace = Action.CREATED, True, True
            change.diff = f"(not dry-run yet: namespace {change.namespace} is created before it in this sync)"


def _list_live(kube: KubeClient, app_name: str, changes: list[ObjectChange]) -> dict[tuple, dict]:
    """The app's live objects of the changes' kinds and namespaces, by key: one
    LIST each, by the app's label. An object without the label (adopted, or the
    label taken off) is not in it: the dry-run decides for that one."""
    scopes = sorted({(c.api_version, c.kind, c.namespace) for c in changes})
    live: dict[tuple, dict] = {}
    for (api_version, kind, namespace), items in zip(scopes, kube.map(lambda s: _list_scope(kube, app_name, *s),
                                                                       scopes)):
        for item in items:
            item.update(apiVersion=api_version, kind=kind)  # a LIST's items name neither
            meta = item.get("metadata") or {}
            live[ObjectKey.of(api_version, kind, meta.get("namespace"), meta.get("name") or "")] = item
    return live


def _list_scope(kube: KubeClient, app_name: str, api_version: str, kind: str, namespace: str) -> list[dict]:
    try:
        return kube.list(api_version, kind, namespace, label_selector=f"{APP_LABEL}={app_name}")
    except (ApiError, UnknownKind):  # e.g. not allowed to LIST: the dry-runs decide
        return []


def _unchanged_as_listed(change: ObjectChange, live: dict | None, app_name: str) -> bool:
    """Mark the change unchanged, without a dry-run, when the live object proves
    that applying it again would change nothing: it is ours (our labels, not
    being deleted) and our Apply owns exactly the desired fields, each with the
    desired value (see fieldsets.reapply_changes_nothing). Whatever is uncertain
    (a Secret's write-only stringData, a value the server normalized) is left to
    the dry-run."""
    desired = change.desired or {}
    if live is None or (live.get("metadata") or {}).get("deletionTimestamp") or "stringData" in desired:
        return False
    labels = labels_of(live)
    if any(labels.get(k) != v for k, v in ownership_labels(app_name).items()):
        return False
    defaults = BUILTIN_DEFAULTED_KEYS if change.group in BUILTIN_GROUPS else {}
    if not reapply_changes_nothing(desired, live, defaults):
        return False
    change.action, change.diff = Action.UNCHANGED, ""
    change.dry_run_result = SecretMasker().mask(live)
    return True


def recreate_allowed(change: ObjectChange, allow_recreate: bool) -> bool:
    return (allow_recreate or str(annotations_of(change.desired).get(RECREATE_ANNOTATION, "")).lower() == "true"
            or replaced(change.desired))


def plan_object(kube: KubeClient, change: ObjectChange, namespaces: set[str] = frozenset(),
                allow_recreate: bool = False, listed: dict | None = None,
                ignore: IgnoreDifferences | None = None) -> None:
    """Decide one desired object's action from a dry-run apply and the live object.
    `namespaces` are those applied earlier in the same sync: an object in one of
    them that does not exist yet is deferred rather than an error. `listed`: the
    object as a LIST just returned it, used instead of a GET if the dry-run saw
    that very version."""
    change.deferred, change.in_new_namespace, change.recreate, change.error = False, False, False, None
    try:
        compared = _dry_run_and_live(kube, change, listed)
    except UnknownKind as error:
        change.action = Action.SKIPPED
        change.fail("dry-run", str(error))
        return
    except ApiError as error:
        _dry_run_refused(change, error, namespaces, allow_recreate)
        return
    except Exception as error:  # e.g. the connection lost for good: say which object
        change.action = Action.SKIPPED
        change.fail("dry-run", f"{type(error).__name__}: {scrub(str(error), [change.desired])}")
        return
    masker = SecretMasker()
    result, live = compared
    if live is None:
        _new(change, masker, result)
        return
    before, after = normalize(live), normalize(result)
    change.dry_run_result = masker.mask(result)
    # Most often equal: then there is nothing for DeepDiff to find.
    change.diff = "" if before == after else field_diff(masker.mask(before), masker.mask(after))
    if ignore and change.diff:
        change.diff = _without_ignored(change.diff, before, after, masker, ignore.for_object(change.desired, live))
    change.action = Action.CONFIGURED if change.diff else Action.UNCHANGED
    mark_replaced(change)


def _without_ignored(diff: str, before: dict, after: dict, masker: SecretMasker,
                     ignored: IgnoredFields | None) -> str:
    """The diff without the fields of ignoreDifferences. When something else changes
    and the apply overwrites them (respectIgnoreDifferences false), they are shown, marked."""
    if ignored is None:
        return diff
    shown = field_diff(masker.mask(ignored.strip(before)), masker.mask(ignored.strip(after)))
    return ignored.mark_overwritten(diff, shown) if shown and not ignored.respect else shown


def _dry_run_and_live(kube: KubeClient, change: ObjectChange, listed: dict | None = None,
                      tries: int = 3) -> tuple[dict, dict | None]:
    """The dry-run result and the live object it was computed from (None when the
    object is new): `listed` if the dry-run saw that version, else a GET. A
    controller may change the object between the two requests (e.g. a
    Deployment's revision annotation just after it was created): the
    resourceVersions then differ, and both are asked again."""
    for _ in range(tries):
        result = dry_run_object(kube, change.desired or {})
        version = _resource_version(result)
        if not version:
            return result, None
        if listed is not None and _resource_version(listed) == version:
            return result, listed
        listed = None  # older than what the dry-run saw: ask for the object itself
        live = kube.get(change.api_version, change.kind, change.name, change.namespace)
        if live is None or _resource_version(live) == version:
            return result, live
    return result, live


def _resource_version(obj: dict) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


def _new(change: ObjectChange, masker: SecretMasker, result: dict) -> None:
    change.action = Action.CREATED
    change.dry_run_result = masker.mask(result)
    change.diff = render_new(masker.mask(change.desired) or {})


def _dry_run_refused(change: ObjectChange, error: ApiError, namespaces: set[str], allow_recreate: bool) -> None:
    missing = error.missing_namespace()
    if missing and missing in namespaces:
        change.action, change.deferred = Action.CREATED, True
        change.diff = f"(not dry-run yet: namespace {missing} is created before it in this sync)"
        return
    fields = error.immutable_fields()
    if fields:
        change.action, change.recreate = Action.CONFIGURED, True
        change.diff = f"(must be deleted and created again: immutable {', '.join(fields)})"
        if not recreate_allowed(change, allow_recreate):
            change.action = Action.SKIPPED
            change.fail("dry-run", immutable_message(fields))
        return
    change.action = Action.SKIPPED
    change.fail("dry-run", scrub(error.describe(), [change.desired]))


def immutable_message(fields: list[str]) -> str:
    return (f"{', '.join(fields)}: field is immutable; to delete and re-create the object, annotate it "
            f'{RECREATE_ANNOTATION}: "true" or sync with allow_recreate')


# ---- the report ----------------------------------------------------------------------

def diff_markdown(app: "App | str", cluster: str, changeset: ChangeSet) -> str:
    """The plan as markdown for a Prefect artifact: a summary, a table of changed
    or failed objects, then each object's diff."""
    app_name = app if isinstance(app, str) else app.name
    lines = [f"# Diff: app `{app_name}` on cluster `{cluster}`", "", changeset.summary(), ""]
    shown = [c for c in changeset if c.action is not Action.UNCHANGED or c.error]
    if shown:
        lines += ["| action | object | source |", "|---|---|---|"]
        lines += [f"| {c.action.value} | `{table_cell(c.ref)}` | {table_cell(str(c.source or '-'))} |" for c in shown]
    for change in shown:
        lines += ["", f"## {change.action.value} `{change.ref}`"]
        if change.error:
            lines += ["", f"**error:** {change.error}"]
        if change.diff:
            lines += ["", "```diff", change.diff.replace("```", "'''"), "```"]
    return "\n".join(lines) + "\n"
