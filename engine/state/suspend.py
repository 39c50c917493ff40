"""Suspend and resume an app: a suspended app is not synced, healed or reverted;
drift is still reported, marked suspended.

Two ways to suspend, either enough: the app's `suspend: true` in gitops.yaml
(everywhere, until Git changes), and `gitops suspend`'s record on one cluster.
The record is an annotation of the app's inventory ConfigMap in that cluster, so
every worker and machine sees it with the one GET a sync makes of the inventory
anyway. It is written by a field manager of its own: the inventory writes of
syncs (server-side applies as `prefect-gitops`) never remove it, so suspending
needs no Lease and cannot be lost to a sync running at that moment (Flux's
`spec.suspend`, set by `flux suspend` on a Kustomization that is itself applied
from Git, is undone by that apply: fluxcd/flux2#3462). It names who suspended,
since when and why, which `flux suspend` does not record (fluxcd/flux2#4232)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.state.inventory import (APP_LABEL, INVENTORY_NAMESPACE, Inventory,
                                                   apply_in_inventory_namespace, inventory_name)

if TYPE_CHECKING:
    from prefect_gitops.engine.spec.appspec import App

SUSPENDED_ANNOTATION = "gitops.prefect.io/suspended"
SUSPEND_MANAGER = "prefect-gitops-suspend"
BY_GITOPS_YAML = "gitops.yaml (suspend: true)"


@dataclass(frozen=True)
class Suspension:
    by: str  # who suspended it (`gitops suspend`: the OS user and host); BY_GITOPS_YAML for the field
    since: str = ""  # ISO 8601, UTC; "" for the field (Git knows when)
    reason: str = ""

    @property
    def by_field(self) -> bool:
        return self.by == BY_GITOPS_YAML

    def describe(self) -> str:
        """e.g. `suspended by alice@laptop since 2026-05-01T10:00:00+00:00 (incident 42)`."""
        since = f" since {self.since}" if self.since else ""
        reason = f" ({self.reason})" if self.reason else ""
        return f"suspended by {self.by}{since}{reason}"

    def to_json(self) -> dict:
        return asdict(self)


def suspension(app: "App", inventory: Inventory | None) -> Suspension | None:
    """Why the app is suspended on the cluster this inventory was read from, or
    None: the gitops.yaml field first, then the cluster's record."""
    if app.suspend:
        return Suspension(BY_GITOPS_YAML)
    return recorded(inventory)


def recorded(inventory: Inventory | None) -> Suspension | None:
    """The record `gitops suspend` left in the inventory, if any."""
    text = (inventory.annotations if inventory else {}).get(SUSPENDED_ANNOTATION)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:  # edited by hand into something else: still suspended
        return Suspension(by="unknown (unreadable record)", reason=str(text)[:200])
    data = data if isinstance(data, dict) else {}
    return Suspension(str(data.get("by") or "unknown"), str(data.get("since") or ""), str(data.get("reason") or ""))


def suspend(kube: KubeClient, app_name: str, by: str, reason: str = "",
            when: datetime | None = None) -> Suspension:
    """Record the suspension on this cluster (1 request; 3 the first time in a
    cluster). Suspending again replaces the record."""
    since = (when or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    record = Suspension(by, since, reason)
    apply_in_inventory_namespace(kube, _record_body(app_name, json.dumps(record.to_json())),
                                 field_manager=SUSPEND_MANAGER)
    return record


def resume(kube: KubeClient, app_name: str) -> Suspension | None:
    """Remove this cluster's record; the record removed, None when there was none.
    An inventory that holds nothing but the record (the app was never synced
    here) is deleted with it."""
    configmap = kube.get("v1", "ConfigMap", inventory_name(app_name), INVENTORY_NAMESPACE)
    record = recorded(Inventory.from_configmap(configmap)) if configmap else None
    if record is None:
        return None
    if not configmap.get("data"):
        kube.delete("v1", "ConfigMap", inventory_name(app_name), INVENTORY_NAMESPACE,
                    uid=(configmap.get("metadata") or {}).get("uid"))
    else:  # applying the record's manager without the annotation removes it, and only it
        kube.apply(_record_body(app_name, None), field_manager=SUSPEND_MANAGER)
    return record


def _record_body(app_name: str, record: str | None) -> dict:
    """The ConfigMap as the suspend manager owns it: the app's label (so that
    the inventory read back names its app) and the record, if any."""
    metadata = {"name": inventory_name(app_name), "namespace": INVENTORY_NAMESPACE,
                "labels": {APP_LABEL: app_name}}
    if record is not None:
        metadata["annotations"] = {SUSPENDED_ANNOTATION: record}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata}
