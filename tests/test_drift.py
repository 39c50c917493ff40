"""Drift detection and self-heal against two real local clusters, after a real
sync of the sample repository: what changed by hand is found (and by whom),
defaults are not, heal undoes it, Secret values never show."""

from __future__ import annotations

import base64
import json
import secrets
import time

import pytest
import typer
from typer.testing import CliRunner

from conftest import kubectl
from example_repo import ExampleRepo, synced_example_repo
from test_recovery import api_get, api_post
from prefect_gitops.cli.drift import drift_command
from prefect_gitops.engine.report import SyncStatus
from prefect_gitops.engine.state.drift import desired_objects, detect_drift
from prefect_gitops.engine.state.inventory import read_inventory
from prefect_gitops.flows.drift import DriftCheckFailed, gitops_drift
from prefect_gitops.flows.sync import gitops_sync

pytestmark = pytest.mark.cluster

WEB = dict(apps=["web"], clusters=["staging"])


@pytest.fixture(scope="module")
def repo(registered_clusters, prefect_api, tmp_path_factory) -> ExampleRepo:
    """The sample repository, synced once to both clusters for the whole module;
    the clusters are cleaned afterwards, as test_sync's clean_clusters does."""
    yield from synced_example_repo(tmp_path_factory.mktemp("drift"), "drift", registered_clusters)


@pytest.fixture
def staging(registered_clusters):
    return registered_clusters["staging"].kubeconfig


def only(report):
    [result] = report.results
    return result


def obj(result, ref: str):
    return next(o for o in result.objects if o.ref == ref)


def test_no_drift_right_after_a_sync_nor_from_server_defaults(repo, registered_clusters):
    report = gitops_drift(repo=repo.block_name, heal=False)
    assert report.ok and len(report.results) == 6
    for result in report.results:
        assert result.status is SyncStatus.SUCCEEDED, result.message
        assert {o.action for o in result.objects} == {"unchanged"}, (result.app, result.cluster, result.objects)
        pairs = {(o.kind, o.namespace) for o in result.objects}
        assert result.requests["LIST"] <= len(pairs), (result.app, result.requests)
        assert sum(result.requests[v] for v in ("POST", "PATCH", "PUT", "DELETE")) == 0, result.requests
    # The server filled in defaults that Git never set: none of them is drift.
    staging = registered_clusters["staging"].kubeconfig
    assert kubectl(staging, "get", "service", "web", "-n", "web", "-o", "jsonpath={.spec.clusterIP}").stdout
    assert kubectl(staging, "get", "deployment", "web", "-n", "web",
                   "-o", "jsonpath={.spec.strategy.rollingUpdate.maxSurge}").stdout == "25%"


def test_zero_values_written_in_git_that_the_server_leaves_out_are_not_drift(registered_clusters, tmp_path):
    """`minReadySeconds: 0`, `paused: false`, `tty: false` are what the API server
    stores and leaves out of what it returns (omitempty): the app is in sync, and
    a scheduled tick finds nothing to do."""
    import yaml

    from plain_repo import deployment, gitops_yaml, make_plain_repo

    namespace = f"zeros-{secrets.token_hex(3)}"
    kubectl(registered_clusters["staging"].kubeconfig, "create", "namespace", namespace)
    web = yaml.safe_load(deployment("web"))
    web["spec"].update(minReadySeconds=0, paused=False)
    web["spec"]["template"]["spec"]["containers"][0].update(tty=False, stdin=False)
    app = {"name": namespace, "path": "web", "namespace": namespace, "clusters": ["staging"]}
    zeros = make_plain_repo(tmp_path, "zeros", {"gitops.yaml": gitops_yaml(app), "web/web.yaml": yaml.safe_dump(web)})
    try:
        assert gitops_sync(repo=zeros.block_name).ok
        [result] = gitops_drift(repo=zeros.block_name, heal=False).results
        assert {o.action for o in result.objects} == {"unchanged"}, result.objects
        assert gitops_sync(repo=zeros.block_name, if_changed=True).results == []
    finally:
        kubectl(registered_clusters["staging"].kubeconfig, "delete", "namespace", namespace, "--wait=false")


