"""What was applied where: one inventory object per app in each cluster, an
ApplySet parent (kubectl's KEP-3659) that also remembers revisions and history.

The parent is a ConfigMap `gitops-app-<app>` in `gitops-system`, labelled with the
ApplySet id; every member carries `applyset.kubernetes.io/part-of: <id>`, so
kubectl and other ApplySet-aware tools see the same set."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING


from prefect_gitops.engine.changes.changeset import Action, ChangeSet, Fate
from prefect_gitops.engine.cluster.kube import FIELD_MANAGER, ApiError, KubeClient
from prefect_gitops.engine.objects import Identified

if TYPE_CHECKING:
    from prefect_gitops.engine.spec.appspec import App

INVENTORY_NAMESPACE = "gitops-system"
TOOLING = "prefect-gitops/v1"
HISTORY_LIMIT = 10

# Ownership, on every applied object.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "prefect-gitops"
APP_LABEL = "gitops.prefect.io/app"
# KEP-3659 ApplySet labels and annotations.
APPLYSET_ID_LABEL = "applyset.kubernetes.io/id"
APPLYSET_PART_OF_LABEL = "applyset.kubernetes.io/part-of"
APPLYSET_TOOLING = "applyset.kubernetes.io/tooling"
APPLYSET_GROUP_KINDS = "applyset.kubernetes.io/contains-group-kinds"
APPLYSET_NAMESPACES = "applyset.kubernetes.io/additional-namespaces"


def applyset_id(name: str, namespace: str, kind: str, group: str = "") -> str:
    """KEP-3659: "applyset-" + base64url-nopad(sha256("<name>.<namespace>.<kind>.<group>")) + "-v1"."""
    digest = hashlib.sha256(".".join((name, namespace, kind, group)).encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}-v1"


def inventory_name(app_name: str) -> str:
    return f"gitops-app-{app_name}"


def app_applyset_id(app_name: str) -> str:
    return applyset_id(inventory_name(app_name), INVENTORY_NAMESPACE, "ConfigMap")


def ownership_labels(app_name: str) -> dict[str, str]:
    """The labels every object applied for an app carries."""
    return {MANAGED_BY_LABEL: MANAGED_BY, APP_LABEL: app_name,
            APPLYSET_PART_OF_LABEL: app_applyset_id(app_name)}


@dataclass(frozen=True, order=True)
class Member(Identified):
    """One object of the set, as kubectl would name it."""

    api_version: str
    kind: str
    namespace: str
    name: str

    @property
    def group_kind(self) -> str:
        """KEP-3659's `Kind.group`, just `Kind` for the core group."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    def to_json(self) -> dict:
        return {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name}

    @classmethod
    def from_json(cls, data: dict) -> "Member":
        return cls(str(data.get("apiVersion") or ""), str(data.get("kind") or ""),
                   str(data.get("namespace") or ""), str(data.get("name") or ""))


@dataclass(frozen=True)
class HistoryEntry:
    revision: str
    time: str  # ISO 8601, UTC
    result: str  # e.g. "applied", "healthy", "failed", "reverted"


@dataclass
class Inventory:
    app: str
    members: list[Member] = field(default_factory=list)
    revision: str = ""  # the revision applied last
    last_healthy_revision: str = ""
    # Revisions an operator or auto-revert marked bad: never applied automatically.
    held_revisions: list[str] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    # The ConfigMap's annotations as read, other field managers' too (a suspension:
    # engine/state/suspend.py); never written back from here.
    annotations: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return inventory_name(self.app)

    @property
    def namespace(self) -> str:
        return INVENTORY_NAMESPACE

    @property
    def applyset_id(self) -> str:
        return app_applyset_id(self.app)

    def group_kinds(self) -> list[str]:
        return sorted({m.group_kind for m in self.members})

    def member_keys(self) -> set[tuple[str, str, str, str]]:
        return {m.key for m in self.members}

    def record(self, revision: str, result: str, healthy: bool = False, when: datetime | None = None) -> None:
        """Remember a sync of `revision`; the last HISTORY_LIMIT are kept."""
        when = when or datetime.now(timezone.utc)
        self.revision = revision
        if healthy:
            self.last_healthy_revision = revision
        self.history = [*self.history, HistoryEntry(revision, when.isoformat(timespec="seconds"), result)]
        self.history = self.history[-HISTORY_LIMIT:]

    def hold(self, revision: str) -> None:
        if revision not in self.held_revisions:
            self.held_revisions = [*self.held_revisions, revision]

    def to_configmap(self) -> dict:
        namespaces = sorted({m.namespace for m in self.members} - {"", INVENTORY_NAMESPACE})
        return {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": self.name, "namespace": self.namespace,
                "labels": {APPLYSET_ID_LABEL: self.applyset_id, MANAGED_BY_LABEL: MANAGED_BY, APP_LABEL: self.app},
                "annotations": {
                    APPLYSET_TOOLING: TOOLING,
                    APPLYSET_GROUP_KINDS: ",".join(self.group_kinds()),
                    APPLYSET_NAMESPACES: ",".join(namespaces),
                },
            },
            "data": {
                "app": self.app,
                "members": json.dumps([m.to_json() for m in sorted(self.members)]),
                "revision": self.revision,
                "lastHealthyRevision": self.last_healthy_revision,
                "heldRevisions": json.dumps(self.held_revisions),
                "history": json.dumps([asdict(h) for h in self.history]),
            },
        }

    @classmethod
    def from_configmap(cls, configmap: dict) -> "Inventory":
        data = configmap.get("data") or {}
        labels = (configmap.get("metadata") or {}).get("labels") or {}
        return cls(
            app=str(data.get("app") or labels.get(APP_LABEL) or ""),
            members=[Member.from_json(m) for m in _json_list(data.get("members"))],
            revision=str(data.get("revision") or ""),
            last_healthy_revision=str(data.get("lastHealthyRevision") or ""),
            held_revisions=[str(r) for r in _json_list(data.get("heldRevisions"))],
            history=[HistoryEntry(str(h.get("revision") or ""), str(h.get("time") or ""), str(h.get("result") or ""))
                     for h in _json_list(data.get("history")) if isinstance(h, dict)],
            annotations=dict((configmap.get("metadata") or {}).get("annotations") or {}),
        )


