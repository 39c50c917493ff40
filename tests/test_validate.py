"""Offline validation: every structure, schema and policy rule fires on a bad object
and stays quiet on a good one, and all problems come back together, each naming
file:line, the object and the rule. No cluster needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from prefect_gitops.blocks.kubernetes_cluster import KubernetesCluster
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.problems import Severity
from prefect_gitops.engine.spec.policy_settings import Enforcement, PolicySettings
from prefect_gitops.engine.validation import schema
from prefect_gitops.engine.validation.validate import builtin_validator, parse_image, validate
from prefect_gitops.localcluster.pki import write_pki

ROOT = Path(__file__).resolve().parent.parent

APP, NAMESPACE = "shop", "shop"


def deployment(name: str = "web", **pod_spec) -> dict:
    """A Deployment that passes every rule under the default policy."""
    container = {
        "name": "web", "image": "ghcr.io/acme/web:1.2.3",
        "ports": [{"containerPort": 8080}],
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], **pod_spec},
            },
        },
    }


def pod_spec_of(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def container_of(obj: dict) -> dict:
    return pod_spec_of(obj)["containers"][0]


def service(name: str = "web") -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]}}


def crd(scope: str = "Namespaced") -> dict:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": scope,
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object", "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1},
                            "port": {"x-kubernetes-int-or-string": True},
                            "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }},
                }},
            }],
        },
    }


def widget(**spec) -> dict:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
            "spec": {"size": 3, **spec}}


def run(*objs: dict, policy: PolicySettings | None = None, **kwargs):
    manifests = [Manifest(obj, Source(f"apps/shop/{i}.yaml", 1 + 10 * i)) for i, obj in enumerate(objs)]
    return validate(manifests, APP, NAMESPACE, policy or PolicySettings(), **kwargs)


def rules(problems) -> set[str]:
    return {p.rule for p in problems}


def only(problems, rule: str):
    found = [p for p in problems if p.rule == rule]
    assert found, f"no {rule} among {[str(p) for p in problems]}"
    return found


# --- good objects stay quiet ---------------------------------------------------------


GOOD = {
    "deployment": deployment(),
    "service": service(),
    "configmap": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": NAMESPACE},
                  "data": {"a.yaml": "x: 1"}},
    "role with a colon": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                          "metadata": {"name": "system:shop-reader"},
                          "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    "own namespace": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    "cronjob": {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
                "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "job", "image": "busybox:1.37",
                                    "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}]}}}}}},
    "crd": crd(),
    "custom resource with its crd": widget(port="http", extra={"anything": [1, 2]}),
    "custom resource without a crd": {"apiVersion": "other.example.com/v1", "kind": "Gadget",
                                      "metadata": {"name": "g"}, "spec": {"whatever": True}},
    "annotations": {"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "annotated", "annotations": {"example.com/Owner": "team shop"}}},
}


def test_good_objects_have_no_problems():
    assert run(*GOOD.values()) == []


# --- structure -----------------------------------------------------------------------


@pytest.mark.parametrize("mutate, rule, words", [
    (lambda o: o.pop("apiVersion"), "structure.api-version", "apiVersion is missing"),
    (lambda o: o.update(apiVersion=1), "structure.api-version", "must be a non-empty string, got integer"),
    (lambda o: o.update(apiVersion="apps/v1/x"), "structure.api-version", "not of the form"),
    (lambda o: o.pop("kind"), "structure.kind", "kind is missing"),
    (lambda o: o.update(kind="config-map"), "structure.kind", "CamelCase"),
    (lambda o: o.update(metadata=[]), "structure.metadata", "must be a mapping"),
    (lambda o: o["metadata"].pop("name"), "structure.name", "metadata.name is missing"),
    (lambda o: o["metadata"].update(name="Web_1"), "structure.name", "DNS subdomain"),
    (lambda o: o["metadata"].update(name="a" * 254), "structure.name", "253"),
    (lambda o: o["metadata"].update(namespace="shop.eu"), "structure.namespace", "DNS label"),
    (lambda o: o["metadata"].update(namespace=7), "structure.namespace", "must be a string"),
    (lambda o: o["metadata"]["labels"].update({"-bad": "x"}), "structure.labels", "'-bad'"),
    (lambda o: o["metadata"]["labels"].update({"Example.com/x": "y"}), "structure.labels", "prefix"),
    (lambda o: o["metadata"]["labels"].update({"tier": "front end"}), "structure.labels", "'front end'"),
    (lambda o: o["metadata"]["labels"].update({"version": 2}), "structure.labels", "got integer 2 (quote it)"),
    (lambda o: o["metadata"]["labels"].update({"long": "x" * 64}), "structure.labels", "63"),
    (lambda o: o["metadata"].update(annotations={"example.com/enabled": True}), "structure.annotations",
     "got boolean"),
    (lambda o: o["metadata"].update(annotations={"a b": "x"}), "structure.annotations", "'a b'"),
    (lambda o: o["metadata"].update(annotations={"big": "x" * (256 * 1024)}), "structure.annotations",
     "more than the limit"),
])
def test_structure_rule_fires(mutate, rule, words):
    obj = deployment()
    mutate(obj)
    problem = only(run(obj), rule)[0]
    assert words in problem.message
    assert problem.source == Source("apps/shop/0.yaml", 1)


@pytest.mark.parametrize("kind, api_version, name, fires", [
    ("Service", "v1", "1web", True),  # a DNS-1035 label must start with a letter
    ("ConfigMap", "v1", "1web", False),
    ("Namespace", "v1", "shop.eu", True),  # a DNS label: no dots
    ("ConfigMap", "v1", "shop.eu", False),
    ("ClusterRole", "rbac.authorization.k8s.io/v1", "system:aggregate-to-edit", False),
    ("ClusterRole", "rbac.authorization.k8s.io/v1", "a/b", True),
])
def test_names_follow_the_rule_of_their_kind(kind, api_version, name, fires):
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}
    policy = PolicySettings(allow_cluster_rbac=True, allowed_namespaces=["*"])
    assert ("structure.name" in rules(run(obj, policy=policy))) == fires


def test_the_same_object_twice_names_both_sources():
    again = deployment()
    again["metadata"]["namespace"] = NAMESPACE  # the default namespace, made explicit
    problems = only(run(deployment(), service(), again), "structure.duplicate")
    assert len(problems) == 1
    assert problems[0].source == Source("apps/shop/2.yaml", 21)
    assert "apps/shop/2.yaml:21" in problems[0].message and "apps/shop/0.yaml:1" in problems[0].message


def test_same_name_in_other_kinds_or_namespaces_is_no_duplicate():
    other = deployment()
    other["metadata"]["namespace"] = "shop-canary"
    policy = PolicySettings(allowed_namespaces=["shop-canary"])
    assert run(deployment(), other, service(), policy=policy) == []


def test_a_document_that_is_not_a_mapping():
    problems = validate([Manifest(["a", "list"], Source("x.yaml", 4))], APP, NAMESPACE, PolicySettings())
    assert [(p.rule, str(p.source)) for p in problems] == [("structure.not-an-object", "x.yaml:4")]


# --- schema --------------------------------------------------------------------------


def test_unknown_field_names_its_json_path():
    obj = deployment()
    container_of(obj)["imagee"] = "nginx:1.27"
    problem = only(run(obj), "schema.unknown-field")[0]
    assert problem.message == "spec.template.spec.containers[0].imagee: unknown field"
    assert problem.object_ref == "Deployment/web"
    assert str(problem) == ("apps/shop/0.yaml:1: Deployment/web: spec.template.spec.containers[0].imagee: "
                            "unknown field [schema.unknown-field]")


@pytest.mark.parametrize("mutate, rule, message", [
    (lambda o: o["spec"].update(replicas="2"), "schema.type", 'spec.replicas: expected integer, got string "2"'),
    (lambda o: container_of(o)["ports"][0].update(containerPort=[80]), "schema.type",
     "spec.template.spec.containers[0].ports[0].containerPort: expected integer, got array"),
    (lambda o: o["spec"].pop("selector"), "schema.required", "spec.selector: required field missing"),
    (lambda o: container_of(o).pop("name"), "schema.required",
     "spec.template.spec.containers[0].name: required field missing"),
    (lambda o: o["metadata"].update(lables={}), "schema.unknown-field", "metadata.lables: unknown field"),
    (lambda o: container_of(o)["resources"]["limits"].update(cpu=[1]), "schema.type",
     'spec.template.spec.containers[0].resources.limits.cpu: expected string or number, got array'),
])
def test_schema_rule_fires(mutate, rule, message):
    obj = deployment()
    mutate(obj)
    assert message in [p.message for p in only(run(obj), rule)]


def test_int_or_string_accepts_both():
    by_name, by_number = service(), service("api")
    by_number["spec"]["ports"][0]["targetPort"] = 8080
    assert run(by_name, by_number) == []


def test_an_api_version_this_kubernetes_does_not_serve():
    obj = deployment()
    obj["apiVersion"] = "apps/v1beta1"
    problem = only(run(obj), "schema.unknown-api-version")[0]
    assert "apps/v1" in problem.message and "1.37" in problem.message


def test_a_kind_a_builtin_group_does_not_have():
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingres", "metadata": {"name": "x"}}
    assert rules(run(obj)) == {"schema.unknown-kind"}


def test_a_custom_resource_is_checked_against_its_crd_in_the_same_set():
    bad = widget(size="big", colour="red")
    del bad["spec"]["size"]
    bad["spec"]["port"] = [1]
    problems = run(crd(), bad)
    assert {p.message for p in problems} == {
        "spec.size: required field missing",
        "spec.colour: unknown field",
        "spec.port: expected integer or string, got array",
    }
    assert run(crd(), widget(size=0))[0].message.startswith("spec.size: 0 is less than the minimum of 1")


def test_schemas_of_an_older_kubernetes_version():
    # autoscaling/v2beta2 was served until Kubernetes 1.25.
    hpa = {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
           "spec": {"maxReplicas": 5, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}}
    assert run(hpa, kubernetes_version="1.25") == []
    assert rules(run(hpa, kubernetes_version="v1.26.3")) == {"schema.unknown-api-version"}


def test_a_newer_kubernetes_than_the_schemas_is_a_warning():
    problems = run(deployment(), kubernetes_version="1.99")
    assert [(p.rule, p.severity) for p in problems] == [("schema.version-unsupported", Severity.WARNING)]


def test_schema_validators_are_built_once_per_kind():
    validate_once = builtin_validator("v1.37.0-local-strict", "apps", "v1", "Deployment")
    assert builtin_validator("v1.37.0-local-strict", "apps", "v1", "Deployment") is validate_once
    assert builtin_validator("v1.37.0-local-strict", "example.com", "v1", "Widget") is None


def test_an_object_found_valid_is_not_checked_again_until_it_changes():

    obj = deployment("kept")
    assert run(obj) == []
    assert schema._ValidBuiltins.key("v1.37.0-local-strict", Manifest(obj, Source("x.yaml", 1))) in schema._valid_builtins
    container_of(obj)["imagee"] = "x"  # the same dict, changed in place
    assert rules(run(obj)) == {"schema.unknown-field"}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    assert run(secret) == []
    assert schema._ValidBuiltins.key("v1.37.0-local-strict", Manifest(secret, Source("x.yaml", 1))) is None



_REMEMBERING_COMMAND = """
import json, sys
from prefect_gitops.engine.objects import Manifest, Source
from prefect_gitops.engine.spec.policy_settings import PolicySettings
from prefect_gitops.engine.validation import schema
from prefect_gitops.engine.validation.validate import validate
objects = json.loads(sys.argv[1])
manifests = [Manifest(obj, Source("x.yaml", n + 1)) for n, obj in enumerate(objects)]
keys = [schema._ValidBuiltins.key("v1.37.0-local-strict", m) for m in manifests]
known_before = [key is not None and key in schema._valid_builtins for key in keys]
problems = validate(manifests, "web", "web", PolicySettings(), "1.37")
print(json.dumps({"known_before": known_before, "rules": sorted(p.rule for p in problems)}))
"""


def validate_in_a_process(home: Path, *objects: dict, code: Path = ROOT) -> dict:
    """A command of its own validating `objects` with the engine found in `code`,
    $GITOPS_HOME at `home`: which were known valid before, and the rules broken."""
    env = {**os.environ, "GITOPS_HOME": str(home), "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(code), str(ROOT)]))}
    out = subprocess.run([sys.executable, "-c", _REMEMBERING_COMMAND, json.dumps(objects)], env=env, cwd=code,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_objects_found_valid_are_remembered_for_the_next_command(tmp_path):
    """The digests go to $GITOPS_HOME/valid-objects (0600): another process skips
    those objects' schema checks, never one not found valid, nor any Secret."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "web"},
              "stringData": {"password": "hunter2"}}
    changed = deployment("api")
    container_of(changed)["imagee"] = "x"

    def command(*objects: dict) -> dict:
        return validate_in_a_process(tmp_path, *objects)

    first = command(deployment("web"), secret)
    assert first == {"known_before": [False, False], "rules": []}
    kept = tmp_path / "valid-objects"
    assert kept.stat().st_mode & 0o777 == 0o600 and kept.stat().st_size == 16  # the Deployment only
    assert command(deployment("web"), secret, changed) == {"known_before": [True, False, False],
                                                          "rules": ["schema.unknown-field"]}
    assert kept.stat().st_size == 16  # nothing new found valid


