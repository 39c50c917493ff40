"""Prefect's server dies in the middle of a `gitops sync` (SIGKILL, as a machine
that went down): the sync goes on in the cluster, the command prints its report
within REPORTED_WITHIN_S and says in one line that Prefect did not record it,
nothing of Prefect's internals reaches the terminal, and the next command, once
the server is back, writes the runs' final states so that none stays Running."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import KUBECTL, kubectl
from plain_repo import configmap, empty_repo, gitops_yaml, namespace_object
from test_recovery import api_post

pytestmark = pytest.mark.cluster

GITOPS = str(Path(sys.executable).parent / "gitops")
CONFIGMAPS = 200
# From the server's death to the command's exit: about 20 s (two requests, each tried
# three times); Prefect's own retries took 150 s.
REPORTED_WITHIN_S = 45


def gitops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture
def user(tmp_path, local_cluster) -> dict[str, str]:
    """A user of the kept local server in their own GITOPS_HOME, with a repository
    of CONFIGMAPS ConfigMaps for `one` (the session's cluster) saved as blocks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(GITOPS_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect-client"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    namespace = f"outage-{secrets.token_hex(3)}"
    repo = empty_repo(tmp_path, "bulk")
    repo.commit({"gitops.yaml": gitops_yaml({"name": "bulk", "path": "bulk", "clusters": ["one"],
                                             "namespace": namespace}),
                 "bulk/namespace.yaml": namespace_object(namespace),
                 "bulk/configmaps.yaml": "---\n".join(configmap(f"c{i}", n=str(i)) for i in range(CONFIGMAPS))},
                "the apps")
    for saved in (gitops(env, "repo", "add", "fleet", "--url", f"file://{repo.bare}"),
                  gitops(env, "cluster", "add", "one", "--kubeconfig", str(local_cluster.kubeconfig))):
        assert saved.returncode == 0, saved.stderr
    yield {**env, "NAMESPACE": namespace}
    gitops(env, "server", "stop")
    kubectl(local_cluster.kubeconfig, "delete", "namespace", namespace, "--wait=false", check=False)
    kubectl(local_cluster.kubeconfig, "delete", "-n", "gitops-system", "--ignore-not-found",
            "configmap/gitops-app-bulk", "lease/gitops-sync-bulk", check=False)


def test_a_sync_whose_prefect_server_dies_reports_within_its_bound_and_its_runs_are_recorded_later(user, local_cluster):
    server_file = Path(user["GITOPS_HOME"]) / "prefect-server" / "server.json"
    sync = subprocess.Popen([GITOPS, "sync", "--repo", "fleet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=user)
    _wait_for_namespace(local_cluster.kubeconfig, user["NAMESPACE"], sync)  # the apply has begun
    server = json.loads(server_file.read_text())
    os.killpg(server["pid"], signal.SIGKILL)
    killed = time.monotonic()
    out, err = sync.communicate(timeout=300)

    assert sync.returncode == 0, err
    assert time.monotonic() - killed < REPORTED_WITHIN_S
    assert out.rstrip().endswith("all succeeded"), out
    assert "note: Prefect did not record this run: the Prefect API" in err
    for internal in ("Error logging to API", "EventsWorker", "Traceback", "Event("):
        assert internal not in err, err
    listed = kubectl(local_cluster.kubeconfig, "get", "configmaps", "-n", user["NAMESPACE"], "-o", "name").stdout
    assert sum(line.startswith("configmap/c") for line in listed.split()) == CONFIGMAPS
    journal = json.loads((Path(user["GITOPS_HOME"]) / "unrecorded-runs.json").read_text())
    assert len(journal) == 2  # the fleet run and the app run

    again = gitops(user, "sync", "--repo", "fleet")  # starts the kept server again, on its port
    assert again.returncode == 0, again.stderr
    assert not (Path(user["GITOPS_HOME"]) / "unrecorded-runs.json").exists()
    api = f"http://127.0.0.1:{json.loads(server_file.read_text())['port']}/api"
    runs = {run["id"]: run for run in api_post(api, "/flow_runs/filter", {"flow_runs": {"id": {"any_": list(journal)}}})}
    assert {run["state"]["type"] for run in runs.values()} == {"COMPLETED"}, runs
    assert all("recorded late" in run["state"]["message"] for run in runs.values())


def _wait_for_namespace(kubeconfig: Path, namespace: str, sync: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", "get", "namespace", namespace],
                         capture_output=True).returncode:
        assert sync.poll() is None, sync.communicate()
        assert time.monotonic() < deadline, "the sync never created its namespace"
        time.sleep(0.1)
