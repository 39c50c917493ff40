"""Faults injected into one component of a real local cluster (stop, kill, pause,
resume, start), and what a client sees meanwhile: a clear error naming the cluster
within the request time limits, never a hang. A dedicated cluster, so that the
session's shared ones stay whole for other tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import kubectl
from prefect_gitops.engine.cluster.kube import (FAIL_FAST_S, UNRESPONSIVE_READ_S, ClusterUnreachable, KubeClient,
                                                RequestTimeout)
from prefect_gitops.localcluster import LocalCluster
from test_localcluster_lifecycle import processes_mentioning

pytestmark = pytest.mark.cluster

GITOPS = str(Path(sys.executable).parent / "gitops")


@pytest.fixture(scope="module")
def fault_cluster():
    cluster = LocalCluster(f"faults-{os.getpid()}")
    cluster.up()
    yield cluster
    cluster.down()


@pytest.fixture
def cluster(fault_cluster) -> LocalCluster:
    """The dedicated cluster with every component running, whatever the test before did."""
    if fault_cluster.record() is None:
        fault_cluster.up()
    for component, state in fault_cluster.component_states().items():
        if state == "paused":
            fault_cluster.resume_component(component)
        elif state == "stopped":
            fault_cluster.start_component(component)
    return fault_cluster


def kube_of(cluster: LocalCluster, timeout: RequestTimeout = RequestTimeout()) -> KubeClient:
    """A client with the default time limits (connect 5 s, read 30 s) unless given others."""
    return KubeClient.from_kubeconfig(cluster.kubeconfig, name=cluster.name, timeout=timeout)


def listed_state(cluster: LocalCluster) -> str:
    listed = subprocess.run([GITOPS, "localcluster", "list"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "COLUMNS": "300"})
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if f" {cluster.name} " in line]
    return row


def timed(call) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except Exception as error:
        return error, time.monotonic() - started
    return None, time.monotonic() - started


def test_a_stopped_api_server_refuses_then_starts_on_its_url_with_its_state(cluster):
    kubectl(cluster.kubeconfig, "create", "configmap", "kept", "-n", "default", "--from-literal=a=1")
    url = cluster.record().api_url
    with kube_of(cluster) as kube:
        assert kube.get("v1", "ConfigMap", "kept", "default")["data"] == {"a": "1"}  # a pooled connection
        cluster.stop_component("kube-apiserver")
        assert cluster.component_states()["apiserver"] == "stopped"
        assert "apiserver stopped" in listed_state(cluster)
        error, seconds = timed(lambda: kube.get("v1", "ConfigMap", "kept", "default"))
        print(f"stopped kube-apiserver: failed after {seconds:.1f} s: {error}")
        assert isinstance(error, ClusterUnreachable)
        assert str(error) == f"cluster {cluster.name} ({url}) is unreachable: connection refused"

        cluster.start_component("kube-apiserver")
        assert cluster.record().api_url == url
        assert cluster.component_states()["apiserver"] == "running"
        assert " running " in listed_state(cluster)
        # The same client, with the same kubeconfig: the object written before is there.
        assert kube.get("v1", "ConfigMap", "kept", "default")["data"] == {"a": "1"}


def test_a_killed_etcd_starts_again_with_its_data(cluster):
    kubectl(cluster.kubeconfig, "create", "configmap", "in-etcd", "-n", "default", "--from-literal=b=2")
    cluster.stop_component("etcd", kill=True)
    assert cluster.component_states()["etcd"] == "stopped"
    cluster.start_component("etcd")
    # The kube-apiserver reconnects by itself; kubectl's own retries bridge the gap.
    data = kubectl(cluster.kubeconfig, "get", "configmap", "in-etcd", "-n", "default", "--request-timeout=60s",
                   "-o", "jsonpath={.data.b}").stdout
    assert data == "2"


def test_a_paused_api_server_fails_requests_in_time_then_answers_on_resume(cluster):
    url = cluster.record().api_url
    limits = RequestTimeout(connect_s=2, read_s=6)  # the defaults' mechanism, sooner
    with kube_of(cluster, limits) as kube:
        kube.list("v1", "Namespace")  # the next request reuses this connection: the read limit applies
        cluster.pause_component("kube-apiserver")
        assert cluster.component_states()["apiserver"] == "paused"
        assert "apiserver paused" in listed_state(cluster)
        on_pooled, pooled_s = timed(lambda: kube.list("v1", "Namespace"))
        time.sleep(FAIL_FAST_S)  # right after a timeout, requests fail without being sent
        on_new, new_s = timed(lambda: kube.get("v1", "Namespace", "default"))
        print(f"paused kube-apiserver: failed after {pooled_s:.1f} s (pooled connection), "
              f"{new_s:.1f} s (new connection): {on_pooled}")
        # After a timeout, until the server answers again, requests wait the short read limit.
        for error, read_s in ((on_pooled, 6), (on_new, UNRESPONSIVE_READ_S)):
            assert isinstance(error, ClusterUnreachable)
            assert str(error) == (f"cluster {cluster.name} ({url}) is unreachable: "
                                  f"no answer within the time limit (connect 2 s, read {read_s:g} s)")
            assert error.transient and error.unresponsive
        cluster.resume_component("kube-apiserver")
        time.sleep(FAIL_FAST_S)  # right after a timeout, requests fail without being sent
        assert kube.get("v1", "Namespace", "default")["metadata"]["name"] == "default"


def test_down_stops_a_cluster_with_paused_components_and_leaves_nothing(cluster):
    state = cluster.layout.root
    cluster.pause_component("kube-apiserver")
    cluster.pause_component("etcd")
    assert cluster.down()
    assert processes_mentioning(str(state)) == []
    assert not state.exists()


def test_fault_commands_say_what_they_did_and_refuse_what_cannot_be(cluster):
    def gitops(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([GITOPS, "localcluster", *args], capture_output=True, text=True, timeout=120)

    paused = gitops("pause", cluster.name, "scheduler")
    assert paused.returncode == 0, paused.stderr
    assert cluster.component_states()["scheduler"] == "paused"
    assert gitops("resume", cluster.name, "kube-scheduler").returncode == 0
    assert cluster.component_states()["scheduler"] == "running"
    assert gitops("stop", cluster.name, "kubelet").returncode == 0
    assert cluster.component_states()["kubelet"] == "stopped"
    again = gitops("stop", cluster.name, "kubelet")
    assert again.returncode == 1 and "kubelet of local cluster" in again.stderr and "is not running" in again.stderr
    assert gitops("start", cluster.name, "kubelet").returncode == 0
    assert cluster.component_states()["kubelet"] == "running"
    unknown = gitops("stop", cluster.name, "kube-proxy")
    assert unknown.returncode == 1 and "unknown component 'kube-proxy'" in unknown.stderr
    missing = gitops("pause", "no-such-cluster", "etcd")
    assert missing.returncode == 1 and "there is no local cluster 'no-such-cluster'" in missing.stderr


# ---- a sync against a paused API server -------------------------------------------------

def app_repo(root: Path, cluster: str, greeting: str):
    """A Git repository of one app for the fault cluster, saved as a block."""
    from prefect_gitops.blocks import GitRepository
    from example_repo import git

    work = root / "work"
    (work / "apps" / "settings").mkdir(parents=True, exist_ok=True)
    (work / "gitops.yaml").write_text(
        "apps:\n  - name: settings\n    path: apps/settings\n"
        f"    clusters: [{cluster}]\n    namespace: faults-app\n"
        "    policy:\n      allowedNamespaces: [faults-app]\n")
    (work / "apps" / "settings" / "all.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: faults-app\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: faults-app\n"
        f"data:\n  greeting: {greeting}\n")
    if not (root / "app.git").exists():
        git("init", "--quiet", "--bare", "-b", "main", str(root / "app.git"), cwd=root)
        git("init", "--quiet", "-b", "main", cwd=work)
        git("remote", "add", "origin", str(root / "app.git"), cwd=work)
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", f"greet with {greeting}", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)
    name = f"faults-app-{os.getpid()}"
    GitRepository(url=f"file://{root / 'app.git'}", branch="main").save(name, overwrite=True)
    return name


def test_a_sync_against_a_paused_api_server_fails_naming_the_cluster(cluster, tmp_path, prefect_api):
    from prefect_gitops.blocks import KubernetesCluster
    from prefect_gitops.engine.report import SyncFailed
    from prefect_gitops.flows.sync import gitops_sync

    KubernetesCluster.from_kubeconfig_file(cluster.kubeconfig).save(cluster.name, overwrite=True)
    repo = app_repo(tmp_path, cluster.name, "hello")
    assert gitops_sync(repo=repo, clusters=[cluster.name]).ok

    app_repo(tmp_path, cluster.name, "bonjour")
    cluster.pause_component("kube-apiserver")
    try:
        failure, seconds = timed(lambda: gitops_sync(repo=repo, clusters=[cluster.name]))
    finally:
        cluster.resume_component("kube-apiserver")
    print(f"sync against a paused kube-apiserver: failed after {seconds:.1f} s: {failure}")
    assert isinstance(failure, SyncFailed)
    [result] = failure.report.results
    assert f"cluster {cluster.name} ({cluster.record().api_url}) is unreachable" in result.message

    assert gitops_sync(repo=repo, clusters=[cluster.name]).ok  # resumed: the next sync converges
    greeting = kubectl(cluster.kubeconfig, "get", "configmap", "settings", "-n", "faults-app",
                       "-o", "jsonpath={.data.greeting}").stdout
    assert greeting == "bonjour"
