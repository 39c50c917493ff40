"""Drift: how an app's live objects differ from the revision last applied.

Three kinds: an object of that revision is missing; a field we applied was
changed, or taken over, by another field manager, or a person's tool holds a
field Git does not set (a hand edit, engine/state/hand_edits.py); an object carries
the app's ownership label and is not in its inventory.

Cheap by construction: one LIST per kind and namespace (with the app's label
selector; a GET only for an expected object that LIST did not return), and no
dry-run. Server defaults never show: only the fields we set are compared, guided
by the `managedFields` each manager holds, which the LIST returns with the
objects. A field is ours if our Apply entry owns it; another manager's Update
moves it to that manager, which names who changed it."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from typing import Any, Collection, Iterator


from prefect_gitops.engine.changes.diff import desired_body
from prefect_gitops.engine.changes.fieldsets import ABSENT, applied_part, item_keys, merge_fields, value_name
from prefect_gitops.engine.changes.hooks import app_objects
from prefect_gitops.engine.changes.ignore import IgnoreDifferences
from prefect_gitops.engine.changes.sync_options import create_only
from prefect_gitops.engine.cluster.kube import FIELD_MANAGER, KubeClient, UnknownKind
from prefect_gitops.engine.objects import Identified, Manifest, ObjectKey, Source, group_of, json_path
from prefect_gitops.engine.secrets import SecretMasker, is_secret
from prefect_gitops.engine.state.hand_edits import HandEdit, find_hand_edits
from prefect_gitops.engine.state.inventory import APP_LABEL, INVENTORY_NAMESPACE, Inventory, inventory_name

MAX_VALUE_CHARS = 120
Trees = dict[str, dict | None]  # manager name -> its fieldsV1 node at one path (None: owns nothing there)


class DriftType(str, Enum):
    MISSING = "missing"
    MODIFIED = "modified"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class DesiredObject(Identified):
    """One object of the applied revision, exactly as sync sends it."""

    body: dict
    source: Source | None = None

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion") or "")

    @property
    def kind(self) -> str:
        return str(self.body.get("kind") or "")

    @property
    def namespace(self) -> str:
        return str((self.body.get("metadata") or {}).get("namespace") or "")

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name") or "")


@dataclass
class Drift(Identified):
    """One drifted object. `changes` are `path: desired -> live` lines, Secret
    values masked; `managers` are who now own the fields we set."""

    api_version: str
    kind: str
    namespace: str
    name: str
    type: DriftType
    changes: list[str] = field(default_factory=list)
    managers: list[str] = field(default_factory=list)
    source: Source | None = None
    hand_edits: list[HandEdit] = field(default_factory=list)  # to take over when healing
    healed: bool = False
    error: str | None = None

    @property
    def healable(self) -> bool:
        """Missing and modified objects are re-applied; unexpected ones only reported."""
        return self.type is not DriftType.UNEXPECTED

    def describe(self) -> str:
        """A short reason, for a report's table."""
        if self.type is DriftType.MISSING:
            return "missing: not found in the cluster"
        if self.type is DriftType.UNEXPECTED:
            by = f" (by {', '.join(self.managers)})" if self.managers else ""
            return f"unexpected: carries the app's label {APP_LABEL}, not in its inventory{by}"
        by = f" by {', '.join(self.managers)}" if self.managers else ""
        more = f" (+{len(self.changes) - 1} more)" if len(self.changes) > 1 else ""
        return f"modified{by}: {self.changes[0] if self.changes else ''}{more}"


# ---- the desired set ------------------------------------------------------------------

def desired_objects(kube: KubeClient, app: str, manifests: list[Manifest],
                    default_namespace: str) -> list[DesiredObject]:
    """The bodies sync applies for these manifests: in their namespace, with our
    ownership labels. A kind the cluster does not serve is taken as namespaced."""
    objects = []
    for m in app_objects(manifests):  # hooks are not the app's objects: never drift
        if not (isinstance(m.obj, dict) and m.api_version and m.kind and m.name):
            continue  # validation reports these; sync never applied them
        try:
            namespaced = kube.namespaced(m.api_version, m.kind)
        except UnknownKind:
            namespaced = True
        namespace = (m.namespace or default_namespace) if namespaced else ""
        objects.append(DesiredObject(desired_body(m, app, namespace), m.source))
    return objects


