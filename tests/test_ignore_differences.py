"""Ignore rules (an app's `ignoreDifferences`): the rules alone (which objects and
fields they select, how gitops validate reports a bad one), then on a real local
cluster through `gitops_sync` and `gitops_drift`: a Deployment whose spec.replicas
an autoscaler writes (field manager `hpa-controller`, through the scale
subresource as the HPA controller does) is neither diff, nor drift, nor
overwritten by the next sync; without the rule it is drift."""

from __future__ import annotations

import json
import secrets
import textwrap

import pytest
import yaml

from conftest import kubectl
from prefect_gitops.engine.changes.ignore import IgnoreDifferences, IgnoredFields, held_paths
from prefect_gitops.engine.cluster.kube import FIELD_MANAGER
from prefect_gitops.engine.problems import ProblemsFound
from prefect_gitops.engine.spec.appspec import parse_appspec
from prefect_gitops.engine.spec.ignore_rules import IgnoreRule, parse_field_path, parse_pointer
from prefect_gitops.engine.state.drift import DesiredObject, compare


def rules(*written: dict, respect: bool = True) -> IgnoreDifferences:
    return IgnoreDifferences(tuple(IgnoreRule.model_validate(r) for r in written), respect)


def _entry(manager: str, fields: dict, operation: str = "Update", subresource: str = "") -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": fields}
    return {**entry, "subresource": subresource} if subresource else entry