def test_a_check_costs_one_list_per_kind_and_namespace_and_no_get_per_object(repo):
    from prefect_gitops.blocks import GitRepository, KubernetesCluster
    from prefect_gitops.engine.cluster.kube import KubeClient
    from prefect_gitops.engine.source.git import fetch
    from prefect_gitops.engine.source.render import render_app
    from prefect_gitops.engine.spec.appspec import load_appspec

    web = only(gitops_drift(repo=repo.block_name, **WEB, heal=False))
    with KubeClient.for_cluster(KubernetesCluster.load("staging").cluster("staging")) as kube:
        inventory = read_inventory(kube, "web")
        tree = fetch(GitRepository.load(repo.block_name).source(), inventory.revision).tree
        manifests = render_app(tree, load_appspec(tree).app("web"), "staging")
        desired = desired_objects(kube, "web", manifests, "web")  # discovery: once per client
        kube.reset_requests()
        assert detect_drift(kube, "web", inventory, desired) == []
        requests = kube.requests
    pairs = {(d.kind, d.namespace) for d in desired}
    assert len(desired) == 3 and requests == {"GET": 0, "LIST": len(pairs), "WATCH": 0, "POST": 0, "PATCH": 0,
                                              "PUT": 0, "DELETE": 0}
    # In the flow: the inventory read twice (to render its revision, then to compare) and discovery.
    assert web.requests["LIST"] == len(pairs) and web.requests["GET"] < 40, web.requests


def test_a_scaled_deployment_is_modified_by_kubectl_and_healing_undoes_it(repo, staging):
    kubectl(staging, "scale", "deployment", "web", "-n", "web", "--replicas=5")
    web = only(gitops_drift(repo=repo.block_name, **WEB, heal=False))
    assert web.status is SyncStatus.FAILED and "1 modified" in web.message
    deployment = obj(web, "Deployment/web/web")
    assert deployment.action == "skipped" and deployment.changes == ["spec.replicas: 1 -> 5"]
    assert deployment.reason.startswith("modified by kubectl:")
    assert {o.action for o in web.objects if o is not deployment} == {"unchanged"}
    assert _event_seen("gitops.drift.detected", "gitops.app.web.staging")

    healed = only(gitops_drift(repo=repo.block_name, **WEB, heal=True))
    assert healed.status is SyncStatus.SUCCEEDED and healed.message.startswith("healed")
    assert obj(healed, "Deployment/web/web").action == "configured"
    assert kubectl(staging, "get", "deployment", "web", "-n", "web", "-o", "jsonpath={.spec.replicas}").stdout == "1"
    again = only(gitops_drift(repo=repo.block_name, **WEB, heal=False))
    assert again.status is SyncStatus.SUCCEEDED, again.message  # our field is ours again


def test_a_patched_field_and_a_deleted_configmap_are_found_and_self_healed(repo, staging):
    kubectl(staging, "patch", "deployment", "web", "-n", "web", "--type=json",
            "-p", '[{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.28"}]')
    kubectl(staging, "delete", "configmap", "web-settings", "-n", "web")
    web = only(gitops_drift(repo=repo.block_name, **WEB, heal=False))
    assert obj(web, "ConfigMap/web/web-settings").reason.startswith("missing")
    assert obj(web, "Deployment/web/web").changes == [
        'spec.template.spec.containers[name=web].image: "nginx:1.27" -> "nginx:1.28"']
    assert "kubectl-patch" in obj(web, "Deployment/web/web").reason

    healed = only(gitops_drift(repo=repo.block_name, **WEB))  # heal=None: web's syncPolicy.selfHeal is true
    assert healed.status is SyncStatus.SUCCEEDED, healed.message
    assert {o.ref: o.action for o in healed.objects} == {
        "ConfigMap/web/web-settings": "created", "Deployment/web/web": "configured", "Service/web/web": "unchanged"}
    assert kubectl(staging, "get", "configmap", "web-settings", "-n", "web",
                   "-o", "jsonpath={.data.greeting}").stdout == "hello"
    assert kubectl(staging, "get", "deployment", "web", "-n", "web",
                   "-o", "jsonpath={.spec.template.spec.containers[0].image}").stdout == "nginx:1.27"