# ---- detection --------------------------------------------------------------------------

def detect_drift(kube: KubeClient, app: str, inventory: Inventory, desired: list[DesiredObject],
                 hand_managers: Collection[str] = (), ignore: IgnoreDifferences | None = None) -> list[Drift]:
    """Every drifted object of one app: desired ones in the given order, then
    unexpected ones. `hand_managers`: field managers whose fields Git lacks are drift;
    `ignore`: the app's ignoreDifferences, whose fields are not."""
    live = _live_objects(kube, app, _scopes(desired, inventory), desired)
    drifts = [drift for d in desired if (drift := compare(d, live.get(d.key), hand_managers, ignore)) is not None]
    return drifts + _unexpected_objects(app, inventory, desired, live)


def _live_objects(kube: KubeClient, app: str, scopes: list[tuple[str, str, str]],
                  desired: list[DesiredObject]) -> dict[ObjectKey, dict]:
    """The app's labelled objects, a LIST per scope; plus, a GET each, desired
    objects those LISTs missed (someone took our label off: compared all the same)."""
    live: dict[ObjectKey, dict] = {}
    for (api_version, kind, _), items in zip(scopes, kube.map(lambda s: _list_labelled(kube, app, *s), scopes)):
        for item in items:
            meta = item.get("metadata") or {}
            live[ObjectKey.of(api_version, kind, meta.get("namespace"), meta.get("name") or "")] = item
    unlisted = [d for d in desired if d.key not in live]
    for d, found in zip(unlisted, kube.map(lambda d: _get(kube, d), unlisted)):
        if found is not None:
            live[d.key] = found
    return live


def _unexpected_objects(app: str, inventory: Inventory, desired: list[DesiredObject],
                        live: dict[ObjectKey, dict]) -> list[Drift]:
    """Labelled as the app's, and neither in its inventory nor desired (nor the
    inventory itself, nor on its way out)."""
    expected = inventory.member_keys() | {d.key for d in desired}
    expected.add(("", "ConfigMap", INVENTORY_NAMESPACE, inventory_name(app)))
    return [_unexpected(obj) for key, obj in sorted(live.items())
            if key not in expected and not (obj.get("metadata") or {}).get("deletionTimestamp")]


def _scopes(desired: list[DesiredObject], inventory: Inventory) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, namespace) to LIST: those of the desired objects and of
    the inventory's members, one version per group and kind (the desired one)."""
    versions: dict[tuple[str, str], str] = {}
    for api_version, kind in [(d.api_version, d.kind) for d in desired] + \
                             [(m.api_version, m.kind) for m in inventory.members]:
        versions.setdefault((group_of(api_version), kind), api_version)
    pairs = {(d.key[0], d.kind, d.namespace) for d in desired} | {(m.group, m.kind, m.namespace)
                                                                 for m in inventory.members}
    return sorted((versions[(g, k)], k, ns) for g, k, ns in pairs)


def _list_labelled(kube: KubeClient, app: str, api_version: str, kind: str, namespace: str) -> list[dict]:
    try:
        return kube.list(api_version, kind, namespace, label_selector=f"{APP_LABEL}={app}")
    except UnknownKind:
        return []  # no such kind any more: its desired objects are missing


def _get(kube: KubeClient, d: DesiredObject) -> dict | None:
    try:
        return kube.get(d.api_version, d.kind, d.name, d.namespace)
    except UnknownKind:
        return None


def compare(desired: DesiredObject, live: dict | None, hand_managers: Collection[str] = (),
            ignore: IgnoreDifferences | None = None) -> Drift | None:
    """The drift of one desired object from its live version, None if there is none."""
    drift = Drift(desired.api_version, desired.kind, desired.namespace, desired.name, DriftType.MISSING,
                  source=desired.source)
    if live is None:
        return drift
    if create_only(desired.body):  # created once: from then on the live object is its owner's
        return None
    body = desired.body
    if ignore:  # fields of ignoreDifferences are no drift (engine/changes/ignore.py)
        body, live = ignore.strip_pair(body, live)
    drift.hand_edits = find_hand_edits(body, live, hand_managers) if hand_managers else []
    changes = field_changes(body, live) + [
        FieldChange(e.path, ABSENT, e.value, (e.manager,), hand_edit=True) for e in drift.hand_edits]
    if not changes:
        return None
    drift.type = DriftType.MODIFIED
    drift.changes = [str(c) for c in changes]
    drift.managers = sorted({m for c in changes for m in c.managers})
    return drift


