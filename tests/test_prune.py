"""Prune: previous members no longer desired are deleted, in reverse apply order,
only while they still carry this app's label and no keep annotation; an empty
desired state is refused unless allowed; failed deletes stay in the inventory."""

from __future__ import annotations

import secrets

import pytest

from conftest import kubectl
from prefect_gitops.engine.changes.apply import apply_changes
from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ObjectChange
from prefect_gitops.engine.changes.diff import plan_changes
from prefect_gitops.engine.changes.prune import EmptyDesiredState, deletion_batches, keep_annotation, prune_objects
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.state.inventory import APP_LABEL, Inventory, Member, next_members, updated_inventory

needs_cluster = pytest.mark.cluster


@pytest.fixture(scope="module")
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


def configmap(name: str, namespace: str, annotations: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}}}


def sync(kube: KubeClient, app: str, objs: list[dict], previous: Inventory | None,
         allow_empty: bool = False) -> tuple[ChangeSet, Inventory]:
    """Plan, apply and prune as a sync does; returns the ChangeSet and the next inventory."""
    changeset = plan_changes(kube, app, [Manifest(o, Source("x.yaml")) for o in objs], previous)
    apply_changes(kube, changeset)
    prune_objects(kube, app, changeset, allow_empty=allow_empty)
    return changeset, updated_inventory(app, changeset, previous, "a" * 40, "applied")


def exists(kube: KubeClient, name: str, namespace: str) -> bool:
    return kube.get("v1", "ConfigMap", name, namespace) is not None


# ---- pure parts ------------------------------------------------------------------

def test_keep_annotations():
    def annotated(**annotations) -> dict:
        return {"metadata": {"annotations": annotations}}

    assert keep_annotation(annotated(**{"gitops.prefect.io/prune": "false"}))
    assert keep_annotation(annotated(**{"argocd.argoproj.io/sync-options": "Validate=false,Prune=false"}))
    assert keep_annotation(annotated(**{"gitops.prefect.io/prune": "true"})) is None
    assert keep_annotation(annotated(**{"argocd.argoproj.io/sync-options": "Validate=false"})) is None
    assert keep_annotation({}) is None


