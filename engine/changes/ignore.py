"""Ignore rules at work (an app's `ignoreDifferences`, engine/spec/ignore_rules.py):
fields of its objects that someone else sets, an autoscaler's `spec.replicas`, a
webhook's `caBundle`, a mutating controller's annotations. An ignored field is no
difference in the diff, no drift, never healed; with
`syncPolicy.respectIgnoreDifferences` (the default) the apply leaves it as it is
live, too. A rule's `managedFieldsManagers` ignore whatever those managers hold
in the live object's managedFields."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Collection, Iterator

from prefect_gitops.engine.changes.changeset import ObjectChange
from prefect_gitops.engine.changes.fieldsets import ABSENT, BUILTIN_DEFAULTED_KEYS
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.spec.ignore_rules import IgnoreRule, Path, Step
from prefect_gitops.engine.state.hand_edits import held_fields

if TYPE_CHECKING:
    from prefect_gitops.engine.spec.appspec import App

Place = tuple  # concrete keys and indexes from the object's root


@dataclass(frozen=True)
class IgnoreDifferences:
    """An app's ignore rules, as diff, apply and drift use them."""

    rules: tuple[IgnoreRule, ...]
    respect: bool = True  # the apply leaves ignored fields as they are live

    @classmethod
    def of(cls, app: App) -> IgnoreDifferences | None:
        """The app's rules; None when it has none."""
        rules = tuple(app.ignore_differences)
        return cls(rules, app.sync_policy.respect_ignore_differences) if rules else None

    def for_object(self, obj: dict, live: dict | None) -> IgnoredFields | None:
        """The fields ignored in one object (the managers' ones read from `live`); None if no rule selects it."""
        selecting = [r for r in self.rules if r.selects(obj)]
        if not selecting:
            return None
        paths = [p for r in selecting for p in r.paths()]
        managers = [m for r in selecting for m in r.managed_fields_managers]
        if managers and live is not None:
            paths += held_paths(live, managers)
        return IgnoredFields(tuple(dict.fromkeys(paths)), self.respect)

    def strip_pair(self, desired: dict, live: dict) -> tuple[dict, dict]:
        """Both without the fields ignored in the object, for comparing."""
        ignored = self.for_object(desired, live)
        return (desired, live) if ignored is None else (ignored.strip(desired), ignored.strip(live))

    def keep_live_values(self, kube: KubeClient, changes: list[ObjectChange], listed: dict) -> None:
        """With respect: in each existing selected object about to be planned, the
        ignored fields take their live values (and one absent live is not sent), so
        that the apply changes none of them. A new object gets Git's values, as in
        Argo CD. `listed` holds the live objects by key; those it lacks are read
        (and added to it, for the plan)."""
        if not self.respect:
            return
        selected = [c for c in changes if any(r.selects(c.desired or {}) for r in self.rules)]
        unlisted = [c for c in selected if c.key not in listed]
        for change, live in zip(unlisted, kube.map(
                lambda c: kube.get_if_readable(c.api_version, c.kind, c.name, c.namespace), unlisted)):
            if live is not None:
                listed[change.key] = live
        for change in selected:
            live = listed.get(change.key)
            ignored = self.for_object(change.desired, live) if live is not None else None
            if ignored is not None:
                change.desired = ignored.with_live_values(change.desired, live)


@dataclass(frozen=True)
class IgnoredFields:
    """The ignored paths of one object."""

    paths: tuple[Path, ...]
    respect: bool = True

    def strip(self, obj: dict) -> dict:
        """A copy of `obj` without the ignored fields (`obj` itself when it has none)."""
        found = sorted({place for path in self.paths for place, _ in _places(obj, ABSENT, path)}, reverse=True)
        if not found:
            return obj
        obj = copy.deepcopy(obj)
        for place in found:  # deepest and last items first: earlier places keep their meaning
            _delete(obj, place)
        return obj

    def with_live_values(self, desired: dict, live: dict) -> dict:
        """A copy of `desired` whose ignored fields hold their live values, or are left
        out where the live object has none. A field is sent, not left out, when it is
        live: server-side apply deletes a field that its only manager stops sending."""
        pairs: dict[Place, Place | None] = {}
        for path in self.paths:
            for place, live_place in _places(desired, live, path):
                pairs.setdefault(place, live_place)
        if not pairs:
            return desired
        desired = copy.deepcopy(desired)
        for place in sorted(pairs, reverse=True):  # deepest and last items first
            live_place = pairs[place]
            if live_place is None:
                _delete(desired, place)
            else:
                _set(desired, place, copy.deepcopy(_at(live, live_place)))
        return desired

    def mark_overwritten(self, full_diff: str, shown_diff: str) -> str:
        """Without respect: the diff of an object that is applied anyway, with the
        ignored fields the apply overwrites marked as such (Argo CD overwrites them
        silently)."""
        shown = set(shown_diff.splitlines())
        return "\n".join(line if line in shown else f"{line}    # ignored, overwritten: respectIgnoreDifferences "
                                                      "is false" for line in full_diff.splitlines())


