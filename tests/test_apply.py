"""Apply: only what changes is written, in stages (CRDs and namespaces, classes,
waves by kind order), with our ownership labels; immutable fields are a clear
error unless recreating is allowed; a failure stops before the next batch."""

from __future__ import annotations

import secrets

import pytest

from conftest import kubectl
from prefect_gitops.engine.changes.apply import KIND_ORDER, Stage, apply_changes, batches, stage_of, sync_wave
from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ChangeSetError, ObjectChange
from prefect_gitops.engine.changes.diff import plan_changes
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.state.inventory import APP_LABEL, APPLYSET_PART_OF_LABEL, MANAGED_BY_LABEL, app_applyset_id

needs_cluster = pytest.mark.cluster


@pytest.fixture(scope="module")
def kube(local_cluster):
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as client:
        yield client


def manifests(*objs: dict) -> list[Manifest]:
    return [Manifest(obj, Source(f"apps/web/{i}.yaml", 1)) for i, obj in enumerate(objs)]


def sync(kube: KubeClient, objs: list[dict], app: str = "web", namespace: str = "default",
         **options) -> ChangeSet:
    changeset = plan_changes(kube, app, manifests(*objs), None, default_namespace=namespace, **options)
    return apply_changes(kube, changeset, **options)


def obj(api_version: str, kind: str, name: str, namespace: str | None = None, wave: str | None = None,
        **fields) -> dict:
    meta: dict = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if wave is not None:
        meta["annotations"] = {"gitops.prefect.io/sync-wave": wave}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


def configmap(name: str, namespace: str, **fields) -> dict:
    return obj("v1", "ConfigMap", name, namespace, **fields)


def deployment(namespace: str, app: str = "web", annotations: dict | None = None) -> dict:
    labels = {"app": app}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace, "annotations": annotations or {}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": "ghcr.io/acme/web:1"}]}}}}


def crd(group: str, kind: str = "Whatsit", scope: str = "Namespaced") -> dict:
    plural = kind.lower() + "s"
    return obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", f"{plural}.{group}", spec={
        "group": group, "scope": scope,
        "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]})


def app_objects(namespace: str) -> list[dict]:
    return [
        obj("v1", "ServiceAccount", "web", namespace),
        configmap("cfg", namespace, data={"mode": "fast"}),
        obj("v1", "Secret", "creds", namespace, stringData={"password": "s3cret-value"}),
        obj("v1", "Service", "web", namespace, spec={"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        deployment(namespace),
    ]


def live(kube: KubeClient, change: ObjectChange) -> dict | None:
    return kube.get(change.api_version, change.kind, change.name, change.namespace)


def version(item: dict | None) -> int:
    return int(item["metadata"]["resourceVersion"])


# ---- pure parts ------------------------------------------------------------------

def test_stages_then_waves_then_kind_order():
    changes = [ObjectChange(c["apiVersion"], c["kind"], "ns", c["metadata"]["name"], None, Action.CREATED,
                            desired=c) for c in [
        obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "hook"),
        obj("apps/v1", "Deployment", "web"),
        obj("v1", "ConfigMap", "late", wave="1"),
        obj("v1", "ConfigMap", "early", wave="-1"),
        obj("example.com/v1", "Widget", "w"),
        obj("v1", "Service", "web"),
        obj("policy/v1", "PodDisruptionBudget", "pdb"),
        obj("v1", "ServiceAccount", "sa"),
        obj("storage.k8s.io/v1", "StorageClass", "fast"),
        obj("v1", "Namespace", "ns"),
        obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com"),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", "reader"),
        obj("v1", "Secret", "s"),
        obj("rbac.authorization.k8s.io/v1", "RoleBinding", "rb"),
    ]]
    order = [[c.name for c in batch] for batch in batches(changes)]
    assert order == [["widgets.example.com"], ["ns"], ["reader"], ["fast"], ["early"], ["sa"], ["rb"], ["s"],
                     ["web"], ["web"], ["pdb"], ["w"], ["hook"], ["late"]]


def test_stage_and_wave_rules():
    assert stage_of("apiextensions.k8s.io", "CustomResourceDefinition") is Stage.FOUNDATION
    assert stage_of("rbac.authorization.k8s.io", "ClusterRoleBinding") is Stage.FOUNDATION
    assert stage_of("rbac.authorization.k8s.io", "Role") is Stage.WAVES
    assert stage_of("networking.k8s.io", "IngressClass") is Stage.CLASSES
    assert stage_of("gateway.networking.k8s.io", "GatewayClass") is Stage.CLASSES
    assert sync_wave({"metadata": {"annotations": {"argocd.argoproj.io/sync-wave": "-2"}}}) == -2
    assert sync_wave({"metadata": {"annotations": {"gitops.prefect.io/sync-wave": "3",
                                                   "argocd.argoproj.io/sync-wave": "9"}}}) == 3
    assert sync_wave({"metadata": {"annotations": {"gitops.prefect.io/sync-wave": "soon"}}}) == 0
    assert sync_wave({}) == 0
    assert KIND_ORDER[-1] == "ValidatingWebhookConfiguration"


