"""Kubernetes objects as the engine knows them: one identity for every record of
an object (ObjectKey, as gitops-engine's ResourceKey and Flux's ObjMetadata, and
the Identified records that have one), and an object as rendered from the GitOps
repository, remembering where in the repository it came from (Manifest)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple


def group_of(api_version: str) -> str:
    """The API group of an apiVersion: `apps` of `apps/v1`, "" (core) of `v1`."""
    return api_version.rpartition("/")[0]


class ObjectKey(NamedTuple):
    """An object's identity in a cluster, whatever the version it is read at."""

    group: str
    kind: str
    namespace: str  # "" when cluster-scoped
    name: str

    @classmethod
    def of(cls, api_version: str, kind: str, namespace: str | None, name: str) -> ObjectKey:
        return cls(group_of(api_version), kind, namespace or "", name)

    @property
    def ref(self) -> str:
        """How people name it: Kind/namespace/name, or Kind/name when cluster-scoped."""
        return "/".join(p for p in (self.kind or "<no kind>", self.namespace, self.name or "<no name>") if p)


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def json_path(parts: Iterable[Any], start: str = "") -> str:
    """A place in an object, as people write it: `spec.template.spec.containers[0].image`,
    a key with dots or slashes quoted (`metadata.labels["app.kubernetes.io/name"]`);
    `parts` appended to the path `start`."""
    out = start
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


class Identified:
    """A record of one object with `api_version`, `kind`, `namespace` and `name`
    (fields or properties): its group, its key and how people name it."""

    @property
    def group(self) -> str:
        return group_of(self.api_version)

    @property
    def key(self) -> ObjectKey:
        return ObjectKey.of(self.api_version, self.kind, self.namespace, self.name)

    @property
    def ref(self) -> str:
        return self.key.ref


@dataclass(frozen=True, order=True)
class Source:
    """A place in the repository: a path relative to its root, and a 1-based line."""

    path: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass
class Manifest(Identified):
    """One desired object (a plain dict, as the API takes it) and its source."""

    obj: dict
    source: Source = field(default_factory=lambda: Source("<unknown>"))

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion") or "")

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind") or "")

    @property
    def metadata(self) -> dict:
        meta = self.obj.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "")