def _unexpected(obj: dict) -> Drift:
    """Named with the managers that wrote it: who made it, most likely."""
    meta = obj.get("metadata") or {}
    managers = sorted({str(e.get("manager")) for e in meta.get("managedFields") or [] if e.get("manager")})
    return Drift(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""), meta.get("namespace") or "",
                 meta.get("name") or "", DriftType.UNEXPECTED, managers=managers)


# ---- comparing fields ---------------------------------------------------------------------

@dataclass(frozen=True)
class FieldChange:
    path: str
    desired: Any
    live: Any
    managers: tuple[str, ...] = ()  # who own the field now, other than us
    hand_edit: bool = False  # not in Git: added by hand (named with its manager)

    def __str__(self) -> str:
        by = f" (by {', '.join(self.managers)})" if self.hand_edit else ""
        return f"{self.path}: {_show(self.desired)} -> {_show(self.live)}{by}"


def field_changes(desired: dict, live: dict) -> list[FieldChange]:
    """The fields we set that differ in `live` or that another manager took over.
    Secret values are masked before anything is compared or shown."""
    trees = managed_trees(live)
    if is_secret(desired):
        desired, live, trees = _comparable_secret(desired, live, trees)
    return list(_walk(applied_part(desired), live, trees, ""))


def managed_trees(live: dict) -> Trees:
    """fieldsV1 per manager, ours (Apply entries of FIELD_MANAGER) under FIELD_MANAGER;
    a manager's entries (e.g. an Update and a scale subresource) merged."""
    trees: dict[str, dict] = {}
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        manager = str(entry.get("manager") or "")
        if manager == FIELD_MANAGER and entry.get("operation") != "Apply":
            manager = f"{FIELD_MANAGER} ({entry.get('operation')})"
        merge_fields(trees.setdefault(manager, {}), entry.get("fieldsV1") or {})
    trees.setdefault(FIELD_MANAGER, None)
    return trees


def _comparable_secret(desired: dict, live: dict, trees: Trees) -> tuple[dict, dict, Trees]:
    """Both masked by one masker (equal values, equal masks); stringData is
    write-only, stored in data: compare it there, and own it there."""
    masker = SecretMasker()
    live = {**live, "apiVersion": desired["apiVersion"], "kind": desired["kind"]}  # masked whatever it says
    desired, live = masker.mask(desired) or {}, masker.mask(live) or {}
    if desired.get("stringData"):
        desired = {**desired, "data": {**(desired.get("data") or {}), **desired["stringData"]}}
        desired.pop("stringData")
    moved = {}
    for manager, tree in trees.items():
        if tree and "f:stringData" in tree:
            tree = copy.deepcopy(tree)
            merge_fields(tree.setdefault("f:data", {}), tree.pop("f:stringData"))
        moved[manager] = tree
    return desired, live, moved


def _walk(desired: Any, live: Any, trees: Trees, path: str) -> Iterator[FieldChange]:
    """Down the desired value, beside the live one and every manager's field set."""
    if isinstance(desired, dict) and desired and isinstance(live, dict) and not _atomic(trees):
        for key, value in desired.items():
            yield from _walk(value, live.get(key, ABSENT), _children(trees, f"f:{key}"), json_path([key], path))
    elif isinstance(desired, list) and desired and isinstance(live, list) and _list_form(trees) == "k":
        yield from _walk_keyed(desired, live, trees, path)
    elif isinstance(desired, list) and desired and isinstance(live, list) and _list_form(trees) == "v":
        yield from _walk_set(desired, live, trees, path)
    else:
        yield from _leaf(desired, live, trees, path)


