"""Server-side apply's field sets (the `fieldsV1` of managedFields), walked beside
an object. Shared by drift (which fields another manager changed) and diff
(whether applying the desired body again could change anything at all).

A fieldsV1 node maps `f:<name>` (a field of a map or struct), `k:<json>` (an item
of a list keyed by fields, e.g. containers by name), `v:<json>` (a value of a
list that is a set, e.g. finalizers) and `.` (the node itself, beside its
children) to the node below. An empty node is a leaf, or a value owned whole
(an atomic struct or list, e.g. a Deployment's selector)."""

from __future__ import annotations

import json
from typing import Any

from prefect_gitops.engine.cluster.kube import FIELD_MANAGER

# Key fields that the API server defaults in built-in kinds' keyed lists: a port
# (of a container or a Service) may leave out its protocol and is then the TCP one.
BUILTIN_DEFAULTED_KEYS = {"protocol": "TCP"}
BUILTIN_GROUPS = frozenset({"", "apps", "batch"})


class _Absent:
    """A field or object that is not there (None may be a value)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


# ---- primitives ---------------------------------------------------------------------

def merge_fields(into: dict, tree: dict) -> None:
    """Add a field set to another, in place."""
    for key, child in tree.items():
        merge_fields(into.setdefault(key, {}), child or {})


def applied_part(body: dict) -> dict:
    """The part of an object that field sets describe: without apiVersion, kind,
    status and metadata.name/namespace (managedFields never list them)."""
    body = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "status")}
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k not in ("name", "namespace")}
    return {**body, "metadata": meta} if meta else {k: v for k, v in body.items() if k != "metadata"}


def item_keys(node: dict) -> dict[str, dict]:
    """The `k:` names of a node and the key fields each stands for."""
    return {name: json.loads(name[2:]) for name in node if name.startswith("k:")}


def value_name(value: Any) -> str:
    """The `v:` name of a value of a set."""
    return f"v:{json.dumps(value, separators=(',', ':'))}"


# ---- would a re-apply change anything? ------------------------------------------------

def our_applied_fields(live: dict, api_version: str) -> dict | None:
    """The field set of our Apply on the object itself (not a subresource), as
    `api_version` names its fields; None unless there is exactly one such entry."""
    entries = [e for e in (live.get("metadata") or {}).get("managedFields") or []
               if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply" and not e.get("subresource")]
    if len(entries) != 1 or entries[0].get("apiVersion") != api_version:
        return None
    if entries[0].get("fieldsType", "FieldsV1") != "FieldsV1":
        return None
    return entries[0].get("fieldsV1") or {}


def reapply_changes_nothing(desired: dict, live: dict, defaulted_keys: dict | None = None) -> bool:
    """Whether server-side applying `desired` again (as FIELD_MANAGER) is certain
    to change nothing in `live`: our Apply owns exactly the fields of `desired`
    (so the apply neither takes nor gives up a field) and every desired value is
    the live one, of the same type. False whenever that is not certain, e.g. a
    quantity the server rewrote (`0.1` is stored `100m`): the caller then asks the
    server. `defaulted_keys`: key fields the server fills in when an item of a
    keyed list leaves them out (BUILTIN_DEFAULTED_KEYS for built-in kinds)."""
    tree = our_applied_fields(live, str(desired.get("apiVersion") or ""))
    if tree is None:
        return False
    return _exact(_without_empty_metadata_maps(applied_part(desired)), applied_part(live), tree,
                  defaulted_keys or {})


def _without_empty_metadata_maps(body: dict) -> dict:
    """Without `labels: {}` or `annotations: {}`: on every kind these are maps of
    their own keys (never owned whole), so an empty one owns and sets nothing, and
    field sets never list it."""
    meta = body.get("metadata")
    if not isinstance(meta, dict) or all(meta.get(k) != {} for k in ("labels", "annotations")):
        return body
    meta = {k: v for k, v in meta.items() if not (k in ("labels", "annotations") and v == {})}
    return {**body, "metadata": meta} if meta else {k: v for k, v in body.items() if k != "metadata"}


def _exact(desired: Any, live: Any, node: dict, defaults: dict) -> bool:
    """`node` (ours) is exactly the field set of `desired`, whose values `live` holds."""
    if live is ABSENT or desired is None:  # an explicit null asks to remove a field: not a no-op to prove
        return False
    if not node:  # a leaf, or a value owned whole: equal as a whole
        return identical(desired, live)
    if isinstance(desired, dict) and isinstance(live, dict):
        return _exact_map(desired, live, node, defaults)
    if isinstance(desired, list) and isinstance(live, list):
        forms = {name[:2] for name in node if name != "."}
        if forms == {"k:"}:
            return _exact_keyed(desired, live, node, defaults)
        if forms == {"v:"}:
            return _exact_set(desired, live, node)
    return False  # a shape the field set does not describe (or indexed `i:` lists): not certain


def _exact_map(desired: dict, live: dict, node: dict, defaults: dict) -> bool:
    """Fields others (or the server) set beside ours in `live` do not matter; a
    field of ours not desired would be removed by the apply, so it does."""
    if set(node) - {"."} != {f"f:{key}" for key in desired}:
        return False
    return all(_exact(value, live.get(key, ABSENT), node[f"f:{key}"], defaults) for key, value in desired.items())


def _exact_keyed(desired: list, live: list, node: dict, defaults: dict) -> bool:
    """Each desired item is one of our `k:` items, in the live list in the same
    order (other managers' items may sit between them)."""
    keys = item_keys(node)
    if len(desired) != len(keys):
        return False
    seen: set[str] = set()
    last = -1
    for item in desired:
        name = _key_name(item, keys, defaults) if isinstance(item, dict) else None
        if name is None or name in seen:
            return False
        seen.add(name)
        index = next((i for i, obj in enumerate(live) if isinstance(obj, dict)
                      and all(identical(v, obj.get(f, ABSENT)) for f, v in keys[name].items())), None)
        if index is None or index <= last or not _exact(item, live[index], node[name], defaults):
            return False
        last = index
    return True


def _key_name(item: dict, keys: dict[str, dict], defaults: dict) -> str | None:
    """The one `k:` name whose key fields the item has (or leaves to their default)."""
    def matches(key: dict) -> bool:
        return all(identical(v, item[f]) if f in item else defaults.get(f, ABSENT) == v for f, v in key.items())

    found = [name for name, key in keys.items() if matches(key)]
    return found[0] if len(found) == 1 else None


def _exact_set(desired: list, live: list, node: dict) -> bool:
    """A set of values: ours exactly the desired ones, each owned as a leaf, and
    the live list the desired one (values others added: not certain, the server decides)."""
    names = [value_name(v) for v in desired]
    if len(set(names)) != len(names) or set(node) - {"."} != set(names) or any(node[n] for n in names):
        return False
    return identical(desired, live)


def identical(a: Any, b: Any) -> bool:
    """Equal and of the same types throughout (1 is not 1.0, nor True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(map(identical, a, b))
    return a == b