def test_objects_found_valid_by_other_code_are_checked_again(tmp_path):
    """The digests are keyed on the code that judged the objects: a checkout whose
    validation rules differ (here by one comment) shares $GITOPS_HOME and finds
    none of this one's digests, and this one still finds its own."""
    other = tmp_path / "other-checkout"
    engine = other / "prefect_gitops" / "engine"  # found on its PYTHONPATH before the installed one
    shutil.copytree(ROOT / "engine", engine, ignore=shutil.ignore_patterns("__pycache__"))
    with (engine / "validation" / "schema.py").open("a") as rules:
        rules.write("# another version of the rules\n")
    home = tmp_path / "home"
    assert validate_in_a_process(home, deployment("web"))["known_before"] == [False]
    assert validate_in_a_process(home, deployment("web"), code=other)["known_before"] == [False]
    assert validate_in_a_process(home, deployment("web"))["known_before"] == [True]
    assert validate_in_a_process(home, deployment("web"), code=other)["known_before"] == [True]


def test_schema_checks_agree_with_kubernetes_validate():
    """Our cached validators find what kubernetes-validate finds (its speed against
    one validate() call per object: bench/bench_validate.py)."""
    good = deployment()
    unknown_field, wrong_type, missing = deployment(), deployment(), deployment()
    container_of(unknown_field)["imagee"] = "x"
    container_of(wrong_type)["ports"] = [{"containerPort": "http"}]
    del container_of(missing)["name"]
    for obj in (good, unknown_field, wrong_type, missing):
        try:
            kubernetes_validate.validate(obj, "1.37", strict=True)
            theirs = True
        except kubernetes_validate.ValidationError:
            theirs = False
        ours = not [p for p in run(obj, policy=PolicySettings(resource_limits=Enforcement.OFF))
                    if p.rule.startswith("schema.")]
        assert ours == theirs, (obj, ours, theirs)
    assert [True, False, False, False] == [
        not run(o, policy=PolicySettings(resource_limits=Enforcement.OFF)) for o in (good, unknown_field, wrong_type, missing)]