def test_a_hand_made_object_with_our_label_is_unexpected_and_left_alone(repo, staging):
    kubectl(staging, "create", "configmap", "by-hand", "-n", "web", "--from-literal=a=b")
    kubectl(staging, "label", "configmap", "by-hand", "-n", "web", "gitops.prefect.io/app=web")
    try:
        web = only(gitops_drift(repo=repo.block_name, **WEB, heal=True))
        assert web.status is SyncStatus.FAILED and web.message.endswith("1 unexpected")
        stray = obj(web, "ConfigMap/web/by-hand")
        assert stray.action == "skipped" and stray.reason.startswith("unexpected")
        assert kubectl(staging, "get", "configmap", "by-hand", "-n", "web").returncode == 0
    finally:
        kubectl(staging, "delete", "configmap", "by-hand", "-n", "web", "--ignore-not-found")


def test_cli_exit_codes_and_json(repo, staging):
    app = typer.Typer()
    app.command()(drift_command)
    runner = CliRunner()

    def gitops_drift_cli(*args: str):
        return runner.invoke(app, ["--repo", repo.block_name, "--app", "web", "--cluster", "staging", *args])

    assert gitops_drift_cli().exit_code == 0
    kubectl(staging, "scale", "deployment", "web", "-n", "web", "--replicas=4")
    found = gitops_drift_cli("--json")
    assert found.exit_code == 1, found.output
    document = json.loads(found.stdout)
    assert len(document["revision"]) == 40
    [web] = document["results"]
    assert set(web) == {"app", "cluster", "status", "message", "objects", "requests", "revision", "suspended"}
    deployment = next(o for o in web["objects"] if o["kind"] == "Deployment")
    assert deployment["changes"] == ["spec.replicas: 1 -> 4"]
    shown = gitops_drift_cli()
    assert shown.exit_code == 1 and "spec.replicas: 1 -> 4" in shown.output
    assert gitops_drift_cli("--heal").exit_code == 0
    assert gitops_drift_cli().exit_code == 0
    missing = runner.invoke(app, ["--repo", "no-such-repository", "--json"])
    assert missing.exit_code == 2 and json.loads(missing.stdout)["results"] == []


def test_the_runs_list_tells_a_drifted_check_from_a_clean_one_in_process_and_served(
        repo, registered_clusters, prefect_api):
    """A check that found drift ends Completed named Drifted, with the count; a
    clean or healed one plain Completed; each app and cluster is a task run."""
    clean = _flow_run(prefect_api, gitops_drift(repo=repo.block_name, heal=False, return_state=True))
    assert _state(clean) == ("COMPLETED", "Completed", "no drift in 6 apps")
    assert _drift_task_runs(prefect_api, clean["id"], expected=6) == sorted(
        f"drift {app}@{cluster}" for app in ("platform", "web", "widgets") for cluster in ("staging", "production"))

    staging, production = (registered_clusters[name].kubeconfig for name in ("staging", "production"))
    kubectl(staging, "scale", "deployment", "web", "-n", "web", "--replicas=5")
    kubectl(staging, "delete", "configmap", "web-settings", "-n", "web")
    kubectl(production, "scale", "deployment", "web", "-n", "web", "--replicas=2")
    drifted = "3 objects drifted in 2 apps: web@production (1), web@staging (2)"  # in the report's order
    state = gitops_drift(repo=repo.block_name, heal=False, return_state=True)
    assert not state.result().ok  # what `gitops drift` exits 1 on
    assert _state(_flow_run(prefect_api, state)) == ("COMPLETED", "Drifted", drifted)

    # The same check as `gitops drift` has `gitops serve` run it: a run of the drift deployment.
    served = _served_drift(prefect_api, {"repo": repo.block_name, "apps": None, "clusters": None, "heal": False})
    assert _state(served) == ("COMPLETED", "Drifted", drifted)

    healed = _flow_run(prefect_api, gitops_drift(repo=repo.block_name, apps=["web"], heal=True, return_state=True))
    assert _state(healed) == ("COMPLETED", "Completed", drifted.replace("drifted", "healed"))
    assert _drift_task_runs(prefect_api, healed["id"], expected=2) == ["drift web@production", "drift web@staging"]


