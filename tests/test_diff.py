"""The plan: created / configured / unchanged from a server-side dry-run against the
live object (server defaults never show), readable diffs, Secret values masked."""

from __future__ import annotations

import base64
import json

import pytest

from conftest import kubectl
from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ObjectChange
from prefect_gitops.engine.changes.diff import diff_markdown, field_diff, normalize, plan_changes
from prefect_gitops.engine.changes.fieldsets import BUILTIN_DEFAULTED_KEYS, reapply_changes_nothing
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.secrets import SecretMasker, scrub
from prefect_gitops.engine.state.inventory import Inventory, Member

needs_cluster = pytest.mark.cluster
CANARY = "canary-7d1e5b-do-not-leak"
CANARY_B64 = base64.b64encode(CANARY.encode()).decode()


@pytest.fixture(scope="module")
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


def deployment(namespace: str, replicas: int = 2, name: str = "web") -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": "ghcr.io/acme/web:1.2.3"}]}}}}


def service(namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}


def secret(namespace: str, **values: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": namespace},
            "stringData": values}


def manifests(*objs: dict) -> list[Manifest]:
    return [Manifest(obj, Source(f"apps/web/{i}.yaml", 1)) for i, obj in enumerate(objs)]


def apply_all(kube: KubeClient, app: str, *objs: dict) -> ChangeSet:
    """Write objects the way a sync does (the plan's bodies, with our labels)."""
    changeset = plan_changes(kube, app, manifests(*objs), None)
    for change in changeset:
        kube.apply(change.desired)
    return changeset


def everything_shown(changeset: ChangeSet, *extra: str) -> str:
    parts = [repr(changeset), diff_markdown("web", "local", changeset), *extra]
    parts += [c.diff + str(c.error) + json.dumps(c.dry_run_result) for c in changeset]
    return "\n".join(parts)


# ---- pure parts ------------------------------------------------------------------

def test_normalize_drops_what_the_server_maintains():
    live = {"apiVersion": "v1", "kind": "ConfigMap", "status": {"x": 1}, "data": {"a": "1"},
            "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "9", "generation": 2,
                         "creationTimestamp": "t", "managedFields": [{}], "labels": {"a": "b"}}}
    assert normalize(live) == {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "1"},
                               "metadata": {"name": "c", "namespace": "n", "labels": {"a": "b"}}}


def test_field_diff_is_a_readable_field_list():
    before = {"spec": {"replicas": 1, "ports": [80], "labels": {"app.kubernetes.io/name": "web", "old": "x"}}}
    after = {"spec": {"replicas": 3, "ports": [80, 443], "labels": {"app.kubernetes.io/name": "web"},
                      "paused": True}}
    assert field_diff(before, after).splitlines() == [
        '- spec.labels.old: "x"',
        "+ spec.paused: true",
        "+ spec.ports[1]: 443",
        "- spec.replicas: 1",
        "+ spec.replicas: 3",
    ]
    assert field_diff(before, before) == ""


def test_masking_hides_values_and_keeps_differences():
    masker = SecretMasker()
    live = {"apiVersion": "v1", "kind": "Secret", "data": {
        "a": base64.b64encode(b"same").decode(), "b": base64.b64encode(b"old").decode()}}
    desired = {"apiVersion": "v1", "kind": "Secret", "stringData": {"a": "same", "b": CANARY}}
    masked_live, masked_desired = masker.mask(live), masker.mask(desired)
    assert masked_live["data"]["a"] == masked_desired["stringData"]["a"]  # same value, same mask
    assert masked_live["data"]["b"] != masked_desired["stringData"]["b"]  # different values look different
    assert masked_live["data"]["a"] != masked_live["data"]["b"]
    assert set("".join(masked_desired["stringData"].values())) == {"+"}
    assert live["data"]["b"] == base64.b64encode(b"old").decode()  # the input is left alone
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "visible"}}
    assert masker.mask(configmap) is configmap