def _json_list(text: str | None) -> list:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _app_name(app: "App | str") -> str:
    return app if isinstance(app, str) else app.name


def read_inventory(kube: KubeClient, app: "App | str") -> Inventory | None:
    """The app's inventory in this cluster, or None before its first sync (1 GET)."""
    configmap = kube.get("v1", "ConfigMap", inventory_name(_app_name(app)), INVENTORY_NAMESPACE)
    return None if configmap is None else Inventory.from_configmap(configmap)


def write_inventory(kube: KubeClient, inventory: Inventory) -> dict:
    """Server-side apply the inventory (1 request; 3 the first time in a cluster,
    when `gitops-system` has to be created)."""
    return apply_in_inventory_namespace(kube, inventory.to_configmap())


def apply_in_inventory_namespace(kube: KubeClient, body: dict, field_manager: str = FIELD_MANAGER) -> dict:
    """Server-side apply an object of `gitops-system`, creating the namespace the first time."""
    try:
        return kube.apply(body, field_manager=field_manager)
    except ApiError as error:
        if error.missing_namespace() != INVENTORY_NAMESPACE:
            raise
    kube.apply({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": INVENTORY_NAMESPACE, "labels": {MANAGED_BY_LABEL: MANAGED_BY}}})
    return kube.apply(body, field_manager=field_manager)


def next_members(changeset: ChangeSet, previous: Inventory | None) -> list[Member]:
    """Who belongs to the set after a sync: desired objects that exist (written,
    unchanged, members already, or maybe written: the server stopped answering
    while it was sent), and previous members not deleted yet (a failed,
    skipped or kept prune is tried again next time). Objects prune released because
    they are no longer this app's leave."""
    before = previous.member_keys() if previous else set()
    members = []
    for change in changeset:
        member = Member(change.api_version, change.kind, change.namespace, change.name)
        if change.in_desired_set:
            exists = change.fate in (Fate.DONE, Fate.UNKNOWN) or change.action in (Action.UNCHANGED, Action.CONFIGURED)
            keep = exists or change.key in before
        else:
            keep = not (change.done or change.released)
        if keep:
            members.append(member)
    return sorted(set(members))


def with_intent(app_name: str, changeset: ChangeSet, previous: Inventory | None) -> Inventory | None:
    """The inventory to write before applying: the previous one (revision and
    history unchanged) plus every object the run is about to write, so that a run
    killed at any point leaves each object it created known to the next run, and
    prunable (kubectl's ApplySet updates its parent first for the same reason).
    None when the previous one already names them all."""
    before = previous.member_keys() if previous else set()
    writes = [Member(c.api_version, c.kind, c.namespace, c.name) for c in changeset.desired()
              if c.action in (Action.CREATED, Action.CONFIGURED)]
    added = {m for m in writes if m.key not in before}
    if not added:
        return None
    intent = Inventory(app=app_name) if previous is None else replace(previous)
    intent.members = sorted({*intent.members, *added})
    return intent


def write_intent(kube: KubeClient, app_name: str, changeset: ChangeSet, previous: Inventory | None) -> None:
    """Write the inventory of with_intent, if it adds anyone (1 request)."""
    intent = with_intent(app_name, changeset, previous)
    if intent is not None:
        write_inventory(kube, intent)


def updated_inventory(app_name: str, changeset: ChangeSet, previous: Inventory | None,
                      revision: str, result: str, healthy: bool = False) -> Inventory:
    """The inventory to write after a sync of `revision`."""
    inventory = Inventory(app=app_name) if previous is None else Inventory(
        app=app_name, revision=previous.revision, last_healthy_revision=previous.last_healthy_revision,
        held_revisions=list(previous.held_revisions), history=list(previous.history))
    inventory.members = next_members(changeset, previous)
    inventory.record(revision, result, healthy)
    return inventory