# --- policy --------------------------------------------------------------------------


def with_pod(**pod_spec) -> dict:
    return deployment(**pod_spec)


def with_container(**fields) -> dict:
    obj = deployment()
    container_of(obj).update(fields)
    return obj


PRIVILEGED = {"securityContext": {"privileged": True}}
HOST_PATH = {"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}


DEFAULT = PolicySettings()
ONLY_GHCR = PolicySettings(allowed_registries=["ghcr.io"])
ONLY_DEPLOYMENTS = PolicySettings(allowed_kinds=["Deployment"])


@pytest.mark.parametrize("obj, rule, forbidden_by, allowed_by", [
    (with_container(**PRIVILEGED), "policy.privileged", DEFAULT, PolicySettings(allow_privileged=True)),
    (with_pod(**HOST_PATH), "policy.host-path", DEFAULT, PolicySettings(allow_host_path=True)),
    (with_pod(hostNetwork=True), "policy.host-network", DEFAULT, PolicySettings(allow_host_network=True)),
    (with_pod(hostPID=True), "policy.host-network", DEFAULT, PolicySettings(allow_host_network=True)),
    (with_pod(hostIPC=True), "policy.host-network", DEFAULT, PolicySettings(allow_host_network=True)),
    (with_container(image="ghcr.io/acme/web:latest"), "policy.image-tag", DEFAULT,
     PolicySettings(allow_latest_tag=True)),
    (with_container(image="ghcr.io/acme/web"), "policy.image-tag", DEFAULT, PolicySettings(allow_latest_tag=True)),
    (with_container(image="localhost:5000/web"), "policy.image-tag", DEFAULT, PolicySettings(allow_latest_tag=True)),
    (with_container(image="nginx:1.27"), "policy.image-registry", ONLY_GHCR,
     PolicySettings(allowed_registries=["docker.io"])),
    (with_container(resources={}), "policy.resource-limits", DEFAULT,
     PolicySettings(resource_limits=Enforcement.OFF)),
    ({**deployment(), "metadata": {"name": "web", "namespace": "kube-system"}}, "policy.namespace-not-allowed",
     DEFAULT, PolicySettings(allowed_namespaces=["kube-system"])),
    ({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}, "policy.namespace-not-allowed",
     DEFAULT, PolicySettings(allowed_namespaces=["other"])),
    ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "shop"}},
     "policy.cluster-rbac", DEFAULT, PolicySettings(allow_cluster_rbac=True)),
    ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "shop"},
      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}},
     "policy.cluster-rbac", DEFAULT, PolicySettings(allow_cluster_rbac=True)),
    (service(), "policy.kind-not-allowed", ONLY_DEPLOYMENTS, PolicySettings(allowed_kinds=["Deployment", "Service"])),
])
def test_policy_rule_fires_and_its_setting_allows_it(obj, rule, forbidden_by, allowed_by):
    problem = only(run(obj, policy=forbidden_by), rule)[0]
    assert problem.source == Source("apps/shop/0.yaml", 1) and problem.object_ref
    assert rule not in rules(run(obj, policy=allowed_by))