def _walk_keyed(desired: list, live: list, trees: Trees, path: str) -> Iterator[FieldChange]:
    """A list of objects keyed by fields (e.g. containers by name): match items by key."""
    keys = {name: key for tree in trees.values() if tree for name, key in item_keys(tree).items()}
    for item in desired:
        if not isinstance(item, dict):
            yield from _leaf(desired, live, trees, path)
            return
        name, key = _key_of(item, keys)
        match = next((i for i in live if isinstance(i, dict) and all(i.get(f) == v for f, v in key.items())), ABSENT)
        text = ",".join(f"{f}={v}" for f, v in key.items())
        yield from _walk(item, match, _children(trees, name), f"{path}[{text}]")


def _key_of(item: dict, keys: dict[str, dict]) -> tuple[str, dict]:
    """The fieldsV1 name and key fields of a desired item. The item may lack a key
    field that the server defaults (a port's protocol): matched on what it has."""
    for name, key in keys.items():
        if any(f in item for f in key) and all(item[f] == v for f, v in key.items() if f in item):
            return name, key
    fields = {f for key in keys.values() for f in key}
    return "", {f: item[f] for f in sorted(fields) if f in item}


def _walk_set(desired: list, live: list, trees: Trees, path: str) -> Iterator[FieldChange]:
    """A list of scalars that is a set (e.g. finalizers): each value present or not."""
    for value in desired:
        yield from _leaf(value, value if value in live else ABSENT, _children(trees, value_name(value)),
                         f"{path}[{json.dumps(value)}]")


def _leaf(desired: Any, live: Any, trees: Trees, path: str) -> Iterator[FieldChange]:
    """A field compared whole. Ours and equal (defaults inside allowed): no drift.
    Taken by another manager, or changed: drift, naming who own it now."""
    others = tuple(sorted(m for m, t in trees.items() if t is not None and m != FIELD_MANAGER))
    ours = trees.get(FIELD_MANAGER) is not None
    if _covers(desired, live) and (ours or not others):
        return
    yield FieldChange(path or ".", desired, live, others)


def _covers(desired: Any, live: Any) -> bool:
    """Whether live holds everything desired does: what the server added inside
    (defaults) does not count, nor how it wrote a quantity, nor a zero value
    (0, false, "") that it stored and leaves out of what it returns (omitempty)."""
    if desired is None or desired == {} or desired == []:
        return live is ABSENT or live == desired or live is None
    if live is ABSENT:
        return _is_zero(desired)
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(_covers(v, live.get(k, ABSENT)) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(_covers, desired, live))
    return desired == live or _same_quantity(desired, live)


def _is_zero(value: Any) -> bool:
    return value is False or value == "" or (type(value) in (int, float) and value == 0)


_QUANTITY = re.compile(r"(?P<number>[+-]?(\d+\.?\d*|\.\d+))(?P<suffix>[eE][+-]?\d+|[KMGTPE]i?|[numkMGTPE])?")
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}  # powers of 1024
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}  # of 10


def _same_quantity(a: Any, b: Any) -> bool:
    """`0.5` and `500m`, `1` and `1000m`: the API server rewrites quantities."""
    if isinstance(a, bool) or isinstance(b, bool) or not (isinstance(a, str) or isinstance(b, str)):
        return False
    try:
        return _quantity(a) == _quantity(b)
    except (ValueError, ArithmeticError):
        return False


def _quantity(value: Any) -> Decimal:
    """A Kubernetes quantity's value: "500m" is 0.5, "1Ki" 1024, "1e3" 1000."""
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, suffix = Decimal(match["number"]), match["suffix"] or ""
    if suffix in _BINARY:
        return number * 1024 ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))  # an exponent: e3, E-2


def _atomic(trees: Trees) -> bool:
    """Owned as a whole (e.g. a Deployment's selector): its manager's node has no children."""
    present = [t for t in trees.values() if t is not None]
    return bool(present) and not any(set(t) - {"."} for t in present)


def _list_form(trees: Trees) -> str:
    """"k" for a list keyed by fields, "v" for a set of values, "" for a list
    compared whole (atomic, or indexed, or nobody's)."""
    names = {n[:2] for t in trees.values() if t for n in t}
    return "k" if "k:" in names else "v" if "v:" in names else ""


def _children(trees: Trees, name: str) -> Trees:
    return {m: (t.get(name) if t is not None and name else None) for m, t in trees.items()}


def _show(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"
