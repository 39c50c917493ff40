"""gitops_recover against real clusters and Prefect's own server: an emptied
cluster is brought back app by app, a rerun changes nothing, a half-recovered
one is completed; and the recovery deployment runs when started through the
REST API, the `prefect` CLI, or the event `gitops.recover.requested`, and a
run asked for through the API has its name from the start. Also: prefect.yaml
deploys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import kubectl
from example_repo import example_repo  # noqa: F401  (fixture)
from prefect_gitops.engine.report import SyncStatus
from prefect_gitops.flows.recovery import RecoveryReport, gitops_recover, request_recovery
from prefect_gitops.flows.sync import gitops_sync
from served_runner import serving
from test_sync import clean_clusters, resource_versions  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
PREFECT = str(Path(sys.executable).parent / "prefect")
APPS = ["platform", "web", "widgets"]
RUN_TIMEOUT_S = 300
DEPLOYMENT = "gitops-recover/gitops-recover"


def empty(cluster) -> None:
    """What a new cluster has of the sample apps: nothing (as clean_clusters leaves it)."""
    for namespace in ("web", "widgets", "gitops-system"):
        kubectl(cluster.kubeconfig, "delete", "namespace", namespace, "--ignore-not-found", "--wait=true",
                "--timeout=90s", check=False)
    kubectl(cluster.kubeconfig, "delete", "crd", "widgets.example.com", "--ignore-not-found")


def live_state(cluster) -> dict[str, dict[str, str]]:
    return {ns: resource_versions(cluster, ns) for ns in ("web", "widgets")}


def show(report: RecoveryReport) -> None:
    times = ", ".join(f"{a.app} {a.seconds:.1f} s ({a.changed} changed)" for a in report.apps)
    print(f"\nrecovery of {report.cluster}: {times}; total {report.seconds:.1f} s")


# --- the flow -----------------------------------------------------------------


def test_an_emptied_cluster_is_recovered_app_by_app_and_a_rerun_changes_nothing(example_repo, clean_clusters):
    production, staging = clean_clusters["production"], clean_clusters["staging"]
    empty(production)

    report = gitops_recover(repo=example_repo.block_name, cluster="production")
    show(report)

    assert report.ok and report.cluster == "production"
    assert [a.app for a in report.apps] == APPS  # dependsOn order: the CRD and namespaces first
    assert all(a.status is SyncStatus.SUCCEEDED and a.changed > 0 and a.seconds > 0 for a in report.apps)
    assert report.seconds >= sum(a.seconds for a in report.apps)
    assert kubectl(production.kubeconfig, "get", "deployment", "web", "-n", "web",
                   "-o", "jsonpath={.status.readyReplicas}").stdout == "3"
    assert kubectl(production.kubeconfig, "get", "widgets", "-n", "widgets", "-o", "name").stdout.split() == [
        "widget.example.com/large", "widget.example.com/small"]
    assert kubectl(staging.kubeconfig, "get", "namespace", "web", check=False).returncode != 0  # only that cluster
    before = live_state(production)

    again = gitops_recover(repo=example_repo.block_name, cluster="production")
    show(again)
    assert again.ok and again.changed == 0
    assert live_state(production) == before


def test_a_half_recovered_cluster_is_completed_by_a_rerun(example_repo, clean_clusters):
    production = clean_clusters["production"]
    empty(production)
    # Where an interrupted recovery leaves a cluster: the first app back, the others not.
    assert gitops_sync(repo=example_repo.block_name, apps=["platform"], clusters=["production"]).ok

    report = gitops_recover(repo=example_repo.block_name, cluster="production")
    show(report)
    assert report.ok
    assert {a.app: a.changed > 0 for a in report.apps} == {"platform": False, "web": True, "widgets": True}


# --- the deployment, served -------------------------------------------------------


@pytest.fixture
def fleet(example_repo):
    """The sample repository saved as `fleet`, the served deployment's default repo."""
    from prefect_gitops.blocks import GitRepository

    GitRepository(url=f"file://{example_repo.bare}", branch="main").save("fleet", overwrite=True)
    return "fleet"