@pytest.mark.parametrize("api_version, kind, path", [
    ("v1", "Pod", ["spec"]),
    ("v1", "ReplicationController", ["spec", "template", "spec"]),
    ("apps/v1", "Deployment", ["spec", "template", "spec"]),
    ("apps/v1", "StatefulSet", ["spec", "template", "spec"]),
    ("apps/v1", "DaemonSet", ["spec", "template", "spec"]),
    ("apps/v1", "ReplicaSet", ["spec", "template", "spec"]),
    ("batch/v1", "Job", ["spec", "template", "spec"]),
    ("batch/v1", "CronJob", ["spec", "jobTemplate", "spec", "template", "spec"]),
])
def test_every_workload_kind_is_covered(api_version, kind, path):
    pod = {"hostNetwork": True, **HOST_PATH,
           "initContainers": [{"name": "init", "image": "busybox", **PRIVILEGED}],
           "containers": [{"name": "main", "image": "ghcr.io/acme/app:1.0"}],
           "ephemeralContainers": [{"name": "debug", "image": "busybox:1.37", **PRIVILEGED}]}
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}}
    node = obj
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = pod
    problems = run(obj)
    prefix = ".".join(path)
    assert {p.message.split(":")[0] for p in only(problems, "policy.privileged")} == {
        f"{prefix}.initContainers[0].securityContext.privileged",
        f"{prefix}.ephemeralContainers[0].securityContext.privileged",
    }
    assert only(problems, "policy.image-tag")[0].message.startswith(f"{prefix}.initContainers[0].image")
    assert len(only(problems, "policy.host-path")) == len(only(problems, "policy.host-network")) == 1
    # Ephemeral containers may not have resources: only init and main are asked for limits.
    assert len(only(problems, "policy.resource-limits")) == 2


