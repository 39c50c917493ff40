"""Hand edits are drift: after a real sync of the sample repository, each kubectl
command that writes (the real kubectl, against the cluster) is found with its
field manager and field path, and healed (a second check is clean, the field is
gone); a controller's fields are not drift. Also in a scheduled sync when
selfHeal is on, and per the app's `driftManagers`."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from prefect_gitops.cli.drift import drift_command
from conftest import KUBECTL, KUBECTL_TIMEOUT_S, kubectl
from prefect_gitops.engine.cluster.kube import FIELD_MANAGER, KubeClient
from prefect_gitops.engine.report import SyncStatus
from prefect_gitops.engine.state.hand_edits import (DEFAULT_DRIFT_MANAGERS, find_hand_edits, is_hand_manager,
                                                    take_over, taken_over)
from example_repo import ExampleRepo, synced_example_repo
from prefect_gitops.flows.drift import gitops_drift
from prefect_gitops.flows.sync import gitops_sync

WEB = dict(apps=["web"], clusters=["staging"])
CONTAINER = "spec.template.spec.containers[name=web]"


@pytest.fixture(scope="module")
def repo(registered_clusters, prefect_api, tmp_path_factory) -> ExampleRepo:
    """The sample repository synced once to both clusters; cleaned afterwards."""
    yield from synced_example_repo(tmp_path_factory.mktemp("hand-edits"), "hand-edits", registered_clusters)


@pytest.fixture
def staging(registered_clusters):
    return registered_clusters["staging"].kubeconfig


def web(repo: ExampleRepo, heal: bool):
    [result] = gitops_drift(repo=repo.block_name, **WEB, heal=heal).results
    return result


def obj(result, ref: str):
    return next(o for o in result.objects if o.ref == ref)


def jsonpath(kubeconfig, ref: str, path: str) -> str:
    kind, name = ref.split("/")
    return kubectl(kubeconfig, "get", kind, name, "-n", "web", "-o", f"jsonpath={path}").stdout


def managers(kubeconfig, ref: str) -> set[str]:
    kind, name = ref.split("/")
    live = json.loads(kubectl(kubeconfig, "get", kind, name, "-n", "web", "-o", "json",
                              "--show-managed-fields").stdout)
    return {e["manager"] for e in live["metadata"]["managedFields"]}


# ---- each kubectl command that writes ---------------------------------------------------

def edit_label(kubeconfig) -> None:
    """A real `kubectl edit`, its editor a script that adds a label."""
    editor = kubeconfig.parent / "add-label-editor"
    editor.write_text('#!/bin/sh\nsed -i \'s/^  labels:$/  labels:\\n    edited: "yes"/\' "$1"\n')
    editor.chmod(editor.stat().st_mode | stat.S_IXUSR)
    edited = subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", "edit", "deployment", "web", "-n", "web"],
                            env={**os.environ, "EDITOR": str(editor)}, capture_output=True, text=True,
                            timeout=KUBECTL_TIMEOUT_S)
    assert edited.returncode == 0 and "edited" in edited.stdout, edited.stderr


def client_side_apply(kubeconfig) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-settings", "namespace": "web"},
                 "data": {"greeting": "hello", "extra": "by-hand"}}
    kubectl(kubeconfig, "apply", "-f", "-", input=json.dumps(configmap))


@dataclass
class Case:
    name: str
    run: object  # kubeconfig -> None: the hand edit, with the real kubectl
    ref: str  # the object it edits
    change: str  # the drift report's line
    gone: tuple[str, str]  # (jsonpath, its value once healed)
    manager: str


CASES = [
    Case("edit", edit_label, "Deployment/web",
         'metadata.labels.edited: (absent) -> "yes" (by kubectl-edit)', ("{.metadata.labels.edited}", ""),
         "kubectl-edit"),
    Case("set env", lambda k: kubectl(k, "set", "env", "deployment/web", "-n", "web", "DRIFTED=yes"),
         "Deployment/web",
         f'{CONTAINER}.env[name=DRIFTED]: (absent) -> {{"name": "DRIFTED", "value": "yes"}} (by kubectl-set)',
         ("{.spec.template.spec.containers[0].env}", ""), "kubectl-set"),
    Case("label", lambda k: kubectl(k, "label", "service", "web", "-n", "web", "hand=made"), "Service/web",
         'metadata.labels.hand: (absent) -> "made" (by kubectl-label)', ("{.metadata.labels.hand}", ""),
         "kubectl-label"),
    Case("annotate", lambda k: kubectl(k, "annotate", "configmap", "web-settings", "-n", "web", "note=by-hand"),
         "ConfigMap/web-settings", 'metadata.annotations.note: (absent) -> "by-hand" (by kubectl-annotate)',
         ("{.metadata.annotations.note}", ""), "kubectl-annotate"),
    Case("patch", lambda k: kubectl(k, "patch", "deployment", "web", "-n", "web", "-p",
                                    '{"spec": {"minReadySeconds": 7}}'),
         "Deployment/web", "spec.minReadySeconds: (absent) -> 7 (by kubectl-patch)",
         ("{.spec.minReadySeconds}", ""), "kubectl-patch"),
    # Git sets replicas: the field is ours, taken by kubectl (its scale subresource).
    Case("scale", lambda k: kubectl(k, "scale", "deployment", "web", "-n", "web", "--replicas=3"),
         "Deployment/web", "spec.replicas: 1 -> 3", ("{.spec.replicas}", "1"), "kubectl"),
    Case("client-side apply", client_side_apply, "ConfigMap/web-settings",
         'data.extra: (absent) -> "by-hand" (by kubectl-client-side-apply)', ("{.data.extra}", ""),
         "kubectl-client-side-apply"),
    Case("rollout restart", lambda k: kubectl(k, "rollout", "restart", "deployment/web", "-n", "web"),
         "Deployment/web", 'spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]: (absent) -> ',
         ("{.spec.template.metadata.annotations}", ""), "kubectl-rollout"),
]


@pytest.mark.cluster
def test_each_hand_edit_is_found_with_its_manager_and_path_and_healed(repo, staging):
    """Every command's edit at once (they touch distinct fields of three objects):
    one drift check finds each with its manager and path, one heal removes them all,
    and the check after it is clean."""
    for case in CASES:
        case.run(staging)
        assert case.manager in managers(staging, case.ref), case.name
    found = web(repo, heal=False)
    assert found.status is SyncStatus.FAILED and "3 modified" in found.message, found.message
    for case in CASES:
        edited = obj(found, f"{case.ref.split('/')[0]}/web/{case.ref.split('/')[1]}")
        assert edited.action == "skipped" and case.manager in edited.reason, (case.name, edited.reason)
        assert any(line.startswith(case.change) for line in edited.changes), (case.name, edited.changes)

    healed = web(repo, heal=True)
    assert healed.status is SyncStatus.SUCCEEDED and healed.message.startswith("healed"), healed.message
    for case in CASES:
        assert obj(healed, f"{case.ref.split('/')[0]}/web/{case.ref.split('/')[1]}").action == "configured"
        path, value = case.gone
        assert jsonpath(staging, case.ref, path) == value, case.name
        assert case.manager not in managers(staging, case.ref), case.name
    again = web(repo, heal=False)
    assert again.status is SyncStatus.SUCCEEDED, again.message


@pytest.mark.cluster
def test_gitops_drift_cli_finds_set_env_and_heal_removes_it(repo, staging):
    app = typer.Typer()
    app.command()(drift_command)
    runner = CliRunner()

    def gitops_drift_cli(*args: str):
        return runner.invoke(app, ["--repo", repo.block_name, "--app", "web", "--cluster", "staging", *args])

    kubectl(staging, "set", "env", "deployment/web", "-n", "web", "DRIFTED=yes")
    found = gitops_drift_cli()
    assert found.exit_code == 1, found.output
    assert f"{CONTAINER}.env[name=DRIFTED]" in found.output and "kubectl-set" in found.output
    assert gitops_drift_cli("--heal").exit_code == 0
    assert gitops_drift_cli().exit_code == 0
    assert jsonpath(staging, "Deployment/web", "{.spec.template.spec.containers[0].env}") == ""


# ---- what is not a hand edit ------------------------------------------------------------------

@pytest.mark.cluster
def test_a_controllers_update_is_not_drift_and_heal_leaves_it(repo, staging):
    """As an autoscaler or admission controller would: an Update by a manager of its own."""
    kubectl(staging, "patch", "deployment", "web", "-n", "web", "--field-manager=horizontal-pod-autoscaler", "-p",
            '{"metadata": {"annotations": {"autoscaling.example.com/observed": "3"}}, "spec": {"minReadySeconds": 2}}')
    assert "horizontal-pod-autoscaler" in managers(staging, "Deployment/web")
    assert web(repo, heal=False).status is SyncStatus.SUCCEEDED
    assert web(repo, heal=True).status is SyncStatus.SUCCEEDED
    assert jsonpath(staging, "Deployment/web", "{.spec.minReadySeconds}") == "2"
    assert jsonpath(staging, "Deployment/web", "{.metadata.annotations.autoscaling\\.example\\.com/observed}") == "3"
    kubectl(staging, "patch", "deployment", "web", "-n", "web", "--field-manager=horizontal-pod-autoscaler",
            "--type=json", "-p", '[{"op": "remove", "path": "/metadata/annotations/autoscaling.example.com~1observed"},'
                                 '{"op": "remove", "path": "/spec/minReadySeconds"}]')


# ---- a sync with selfHeal -------------------------------------------------------------------

@pytest.mark.cluster
def test_the_scheduled_sync_of_a_self_healing_app_removes_a_hand_edit(repo, staging):
    kubectl(staging, "label", "configmap", "web-settings", "-n", "web", "hand=made")
    report = gitops_sync(repo=repo.block_name, **WEB, if_changed=True)  # web's syncPolicy.selfHeal is true
    [result] = report.results
    assert result.status is SyncStatus.SUCCEEDED, result.message
    configmap = obj(result, "ConfigMap/web/web-settings")
    assert configmap.action == "configured" and '- metadata.labels.hand: "made"' in configmap.diff, configmap.diff
    assert jsonpath(staging, "ConfigMap/web-settings", "{.metadata.labels.hand}") == ""
    assert web(repo, heal=False).status is SyncStatus.SUCCEEDED
    assert gitops_sync(repo=repo.block_name, **WEB, if_changed=True).results == []  # up to date again


# ---- a Secret: values masked, and the takeover itself ----------------------------------------

@pytest.mark.cluster
def test_a_secret_key_added_by_hand_is_masked_and_taken_over(local_cluster, namespace):
    value = "hand-secret-value"
    desired = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token", "namespace": namespace},
               "stringData": {"token": "from-git"}}
    with KubeClient.from_kubeconfig(local_cluster.kubeconfig) as kube:
        kube.apply(desired)
        encoded = base64.b64encode(value.encode()).decode()
        kubectl(local_cluster.kubeconfig, "patch", "secret", "token", "-n", namespace, "-p",
                json.dumps({"data": {"extra": encoded}}))
        [edit] = find_hand_edits(desired, kube.get("v1", "Secret", "token", namespace), DEFAULT_DRIFT_MANAGERS)
        assert (edit.manager, edit.path) == ("kubectl-patch", "data.extra")
        assert set(edit.value) == {"+"} and value not in repr(edit) and encoded not in repr(edit)

        assert take_over(kube, desired, DEFAULT_DRIFT_MANAGERS)
        live = kube.get("v1", "Secret", "token", namespace)
        assert {e["manager"] for e in live["metadata"]["managedFields"]} == {FIELD_MANAGER}
        assert "extra" in live["data"]  # taken over, not yet removed
        live = kube.apply(desired)
        assert set(live["data"]) == {"token"} and find_hand_edits(desired, live, DEFAULT_DRIFT_MANAGERS) == []
        assert not take_over(kube, desired, DEFAULT_DRIFT_MANAGERS)  # nothing left to take


# ---- driftManagers ------------------------------------------------------------------------------

@pytest.mark.cluster
def test_drift_managers_of_the_app_replace_the_default(repo, staging):
    """Last: it commits to the repository (gitops.yaml at the head gives the policy)."""
    spec = repo.read("gitops.yaml")
    repo.commit({"gitops.yaml": spec.replace("    dependsOn: [platform]\n    syncPolicy:\n      prune: true\n"
                                             "      selfHeal: true",
                                             "    dependsOn: [platform]\n    driftManagers: [kubectl-lab*]\n"
                                             "    syncPolicy:\n      prune: true\n      selfHeal: true", 1)},
                "web: only labels by hand are drift")
    kubectl(staging, "annotate", "configmap", "web-settings", "-n", "web", "note=kept")
    assert web(repo, heal=True).status is SyncStatus.SUCCEEDED
    assert jsonpath(staging, "ConfigMap/web-settings", "{.metadata.annotations.note}") == "kept"
    kubectl(staging, "label", "configmap", "web-settings", "-n", "web", "hand=made")
    found = web(repo, heal=False)
    assert obj(found, "ConfigMap/web/web-settings").changes == [
        'metadata.labels.hand: (absent) -> "made" (by kubectl-label)']
    assert web(repo, heal=True).status is SyncStatus.SUCCEEDED
    assert jsonpath(staging, "ConfigMap/web-settings", "{.metadata.labels.hand}") == ""
    assert jsonpath(staging, "ConfigMap/web-settings", "{.metadata.annotations.note}") == "kept"


# ---- the field sets alone (managedFields as kubectl 1.37 and the controllers wrote them) -----

def _entry(manager: str, fields: dict, operation: str = "Update", subresource: str = "") -> dict:
    entry = {"manager": manager, "operation": operation, "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
             "fieldsV1": fields}
    return {**entry, "subresource": subresource} if subresource else entry


WEB_ITEM = 'k:{"name":"web"}'
DESIRED = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "web"},
           "spec": {"replicas": 1, "template": {"spec": {"containers": [
               {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}}
LIVE = {"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "web", "annotations": {"deployment.kubernetes.io/revision": "2"},
                     "finalizers": ["example.com/hold"], "managedFields": [
            _entry(FIELD_MANAGER, {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                WEB_ITEM: {".": {}, "f:name": {}, "f:ports": {
                    'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}}}}}}}, "Apply"),
            _entry("kubectl-set", {"f:spec": {"f:template": {"f:spec": {"f:containers": {WEB_ITEM: {
                "f:image": {}, "f:env": {".": {}, 'k:{"name":"DRIFTED"}': {".": {}, "f:name": {},
                                                                         "f:value": {}}}}}}}}}),
            _entry("kubectl", {"f:spec": {"f:replicas": {}}}, subresource="scale"),
            _entry("kubectl-patch", {"f:metadata": {"f:finalizers": {".": {}, 'v:"example.com/hold"': {}}},
                                     "f:spec": {"f:template": {"f:spec": {"f:containers": {WEB_ITEM: {"f:ports": {
                                         'k:{"containerPort":80,"protocol":"TCP"}': {"f:name": {}}}}}}}}}),
            _entry("kubectl-edit", {"f:status": {"f:replicas": {}}}, subresource="status"),
            _entry("kube-controller-manager", {"f:metadata": {"f:annotations": {
                "f:deployment.kubernetes.io/revision": {}}}, "f:status": {"f:replicas": {}}}),
            _entry("horizontal-pod-autoscaler", {"f:spec": {"f:minReadySeconds": {}}})]},
        "spec": {"replicas": 3, "minReadySeconds": 5, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.28", "env": [{"name": "DRIFTED", "value": "yes"}],
             "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]}]}}},
        "status": {"replicas": 3}}


def test_fields_git_lacks_are_found_where_they_start_and_controllers_are_not():
    found = {(e.manager, e.path): e.value for e in find_hand_edits(DESIRED, LIVE, DEFAULT_DRIFT_MANAGERS)}
    container = "spec.template.spec.containers[name=web]"
    assert found == {  # not image nor replicas (Git sets them), nor status, nor the controllers' fields
        ("kubectl-set", f"{container}.env[name=DRIFTED]"): {"name": "DRIFTED", "value": "yes"},
        ("kubectl-patch", 'metadata.finalizers["example.com/hold"]'): "example.com/hold",
        ("kubectl-patch", f"{container}.ports[containerPort=80,protocol=TCP].name"): "http",  # Git's port, no protocol
    }


def test_managers_are_names_or_patterns_and_never_ours():
    assert is_hand_manager("kubectl-label", ["kubectl*"]) and not is_hand_manager("k9s", ["kubectl*"])
    assert not is_hand_manager(FIELD_MANAGER, ["*"])
    assert [e.manager for e in find_hand_edits(DESIRED, LIVE, ["kubectl-set"])] == ["kubectl-set"]
    assert find_hand_edits(DESIRED, LIVE, []) == []


def test_the_server_set_name_label_of_a_namespace_is_not_a_hand_edit():
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "web", "labels": {"kubernetes.io/metadata.name": "web", "team": "a"},
        "managedFields": [_entry("kubectl-create", {"f:metadata": {"f:labels": {
            ".": {}, "f:kubernetes.io/metadata.name": {}, "f:team": {}}}})]}}
    desired = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}
    assert [e.path for e in find_hand_edits(desired, namespace, DEFAULT_DRIFT_MANAGERS)] == ["metadata.labels.team"]


def test_taking_over_moves_the_hand_entries_into_our_apply_entry_and_keeps_the_rest():
    body = taken_over(LIVE, DEFAULT_DRIFT_MANAGERS, "apps/v1")
    entries = body["metadata"]["managedFields"]
    assert [(e["manager"], e.get("subresource", "")) for e in entries] == [
        ("kubectl-edit", "status"), ("kube-controller-manager", ""), ("horizontal-pod-autoscaler", ""),
        (FIELD_MANAGER, "")]
    ours = entries[-1]
    assert ours["operation"] == "Apply" and "f:status" not in ours["fieldsV1"]
    container = ours["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"][WEB_ITEM]
    assert set(container) == {".", "f:name", "f:ports", "f:image", "f:env"}
    assert ours["fieldsV1"]["f:metadata"]["f:finalizers"] == {".": {}, 'v:"example.com/hold"': {}}
    assert LIVE["metadata"]["managedFields"][0]["fieldsV1"] != ours["fieldsV1"]  # the live object untouched
    assert taken_over(body, DEFAULT_DRIFT_MANAGERS, "apps/v1") is None