# ---- against the cluster -------------------------------------------------------------

@needs_cluster
def test_first_apply_creates_all_and_a_second_writes_nothing(kube, namespace, local_cluster):
    first = sync(kube, app_objects(namespace), namespace=namespace)
    assert first.ok and {(c.action, c.done) for c in first} == {(Action.CREATED, True)}
    # What the apply's answer shows Current the health wait does not read again: all but the Deployment.
    assert [c.kind for c in first if not c.current_when_applied] == ["Deployment"]
    for change in first:
        labels = live(kube, change)["metadata"]["labels"]
        assert labels[MANAGED_BY_LABEL] == "prefect-gitops" and labels[APP_LABEL] == "web"
        assert labels[APPLYSET_PART_OF_LABEL] == app_applyset_id("web")
    kubectl(local_cluster.kubeconfig, "rollout", "status", "deployment/web", "-n", namespace, "--timeout=30s")
    versions = {c.ref: version(live(kube, c)) for c in first}

    kube.reset_requests()
    plan = plan_changes(kube, "web", manifests(*app_objects(namespace)), None, default_namespace=namespace)
    assert {c.action for c in plan} == {Action.UNCHANGED}
    planned = kube.reset_requests()
    apply_changes(kube, plan)
    assert kube.requests == dict.fromkeys(planned, 0)  # applying nothing costs nothing
    # One LIST per kind; a dry-run only for the Secret (its stringData is write-only).
    assert planned == {"GET": 0, "LIST": 5, "WATCH": 0, "POST": 0, "PATCH": 1, "PUT": 0, "DELETE": 0}
    assert {c.ref: version(live(kube, c)) for c in plan} == versions


@needs_cluster
def test_a_crd_and_its_custom_resources_in_one_sync(kube, namespace, local_cluster):
    group, new_ns = f"g{secrets.token_hex(3)}.apply.test", f"{namespace}-cr"
    objs = [crd(group), obj("v1", "Namespace", new_ns),
            obj(f"{group}/v1", "Whatsit", "first", new_ns, spec={"size": 1}),
            obj(f"{group}/v1", "Whatsit", "second", namespace, spec={"size": 2})]
    try:
        changeset = sync(kube, objs, namespace=namespace)
        assert changeset.ok, changeset.errors()
        assert all(c.done and c.action is Action.CREATED for c in changeset)
        assert live(kube, changeset.get("Whatsit", "first", new_ns))["spec"] == {"size": 1}
        again = plan_changes(kube, "web", manifests(*objs), None, default_namespace=namespace)
        assert {c.action for c in again} == {Action.UNCHANGED}
    finally:
        kubectl(local_cluster.kubeconfig, "delete", "namespace", new_ns, "--wait=false", check=False)
        kubectl(local_cluster.kubeconfig, "delete", "crd", f"whatsits.{group}", "--wait=false", check=False)