def test_the_last_applied_annotation_of_a_secret_is_masked():
    applied = json.dumps({"apiVersion": "v1", "kind": "Secret", "data": {"token": CANARY_B64}})
    obj = {"apiVersion": "v1", "kind": "Secret", "data": {"token": CANARY_B64},
           "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}}}
    masked = SecretMasker().mask(obj)
    shown = json.dumps(masked)
    assert CANARY not in shown and CANARY_B64 not in shown
    inner = json.loads(masked["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert inner["data"]["token"] == masked["data"]["token"]
    not_json = {**obj, "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": CANARY}}}
    assert CANARY not in json.dumps(SecretMasker().mask(not_json))


def test_scrub_removes_secret_values_from_messages():
    obj = {"apiVersion": "v1", "kind": "Secret", "data": {"t": CANARY_B64}, "stringData": {"u": "hunter2"}}
    text = scrub(f"invalid: {CANARY} / {CANARY_B64} / hunter2", [obj])
    assert CANARY not in text and CANARY_B64 not in text and "hunter2" not in text


# ---- is a re-apply provably a no-op? (the exact cover of our field set) --------------

def owned_deployment(**fields_of_others) -> tuple[dict, dict]:
    """A desired Deployment and its live version as our Apply left it: server
    defaults added, our field set exactly the desired fields (a port key with its
    defaulted protocol); `fields_of_others` move fields to another manager."""
    desired = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                            {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}]}]}}}}
    port = {"containerPort": 80, "protocol": "TCP"}
    ours = {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:replicas": {}, "f:selector": {},
                       "f:template": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {
                           'k:{"name":"web"}': {".": {}, "f:image": {}, "f:name": {}, "f:ports": {
                               f"k:{json.dumps(port, separators=(',', ':'))}": {".": {}, "f:containerPort": {}}}}}}}}}
    managed = [{"manager": "prefect-gitops", "operation": "Apply", "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1", "fieldsV1": ours},
               {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
                "subresource": "status", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:replicas": {}}}}]
    live = json.loads(json.dumps(desired))
    live["metadata"].update(uid="u", resourceVersion="7", generation=1, managedFields=managed,
                            annotations={"deployment.kubernetes.io/revision": "1"})
    live["spec"].update(strategy={"type": "RollingUpdate"}, revisionHistoryLimit=10)
    container = live["spec"]["template"]["spec"]["containers"][0]
    container.update(imagePullPolicy="IfNotPresent", ports=[{"containerPort": 80, "protocol": "TCP"}])
    live["status"] = {"replicas": 2}
    for field, (manager, value) in fields_of_others.items():
        ours["f:spec"].pop(f"f:{field}")
        managed.append({"manager": manager, "operation": "Update", "apiVersion": "apps/v1",
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {f"f:{field}": {}}}})
        live["spec"][field] = value
    return desired, live


def test_a_desired_body_that_is_exactly_what_we_own_reapplies_as_a_no_op():
    desired, live = owned_deployment()
    assert reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    desired["metadata"]["annotations"] = {}  # sets nothing, owns nothing: the controller's annotation stays
    assert reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    # Without knowing the server defaults the port's protocol, the port is not provably the same one.
    assert not reapply_changes_nothing(desired, live, {})


def test_a_field_removed_from_the_desired_body_is_a_change():
    desired, live = owned_deployment()
    del desired["spec"]["replicas"]  # we own it: the apply would give it up
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    desired, live = owned_deployment()
    desired["spec"]["template"]["spec"]["containers"][0]["ports"] = []
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)


def test_a_different_or_normalized_value_is_not_a_no_op():
    desired, live = owned_deployment()
    desired["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    desired, live = owned_deployment()
    desired["spec"]["replicas"] = 2.0  # the same number, not provably the same value
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    desired, live = owned_deployment()
    live["spec"]["selector"]["matchLabels"]["tier"] = "x"  # owned whole: compared whole
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    desired, live = owned_deployment()
    live["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protocol"] = "UDP"  # another item
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)


def test_a_field_owned_by_another_manager_is_not_a_no_op():
    desired, live = owned_deployment(replicas=("kubectl", 2))  # even with the desired value
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)