def test_resource_limits_require_warn_off():
    obj = with_container(resources={"limits": {"cpu": "1"}})
    warned = only(run(obj), "policy.resource-limits")[0]  # the default is warn
    assert warned.severity is Severity.WARNING
    assert warned.message == ("spec.template.spec.containers[0].resources.limits: "
                              "container 'web' has no memory limit")
    required = only(run(obj, policy=PolicySettings(resource_limits=Enforcement.REQUIRE)), "policy.resource-limits")
    assert required[0].severity is Severity.ERROR
    assert run(obj, policy=PolicySettings(resource_limits=Enforcement.OFF)) == []


def test_pod_level_limits_cover_the_containers():
    obj = with_container(resources={})
    pod_spec_of(obj)["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    assert "policy.resource-limits" not in rules(run(obj))


def test_allowed_namespaces_extend_the_default_one_and_take_globs():
    objs = []
    for ns in ("shop", "shop-canary", "shop-eu-1"):
        obj = deployment(f"web-{ns}")
        obj["metadata"]["namespace"] = ns
        objs.append(obj)
    assert run(*objs, policy=PolicySettings(allowed_namespaces=["shop-canary", "shop-eu-*"])) == []
    assert len(run(*objs)) == 2


def test_cluster_scoped_objects_have_no_namespace_to_check():
    objs = [crd("Cluster"), {**widget(), "metadata": {"name": "w"}},
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
             "provisioner": "example.com/disk"}]
    assert run(*objs) == []


