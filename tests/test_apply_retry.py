""""A retried apply goes on where it stopped" (README, "What Prefect shows"):
part-way through a 200-object apply, the API server's front end answers the
applies 503 for a few seconds (tests/faulty_frontend.py); Prefect retries the
apply task, and the objects the first attempt applied are not applied again:
each object is applied exactly once, as the front end counts the writes it
passes on. A real cluster, a real Git remote, Prefect's own server.

Also: a connection the peer closes during the TLS handshake is a lost
connection, retried as a reset is, not a TLS failure (it was: with a TCP proxy
dropping connections, 6 of 13 applies failed with "TLS failed: EOF occurred in
violation of protocol" and were not retried)."""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from prefect_gitops.engine.cluster.kube import ClusterUnreachable, KubeClient
from faulty_frontend import FaultyFrontend
from prefect_gitops.flows.sync import gitops_sync
from plain_repo import configmap, forget_apps, gitops_yaml, make_plain_repo
from prefect_gitops.tasks.retry import is_transient
from test_recovery import api_get, api_post

pytestmark = pytest.mark.cluster

APP = "bulk"
COUNT = 200
FAULT_S = 4  # longer than the client's own retries (1.4 s): the task fails and Prefect retries it
APPLIED_BEFORE_FAULT = 10
APPLIED = re.compile(r"applied (\d+) of (\d+) changes")


def bulk() -> str:
    return "---\n".join(configmap(f"w-{i:03d}", n=str(i)) for i in range(COUNT))


def fail_part_way(frontend: FaultyFrontend) -> None:
    """Once some objects are applied, fail the applies for FAULT_S."""
    deadline = time.monotonic() + 240
    while sum(frontend.applied.values()) < APPLIED_BEFORE_FAULT:
        if time.monotonic() > deadline:
            return
        time.sleep(0.005)
    frontend.fail_for(FAULT_S)


def applied_counts(api: str, task_run_id: str) -> list[int]:
    """What each attempt of the apply task logged it had applied, in order."""
    deadline = time.monotonic() + 60  # logs reach the server in batches
    while True:
        logs = api_post(api, "/logs/filter", {"logs": {"task_run_id": {"any_": [task_run_id]}},
                                              "sort": "TIMESTAMP_ASC", "limit": 200})
        counts = [int(m.group(1)) for log in logs if (m := APPLIED.search(log["message"]))]
        if len(counts) >= 2 or time.monotonic() > deadline:
            return counts
        time.sleep(1)


@pytest.fixture
def frontend(registered_clusters, namespace, tmp_path):
    """A cluster block reaching staging through a FaultyFrontend whose fault fails
    the applies of the test namespace's ConfigMaps: (block name, front end)."""
    from prefect_gitops.blocks import KubernetesCluster

    staging = registered_clusters["staging"]
    objects = f"/api/v1/namespaces/{namespace}/configmaps/"
    front = FaultyFrontend(staging, lambda method, path: method == "PATCH" and path.startswith(objects))
    name = f"retry-{secrets.token_hex(3)}"
    kubeconfig = front.kubeconfig(staging.kubeconfig, tmp_path / "kubeconfig")
    KubernetesCluster.from_kubeconfig_file(kubeconfig).save(name, overwrite=True)
    yield name, front
    front.stop()
    forget_apps(staging, APP)


def test_a_retried_apply_does_not_apply_again_what_the_first_attempt_applied(frontend, namespace, prefect_api,
                                                                             tmp_path):
    block, front = frontend
    repo = make_plain_repo(tmp_path, "apply-retry", {
        "gitops.yaml": gitops_yaml({"name": APP, "path": APP, "clusters": [block], "namespace": namespace}),
        f"{APP}/configmaps.yaml": bulk()})
    fault = threading.Thread(target=fail_part_way, args=(front,), daemon=True)
    fault.start()
    report = gitops_sync(repo=repo.block_name)
    fault.join(timeout=60)
    assert report.ok, report.failure_message()

    [apply] = api_post(prefect_api, "/task_runs/filter", {"task_runs": {"name": {"any_": [f"apply {APP}@{block}"]}}})
    states = [s["name"] for s in api_get(prefect_api, f"/task_run_states/?task_run_id={apply['id']}")]
    assert "AwaitingRetry" in states and states[-1] == "Completed", states
    counts = applied_counts(prefect_api, apply["id"])
    assert len(counts) >= 2 and counts[-1] == COUNT, counts
    assert APPLIED_BEFORE_FAULT <= counts[0] < COUNT, counts  # the first attempt stopped part-way

    objects = {f"/api/v1/namespaces/{namespace}/configmaps/w-{i:03d}" for i in range(COUNT)}
    applied = {path: n for path, n in front.applied.items() if path in objects}
    print(f"\napply attempts logged {counts} applied of {COUNT}; objects answered 503: {len(front.refused)}; "
          f"applied more than once: {sum(n > 1 for n in applied.values())}")
    assert front.refused.keys() <= objects and front.refused  # the fault hit the apply
    assert applied.keys() == objects
    assert {path: n for path, n in applied.items() if n != 1} == {}  # none applied again


def test_a_connection_closed_during_the_tls_handshake_is_transient(local_cluster, tmp_path):
    """A server that takes the connection, reads the client's hello and closes
    (as a proxy or an API server going away does): the error is retried."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        threading.Thread(target=_read_hello_and_close, args=(server,), daemon=True).start()
        config = yaml.safe_load(Path(local_cluster.kubeconfig).read_text())
        cluster = config["clusters"][0]["cluster"]
        cluster["server"] = f"{cluster['server'].rsplit(':', 1)[0]}:{server.getsockname()[1]}"
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
        with KubeClient.from_kubeconfig(tmp_path / "kubeconfig") as kube:
            with pytest.raises(ClusterUnreachable) as refused:
                kube.server_version()
    assert "EOF" in str(refused.value)  # the handshake was cut, not refused
    assert is_transient(refused.value), refused.value


def _read_hello_and_close(server: socket.socket) -> None:
    while True:
        try:
            client, _ = server.accept()
        except OSError:
            return  # closed
        with client:
            client.recv(65536)