def test_a_field_we_own_beyond_the_desired_ones_or_no_apply_of_ours_is_not_a_no_op():
    desired, live = owned_deployment()
    live["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:paused"] = {}
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    desired, live = owned_deployment()
    live["metadata"]["managedFields"][0]["apiVersion"] = "apps/v1beta2"  # fields named in another version
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)
    desired, live = owned_deployment()
    live["metadata"]["managedFields"][0]["operation"] = "Update"
    assert not reapply_changes_nothing(desired, live, BUILTIN_DEFAULTED_KEYS)


# ---- against the cluster -------------------------------------------------------------

@needs_cluster
def test_new_objects_are_created_and_nothing_is_written(kube, namespace):
    kube.reset_requests()
    changeset = plan_changes(kube, "web", manifests(deployment(namespace), service(namespace)), None)
    assert [c.action for c in changeset] == [Action.CREATED, Action.CREATED]
    assert "+   replicas: 2" in changeset.changes[0].diff
    assert all(v == 0 for v in kube.writes.values())
    assert kube.get("apps/v1", "Deployment", "web", namespace) is None


@needs_cluster
def test_applied_objects_are_unchanged_despite_server_defaults(kube, namespace):
    apply_all(kube, "web", deployment(namespace), service(namespace))
    kube.reset_requests()
    changeset = plan_changes(kube, "web", manifests(deployment(namespace), service(namespace)), None)
    assert [(c.action, c.diff) for c in changeset] == [(Action.UNCHANGED, "")] * 2
    # Our Apply owns exactly the desired fields, with the desired values: proven
    # from one LIST per kind, without a dry-run. Nothing is ever written.
    assert kube.requests == {"GET": 0, "LIST": 2, "WATCH": 0, "POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}
    assert all(v == 0 for v in kube.writes.values())


@needs_cluster
def test_an_unchanged_object_costs_a_share_of_a_list_and_a_secret_with_string_data_a_dry_run(kube, namespace):
    objs = (service(namespace), secret(namespace, password=CANARY),
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}})
    apply_all(kube, "web", *objs)
    kube.reset_requests()
    changeset = plan_changes(kube, "web", manifests(*objs), None)
    assert {c.action for c in changeset} == {Action.UNCHANGED}
    # stringData is write-only: only the dry-run can tell; the LIST spares its GET.
    assert kube.requests == {"GET": 0, "LIST": 3, "WATCH": 0, "POST": 0, "PATCH": 1, "PUT": 0, "DELETE": 0}
    assert all(v == 0 for v in kube.writes.values())


@needs_cluster
def test_a_changed_field_is_configured_with_a_readable_diff(kube, namespace):
    apply_all(kube, "web", deployment(namespace, replicas=2))
    changed = deployment(namespace, replicas=3)
    changed["metadata"]["labels"] = {"team": "blue"}
    (change,) = plan_changes(kube, "web", manifests(changed), None)
    assert change.action is Action.CONFIGURED
    assert change.diff.splitlines() == ['+ metadata.labels.team: "blue"', "- spec.replicas: 2", "+ spec.replicas: 3"]
    assert change.dry_run_result["spec"]["replicas"] == 3
    assert kube.get("apps/v1", "Deployment", "web", namespace)["spec"]["replicas"] == 2


@needs_cluster
def test_a_field_changed_by_someone_else_is_configured_back(kube, namespace, local_cluster):
    apply_all(kube, "web", deployment(namespace, replicas=2))
    kubectl(local_cluster.kubeconfig, "scale", "deployment/web", "-n", namespace, "--replicas=5")
    (change,) = plan_changes(kube, "web", manifests(deployment(namespace, replicas=2)), None)
    assert (change.action, change.diff) == (Action.CONFIGURED, "- spec.replicas: 5\n+ spec.replicas: 2")