def test_kinds_by_name_or_with_their_group():
    policy = PolicySettings(allowed_kinds=["Deployment", "Widget.example.com", "CustomResourceDefinition"])
    assert run(deployment(), crd(), widget(), policy=policy) == []
    assert rules(run(service(), policy=policy)) == {"policy.kind-not-allowed"}


@pytest.mark.parametrize("image, registry, repository, tag, digest", [
    ("nginx", "docker.io", "library/nginx", "", ""),
    ("nginx:1.27", "docker.io", "library/nginx", "1.27", ""),
    ("acme/web:2", "docker.io", "acme/web", "2", ""),
    ("index.docker.io/acme/web:2", "docker.io", "acme/web", "2", ""),
    ("ghcr.io/acme/web:1.2.3", "ghcr.io", "acme/web", "1.2.3", ""),
    ("localhost:5000/web", "localhost:5000", "web", "", ""),
    ("registry.example.com:443/team/web:v1@sha256:abc", "registry.example.com:443", "team/web", "v1", "sha256:abc"),
    ("web@sha256:abc", "docker.io", "library/web", "", "sha256:abc"),
])
def test_parse_image(image, registry, repository, tag, digest):
    ref = parse_image(image)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)


def test_a_digest_pins_an_image():
    assert run(with_container(image="ghcr.io/acme/web@sha256:" + "a" * 64)) == []


def test_registries_match_by_host_or_repository_prefix():
    policy = PolicySettings(allowed_registries=["ghcr.io/acme", "docker.io"])
    good = [with_container(image=i) for i in ("ghcr.io/acme/web:1", "nginx:1.27", "index.docker.io/x/y:1")]
    assert run(*[{**o, "metadata": {"name": f"w{i}"}} for i, o in enumerate(good)], policy=policy) == []
    assert rules(run(with_container(image="ghcr.io/evil/web:1"), policy=policy)) == {"policy.image-registry"}


# --- all at once ---------------------------------------------------------------------


