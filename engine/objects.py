"""A Kubernetes object as rendered from the GitOps repository, remembering
where in the repository it came from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Source:
    """A place in the repository: a path relative to its root, and a 1-based line."""

    path: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


@dataclass
class Manifest:
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
    def group(self) -> str:
        return self.api_version.rpartition("/")[0] if "/" in self.api_version else ""

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

    @property
    def ref(self) -> str:
        """How people name it: Kind/namespace/name, or Kind/name when cluster-scoped."""
        parts = [self.kind or "<no kind>", self.namespace, self.name or "<no name>"]
        return "/".join(p for p in parts if p)

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Identity within a cluster: (group, kind, namespace, name)."""
        return (self.group, self.kind, self.namespace, self.name)
