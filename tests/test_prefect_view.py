"""What an operator sees of the pipeline through Prefect's REST API (what the UI
reads), for the sync deployment of prefect.yaml served by `prefect.serve`, two
real local clusters and a real Git remote: a run per app and cluster with its
stages as task runs, honest states, the UI's Retry, a quiet idle tick, and a
transient network fault retried by Prefect."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from example_repo import example_repo  # noqa: F401  (fixture)
from prefect_gitops.flows.sync import gitops_sync
from served_runner import create_flow_run, serving
from tcp_proxy import TcpProxy, proxied_kubeconfig
from test_recovery import api_get, api_post, fleet, wait_for_run  # noqa: F401  (fixture)
from test_revert import break_web, live_image, set_revert_mode
from test_sync import clean_clusters  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster

DEPLOYMENT = "gitops-sync/gitops-sync"
# Nothing to prune in these changes: a stage with nothing to do does not run.
STAGES = ["render", "validate", "diff", "apply", "health", "record"]


@pytest.fixture(scope="module")
def sync_runner(prefect_api, registered_clusters, tmp_path_factory):
    """The gitops-sync deployment of prefect.yaml, served without its schedule
    (the test starts each tick itself); its id."""
    code = ("from prefect_gitops.cli.runner import serve\nfrom prefect_gitops.cli.deployments import deployment\n"
            "d = deployment('gitops-sync', repo='fleet')\nd.schedules = []\nserve(d, limit=1)")
    log = tmp_path_factory.mktemp("sync-runner") / "serve.log"
    with serving(code, prefect_api, log, stop_s=30) as proc:
        yield api_get(prefect_api, f"/deployments/name/{DEPLOYMENT}", wait_s=120, proc=proc, log=log)["id"]


def start_run(api: str, deployment_id: str) -> str:
    """As the UI's Run does it."""
    return create_flow_run(api, deployment_id)