def test_every_problem_comes_back_at_once_naming_file_line_object_and_rule():
    bad_web = with_container(image="nginx:latest", imagee="typo", **PRIVILEGED)
    bad_web["metadata"]["namespace"] = "prod"
    bad_service = service("1api")
    bad_service["spec"]["ports"][0]["port"] = "eighty"
    objs = [bad_web, bad_service, deployment("fine"),
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "admin-ish"}},
            {"kind": "ConfigMap", "metadata": {"name": "orphan"}}, deployment("fine")]
    problems = run(*objs, policy=PolicySettings(resource_limits=Enforcement.REQUIRE))
    found = {(p.rule, str(p.source), p.object_ref) for p in problems}
    assert found == {
        ("schema.unknown-field", "apps/shop/0.yaml:1", "Deployment/prod/web"),
        ("policy.namespace-not-allowed", "apps/shop/0.yaml:1", "Deployment/prod/web"),
        ("policy.privileged", "apps/shop/0.yaml:1", "Deployment/prod/web"),
        ("policy.image-tag", "apps/shop/0.yaml:1", "Deployment/prod/web"),
        ("structure.name", "apps/shop/1.yaml:11", "Service/1api"),
        ("schema.type", "apps/shop/1.yaml:11", "Service/1api"),
        ("policy.cluster-rbac", "apps/shop/3.yaml:31", "ClusterRole/admin-ish"),
        ("structure.api-version", "apps/shop/4.yaml:41", "ConfigMap/orphan"),
        ("structure.duplicate", "apps/shop/5.yaml:51", "Deployment/fine"),
    }
    assert all(p.severity is Severity.ERROR for p in problems)


def test_a_thousand_objects_share_the_schemas_and_one_validator_per_kind():
    """What keeps validation fast (bench/bench_validate.py measures it): the schemas
    are loaded once per Kubernetes version and one validator is built per kind."""
    objs = [deployment(f"web-{i}") if i % 2 else
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c-{i}"}, "data": {"k": "v"}}
            for i in range(1000)]
    run(deployment())  # load the schemas
    schemas_loaded, validators_built = schema.builtin_schemas.cache_info().misses, builtin_validator.cache_info().misses
    assert run(*objs) == []
    assert schema.builtin_schemas.cache_info().misses == schemas_loaded
    assert builtin_validator.cache_info().misses - validators_built <= 1  # the ConfigMap's, if not built before
    assert builtin_validator.cache_info().hits >= 999


# --- the cluster block keeps its kubeconfig secret --------------------------------------


KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "local",
    "clusters": [{"name": "local", "cluster": {"server": "https://127.0.0.1:6443",
                                                "certificate-authority": "ca.crt"}}],
    "users": [{"name": "admin", "user": {"token": "s3cr3t-token"}}],
    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}},
                 {"name": "other", "context": {"cluster": "local", "user": "admin", "namespace": "x"}}],
}


@pytest.fixture
def kubeconfig_file(tmp_path):
    write_pki(tmp_path)  # a real CA certificate in ca.crt, as the kubeconfig names it
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    return path


def test_cluster_block_never_shows_its_kubeconfig(kubeconfig_file):
    cluster = KubernetesCluster.from_kubeconfig_file(kubeconfig_file, labels={"env": "prod"})
    for shown in (repr(cluster), str(cluster), cluster.model_dump_json()):
        assert "s3cr3t-token" not in shown
    assert "s3cr3t-token" in cluster.kubeconfig.get_secret_value()
    assert cluster.labels == {"env": "prod"}
    assert KubernetesCluster.get_block_type_slug() == "gitops-kubernetes-cluster"


def test_cluster_block_inlines_certificate_files_and_builds_a_client(kubeconfig_file):
    cluster = KubernetesCluster.from_kubeconfig_file(kubeconfig_file, context="other")
    config = yaml.safe_load(cluster.kubeconfig.get_secret_value())
    assert "certificate-authority" not in config["clusters"][0]["cluster"]
    assert config["clusters"][0]["cluster"]["certificate-authority-data"]
    access = cluster.access()
    assert access.server == "https://127.0.0.1:6443"
    assert access.auth_headers() == {"Authorization": "Bearer s3cr3t-token"}
    assert access.ssl_context is not None
