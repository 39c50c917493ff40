"""`gitops demo` as a newcomer runs it: with no PREFECT_API_URL it uses the
kept local Prefect server and leaves it running, and ends by naming the UI, the
page to open first and how to stop the server; afterwards, through the REST
API, no run that completed shows Cancelled and the recovery it asked for is
Completed under its own name. Its clusters are gone. On a server where a
cluster block it would replace is someone else's, it refuses to start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from prefect_gitops.cli.demo import where_to_look
from prefect_gitops.cli.prefect_api import PrefectApi

GITOPS = str(Path(sys.executable).parent / "gitops")
DEMO_TIMEOUT_S = 1500
THEIR_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: theirs, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: theirs, user: {token: not-a-secret}}]
contexts: [{name: theirs, context: {cluster: theirs, user: theirs}}]
current-context: theirs
"""


def private_env(tmp_path: Path) -> dict[str, str]:
    """A GITOPS_HOME and a PREFECT_HOME of the test's own (the kept server, the
    clusters), the cluster binary linked from the cached one, no PREFECT_API_URL."""
    from prefect_gitops.localcluster.build import share_binaries

    share_binaries(tmp_path / "gitops")
    env = {**os.environ, "GITOPS_HOME": str(tmp_path / "gitops"), "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    return env


def gitops(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([GITOPS, *args], env=env, cwd=env["GITOPS_HOME"], capture_output=True, text=True,
                          timeout=timeout)


def state_types(api: str, flow_run_id: str) -> list[str]:
    history = httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=30).json()
    return [s["type"] for s in history]


@pytest.mark.cluster
def test_the_demo_leaves_its_runs_on_the_kept_server_to_open_and_none_is_rewritten(tmp_path):
    env = private_env(tmp_path)
    try:
        demo = gitops(env, "demo", timeout=DEMO_TIMEOUT_S)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        server_json = tmp_path / "gitops" / "prefect-server" / "server.json"
        assert server_json.exists(), "the demo stopped the kept local server"
        record = json.loads(server_json.read_text())
        ui = f"http://127.0.0.1:{record['port']}"
        assert [line.strip() for line in demo.stdout.splitlines()[-3:]] == [
            f"its runs, logs, diffs and events are at {ui} (the kept local Prefect server, still running)",
            f"open first: {ui}/runs",
            "stop the server: gitops server stop"]
        print("\n" + "\n".join(demo.stdout.splitlines()[-6:]))

        api = f"{ui}/api"
        assert httpx.get(f"{api}/health", timeout=10).status_code == 200  # still running
        runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
        histories = {r["id"]: state_types(api, r["id"]) for r in runs}
        rewritten = [(r["name"], histories[r["id"]]) for r in runs
                     if "COMPLETED" in histories[r["id"]] and r["state"]["type"] != "COMPLETED"]
        assert not rewritten, rewritten
        [recovery] = [r for r in runs if r["parameters"].get("cluster") == "production" and r["deployment_id"]]
        assert (recovery["name"], recovery["state"]["type"]) == ("recover production", "COMPLETED")
        assert "CANCELLED" not in histories[recovery["id"]]
        assert "demo-" not in gitops(env, "localcluster", "list").stdout  # its clusters are gone

        kubeconfig = tmp_path / "theirs.yaml"
        kubeconfig.write_text(THEIR_KUBECONFIG)
        assert gitops(env, "cluster", "add", "production", "--kubeconfig", str(kubeconfig)).returncode == 0
        again = gitops(env, "demo")
        assert again.returncode == 1, again.stdout + again.stderr
        assert again.stderr.strip() == (f"the demo would replace the cluster block production on {ui}; "
                                        "run it with PREFECT_API_URL set to another Prefect server")
        assert "step 1" not in again.stdout  # refused before any cluster was started
    finally:
        gitops(env, "server", "stop")
        for name in ("demo-staging", "demo-production"):  # when the demo failed half-way
            gitops(env, "localcluster", "down", name)


def test_with_prefect_api_url_set_the_demo_says_where_its_runs_are():
    lines = where_to_look(PrefectApi("http://prefect.example:4200/api", "PREFECT_API_URL"))
    assert lines == ["its runs, logs, diffs and events are at http://prefect.example:4200 (PREFECT_API_URL)",
                     "open first: http://prefect.example:4200/runs"]
