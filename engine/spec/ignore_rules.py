"""Ignore rules as written in gitops.yaml: an app's `ignoreDifferences`, each
selecting objects by group, kind, name and namespace (shell patterns; an omitted
group is any group) and naming fields three ways: RFC 6901 JSON pointers
(`/spec/replicas`), field paths as the engine prints them in diffs and drift
reports (`spec.template.spec.containers[name=web].image`, `metadata.labels["a/b"]`,
`[*]` for every item or key), and field managers (`managedFieldsManagers`).
What they do: engine/changes/ignore.py.

    ignoreDifferences:
      - {group: apps, kind: Deployment, name: web, jsonPointers: [/spec/replicas]}
      - {kind: Deployment, fieldPaths: ["spec.template.spec.containers[name=web].image"]}
      - {kind: Deployment, managedFieldsManagers: [hpa-controller]}
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from prefect_gitops.engine.objects import group_of

# A path is a tuple of steps, each resolved in each object on its own: ("key", str)
# a map's key; ("token", str) a pointer's token: a map's key, or a list's index when
# it is one; ("index", int); ("match", ((field, value), ...)) the items of a keyed
# list (by key fields, not by position); ("value", v) a map's key or a set's value;
# ("any",) every item or key.
Step = tuple
Path = tuple[Step, ...]


# ---- parsing ------------------------------------------------------------------------------

@lru_cache(maxsize=1024)
def parse_pointer(pointer: str) -> Path:
    """An RFC 6901 JSON pointer: `/webhooks/0/clientConfig/caBundle`, `~1` for `/`, `~0` for `~`."""
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer {pointer!r} must start with '/' (e.g. /spec/replicas)")
    tokens = pointer[1:].split("/")
    for token in tokens:
        if re.search(r"~(?![01])", token):
            raise ValueError(f"JSON pointer {pointer!r}: '~' must be followed by 0 or 1 (~0 is '~', ~1 is '/')")
    return tuple(("token", t.replace("~1", "/").replace("~0", "~")) for t in tokens)


_FIELD_STEP = re.compile(r"""(?P<lead>^|\.)(?P<key>[A-Za-z_][A-Za-z0-9_-]*)
                            |\[(?:(?P<quoted>"(?:[^"\\]|\\.)*")|(?P<any>\*)|(?P<index>\d+)
                                |(?P<match>[^\]=,"]+=[^\],]*(?:,[^\]=,"]+=[^\],]*)*))\]""", re.VERBOSE)


@lru_cache(maxsize=1024)
def parse_field_path(text: str) -> Path:
    """A field path as diffs print it: `spec.replicas`, `spec.template.spec.containers[name=web].image`,
    `ports[containerPort=80,protocol=TCP]`, `metadata.annotations["example.com/x"]`, `items[0]`, `data[*]`."""
    steps, at = [], 0
    while at < len(text):
        found = _FIELD_STEP.match(text, at)
        if found is None or (found["key"] and found["lead"] == "" and at > 0) or (found["lead"] == "." and at == 0):
            raise ValueError(f"field path {text!r}: cannot read it from {text[at:]!r} (write it as diffs print "
                             "it, e.g. spec.template.spec.containers[name=web].image)")
        steps.append(_field_step(found))
        at = found.end()
    if not steps:
        raise ValueError("a field path is empty")
    return tuple(steps)


def _field_step(found: re.Match) -> Step:
    if found["key"]:
        return ("key", found["key"])
    if found["quoted"]:
        return ("value", json.loads(found["quoted"]))
    if found["any"]:
        return ("any",)
    if found["index"]:
        return ("index", int(found["index"]))
    pairs = (pair.split("=", 1) for pair in found["match"].split(","))
    return ("match", tuple((field.strip(), value.strip()) for field, value in pairs))


def _check_pointer(pointer: str) -> str:
    parse_pointer(pointer)
    return pointer


def _check_field_path(text: str) -> str:
    parse_field_path(text)
    return text


JsonPointer = Annotated[str, AfterValidator(_check_pointer)]
FieldPath = Annotated[str, AfterValidator(_check_field_path)]


# ---- the rule, as written in gitops.yaml -------------------------------------------------------

class IgnoreRule(BaseModel):
    """One entry of an app's `ignoreDifferences`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=to_camel, frozen=True)

    # Shell patterns. An omitted group is any group; "" is the core group.
    group: str | None = None
    kind: str = Field(min_length=1)
    name: str | None = None
    namespace: str | None = None
    json_pointers: list[JsonPointer] = Field(default_factory=list)
    field_paths: list[FieldPath] = Field(default_factory=list)
    # Field managers (patterns) whose fields are not the app's to set.
    managed_fields_managers: list[str] = Field(default_factory=list)

    @field_validator("group")
    @classmethod
    def _group(cls, group: str | None) -> str | None:
        if group and "/" in group:
            raise ValueError(f"group {group!r} is an API group without its version (apps, not apps/v1)")
        return group

    @model_validator(mode="after")
    def _names_fields(self) -> IgnoreRule:
        if not (self.json_pointers or self.field_paths or self.managed_fields_managers):
            raise ValueError("name the fields to ignore: jsonPointers, fieldPaths and/or managedFieldsManagers")
        return self

    def selects(self, obj: dict) -> bool:
        meta = obj.get("metadata") or {}
        wanted = ((self.group, group_of(str(obj.get("apiVersion") or ""))), (self.kind, str(obj.get("kind") or "")),
                  (self.name, str(meta.get("name") or "")), (self.namespace, str(meta.get("namespace") or "")))
        return all(pattern is None or fnmatchcase(value, pattern) for pattern, value in wanted)

    def paths(self) -> list[Path]:
        return [*map(parse_pointer, self.json_pointers), *map(parse_field_path, self.field_paths)]