def child_runs(api: str, flow_run_id: str) -> list[dict]:
    """The flow runs nested in a flow run (one level)."""
    tasks = api_post(api, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    ids = [t["id"] for t in tasks]
    if not ids:
        return []
    return api_post(api, "/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"any_": ids}}, "limit": 200})


def task_runs(api: str, flow_run_id: str) -> list[dict]:
    """The task runs of a flow run, without the placeholders of its nested flow runs."""
    found = api_post(api, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    nested = {r["parent_task_run_id"] for r in child_runs(api, flow_run_id)}
    return [t for t in found if t["id"] not in nested]


def artifacts(api: str, flow_run_id: str) -> list[dict]:
    return api_post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})


def gitops_events(api: str, since: datetime, until: datetime) -> list[dict]:
    found = api_post(api, "/events/filter", {"filter": {
        "occurred": {"since": since.isoformat(), "until": until.isoformat()},
        "event": {"prefix": ["gitops."]}}, "limit": 50})
    return found["events"]


def logs(api: str, flow_run_id: str) -> list[dict]:
    return api_post(api, "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})


def stage_names(api: str, flow_run_id: str) -> list[str]:
    return sorted(t["name"] for t in task_runs(api, flow_run_id))


def test_a_reverted_sync_a_retry_of_it_and_an_idle_tick_as_the_ui_shows_them(
        sync_runner, prefect_api, fleet, example_repo, clean_clusters):
    api = prefect_api
    schema = api_get(api, f"/deployments/{sync_runner}")["parameter_openapi_schema"]["properties"]
    assert "Git repository block" in schema["repo"]["description"]  # the deployment form explains each field
    assert schema["if_changed"]["description"]
    example_repo.commit(set_revert_mode(example_repo, "cluster"), "revert in the cluster only")
    good = gitops_sync(repo=fleet)
    bad = break_web(example_repo)

    # The sync of the bad revision: web reverts on both clusters, the run fails.
    run = wait_for_run(api, start_run(api, sync_runner))
    assert (run["state"]["type"], run["state"]["name"]) == ("FAILED", "Reverted"), run["state"]
    assert run["name"] == f"sync {fleet}@{bad[:7]}"
    children = {r["name"]: r for r in child_runs(api, run["id"])}
    assert sorted(children) == sorted(f"{app}@{cluster} {bad[:7]}" for app in ("platform", "web", "widgets")
                                      for cluster in ("staging", "production"))
    for name, child in children.items():
        expected = ("FAILED", "Reverted") if name.startswith("web@") else ("COMPLETED", "Completed")
        assert (child["state"]["type"], child["state"]["name"]) == expected, (name, child["state"])
    fetches = []
    for cluster in ("staging", "production"):
        web = children[f"web@{cluster} {bad[:7]}"]
        stages = {t["name"]: t["state"]["type"] for t in task_runs(api, web["id"])}
        assert stages == {**{f"{s} web@{cluster}": "COMPLETED" for s in STAGES if s != "health"},
                          f"health web@{cluster}": "FAILED"}, stages
        [revert] = child_runs(api, web["id"])
        assert revert["name"] == f"revert web@{cluster} to {good.revision[:7]}"
        assert revert["state"]["type"] == "COMPLETED"
        stages = stage_names(api, revert["id"])
        fetches += [s for s in stages if s.startswith("fetch ")]
        assert [s for s in stages if not s.startswith("fetch ")] == sorted(f"{s} web@{cluster}" for s in STAGES)
        assert "ImagePull" in web["state"]["message"] or "ErrImage" in web["state"]["message"]
        assert live_image(clean_clusters[cluster]) == "nginx:1.27"
    assert fetches == [f"fetch {fleet}@{good.revision[:12]}"]  # the good revision checked out once for both
    [summary] = [a for a in artifacts(api, run["id"]) if a["key"] == f"gitops-sync-{fleet}"]
    assert "| web | production | **reverted** |" in summary["data"]
    assert "| widgets | staging | **succeeded** |" in summary["data"]

    # Retry, as the UI's button does it: the revision is held, nothing goes out, and it says so.
    since = datetime.now(timezone.utc)
    api_post(api, f"/flow_runs/{run['id']}/set_state",
             {"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True})
    time.sleep(2)
    retried = wait_for_run(api, run["id"])
    assert retried["run_count"] == 2
    assert (retried["state"]["type"], retried["state"]["name"]) == ("FAILED", "Skipped"), retried["state"]
    assert f"revision {bad[:12]} is held" in retried["state"]["message"]
    held = [r for r in child_runs(api, run["id"]) if r["name"].startswith("web@")
            and r["state"]["name"] == "Skipped" and r["start_time"] and r["start_time"] >= since.isoformat()]
    assert len(held) == 2
    warnings = [entry["message"] for r in held for entry in logs(api, r["id"]) if entry["level"] == 30]
    assert any("is held after a failed sync" in w for w in warnings), warnings
    skipped = [e for e in gitops_events(api, since, datetime.now(timezone.utc)) if e["event"] == "gitops.sync.skipped"]
    assert {e["resource"]["prefect.resource.name"] for e in skipped} == {"web@staging", "web@production"}

    # An idle tick: head unmoved (and held), nothing drifted.
    since = datetime.now(timezone.utc)
    idle = wait_for_run(api, start_run(api, sync_runner))
    until = datetime.now(timezone.utc)
    assert idle["state"]["type"] == "COMPLETED", idle["state"]
    assert idle["parameters"]["if_changed"] is True
    print(f"\nidle tick: task runs {stage_names(api, idle['id'])}, artifacts {len(artifacts(api, idle['id']))}, "
          f"gitops events {len(gitops_events(api, since, until))}")
    assert len(task_runs(api, idle["id"])) <= 3 and child_runs(api, idle["id"]) == []
    assert artifacts(api, idle["id"]) == []
    assert gitops_events(api, since, until) == []


def test_a_port_closed_after_the_apply_is_retried_by_prefect_and_the_sync_succeeds(
        example_repo, clean_clusters, prefect_api, tmp_path):
    """The port to staging's API server closes (connections reset, then refused)
    for 5 s as soon as web's Deployment exists: the stage running then (health,
    or record) fails, is retried by Prefect, and the sync succeeds."""
    from prefect_gitops.blocks import KubernetesCluster

    staging = clean_clusters["staging"]
    proxy, proxied = proxied_kubeconfig(staging.kubeconfig, tmp_path / "kubeconfig")
    KubernetesCluster.from_kubeconfig_file(proxied, labels={"env": "staging"}).save("staging", overwrite=True)
    fault = threading.Thread(target=_close_when_applied, args=(staging.kubeconfig, proxy), daemon=True)
    fault.start()
    try:
        report = gitops_sync(repo=example_repo.block_name, clusters=["staging"])
    finally:
        proxy.stop()
        KubernetesCluster.from_kubeconfig_file(staging.kubeconfig, labels={"env": "staging"}).save(
            "staging", overwrite=True)
    fault.join(timeout=30)
    assert proxy.closed_at is not None, "the fault was never injected"
    assert report.ok, report.failure_message()
    stages = api_post(prefect_api, "/task_runs/filter", {"task_runs": {"name": {"any_": [
        f"{s} web@staging" for s in ("prune", "health", "record")]}}, "sort": "EXPECTED_START_TIME_DESC", "limit": 3})
    histories = {t["name"]: [s["name"] for s in api_get(prefect_api, f"/task_run_states/?task_run_id={t['id']}")]
                 for t in stages}
    retried = {name: states for name, states in histories.items() if "AwaitingRetry" in states}
    assert retried, histories
    assert all(states[-1] == "Completed" for states in histories.values()), histories


def _close_when_applied(kubeconfig: Path, proxy: TcpProxy, closed_s: float = 5) -> None:
    """Watch the cluster itself (not through the proxy) for web's Deployment."""
    import kubernetes

    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    apps = kubernetes.client.AppsV1Api(client)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            apps.read_namespaced_deployment("web", "web", _request_timeout=5)
        except kubernetes.client.ApiException:
            time.sleep(0.02)
            continue
        proxy.close_for(closed_s)
        return