def test_deletion_goes_in_reverse_apply_order():
    def doomed(api_version: str, kind: str, name: str, wave: str = "0"):
        live = {"metadata": {"annotations": {"gitops.prefect.io/sync-wave": wave}}}
        return ObjectChange(api_version, kind, "ns", name, None, Action.PRUNED), live

    pairs = [doomed("v1", "Namespace", "ns"), doomed("v1", "ConfigMap", "cfg"),
             doomed("apps/v1", "Deployment", "web"), doomed("v1", "ConfigMap", "late", wave="2"),
             doomed("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "hook"),
             doomed("v1", "ServiceAccount", "sa"), doomed("apiextensions.k8s.io/v1", "CustomResourceDefinition", "c")]
    order = [[change.name for change, _ in batch] for batch in deletion_batches(pairs)]
    assert order == [["late"], ["hook"], ["web"], ["cfg"], ["sa"], ["ns"], ["c"]]


# ---- against the cluster -------------------------------------------------------------

@needs_cluster
def test_a_removed_manifest_is_pruned(kube, namespace):
    app = f"p-{secrets.token_hex(3)}"
    _, inventory = sync(kube, app, [configmap("a", namespace), configmap("b", namespace)], None)
    assert {m.name for m in inventory.members} == {"a", "b"}
    kube.reset_requests()
    changeset, inventory = sync(kube, app, [configmap("a", namespace)], inventory)
    (pruned,) = changeset.by_action()[Action.PRUNED]
    assert (pruned.name, pruned.done, pruned.error) == ("b", True, None)
    assert kube.requests["DELETE"] == 1 and kube.writes["PATCH"] == 0  # "a" unchanged: not written
    assert exists(kube, "a", namespace) and not exists(kube, "b", namespace)
    assert [m.name for m in inventory.members] == ["a"]


@needs_cluster
def test_an_object_without_our_label_is_not_pruned(kube, namespace, local_cluster):
    app = f"p-{secrets.token_hex(3)}"
    _, inventory = sync(kube, app, [configmap("a", namespace), configmap("adopted", namespace)], None)
    kubectl(local_cluster.kubeconfig, "label", "configmap", "adopted", "-n", namespace, f"{APP_LABEL}=someone-else",
            "--overwrite")
    changeset, inventory = sync(kube, app, [configmap("a", namespace)], inventory)
    change = changeset.get("ConfigMap", "adopted", namespace)
    assert change.action is Action.SKIPPED and change.released and "someone-else" in change.diff
    assert exists(kube, "adopted", namespace)
    assert [m.name for m in inventory.members] == ["a"]  # no longer ours: it leaves the set


@needs_cluster
def test_an_object_made_by_hand_is_never_pruned(kube, namespace, local_cluster):
    kubectl(local_cluster.kubeconfig, "create", "configmap", "by-hand", "-n", namespace)
    app = f"p-{secrets.token_hex(3)}"
    forged = Inventory(app=app, members=[Member("v1", "ConfigMap", namespace, "by-hand")])
    changeset, _ = sync(kube, app, [configmap("a", namespace)], forged)
    assert changeset.get("ConfigMap", "by-hand", namespace).action is Action.SKIPPED
    assert exists(kube, "by-hand", namespace)


@needs_cluster
@pytest.mark.parametrize("annotations", [{"gitops.prefect.io/prune": "false"},
                                         {"argocd.argoproj.io/sync-options": "Prune=false"}])
def test_an_object_annotated_to_keep_is_not_pruned(kube, namespace, annotations, local_cluster):
    app = f"p-{secrets.token_hex(3)}"
    _, inventory = sync(kube, app, [configmap("a", namespace), configmap("keep", namespace, annotations)], None)
    changeset, inventory = sync(kube, app, [configmap("a", namespace)], inventory)
    change = changeset.get("ConfigMap", "keep", namespace)
    assert change.action is Action.SKIPPED and "annotated" in change.diff
    assert exists(kube, "keep", namespace)
    assert "keep" in {m.name for m in inventory.members}  # still ours: pruned once the annotation goes
    (key,) = annotations
    kubectl(local_cluster.kubeconfig, "annotate", "configmap", "keep", "-n", namespace, f"{key}-")
    sync(kube, app, [configmap("a", namespace)], inventory)
    assert not exists(kube, "keep", namespace)


@needs_cluster
def test_an_empty_desired_state_is_refused_unless_allowed(kube, namespace):
    app = f"p-{secrets.token_hex(3)}"
    _, inventory = sync(kube, app, [configmap("a", namespace), configmap("b", namespace)], None)
    with pytest.raises(EmptyDesiredState, match=f"app {app}: the desired state is empty"):
        sync(kube, app, [], inventory)
    assert exists(kube, "a", namespace) and exists(kube, "b", namespace)
    changeset, inventory = sync(kube, app, [], inventory, allow_empty=True)
    assert {(c.name, c.done) for c in changeset} == {("a", True), ("b", True)}
    assert not exists(kube, "a", namespace) and inventory.members == []


@needs_cluster
def test_a_failed_delete_is_reported_and_stays_in_the_inventory(kube, namespace, local_cluster):
    """The API server refuses to delete kube-public: a real failed delete."""
    app = f"p-{secrets.token_hex(3)}"
    kubectl(local_cluster.kubeconfig, "label", "namespace", "kube-public", f"{APP_LABEL}={app}")
    try:
        previous = Inventory(app=app, members=[Member("v1", "Namespace", "", "kube-public")])
        changeset, inventory = sync(kube, app, [configmap("a", namespace)], previous)
        change = changeset.get("Namespace", "kube-public")
        assert change.action is Action.PRUNED and not change.done
        assert change.error.startswith("Namespace/kube-public: prune failed:")
        assert Member("v1", "Namespace", "", "kube-public") in next_members(changeset, previous)
        assert Member("v1", "Namespace", "", "kube-public") in inventory.members
    finally:
        kubectl(local_cluster.kubeconfig, "label", "namespace", "kube-public", f"{APP_LABEL}-")


@needs_cluster
def test_nothing_is_pruned_when_applying_failed(kube, namespace):
    app = f"p-{secrets.token_hex(3)}"
    _, inventory = sync(kube, app, [configmap("a", namespace), configmap("b", namespace)], None)
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": namespace},
           "data": {"x": 1}}
    changeset, inventory = sync(kube, app, [bad], inventory)
    assert changeset.get("ConfigMap", "b", namespace).action is Action.PRUNED
    assert exists(kube, "b", namespace) and {m.name for m in inventory.members} == {"a", "b"}