@needs_cluster
def test_secret_values_never_show(kube, namespace):
    created = plan_changes(kube, "web", manifests(secret(namespace, password=CANARY, user="admin")), None)
    assert created.changes[0].action is Action.CREATED and "password: ++++++++" in created.changes[0].diff
    apply_all(kube, "web", secret(namespace, password=CANARY, user="admin"))
    unchanged = plan_changes(kube, "web", manifests(secret(namespace, password=CANARY, user="admin")), None)
    assert unchanged.changes[0].action is Action.UNCHANGED
    changed = plan_changes(kube, "web", manifests(secret(namespace, password="other-value", user="admin")), None)
    (change,) = changed.changes
    assert change.action is Action.CONFIGURED
    removed, added = change.diff.splitlines()  # the user is unchanged: only the password shows
    assert removed.startswith("- data.password: ") and added.startswith("+ data.password: ")
    before, after = removed.split(": ", 1)[1], added.split(": ", 1)[1]
    assert before != after and set(before + after) == {'"', "+"}
    for changeset in (created, unchanged, changed):
        shown = everything_shown(changeset)
        assert CANARY not in shown and CANARY_B64 not in shown
        assert "YWRtaW4=" not in shown  # "admin", base64


@needs_cluster
def test_members_no_longer_desired_are_planned_for_pruning(kube, namespace):
    inventory = Inventory(app="web", members=[Member("apps/v1", "Deployment", namespace, "web"),
                                              Member("v1", "ConfigMap", namespace, "old")])
    changeset = plan_changes(kube, "web", manifests(deployment(namespace)), inventory)
    assert [(c.kind, c.action) for c in changeset] == [("Deployment", Action.CREATED), ("ConfigMap", Action.PRUNED)]
    assert changeset.changes[1].source is None and changeset.changes[1].ref == f"ConfigMap/{namespace}/old"


@needs_cluster
def test_objects_waiting_for_a_namespace_or_crd_of_the_same_sync_are_deferred(kube, namespace):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "sprockets.diff.test"},
           "spec": {"group": "diff.test", "scope": "Namespaced",
                    "names": {"plural": "sprockets", "singular": "sprocket", "kind": "Sprocket"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object"}}}]}}
    new_ns = f"{namespace}-new"
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": new_ns}}, service(new_ns), crd,
            {"apiVersion": "diff.test/v1", "kind": "Sprocket", "metadata": {"name": "s"}},
            {"apiVersion": "nowhere.test/v1", "kind": "Nothing", "metadata": {"name": "n"}}]
    changeset = plan_changes(kube, "web", manifests(*objs), None, default_namespace=namespace)
    states = [(c.kind, c.namespace, c.action, c.deferred) for c in changeset]
    assert states == [("Namespace", "", Action.CREATED, False), ("Service", new_ns, Action.CREATED, True),
                      ("CustomResourceDefinition", "", Action.CREATED, False),
                      ("Sprocket", namespace, Action.CREATED, True), ("Nothing", "", Action.SKIPPED, False)]
    assert changeset.changes[4].error.startswith("Nothing/n: plan failed: the cluster does not serve")


@needs_cluster
def test_plan_errors_name_the_object(kube, namespace):
    bad = deployment(namespace)
    bad["spec"]["replicas"] = -1
    (change,) = plan_changes(kube, "web", manifests(bad), None)
    assert change.action is Action.SKIPPED
    assert change.error.startswith(f"Deployment/{namespace}/web: dry-run failed: spec.replicas")


def test_markdown_lists_changes_and_errors():
    changeset = ChangeSet([
        ObjectChange("apps/v1", "Deployment", "web", "api", Source("apps/web/d.yaml", 3), Action.CONFIGURED,
                     diff="- spec.replicas: 1\n+ spec.replicas: 3"),
        ObjectChange("v1", "ConfigMap", "web", "cfg", Source("apps/web/c.yaml", 1), Action.UNCHANGED),
        ObjectChange("v1", "Service", "web", "old", None, Action.PRUNED, diff="- (to be deleted)"),
    ])
    text = diff_markdown("web", "staging", changeset)
    assert "1 configured, 1 unchanged, 1 pruned" in text
    assert "| configured | `Deployment/web/api` | apps/web/d.yaml:3 |" in text
    assert "```diff\n- spec.replicas: 1\n+ spec.replicas: 3\n```" in text
    assert "ConfigMap/web/cfg" not in text  # unchanged objects are only counted