GIT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "web"},
       "spec": {"replicas": 1, "template": {"metadata": {"annotations": {"team": "a"}}, "spec": {"containers": [
           {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}}
# As the API server returns it after an autoscaler scaled it and a sidecar was injected first.
LIVE = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
    "name": "web", "namespace": "web", "managedFields": [
        _entry(FIELD_MANAGER, {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {"f:team": {}}},
                                                         "f:spec": {"f:containers": {'k:{"name":"web"}': {
                                                             ".": {}, "f:name": {}, "f:image": {}}}}}}}, "Apply"),
        _entry("hpa-controller", {"f:spec": {"f:replicas": {}}}, subresource="scale"),
        _entry("sidecar-injector", {"f:spec": {"f:template": {"f:spec": {"f:containers": {'k:{"name":"proxy"}': {
            ".": {}, "f:name": {}, "f:image": {}}}}}}}),
        _entry("hpa-controller", {"f:status": {"f:replicas": {}}}, subresource="status")]},
    "spec": {"replicas": 3, "template": {"metadata": {"annotations": {"team": "a"}}, "spec": {"containers": [
        {"name": "proxy", "image": "envoy:1"},
        {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}}
CONTAINERS = ("spec", "template", "spec", "containers")


# ---- the rules alone ----------------------------------------------------------------------------

def test_a_rule_selects_by_kind_group_name_and_namespace_patterns_an_omitted_group_being_any():
    def selects(**rule) -> bool:
        return IgnoreRule.model_validate({"jsonPointers": ["/spec"], **rule}).selects(GIT)

    assert selects(kind="Deployment") and selects(kind="Deploy*", group="apps", name="web", namespace="w*")
    assert not selects(kind="Deployment", group="") and not selects(kind="StatefulSet")
    assert not selects(kind="Deployment", name="api") and not selects(kind="Deployment", namespace="other")


def test_pointers_and_field_paths_read_as_steps():
    assert parse_pointer("/metadata/annotations/example.com~1x~0y") == (
        ("token", "metadata"), ("token", "annotations"), ("token", "example.com/x~y"))
    assert parse_field_path('spec.containers[name=web].ports[containerPort=80,protocol=TCP].name') == (
        ("key", "spec"), ("key", "containers"), ("match", (("name", "web"),)), ("key", "ports"),
        ("match", (("containerPort", "80"), ("protocol", "TCP"))), ("key", "name"))
    assert parse_field_path('metadata.labels["app.kubernetes.io/name"]') == (
        ("key", "metadata"), ("key", "labels"), ("value", "app.kubernetes.io/name"))
    assert parse_field_path("webhooks[0].rules[*]") == (("key", "webhooks"), ("index", 0), ("key", "rules"), ("any",))


def test_a_field_path_selects_a_list_item_by_its_key_where_a_pointer_takes_a_position():
    """Argo CD's pointers into lists follow positions (#6107): a sidecar injected
    first moves Git's container, and `/spec/template/spec/containers/0/image`
    then names the sidecar's image in the live object, Git's in the desired one."""
    by_key = IgnoredFields((parse_field_path("spec.template.spec.containers[name=web].image"),))
    assert [c.get("image") for c in by_key.strip(LIVE)["spec"]["template"]["spec"]["containers"]] == ["envoy:1", None]
    assert "image" not in by_key.strip(GIT)["spec"]["template"]["spec"]["containers"][0]
    by_position = IgnoredFields((parse_pointer("/spec/template/spec/containers/0/image"),))
    assert [c.get("image") for c in by_position.strip(LIVE)["spec"]["template"]["spec"]["containers"]] == [
        None, "nginx:1.26"]
    assert GIT["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"  # strip copies


def test_a_managers_fields_are_the_leaves_it_holds_never_status():
    assert sorted(held_paths(LIVE, ["hpa-controller", "sidecar-injector"])) == sorted([
        (("key", "spec"), ("key", "replicas")),
        (*(("key", k) for k in CONTAINERS), ("match", (("name", "proxy"),)), ("key", "name")),
        (*(("key", k) for k in CONTAINERS), ("match", (("name", "proxy"),)), ("key", "image"))])
    assert held_paths(LIVE, [FIELD_MANAGER, "nobody"]) == []  # ours are never ignored


def test_ignored_fields_are_no_drift_and_the_rest_still_is():
    desired = DesiredObject(GIT)
    assert compare(desired, LIVE).changes == [
        "spec.replicas: 1 -> 3", 'spec.template.spec.containers[name=web].image: "nginx:1.27" -> "nginx:1.26"']
    hpa = rules({"kind": "Deployment", "managedFieldsManagers": ["hpa-*"]})
    assert compare(desired, LIVE, ignore=hpa).changes == [
        'spec.template.spec.containers[name=web].image: "nginx:1.27" -> "nginx:1.26"']
    both = rules({"kind": "Deployment", "managedFieldsManagers": ["hpa-*"]},
                 {"kind": "Deployment", "fieldPaths": ["spec.template.spec.containers[*].image"]})
    assert compare(desired, LIVE, ignore=both) is None
    other = rules({"kind": "Deployment", "name": "api", "jsonPointers": ["/spec/replicas"]})
    assert len(compare(desired, LIVE, ignore=other).changes) == 2


def test_a_hand_edit_under_a_rule_is_no_drift():
    live = json.loads(json.dumps(LIVE))
    live["metadata"]["annotations"] = {"note": "by hand"}
    live["metadata"]["managedFields"].append(_entry("kubectl-annotate", {"f:metadata": {"f:annotations": {
        ".": {}, "f:note": {}}}}))
    ignore = rules({"kind": "Deployment", "managedFieldsManagers": ["hpa-controller"]},
                   {"kind": "Deployment", "fieldPaths": ["spec.template.spec.containers[name=web].image"]})
    assert compare(DesiredObject(GIT), live, ["kubectl-annotate"], ignore).changes == [
        'metadata.annotations.note: (absent) -> "by hand" (by kubectl-annotate)']
    ignore = rules(*ignore.rules, {"kind": "*", "jsonPointers": ["/metadata/annotations/note"]})
    assert compare(DesiredObject(GIT), live, ["kubectl-annotate"], ignore) is None


def test_respected_fields_keep_their_live_values_and_one_not_live_is_not_sent():
    ignore = rules({"kind": "Deployment", "managedFieldsManagers": ["hpa-controller"],
                    "fieldPaths": ["spec.template.spec.containers[*].image",
                                   'spec.template.metadata.annotations["not-live"]']})
    git = json.loads(json.dumps(GIT))
    git["spec"]["template"]["metadata"]["annotations"]["not-live"] = "x"
    sent = ignore.for_object(git, LIVE).with_live_values(git, LIVE)
    assert sent["spec"]["replicas"] == 3  # sent as it is: not left out, which would delete it if ours alone
    assert sent["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "nginx:1.26", "ports": [{"containerPort": 80}]}]  # the item of that name
    assert sent["spec"]["template"]["metadata"]["annotations"] == {"team": "a"}
    assert git["spec"]["replicas"] == 1  # a copy


def test_without_respect_an_applied_objects_diff_marks_the_ignored_fields_it_overwrites():
    ignored = IgnoredFields((parse_pointer("/spec/replicas"),), respect=False)
    full = "- spec.replicas: 3\n+ spec.replicas: 1\n- spec.paused: true"
    marked = ignored.mark_overwritten(full, "- spec.paused: true")
    assert marked.splitlines() == ["- spec.replicas: 3    # ignored, overwritten: respectIgnoreDifferences is false",
                                   "+ spec.replicas: 1    # ignored, overwritten: respectIgnoreDifferences is false",
                                   "- spec.paused: true"]


# ---- gitops validate -------------------------------------------------------------------------------

def test_bad_rules_are_errors_naming_the_line_and_the_rule():
    text = textwrap.dedent("""\
        apps:
          - name: web
            path: web
            clusters: [staging]
            ignoreDifferences:
              - {group: apps, kind: Deployment, jsonPointers: [/spec/replicas]}
              - {jsonPointers: [/spec/replicas]}
              - kind: Deployment
                jsonPointers: [spec/replicas]
              - {kind: Deployment, fieldPaths: ["spec..replicas"], managedFieldsManagers: [hpa]}
              - {kind: Deployment, jqPathExpressions: [.spec.replicas]}
              - {kind: Deployment}
              - {kind: Deployment, group: apps/v1, managedFieldsManagers: [hpa]}
            syncPolicy: {respectIgnoreDifferences: false}
        """)
    with pytest.raises(ProblemsFound) as raised:
        parse_appspec(text)
    found = [(p.source.line, p.rule, p.message) for p in raised.value.problems]
    assert [line for line, _, _ in found] == [7, 9, 10, 11, 12, 13]
    assert {rule for _, rule, _ in found} == {"app.ignore-differences"}
    messages = "\n".join(m for _, _, m in found)
    for words in ("ignoreDifferences.1.kind: Field required", "'spec/replicas' must start with '/'",
                  "field path 'spec..replicas': cannot read it", "jqPathExpressions: unknown field",
                  "name the fields to ignore", "'apps/v1' is an API group without its version"):
        assert words in messages, messages
    valid = parse_appspec(text.replace("\n".join(text.splitlines()[6:13]) + "\n", "")).app("web")
    assert not valid.sync_policy.respect_ignore_differences and len(valid.ignore_differences) == 1
    assert parse_appspec("apps: [{name: a, path: a, clusters: [x]}]").app("a").sync_policy.respect_ignore_differences


# ---- on a real cluster: an autoscaler's replicas --------------------------------------------------

@pytest.fixture(scope="module")
def scaled(registered_clusters, prefect_api, tmp_path_factory):
    """An app of one Deployment and one ConfigMap that ignores what `hpa-controller`
    holds, synced once to staging; then an autoscaler's scale to 3 replicas."""
    from plain_repo import configmap, deployment, forget_apps, make_plain_repo
    from prefect_gitops.flows.sync import gitops_sync

    kubeconfig = registered_clusters["staging"].kubeconfig
    name = f"ignore-{secrets.token_hex(3)}"
    kubectl(kubeconfig, "create", "namespace", name)
    repo = make_plain_repo(tmp_path_factory.mktemp("ignore"), "ignore", {
        "gitops.yaml": spec_of(name), "web/web.yaml": deployment("web"), "web/settings.yaml": configmap("settings")})
    try:
        assert gitops_sync(repo=repo.block_name).ok
        kubectl(kubeconfig, "patch", "deployment", "web", "-n", name, "--subresource=scale", "--type=merge",
                "--field-manager=hpa-controller", "-p", '{"spec": {"replicas": 3}}')
        yield Scaled(repo, kubeconfig, name)
    finally:
        kubectl(kubeconfig, "delete", "namespace", name, "--wait=false", check=False)
        forget_apps(registered_clusters["staging"], name)


def spec_of(name: str, rules: list | None = None, **sync_policy) -> str:
    from plain_repo import gitops_yaml

    app = {"name": name, "path": "web", "namespace": name, "clusters": ["staging"],
           "ignoreDifferences": [{"group": "apps", "kind": "Deployment", "managedFieldsManagers": ["hpa-controller"]}]
           if rules is None else rules}
    return gitops_yaml({**app, "syncPolicy": sync_policy} if sync_policy else app)


class Scaled:
    def __init__(self, repo, kubeconfig, name):
        self.repo, self.kubeconfig, self.name = repo, kubeconfig, name

    def replicas(self) -> str:
        return kubectl(self.kubeconfig, "get", "deployment", "web", "-n", self.name,
                       "-o", "jsonpath={.spec.replicas}").stdout

    def annotated(self, value: str) -> str:
        """web.yaml with an annotation on the Deployment: a change that is applied."""
        from plain_repo import deployment

        web = yaml.safe_load(deployment("web"))
        web["metadata"]["annotations"] = {"example.com/revision": value}
        return yaml.safe_dump(web)


def drift_of(scaled: Scaled):
    from prefect_gitops.flows.drift import gitops_drift

    [result] = gitops_drift(repo=scaled.repo.block_name, heal=False).results
    return result, next(o for o in result.objects if o.kind == "Deployment")


@pytest.mark.cluster
def test_an_autoscalers_replicas_are_no_drift_no_diff_and_not_overwritten(scaled):
    from prefect_gitops.engine.report import SyncStatus
    from prefect_gitops.flows.sync import gitops_sync

    assert scaled.replicas() == "3"
    result, web = drift_of(scaled)
    assert result.status is SyncStatus.SUCCEEDED and web.action == "unchanged", (result.message, web.changes)
    assert gitops_sync(repo=scaled.repo.block_name, if_changed=True).results == []  # the tick: nothing to do

    scaled.repo.commit({"web/web.yaml": scaled.annotated("2")}, "web: an annotation")
    [synced] = gitops_sync(repo=scaled.repo.block_name).results
    web = next(o for o in synced.objects if o.kind == "Deployment")
    assert synced.status is SyncStatus.SUCCEEDED and web.action == "configured", synced.message
    assert "example.com/revision" in web.diff and "replicas" not in web.diff, web.diff
    assert scaled.replicas() == "3"  # respectIgnoreDifferences, the default
    assert drift_of(scaled)[1].action == "unchanged"


@pytest.mark.cluster
def test_without_respect_the_diff_says_the_apply_overwrites_them(scaled):
    from prefect_gitops.flows.sync import gitops_sync

    scaled.repo.commit({"gitops.yaml": spec_of(scaled.name, respectIgnoreDifferences=False),
                        "web/web.yaml": scaled.annotated("3")}, "web: Git's replicas win")
    [planned] = gitops_sync(repo=scaled.repo.block_name, dry_run=True).results
    web = next(o for o in planned.objects if o.kind == "Deployment")
    assert "- spec.replicas: 3    # ignored, overwritten: respectIgnoreDifferences is false" in web.diff.splitlines()
    assert scaled.replicas() == "3"  # a dry run


@pytest.mark.cluster
def test_without_the_rule_the_autoscalers_replicas_are_drift(scaled):
    """Last: the rule leaves gitops.yaml (the head's policy is the drift check's)."""
    scaled.repo.commit({"gitops.yaml": spec_of(scaled.name, rules=[])}, "web: no ignore rules")
    result, web = drift_of(scaled)
    assert web.action == "skipped" and web.changes == ["spec.replicas: 1 -> 3"], web.changes
