"""The inventory: an ApplySet parent (KEP-3659) per app in the cluster itself,
holding members, revisions and history; kubectl sees the same set."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

import pytest

from conftest import kubectl
from prefect_gitops.engine.changes.apply import apply_changes
from prefect_gitops.engine.changes.changeset import Action, ChangeSet, Fate, ObjectChange
from prefect_gitops.engine.state.inventory import (APPLYSET_GROUP_KINDS, APPLYSET_ID_LABEL, APPLYSET_NAMESPACES, APPLYSET_TOOLING,
                             HISTORY_LIMIT, INVENTORY_NAMESPACE, HistoryEntry, Inventory, Member, applyset_id,
                             next_members, ownership_labels, read_inventory, updated_inventory, with_intent,
                             write_inventory)
from prefect_gitops.engine.changes.diff import plan_changes
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest, Source

needs_cluster = pytest.mark.cluster
SHA1, SHA2 = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


@pytest.fixture
def app_name(local_cluster):
    name = f"inv-{secrets.token_hex(3)}"
    yield name
    kubectl(local_cluster.kubeconfig, "delete", "configmap", f"gitops-app-{name}", "-n", INVENTORY_NAMESPACE,
            "--wait=false", "--ignore-not-found", check=False)


def inventory(app: str, namespace: str = "web") -> Inventory:
    return Inventory(app=app, members=[
        Member("apps/v1", "Deployment", namespace, "web"),
        Member("v1", "ConfigMap", namespace, "cfg"),
        Member("v1", "Namespace", "", namespace),
        Member("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "widgets.example.com"),
    ], revision=SHA2, last_healthy_revision=SHA1, held_revisions=[SHA1[:39] + "c"],
        history=[HistoryEntry(SHA1, "2026-01-01T00:00:00+00:00", "healthy")])


# ---- pure parts ------------------------------------------------------------------

def test_applyset_id_is_computed_as_kep_3659_says():
    # The value kubectl's own tests expect for the parent Secret my-set in namespace test.
    assert applyset_id("my-set", "test", "Secret") == "applyset-0eFHV8ySqp7XoShsGvyWFQD3s96yqwHmzc4e0HR1dsY-v1"
    ours = Inventory(app="web").applyset_id
    assert ours == applyset_id("gitops-app-web", "gitops-system", "ConfigMap", "")
    assert ownership_labels("web")["applyset.kubernetes.io/part-of"] == ours
    assert len(ours) <= 63 and ours[0].isalnum() and ours[-1].isalnum()


def test_the_parent_names_group_kinds_and_namespaces_as_kubectl_does():
    configmap = inventory("web").to_configmap()
    meta = configmap["metadata"]
    assert (meta["name"], meta["namespace"]) == ("gitops-app-web", "gitops-system")
    assert meta["labels"][APPLYSET_ID_LABEL] == Inventory(app="web").applyset_id
    assert meta["annotations"][APPLYSET_TOOLING] == "prefect-gitops/v1"
    assert meta["annotations"][APPLYSET_GROUP_KINDS] == (
        "ConfigMap,CustomResourceDefinition.apiextensions.k8s.io,Deployment.apps,Namespace")
    assert meta["annotations"][APPLYSET_NAMESPACES] == "web"
    assert all(isinstance(v, str) for v in configmap["data"].values())


def test_round_trip_through_the_configmap():
    original = inventory("web")
    assert Inventory.from_configmap(original.to_configmap()) == Inventory(
        **{**original.__dict__, "members": sorted(original.members)})


def test_history_keeps_the_last_entries_and_the_last_healthy_revision():
    inv = Inventory(app="web")
    for i in range(HISTORY_LIMIT + 3):
        inv.record(f"{i:040d}", "healthy" if i == 4 else "failed", healthy=i == 4,
                   when=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert len(inv.history) == HISTORY_LIMIT and inv.history[-1].revision == f"{HISTORY_LIMIT + 2:040d}"
    assert inv.last_healthy_revision == f"{4:040d}" and inv.revision == f"{HISTORY_LIMIT + 2:040d}"
    inv.hold(SHA1)
    inv.hold(SHA1)
    assert inv.held_revisions == [SHA1]


def test_next_members_keep_what_exists_and_what_failed_to_prune():
    previous = Inventory(app="web", members=[Member("v1", "ConfigMap", "ns", n) for n in
                                             ("kept", "gone", "failed", "adopted", "not-pruned", "broken")])

    def change(name: str, action: Action, desired: bool = True, done: bool = False, error: str | None = None,
               released: bool = False):
        return ObjectChange("v1", "ConfigMap", "ns", name, Source("x.yaml") if desired else None, action,
                            desired={} if desired else None, fate=Fate.DONE if done else Fate.NOT_ATTEMPTED,
                            error=error, released=released)

    changeset = ChangeSet([
        change("kept", Action.UNCHANGED), change("new", Action.CREATED, done=True),
        change("not-applied", Action.CREATED), change("broken", Action.SKIPPED, error="x"),
        change("gone", Action.PRUNED, desired=False, done=True),
        change("failed", Action.PRUNED, desired=False, error="x"),
        change("adopted", Action.SKIPPED, desired=False, released=True),
        change("annotated", Action.SKIPPED, desired=False),
        change("not-pruned", Action.PRUNED, desired=False),
    ])
    assert [m.name for m in next_members(changeset, previous)] == [
        "annotated", "broken", "failed", "kept", "new", "not-pruned"]
    after = updated_inventory("web", changeset, previous, SHA2, "applied")
    assert after.revision == SHA2 and after.history[-1].result == "applied" and after.last_healthy_revision == ""


def test_the_intent_names_every_object_about_to_be_written_and_keeps_the_rest():
    previous = inventory("web")

    def change(name: str, action: Action) -> ObjectChange:
        return ObjectChange("v1", "ConfigMap", "web", name, Source("x.yaml"), action, desired={})

    changeset = ChangeSet([change("cfg", Action.CONFIGURED), change("new", Action.CREATED),
                           change("adopted", Action.CONFIGURED), change("same", Action.UNCHANGED)])
    intent = with_intent("web", changeset, previous)
    assert {m.name for m in intent.members} == {m.name for m in previous.members} | {"new", "adopted"}
    # Nothing else moves: the next run still sees the revision as not synced.
    assert (intent.revision, intent.history, intent.held_revisions) == (
        previous.revision, previous.history, previous.held_revisions)
    assert [m.name for m in previous.members] == ["web", "cfg", "web", "widgets.example.com"]  # not changed
    assert {m.name for m in with_intent("web", changeset, None).members} == {"cfg", "new", "adopted"}
    assert with_intent("web", ChangeSet([change("cfg", Action.CONFIGURED)]), previous) is None  # nobody new


def test_a_write_that_may_have_landed_stays_a_member_and_a_partial_apply_is_told_in_one_line():
    def created(name: str, **state) -> ObjectChange:
        return ObjectChange("v1", "ConfigMap", "web", name, Source("x.yaml"), Action.CREATED, desired={}, **state)

    unknown = created("sent")
    unknown.fail("apply", "cluster c (https://c) is unreachable: no answer within the time limit", maybe_done=True)
    refused = created("refused")
    refused.fail("apply", "422 Invalid")
    changeset = ChangeSet([created("done", fate=Fate.DONE), unknown, refused, created("later")])
    assert [m.name for m in next_members(changeset, None)] == ["done", "sent"]
    assert [c.outcome for c in changeset] == ["done", "unknown", "failed", "not attempted"]
    assert changeset.failure_text() == (
        "ConfigMap/web/sent: apply failed: cluster c (https://c) is unreachable: no answer within the time limit "
        "(of 4 changes: 1 done, 1 failed, 1 unknown, 1 not attempted)")


# ---- against the cluster -------------------------------------------------------------

@needs_cluster
def test_none_before_the_first_sync(kube, app_name):
    assert read_inventory(kube, app_name) is None


@needs_cluster
def test_write_then_read(kube, app_name):
    write_inventory(kube, inventory(app_name))  # creates gitops-system if it is missing
    kube.reset_requests()
    written = inventory(app_name)
    written.record(SHA1, "healthy", healthy=True)
    write_inventory(kube, written)
    assert kube.requests["PATCH"] == 1 and sum(kube.requests.values()) == 1
    read = read_inventory(kube, app_name)
    assert read == Inventory(**{**written.__dict__, "members": sorted(written.members)})
    assert read.last_healthy_revision == SHA1 and read.history[-1].result == "healthy"


@needs_cluster
def test_kubectl_sees_the_same_applyset(kube, namespace, app_name, local_cluster, monkeypatch):
    """kubectl's own ApplySet prune (as a server dry-run) finds our parent valid
    (it checks the id label) and our members by their part-of label."""
    objs = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "namespace": namespace}}
            for n in ("one", "two")]
    changeset = apply_changes(kube, plan_changes(kube, app_name, [Manifest(o) for o in objs], None))
    write_inventory(kube, updated_inventory(app_name, changeset, None, SHA1, "applied"))
    parent = f"gitops-app-{app_name}"
    # kubectl only acts on ApplySets of its own tooling: pretend for this check.
    kubectl(local_cluster.kubeconfig, "annotate", "configmap", parent, "-n", INVENTORY_NAMESPACE,
            "--overwrite", f"{APPLYSET_TOOLING}=kubectl/v1.37")
    monkeypatch.setenv("KUBECTL_APPLYSET", "true")  # ApplySets are still behind a flag in kubectl
    result = _kubectl_applyset_prune(local_cluster, parent)
    assert result.returncode == 0, result.stderr
    assert "configmap/one pruned (server dry run)" in result.stdout
    assert "configmap/two pruned (server dry run)" in result.stdout


def _kubectl_applyset_prune(local_cluster, parent: str):
    placeholder = ("apiVersion: v1\nkind: ConfigMap\n"
                   f"metadata: {{name: placeholder, namespace: {INVENTORY_NAMESPACE}}}\n")
    return kubectl(local_cluster.kubeconfig, "apply", "--prune", f"--applyset=configmaps/{parent}",
                   "-n", INVENTORY_NAMESPACE, "-f", "-", "--dry-run=server", input=placeholder, check=False)