@needs_cluster
def test_objects_are_written_in_stage_wave_and_kind_order(kube, namespace, local_cluster):
    suffix, group = secrets.token_hex(3), f"g{secrets.token_hex(3)}.order.test"
    objs = [
        obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", f"hook-{suffix}", webhooks=[]),
        obj(f"{group}/v1", "Whatsit", "w", namespace),
        configmap("late", namespace, wave="1"),
        obj("v1", "Service", "web", namespace, spec={"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        obj("v1", "Secret", "s", namespace),
        configmap("cfg", namespace),
        obj("v1", "ServiceAccount", "sa", namespace),
        configmap("early", namespace, wave="-1"),
        obj("scheduling.k8s.io/v1", "PriorityClass", f"prio-{suffix}", value=10),
        obj("rbac.authorization.k8s.io/v1", "ClusterRole", f"reader-{suffix}", rules=[]),
        crd(group),
    ]
    try:
        changeset = sync(kube, objs, namespace=namespace)
        assert changeset.ok, changeset.errors()
        created = [(c.kind, c.name, version(live(kube, c))) for c in changeset if c.kind != "CustomResourceDefinition"]
        by_version = [(kind, name) for kind, name, _ in sorted(created, key=lambda t: t[2])]
        assert by_version == [("ClusterRole", f"reader-{suffix}"), ("PriorityClass", f"prio-{suffix}"),
                              ("ConfigMap", "early"), ("ServiceAccount", "sa"), ("ConfigMap", "cfg"),
                              ("Secret", "s"), ("Service", "web"), ("Whatsit", "w"),
                              ("ValidatingWebhookConfiguration", f"hook-{suffix}"), ("ConfigMap", "late")]
    finally:
        for kind, name in (("validatingwebhookconfiguration", f"hook-{suffix}"), ("priorityclass", f"prio-{suffix}"),
                           ("clusterrole", f"reader-{suffix}"), ("crd", f"whatsits.{group}")):
            kubectl(local_cluster.kubeconfig, "delete", kind, name, "--wait=false", check=False)


@needs_cluster
def test_an_object_made_by_hand_is_never_touched(kube, namespace, local_cluster):
    kubectl(local_cluster.kubeconfig, "create", "configmap", "by-hand", "-n", namespace, "--from-literal=a=1")
    before = kube.get("v1", "ConfigMap", "by-hand", namespace)
    sync(kube, [configmap("ours", namespace, data={"a": "1"})], namespace=namespace)
    sync(kube, [configmap("ours", namespace, data={"a": "2"})], namespace=namespace)
    after = kube.get("v1", "ConfigMap", "by-hand", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert APP_LABEL not in (after["metadata"].get("labels") or {})


@needs_cluster
def test_an_immutable_field_is_a_clear_error_and_nothing_is_written(kube, namespace):
    sync(kube, [deployment(namespace, app="web")], namespace=namespace)
    before = kube.get("apps/v1", "Deployment", "web", namespace)
    kube.reset_requests()
    changeset = sync(kube, [deployment(namespace, app="web-v2")], namespace=namespace)
    (change,) = changeset
    assert change.error.startswith(f"Deployment/{namespace}/web: dry-run failed: spec.selector")
    assert "immutable" in change.error and "gitops.prefect.io/recreate" in change.error
    assert not change.done and all(v == 0 for v in kube.writes.values())
    with pytest.raises(ChangeSetError, match=f"Deployment/{namespace}/web"):
        changeset.raise_for_errors()
    after = kube.get("apps/v1", "Deployment", "web", namespace)  # its status may have changed, nothing else
    assert (after["metadata"]["uid"], after["metadata"]["generation"], after["spec"]) == (
        before["metadata"]["uid"], before["metadata"]["generation"], before["spec"])


@needs_cluster
def test_an_immutable_field_is_recreated_when_annotated(kube, namespace):
    recreate = {"gitops.prefect.io/recreate": "true"}
    sync(kube, [deployment(namespace, app="web", annotations=recreate)], namespace=namespace)
    uid = kube.get("apps/v1", "Deployment", "web", namespace)["metadata"]["uid"]
    changeset = sync(kube, [deployment(namespace, app="web-v2", annotations=recreate)], namespace=namespace)
    (change,) = changeset
    assert changeset.ok and change.recreate and change.done and change.action is Action.CONFIGURED
    after = kube.get("apps/v1", "Deployment", "web", namespace)
    assert after["metadata"]["uid"] != uid
    assert after["spec"]["selector"] == {"matchLabels": {"app": "web-v2"}}


@needs_cluster
def test_allow_recreate_recreates_an_immutable_configmap(kube, namespace):
    sync(kube, [configmap("frozen", namespace, immutable=True, data={"a": "1"})], namespace=namespace)
    refused = sync(kube, [configmap("frozen", namespace, immutable=True, data={"a": "2"})], namespace=namespace)
    assert "data" in refused.changes[0].error and "immutable" in refused.changes[0].error
    changeset = sync(kube, [configmap("frozen", namespace, immutable=True, data={"a": "2"})],
                     namespace=namespace, allow_recreate=True)
    assert changeset.ok and changeset.changes[0].recreate
    assert kube.get("v1", "ConfigMap", "frozen", namespace)["data"] == {"a": "2"}


@needs_cluster
def test_a_failure_part_way_stops_before_the_next_batch(kube, namespace, local_cluster):
    group = f"g{secrets.token_hex(3)}.fail.test"
    objs = [crd(group), configmap("first", namespace),
            obj(f"{group}/v1", "Whatsit", "bad", namespace, spec={"size": "big"}),  # not an integer
            configmap("after", namespace, wave="5")]
    try:
        changeset = sync(kube, objs, namespace=namespace)
        states = {c.name: (c.done, bool(c.error)) for c in changeset}
        assert states == {f"whatsits.{group}": (True, False), "first": (True, False),
                          "bad": (False, True), "after": (False, False)}
        assert changeset.get("Whatsit", "bad", namespace).error.startswith(
            f"Whatsit/{namespace}/bad: dry-run failed: spec.size")
        assert kube.get("v1", "ConfigMap", "after", namespace) is None
        with pytest.raises(ChangeSetError, match=f"not done: ConfigMap/{namespace}/after"):
            changeset.raise_for_errors()
    finally:
        kubectl(local_cluster.kubeconfig, "delete", "crd", f"whatsits.{group}", "--wait=false", check=False)


@needs_cluster
def test_a_plan_with_errors_writes_nothing(kube, namespace):
    bad = configmap("bad", namespace, data={"a": 1})  # not a string
    kube.reset_requests()
    changeset = sync(kube, [configmap("good", namespace), bad], namespace=namespace)
    assert [c.done for c in changeset] == [False, False] and changeset.changes[1].error
    assert all(v == 0 for v in kube.writes.values())
    assert kube.get("v1", "ConfigMap", "good", namespace) is None
