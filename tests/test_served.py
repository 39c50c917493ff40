"""`gitops sync`, `diff` and `drift` as thin clients of a running `gitops serve`:
the work runs in the serve process as a flow run of the served deployment
(Retry-able in the UI), and the command prints its report and exits as it
would have run it itself. With serve gone, the commands run in-process again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import kubectl
from example_repo import make_example_repo, remove_sample_apps

pytestmark = pytest.mark.cluster

GITOPS = str(Path(sys.executable).parent / "gitops")


def start_serve(root: Path, repo_block: str, prefect_api: str) -> tuple[subprocess.Popen, dict]:
    """`gitops serve` of the repository with a GITOPS_HOME of its own, once its
    deployments are registered and its socket is bound; and the commands' env."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "GITOPS_HOME": str(root / "home")}
    log = root / "serve.log"
    with log.open("w") as output:
        serve = subprocess.Popen([GITOPS, "serve", "--repo", repo_block, "--sync-interval", "3600"],
                                 stdout=output, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while not (_deployment(prefect_api, "gitops-drift") and (root / "home" / "serve.sock").exists()):
        assert serve.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.5)
    return serve, env


@pytest.fixture(scope="module")
def served(tmp_path_factory, registered_clusters, prefect_api):
    """The sample repository and a `gitops serve` of it; stopped afterwards."""
    root = tmp_path_factory.mktemp("served")
    repo = make_example_repo(root, "served")
    serve, env = start_serve(root, repo.block_name, prefect_api)
    try:
        yield repo, env
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        remove_sample_apps(*registered_clusters.values())


def _deployment(prefect_api: str, name: str) -> dict | None:
    response = httpx.get(f"{prefect_api}/deployments/name/{name}/{name}", timeout=30)
    return response.json() if response.status_code == 200 else None


def gitops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=600, env=env)


def latest_run(prefect_api: str, flow_name: str, asked: bool = False) -> dict | None:
    """The flow's latest run; `asked`: the latest a command asked for (not a scheduled tick)."""
    response = httpx.post(f"{prefect_api}/flow_runs/filter", timeout=30, json={
        "flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 10})
    runs = [r for r in response.json() if not asked or r["parameters"].get("if_changed") is False]
    return runs[0] if runs else None


def test_sync_diff_and_drift_run_in_the_serve_process_as_runs_of_its_deployments(served, prefect_api,
                                                                                  registered_clusters):
    repo, env = served
    sync_deployment = _deployment(prefect_api, "gitops-sync")

    synced = gitops(env, "sync", "--repo", repo.block_name, "--json")
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert {(r["app"], r["cluster"], r["status"]) for r in report["results"]} >= {
        ("web", "staging", "succeeded"), ("web", "production", "succeeded")}
    run = latest_run(prefect_api, "gitops-sync")
    # A run of the served deployment (an in-process run has none), with the command's parameters.
    assert run["deployment_id"] == sync_deployment["id"]
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"]["repo"] == repo.block_name and run["parameters"]["if_changed"] is False
    assert run["name"] == f"sync {repo.block_name}@{report['revision'][:7]}"
    production = registered_clusters["production"]
    assert kubectl(production.kubeconfig, "get", "deployment", "web", "-n", "web",
                   "-o", "jsonpath={.status.readyReplicas}").stdout == "3"

    # Nothing to change, nothing drifted: both say so by their exit codes and text.
    diffed = gitops(env, "diff", "--repo", repo.block_name)
    assert diffed.returncode == 0, diffed.stdout + diffed.stderr
    assert "no changes" in diffed.stderr
    assert latest_run(prefect_api, "gitops-sync")["parameters"]["dry_run"] is True

    kubectl(production.kubeconfig, "scale", "deployment", "web", "-n", "web", "--replicas=1")
    drifted = gitops(env, "drift", "--repo", repo.block_name, "--app", "web")
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    assert "Deployment/web/web" in drifted.stdout and "spec.replicas" in drifted.stdout
    drift_run = latest_run(prefect_api, "gitops-drift")
    assert drift_run["deployment_id"] == _deployment(prefect_api, "gitops-drift")["id"]
    assert (drift_run["state"]["type"], drift_run["state"]["name"]) == ("COMPLETED", "Drifted")
    assert drift_run["state"]["message"] == "1 object drifted in 1 app: web@production (1)"


def test_an_error_in_the_served_run_is_the_commands_one_error_line(served):
    _, env = served
    missing = gitops(env, "sync", "--repo", "no-such-repo", "--json")
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert missing.stderr.splitlines() == ["error: no Git repository block named 'no-such-repo' "
                                           "(save one with `gitops repo add`)"]
    assert json.loads(missing.stdout)["error"]["kind"] == "block"


def test_with_serve_stopped_the_command_runs_in_process(tmp_path, prefect_api, registered_clusters):
    """The socket of a serve process that was killed is no reason to fail."""
    home = tmp_path / "home"
    home.mkdir()
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(home / "serve.sock"))  # bound, never listening: what a SIGKILL leaves
    repo = make_example_repo(tmp_path, "unserved")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "GITOPS_HOME": str(home)}
    diffed = gitops(env, "diff", "--repo", repo.block_name, "--app", "web", "--cluster", "staging", "--json")
    assert diffed.returncode in (0, 1), diffed.stderr
    run = latest_run(prefect_api, "gitops-sync")
    assert run["parameters"]["repo"] == repo.block_name and run["deployment_id"] is None


def test_a_serve_process_killed_during_the_run_is_the_commands_one_error_line(tmp_path, prefect_api, served):
    repo, _ = served  # its clusters are synced already; this serve process is another, killed below
    serve, env = start_serve(tmp_path, repo.block_name, prefect_api)
    try:
        command = subprocess.Popen([GITOPS, "sync", "--repo", repo.block_name, "--json"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while (latest_run(prefect_api, "gitops-sync", asked=True) or {"state": {}})["state"].get("type") != "RUNNING":
            assert time.monotonic() < deadline and command.poll() is None, command.communicate()
            time.sleep(0.05)
        serve.send_signal(signal.SIGKILL)
        stdout, stderr = command.communicate(timeout=60)
    finally:
        serve.kill()
        serve.wait(timeout=60)
    assert command.returncode == 2, (stdout, stderr)
    assert stderr.splitlines() == [stderr.splitlines()[0]] and "Traceback" not in stderr, stderr
    assert stderr.startswith("error: gitops serve stopped answering during the run"), stderr
    assert json.loads(stdout)["error"]["kind"] == "prefect"