def test_secret_values_never_show_in_reports_artifacts_or_errors(repo, staging):
    """Last: it commits to the repository and leaves a Secret that cannot be healed."""
    canary, changed = f"canary-{secrets.token_hex(8)}", f"changed-{secrets.token_hex(8)}"
    base = "apps/web/base/"
    repo.commit({
        base + "secret.yaml": f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-token\nstringData:\n"
                              f"  token: {canary}\n",
        base + "kustomization.yaml": repo.read(base + "kustomization.yaml") + "  - secret.yaml\n",
    }, "a Secret")
    assert gitops_sync(repo=repo.block_name, **WEB).ok
    encoded = base64.b64encode(changed.encode()).decode()
    kubectl(staging, "patch", "secret", "web-token", "-n", "web", "-p",
            json.dumps({"data": {"token": encoded}, "immutable": True}))

    web = only(gitops_drift(repo=repo.block_name, **WEB, heal=False))
    token = obj(web, "Secret/web/web-token")
    assert token.action == "skipped" and len(token.changes) == 2 and token.changes[0].startswith("data.token: \"+")
    assert token.changes[1] == "immutable: (absent) -> true (by kubectl-patch)"  # a hand edit: not in Git
    with pytest.raises(DriftCheckFailed) as failure:  # immutable now: heal must fail
        gitops_drift(repo=repo.block_name, **WEB, heal=True)
    assert "immutable" in str(failure.value)

    texts = [json.dumps([r.to_json() for r in (web, *failure.value.report.results)]), str(failure.value),
             *_artifacts("gitops-drift-web-staging")]
    for value in (canary, changed, encoded, base64.b64encode(canary.encode()).decode()):
        for text in texts:
            assert value not in text


def _artifacts(key: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts
    return [str(a.data) + str(a.description) for a in artifacts]


def _event_seen(name: str, resource_id: str, timeout_s: float = 20) -> bool:
    """Events reach the server asynchronously: look for a while."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(event=EventNameFilter(name=[name]), resource=EventResourceFilter(id=[resource_id]))
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            if client.read_events(filter=query, limit=10).events:
                return True
            time.sleep(0.5)
    return False


def _flow_run(api: str, state) -> dict:
    """The flow run of a returned state, as the REST API (the UI) shows it."""
    return api_get(api, f"/flow_runs/{state.state_details.flow_run_id}")


def _state(run: dict) -> tuple[str, str, str]:
    return run["state"]["type"], run["state"]["name"], run["state"]["message"]


def _drift_task_runs(api: str, flow_run_id: str, expected: int, timeout_s: float = 20) -> list[str]:
    """The names of a run's `drift ...` task runs. Task runs reach the API
    asynchronously, as events: look until `expected` of them are there, for a while."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = api_post(api, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                    "limit": 200})
        names = sorted(t["name"] for t in found if t["name"].startswith("drift "))
        if len(names) >= expected or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def _served_drift(api: str, parameters: dict) -> dict:
    """The check run as `gitops serve` runs one that a command asks for
    (cli/served.py): a flow run of the gitops-drift deployment, in this process.
    Its answer, read as the command reads it, says drift was found; the run."""
    from prefect.client.orchestration import get_client

    from prefect_gitops.cli.deployments import DRIFT, deployment
    from prefect_gitops.cli.served import run_deployment_here
    from prefect_gitops.engine.report import report_from_json

    served = deployment(DRIFT, repo=parameters["repo"])
    served.schedules = []  # no scheduled runs are left behind for a later serve process
    deployment_id = served.apply()
    try:
        told = []
        answer = run_deployment_here("drift", parameters, told.append)
    finally:
        with get_client(sync_client=True) as client:  # which tries again when Prefect's SQLite is busy
            client.delete_deployment(deployment_id)
    assert answer["incomplete"] is False and not report_from_json(answer["report"], drift=True).ok, answer
    [run] = [message["run"] for message in told if "run" in message]
    run = api_get(api, f"/flow_runs/{run['id']}")
    assert run["deployment_id"] == str(deployment_id)
    return run