def api_get(api: str, path: str, wait_s: float = 0, proc: subprocess.Popen | None = None,
            log: Path | None = None) -> dict:
    """GET, retried on 404 for up to wait_s (until the runner registered what is asked)."""
    deadline = time.monotonic() + wait_s
    while True:
        response = httpx.get(f"{api}{path}", timeout=30)
        if response.status_code != 404 or time.monotonic() > deadline:
            response.raise_for_status()
            return response.json()
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the runner exited ({proc.returncode}):\n{log.read_text()[-3000:] if log else ''}")
        time.sleep(1)


def api_post(api: str, path: str, body: dict) -> dict | list:
    response = httpx.post(f"{api}{path}", json=body, timeout=30)
    assert response.is_success, f"POST {path}: {response.status_code} {response.text}"
    return response.json()


def runs_of(api: str, deployment_id: str) -> list[dict]:
    return api_post(api, "/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}})


def wait_for_run(api: str, flow_run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        run = api_get(api, f"/flow_runs/{flow_run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"flow run {flow_run_id} still {run['state']['name']} after {RUN_TIMEOUT_S} s")
        time.sleep(1)


def recovery_markdown(api: str, flow_run_id: str) -> str:
    [artifact] = api_post(api, "/artifacts/filter", {
        "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "key": {"any_": ["gitops-recover-production"]}}})
    return artifact["data"]


@pytest.fixture(scope="class")
def runner(prefect_api, registered_clusters, tmp_path_factory):
    """The recovery deployment of prefect.yaml as cli/deployments.py builds it and cli/runner.py serves
    it (as the demo does); its id. Stopped after the tests that use it, before the server."""
    code = ("from prefect_gitops.cli.deployments import deployment\nfrom prefect_gitops.cli.runner import serve\n"
            "serve(deployment('gitops-recover', repo='fleet'), limit=1)")
    log = tmp_path_factory.mktemp("runner") / "serve.log"
    with serving(code, prefect_api, log) as proc:  # its stop cancels unfinished runs, pauses the deployment
        yield api_get(prefect_api, f"/deployments/name/{DEPLOYMENT}", wait_s=120, proc=proc, log=log)["id"]


class TestServedRecovery:
    """The recovery deployment started three ways: REST, the prefect CLI, an event."""

    def test_started_through_the_rest_api(self, runner, prefect_api, fleet, clean_clusters):
        production = clean_clusters["production"]
        empty(production)
        started = time.monotonic()
        response = httpx.post(f"{prefect_api}/deployments/{runner}/create_flow_run", timeout=30,
                              json={"parameters": {"repo": fleet, "cluster": "production"}})
        assert response.status_code == 201, response.text
        run = wait_for_run(prefect_api, response.json()["id"])
        print(f"\nREST-started recovery of an emptied cluster: {time.monotonic() - started:.1f} s "
              f"from the request to Completed")

        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["parameters"] == {"repo": fleet, "cluster": "production"}
        assert "**recovered**" in recovery_markdown(prefect_api, run["id"])
        assert kubectl(production.kubeconfig, "get", "deployment", "web", "-n", "web",
                       "-o", "jsonpath={.status.readyReplicas}").stdout == "3"

    def test_started_from_the_prefect_cli(self, runner, prefect_api, fleet, registered_clusters):
        started = subprocess.run(
            [PREFECT, "deployment", "run", DEPLOYMENT, "-p", f"repo={fleet}", "-p", "cluster=production"],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
            env={**os.environ, "PREFECT_API_URL": prefect_api})
        assert started.returncode == 0, started.stdout + started.stderr
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
        run = wait_for_run(prefect_api, flow_run_id)
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["deployment_id"] == runner

    def test_started_by_the_recover_requested_event(self, runner, prefect_api, fleet, registered_clusters):
        before = {r["id"] for r in runs_of(prefect_api, runner)}
        request_recovery("production", reason="a test")
        deadline, new = time.monotonic() + 60, []
        while not new and time.monotonic() < deadline:
            time.sleep(1)
            new = [r for r in runs_of(prefect_api, runner) if r["id"] not in before]
        assert new, "no flow run was created by the gitops.recover.requested event"
        run = wait_for_run(prefect_api, new[0]["id"])
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["parameters"] == {"repo": "fleet", "cluster": "production"}  # the cluster from the event


def test_a_recovery_asked_for_through_the_api_has_its_name_from_the_start(prefect_api):
    """Asked for by the demo (REST) and by `gitops recover --via-api`, the run is
    named as the flow names its runs while it waits to be started, not with
    Prefect's random name until a runner starts it."""
    from prefect_gitops.cli.demo import create_recovery_run
    from prefect_gitops.cli.deployments import deployment
    from prefect_gitops.cli.recover import start_recovery

    deployment_id = str(deployment("gitops-recover", repo="fleet").apply())
    asked = [create_recovery_run(prefect_api, deployment_id, "production")["id"],
             str(start_recovery("fleet", "production", timeout_s=0).id)]
    runs = [api_get(prefect_api, f"/flow_runs/{flow_run_id}") for flow_run_id in asked]
    for flow_run_id in asked:  # before a runner of another test picks them up
        httpx.delete(f"{prefect_api}/flow_runs/{flow_run_id}", timeout=30)
    assert [(r["name"], r["state"]["type"]) for r in runs] == [("recover production", "SCHEDULED")] * 2


# --- prefect.yaml -----------------------------------------------------------------


def test_prefect_yaml_deploys_schedules_limits_and_the_recover_trigger(prefect_api):
    env = {**os.environ, "PREFECT_API_URL": prefect_api}

    def prefect(*args: str) -> None:
        done = subprocess.run([PREFECT, *args], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"

    prefect("work-pool", "create", "gitops", "--type", "process", "--overwrite")
    prefect("--no-prompt", "deploy", "--all")
    names = ["gitops-sync", "gitops-drift", "gitops-recover", "gitops-rollback"]
    deployed = {n: api_get(prefect_api, f"/deployments/name/{n}/{n}") for n in names}
    try:
        sync, drift, recover = deployed["gitops-sync"], deployed["gitops-drift"], deployed["gitops-recover"]
        assert {d["work_pool_name"] for d in deployed.values()} == {"gitops"}
        assert {d["parameters"]["repo"] for d in deployed.values()} == {"fleet"}
        assert [s["schedule"]["interval"] for s in sync["schedules"]] == [60.0]
        assert [s["schedule"]["cron"] for s in drift["schedules"]] == ["*/10 * * * *"]
        assert recover["schedules"] == [] and deployed["gitops-rollback"]["schedules"] == []
        assert sync["global_concurrency_limit"]["limit"] == recover["global_concurrency_limit"]["limit"] == 1
        assert sync["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        assert sync["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {
            "directory": "{{ $GITOPS_PROJECT_DIR }}"}}]
        [automation] = api_get(prefect_api, f"/automations/related-to/prefect.deployment.{recover['id']}")
        assert automation["trigger"]["expect"] == ["gitops.recover.requested"]
        [action] = automation["actions"]
        assert action["type"] == "run-deployment" and action["deployment_id"] == recover["id"]
        assert action["parameters"] == {"cluster": "{{ event.resource['gitops.cluster'] }}"}
    finally:  # nothing scheduled left behind for the other tests
        for deployment in deployed.values():
            httpx.delete(f"{prefect_api}/automations/owned-by/prefect.deployment.{deployment['id']}", timeout=30)
            httpx.delete(f"{prefect_api}/deployments/{deployment['id']}", timeout=30)
        httpx.delete(f"{prefect_api}/work_pools/gitops", timeout=30)
