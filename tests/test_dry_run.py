"""Server-side dry-run against a real local Kubernetes control plane: what the
server refuses comes back as Problems naming the object and its source, and
nothing is ever written."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from prefect_gitops.blocks.kubernetes_cluster import KubernetesCluster
from conftest import kubectl
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.problems import Severity
from prefect_gitops.engine.spec.policy_settings import PolicySettings
from prefect_gitops.engine.validation.validate import check_desired_state, dry_run

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(local_cluster) -> KubernetesCluster:
    return KubernetesCluster.from_kubeconfig_file(local_cluster.kubeconfig, labels={"env": "test"})


@pytest.fixture(scope="module")
def kube(cluster):
    with KubeClient.for_cluster(cluster.cluster("test")) as client:
        yield client


def deployment(name: str = "web", replicas: int = 2, app: str | None = None) -> dict:
    labels = {"app": app or name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                {"name": "web", "image": "ghcr.io/acme/web:1.2.3",
                 "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}}}]}},
        },
    }


def service(name: str = "web", port: int = 80) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": 8080}]}}


def crd(group: str) -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}],
        },
    }


def manifests(*objs: dict) -> list[Manifest]:
    return [Manifest(obj, Source(f"apps/web/{i}.yaml", 1 + 10 * i)) for i, obj in enumerate(objs)]


def exists(local_cluster, resource: str, name: str, namespace: str | None = None) -> bool:
    args = ["get", resource, name] + (["-n", namespace] if namespace else [])
    return kubectl(local_cluster.kubeconfig, *args, check=False).returncode == 0


def errors(problems):
    return [p for p in problems if p.severity is Severity.ERROR]


def test_the_block_reaches_the_cluster(cluster):
    assert cluster.server_version().startswith("v1.37")


def test_valid_objects_dry_run_clean_and_are_not_created(kube, local_cluster, namespace):
    problems = dry_run(manifests(deployment(), service(), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": namespace},
        "data": {"mode": "prod"}}), kube, default_namespace=namespace)
    assert problems == []
    for resource, name in (("deployment", "web"), ("service", "web"), ("configmap", "settings")):
        assert not exists(local_cluster, resource, name, namespace), f"{resource}/{name} was written"


def test_invalid_values_come_back_with_the_servers_message(kube, local_cluster, namespace):
    problems = dry_run(manifests(deployment(replicas=-1), service("api", port=70000)), kube,
                       default_namespace=namespace)
    by_source = {str(p.source): p for p in problems}
    assert set(by_source) == {"apps/web/0.yaml:1", "apps/web/1.yaml:11"}
    replicas = by_source["apps/web/0.yaml:1"]
    assert replicas.rule == "dryrun.invalid"
    assert replicas.object_ref == "Deployment/web"
    assert replicas.message == "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    port = by_source["apps/web/1.yaml:11"]
    assert port.rule == "dryrun.invalid" and port.message.startswith("spec.ports[0].port: Invalid value: 70000")
    assert not exists(local_cluster, "deployment", "web", namespace)


def job(image: str) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "migrate", "image": image}]}}}}


def test_a_changed_immutable_field_is_named(kube, local_cluster, namespace):
    kubectl(local_cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": [service(), deployment(), job("busybox:1.36")]}))
    cluster_ip = kubectl(local_cluster.kubeconfig, "get", "service", "web", "-n", namespace,
                         "-o", "jsonpath={.spec.clusterIP}").stdout
    octets = cluster_ip.split(".")
    moved = service()
    moved["spec"]["clusterIP"] = ".".join(octets[:3] + [str((int(octets[3]) + 1) % 250 + 2)])

    problems = dry_run(manifests(moved, deployment(app="web-v2"), job("busybox:1.37")), kube,
                       default_namespace=namespace)

    immutable = {(p.object_ref, p.message.split(":")[0]): p for p in problems if p.rule == "dryrun.immutable-field"}
    assert set(immutable) >= {
        ("Service/web", "spec.clusterIPs[0]"),
        ("Deployment/web", "spec.selector"),
        ("Job/migrate", "spec.template"),
    }
    # The server quotes the whole pod template as the invalid value; the verdict is kept.
    assert immutable[("Job/migrate", "spec.template")].message == \
        "spec.template: Invalid value: (elided): field is immutable"
    assert {str(p.source) for p in problems} == {"apps/web/0.yaml:1", "apps/web/1.yaml:11", "apps/web/2.yaml:21"}
    # Nothing was changed.
    assert kubectl(local_cluster.kubeconfig, "get", "service", "web", "-n", namespace,
                   "-o", "jsonpath={.spec.clusterIP}").stdout == cluster_ip


def test_an_unknown_kind_is_an_error(kube, namespace):
    widget = {"apiVersion": f"t{secrets.token_hex(4)}.example.com/v1", "kind": "Widget",
              "metadata": {"name": "w"}, "spec": {"size": 1}}
    problems = dry_run(manifests(widget), kube, default_namespace=namespace)
    assert [(p.rule, p.severity, str(p.source), p.object_ref) for p in problems] == [
        ("dryrun.unknown-kind", Severity.ERROR, "apps/web/0.yaml:1", "Widget/w")]
    assert "no CustomResourceDefinition" in problems[0].message


def test_a_custom_resource_whose_crd_is_in_the_same_set_is_skipped_not_an_error(kube, local_cluster, namespace):
    group = f"t{secrets.token_hex(4)}.example.com"
    widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}
    problems = dry_run(manifests(crd(group), widget), kube, default_namespace=namespace)
    assert errors(problems) == []
    assert [(p.rule, p.object_ref) for p in problems] == [("dryrun.skipped", "Widget/w")]
    assert f"widgets.{group}" in problems[0].message and "apps/web/0.yaml:1" in problems[0].message
    assert not exists(local_cluster, "crd", f"widgets.{group}")


def test_objects_in_a_namespace_of_the_same_set_are_skipped_not_an_error(kube, local_cluster):
    new_namespace = f"fresh-{secrets.token_hex(3)}"
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": new_namespace}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": new_namespace}}]
    problems = dry_run(manifests(*objs), kube)
    assert [(p.rule, p.severity, p.object_ref) for p in problems] == [
        ("dryrun.skipped", Severity.WARNING, f"ConfigMap/{new_namespace}/c")]
    assert not exists(local_cluster, "namespace", new_namespace)


def test_unknown_fields_are_refused_not_dropped(kube, namespace):
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    problems = dry_run(manifests(obj), kube, default_namespace=namespace)
    assert [(p.rule, p.message) for p in problems] == [(
        "dryrun.unknown-field",
        'spec.template.spec.containers[name="web"].imagee: field not declared in schema')]


def test_every_problem_of_many_objects_comes_back(kube, local_cluster, namespace):
    objs = [deployment(f"ok-{i}") for i in range(20)] + [deployment(f"bad-{i}", replicas=-1) for i in range(5)]
    problems = dry_run(manifests(*objs), kube, default_namespace=namespace)
    assert sorted(p.object_ref for p in problems) == [f"Deployment/bad-{i}" for i in range(5)]
    assert not exists(local_cluster, "deployment", "ok-0", namespace)


def test_the_dry_run_goes_through_the_kube_client_and_writes_nothing(kube, namespace):
    for kind in (("apps/v1", "Deployment"), ("v1", "Service")):
        kube.resource(*kind)  # discovery done: its GETs are not what is counted here
    kube.reset_requests()
    problems = dry_run(manifests(deployment(), service(), deployment("api", replicas=-1)), kube,
                       default_namespace=namespace)
    assert [p.object_ref for p in problems] == ["Deployment/api"]
    assert kube.requests == {"GET": 0, "LIST": 0, "WATCH": 0, "POST": 0, "PATCH": 3, "PUT": 0, "DELETE": 0}
    assert kube.writes == {"POST": 0, "PATCH": 0, "PUT": 0, "DELETE": 0}


def test_a_secret_value_the_server_quotes_is_masked(kube, namespace):
    value = secrets.randbelow(10**9) + 10**9  # unquoted in YAML: a number where a string belongs
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": value}}
    problems = dry_run(manifests(secret), kube, default_namespace=namespace)
    assert [(p.rule, p.object_ref) for p in problems] == [("dryrun.invalid", "Secret/creds")]
    assert str(value) not in problems[0].message
    assert problems[0].message.startswith("stringData.token: expected string") and "<masked>" in problems[0].message


def test_offline_checks_and_the_dry_run_together(kube, namespace):
    unnamed = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}
    problems = check_desired_state(manifests(deployment(replicas=-1), unnamed, deployment("fine")),
                                   "web", namespace, PolicySettings(), kube=kube)
    assert {(p.rule, str(p.source)) for p in problems} == {
        ("dryrun.invalid", "apps/web/0.yaml:1"),
        ("structure.name", "apps/web/1.yaml:11"),  # reported once, offline, and not sent
    }


@pytest.fixture
def replica_limit(local_cluster, namespace):
    """A ValidatingAdmissionPolicy, bound to the test's namespace, refusing more than 5 replicas."""
    name = f"max-replicas-{secrets.token_hex(3)}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                         "operations": ["CREATE", "UPDATE"],
                                                         "resources": ["deployments"]}]},
                 "validations": [{"expression": "object.spec.replicas <= 5", "message": "at most 5 replicas"}]},
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}},
    }
    kubectl(local_cluster.kubeconfig, "apply", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [policy, binding]}))
    yield
    kubectl(local_cluster.kubeconfig, "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy",
            name, "--wait=false", check=False)


def test_an_admission_policy_denial_is_reported(kube, namespace, replica_limit):
    deadline = time.monotonic() + 30
    while True:  # the API server picks new policies up within a second or so
        problems = dry_run(manifests(deployment(replicas=9), deployment("small", replicas=1)), kube,
                           default_namespace=namespace)
        if problems or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [(p.rule, p.object_ref) for p in problems] == [("dryrun.admission-denied", "Deployment/web")]
    assert "at most 5 replicas" in problems[0].message
