"""Plan a sync: for each desired object, created / configured / unchanged, decided
the Flux way from a server-side dry-run apply against the live object, so that
server defaults never show as differences; previous members no longer desired are
to be pruned. Diffs are readable field lists, with every Secret value masked."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from typing import TYPE_CHECKING, Iterable

import yaml
from deepdiff import DeepDiff
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from tasks.changeset import RECREATE_ANNOTATION, Action, ChangeSet, ObjectChange, annotations_of
from tasks.inventory import Inventory, ownership_labels
from tasks.kube import ApiError, KubeClient, UnknownKind
from tasks.objects import Manifest

if TYPE_CHECKING:
    from tasks.appspec import App

CRD_GROUP_KIND = ("apiextensions.k8s.io", "CustomResourceDefinition")
# Fields the server owns and changes on its own: never a difference to show.
IGNORED_METADATA = ("managedFields", "resourceVersion", "uid", "generation", "creationTimestamp",
                    "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_VALUE_CHARS = 300


# ---- normalization ------------------------------------------------------------------

def normalize(obj: dict) -> dict:
    """The object without what the server maintains: status, managedFields,
    resourceVersion, uid, generation and timestamps."""
    obj = {k: v for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in IGNORED_METADATA}
    return {**obj, "metadata": meta}


# ---- Secret masking -----------------------------------------------------------------

def is_secret(obj: dict | None) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == "Secret" and obj.get("apiVersion") == "v1"


class SecretMasker:
    """Replaces each distinct Secret value by a run of `+` of a length of its own
    (Argo CD's way): a change shows, the value never does. Use one masker for all
    the versions of one object, so an unchanged value looks the same in each."""

    def __init__(self) -> None:
        self._masks: dict[bytes, str] = {}

    def _mask(self, value: bytes) -> str:
        if value not in self._masks:
            self._masks[value] = "+" * (8 + len(self._masks))
        return self._masks[value]

    def mask(self, obj: dict | None) -> dict | None:
        """A copy with every value of data, stringData and the last-applied
        annotation masked; objects other than Secrets are returned as they are."""
        if not is_secret(obj):
            return obj
        masked = copy.deepcopy(obj)
        self._mask_values(masked)
        annotations = annotations_of(masked)
        if LAST_APPLIED in annotations:
            annotations[LAST_APPLIED] = self._mask_last_applied(str(annotations[LAST_APPLIED]))
        return masked

    def _mask_values(self, obj: dict) -> None:
        for field, decode in (("data", _b64_bytes), ("stringData", _utf8_bytes)):
            values = obj.get(field)
            if isinstance(values, dict):
                obj[field] = {k: self._mask(decode(v)) for k, v in values.items()}

    def _mask_last_applied(self, text: str) -> str:
        try:
            applied = json.loads(text)
        except ValueError:
            return self._mask(text.encode())
        if not isinstance(applied, dict):
            return self._mask(text.encode())
        self._mask_values(applied)
        return json.dumps(applied, sort_keys=True)


def _b64_bytes(value: object) -> bytes:
    text = str(value)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode()


def _utf8_bytes(value: object) -> bytes:
    return str(value).encode()


def secret_values(objs: Iterable[dict | None]) -> set[str]:
    """Every Secret value in these objects, as sent and as decoded."""
    found: set[str] = set()
    for obj in objs:
        if not is_secret(obj):
            continue
        for value in (obj.get("stringData") or {}).values():
            found.add(str(value))
        for value in (obj.get("data") or {}).values():
            found.add(str(value))
            decoded = _b64_bytes(value)
            found.add(decoded.decode(errors="replace"))
        applied = annotations_of(obj).get(LAST_APPLIED)
        if applied:
            found.add(str(applied))
    return {v for v in found if len(v) >= 3}


def scrub(text: str, objs: Iterable[dict | None]) -> str:
    """Text (an error message) with any Secret value of these objects masked."""
    for value in sorted(secret_values(objs), key=len, reverse=True):
        text = text.replace(value, "<masked>")
    return text


# ---- rendering ----------------------------------------------------------------------

def field_diff(before: dict, after: dict) -> str:
    """One line per difference: `spec.replicas: 1 -> 3`, `+ path: value` for an
    addition, `- path: value` for a removal."""
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
                lines.append((path, f"{path}: {_value(level.t1)} -> {_value(level.t2)}"))
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
    text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False).rstrip("\n")
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
                 provided: list[Manifest] = ()) -> ChangeSet:
    """The plan of a sync, writing nothing. Each desired object costs one dry-run
    PATCH, plus one GET when it exists; objects to prune cost nothing here.
    `provided`: objects of the apps this one depends on, applied before it, whose
    CRDs and Namespaces may not exist yet (a dry run of the whole repository)."""
    manifests = [m for m in manifests if isinstance(m.obj, dict)]  # validation reports the others
    available = [*manifests, *(m for m in provided if isinstance(m.obj, dict))]
    crds = _crds_in(available)
    namespaces = {m.name for m in available if (m.group, m.kind) == ("", "Namespace")}
    desired = [_desired_change(kube, m, app_name, default_namespace, crds) for m in manifests]
    todo = [c for c in desired if not (c.error or c.deferred)]
    kube.map(lambda c: plan_object(kube, c, namespaces, allow_recreate), todo)
    keys = {c.key for c in desired}
    pruned = [ObjectChange(m.api_version, m.kind, m.namespace, m.name, source=None, action=Action.PRUNED,
                           diff="- (no longer in the desired state: to be deleted)")
              for m in (inventory.members if inventory else []) if m.key not in keys]
    return ChangeSet([*desired, *pruned])


def _desired_change(kube: KubeClient, m: Manifest, app_name: str, default_namespace: str,
                    crds: dict[tuple[str, str], dict]) -> ObjectChange:
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
        namespaced = (crd.get("spec") or {}).get("scope") != "Cluster"
        change.deferred = True
        change.diff = f"(not dry-run yet: {m.api_version} {m.kind} is served once its CRD is applied)"
    change.namespace = (m.namespace or default_namespace) if namespaced else ""
    change.desired = desired_body(m, app_name, change.namespace)
    return change


def _crds_in(manifests: list[Manifest]) -> dict[tuple[str, str], dict]:
    """(group, kind) -> CRD object, for the CRDs in the set."""
    crds = {}
    for m in manifests:
        spec = m.obj.get("spec") if (m.group, m.kind) == CRD_GROUP_KIND else None
        if isinstance(spec, dict) and isinstance(spec.get("names"), dict):
            crds[(str(spec.get("group") or ""), str(spec["names"].get("kind") or ""))] = m.obj
    return crds


def recreate_allowed(change: ObjectChange, allow_recreate: bool) -> bool:
    return allow_recreate or str(annotations_of(change.desired).get(RECREATE_ANNOTATION, "")).lower() == "true"


def plan_object(kube: KubeClient, change: ObjectChange, namespaces: set[str] = frozenset(),
                allow_recreate: bool = False) -> None:
    """Decide one desired object's action from a dry-run apply and the live object.
    `namespaces` are those applied earlier in the same sync: an object in one of
    them that does not exist yet is deferred rather than an error."""
    change.deferred, change.recreate, change.error = False, False, None
    try:
        compared = _dry_run_and_live(kube, change)
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
    before, after = masker.mask(normalize(live)), masker.mask(normalize(result))
    change.dry_run_result = masker.mask(result)
    change.diff = field_diff(before, after)
    change.action = Action.CONFIGURED if change.diff else Action.UNCHANGED


def _dry_run_and_live(kube: KubeClient, change: ObjectChange, tries: int = 3) -> tuple[dict, dict | None]:
    """The dry-run result and the live object it was computed from (None when the
    object is new). A controller may change the object between the two requests
    (e.g. a Deployment's revision annotation just after it was created): the
    resourceVersions then differ, and both are asked again."""
    for _ in range(tries):
        result = kube.apply(change.desired or {}, dry_run=True)
        version = (result.get("metadata") or {}).get("resourceVersion")
        if not version:
            return result, None
        live = kube.get(change.api_version, change.kind, change.name, change.namespace)
        if live is None or (live.get("metadata") or {}).get("resourceVersion") == version:
            return result, live
    return result, live


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
        lines += [f"| {c.action.value} | `{_cell(c.ref)}` | {_cell(str(c.source or '-'))} |" for c in shown]
    for change in shown:
        lines += ["", f"## {change.action.value} `{change.ref}`"]
        if change.error:
            lines += ["", f"**error:** {change.error}"]
        if change.diff:
            lines += ["", "```diff", change.diff.replace("```", "'''"), "```"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# Never persisted: the desired bodies of a ChangeSet hold Secret values.
@task(name="diff", cache_policy=NO_CACHE, persist_result=False)
def plan_task(kube: KubeClient, app: "App", cluster: str, manifests: list[Manifest],
              inventory: Inventory | None, allow_recreate: bool = False) -> ChangeSet:
    """Plan one app on one cluster and publish the diff as a markdown artifact."""
    changeset = plan_changes(kube, app.name, manifests, inventory, default_namespace=app.namespace,
                             allow_recreate=allow_recreate)
    key = re.sub(r"[^a-z0-9-]+", "-", f"diff-{app.name}-{cluster}".lower())
    create_markdown_artifact(markdown=diff_markdown(app, cluster, changeset), key=key,
                             description=f"{app.name} on {cluster}: {changeset.summary()}")
    return changeset