# ---- the fields a manager holds ------------------------------------------------------------------

def held_paths(live: dict, managers: Collection[str]) -> list[Path]:
    """The leaves of the field sets that these managers (patterns; never ours) hold
    in `live`, as paths: what they set, whoever else set it too."""
    return [path for tree in held_fields(live, managers).values() for path in _tree_paths(tree, ())]


def _tree_paths(node: dict, prefix: Path) -> Iterator[Path]:
    for name, child in node.items():
        step = _fieldset_step(name)
        if step is None:
            continue
        if set(child or {}) - {"."}:
            yield from _tree_paths(child, prefix + (step,))
        else:  # a field, or a value owned whole
            yield prefix + (step,)


def _fieldset_step(name: str) -> Step | None:
    """The step of a fieldsV1 name: f:<field>, k:<key fields>, v:<value>, i:<index>."""
    kind, text = name[:2], name[2:]
    if kind == "f:":
        return ("key", text)
    try:
        value = json.loads(text) if kind in ("k:", "v:", "i:") else None
    except ValueError:
        return None
    if kind == "k:" and isinstance(value, dict):
        return ("match", tuple(value.items()))
    if kind == "v:" and not isinstance(value, (dict, list)):
        return ("value", value)
    if kind == "i:" and isinstance(value, int):
        return ("index", value)
    return None


# ---- resolving a path in an object ---------------------------------------------------------------

def _places(obj: Any, other: Any, path: Path, at: Place = (), other_at: Place | None = ()) -> Iterator[tuple]:
    """(place in obj, the same place in `other` or None) of each field the path
    reaches in `obj`; items of `other` are found the way the step finds them."""
    if not path:
        yield at, other_at
        return
    step, rest = path[0], path[1:]
    for key in _keys(obj, step):
        other_key = _counterpart(obj, key, other, step) if other_at is not None else None
        yield from _places(obj[key], other[other_key] if other_key is not None else ABSENT, rest, at + (key,),
                           other_at + (other_key,) if other_key is not None else None)


def _keys(node: Any, step: Step) -> list:
    """The keys (of a map) or indexes (of a list) that a step reaches in a node."""
    kind = step[0]
    if isinstance(node, dict):
        if kind == "any":
            return list(node)
        key = step[1] if kind in ("key", "token", "value") else None
        return [key] if isinstance(key, str) and key in node else []
    if not isinstance(node, list):
        return []
    if kind == "any":
        return list(range(len(node)))
    if kind == "token" and re.fullmatch(r"0|[1-9]\d*", step[1]):
        return [int(step[1])] if int(step[1]) < len(node) else []
    if kind == "index":
        return [step[1]] if 0 <= step[1] < len(node) else []
    if kind == "match":
        return [i for i, item in enumerate(node) if _matches(item, step[1])]
    if kind == "value":
        return [i for i, item in enumerate(node) if item == step[1]]
    return []


def _counterpart(node: Any, key: Any, other: Any, step: Step) -> Any:
    """Where `other` holds what `node[key]` is: the same key or index, the item with
    the same key fields, the same value; for `[*]` in a list the item of the same
    name, else of the same index."""
    if isinstance(node, dict):
        return key if isinstance(other, dict) and key in other else None
    if not isinstance(other, list):
        return None
    if step[0] == "any" and isinstance(node[key], dict) and "name" in node[key]:
        wanted: Step = ("match", (("name", node[key]["name"]),))
    elif step[0] in ("match", "value"):
        wanted = step
    else:
        wanted = ("index", key)
    found = _keys(other, wanted)
    return found[0] if found else None


def _matches(item: Any, fields: tuple) -> bool:
    """A keyed list's item with these key fields (a port without a protocol is the TCP one)."""
    return isinstance(item, dict) and all(
        _same(item.get(field, BUILTIN_DEFAULTED_KEYS.get(field, ABSENT)), value) for field, value in fields)


def _same(have: Any, want: Any) -> bool:
    """Equal; a value written in a field path (text) equals the value it reads as."""
    if have == want:
        return True
    if isinstance(want, str) and not isinstance(have, str) and have is not ABSENT:
        return json.dumps(have) == want or str(have) == want
    return False


def _at(obj: Any, place: Place) -> Any:
    for key in place:
        obj = obj[key]
    return obj


def _set(obj: Any, place: Place, value: Any) -> None:
    _at(obj, place[:-1])[place[-1]] = value


def _delete(obj: Any, place: Place) -> None:
    parent = _at(obj, place[:-1])
    del parent[place[-1]]
