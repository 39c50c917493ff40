"""The fleet on real parts: PostgreSQL, Prefect's server on it, the `gitops`
process work pool with prefect.yaml deployed, two process workers (each with a
working directory and GITOPS_HOME of its own), and three cluster blocks spread
over the session's two local clusters (each simulated cluster with apps and
namespaces of its own). Ticks are started as the schedule starts them: a run of
the gitops-sync deployment with its parameters (the schedules are off, so that
the test says when)."""

from __future__ import annotations

import secrets
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import kubectl
from example_repo import git
from plain_repo import configmap, deployment, empty_repo, gitops_yaml
from test_recovery import api_get, api_post, wait_for_run
from prefect_gitops.engine.cluster.kube import KubeClient
from prefect_gitops.engine.state.inventory import read_inventory
from prefect_gitops.flows.sync_cluster import slot_name
from prefect_gitops.localcluster.fleet import LocalFleet, free_port

pytestmark = pytest.mark.cluster

RUN_LIMIT_S = 300
# The fleet run and three cluster runs at once need both workers' slots.
WORKER_LIMIT = 2


@pytest.fixture(scope="module")
def fleet(registered_clusters, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    with LocalFleet(root / "fleet", workers=2, worker_limit=WORKER_LIMIT) as fleet:
        yield fleet


class Fleet:
    """A repository of one app per simulated cluster, saved in the fleet's Prefect."""

    def __init__(self, fleet: LocalFleet, clusters: dict, root: Path):
        self.fleet, self.api = fleet, fleet.api_url
        self.suffix = secrets.token_hex(3)
        real = [clusters["staging"], clusters["production"]]
        self.kubeconfigs = {f"c{i}-{self.suffix}": real[i % 2].kubeconfig for i in range(1, 4)}
        for name, kubeconfig in self.kubeconfigs.items():
            self.gitops("cluster", "add", name, "--kubeconfig", str(kubeconfig))
            kubectl(kubeconfig, "create", "namespace", self.namespace(name))
        self.repo = empty_repo(root, f"fleet-{self.suffix}")
        self.gitops("repo", "add", self.repo.block_name, "--url", f"file://{self.repo.bare}")

    def gitops(self, *args: str) -> str:
        return self.fleet.run([str(Path(self.fleet._prefect()).parent / "gitops"), *args])

    @staticmethod
    def namespace(cluster: str) -> str:
        return f"fleet-{cluster}"

    def commit(self, greeting: str, clusters: dict[str, Path] | None = None, ready_after_s: int = 0) -> str:
        """One app per cluster: a ConfigMap and a Deployment, available
        ready_after_s after its pod is ready (minReadySeconds)."""
        clusters = clusters or self.kubeconfigs
        apps = [{"name": f"web-{c}", "path": f"web-{c}", "namespace": self.namespace(c), "clusters": [c]}
                for c in clusters]
        files = {"gitops.yaml": gitops_yaml(*apps)}
        for c in clusters:
            files[f"web-{c}/settings.yaml"] = configmap("settings", greeting=greeting)
            web = yaml.safe_load(deployment("web"))
            if ready_after_s:
                web["spec"]["minReadySeconds"] = ready_after_s
            files[f"web-{c}/web.yaml"] = yaml.safe_dump(web)
        self.repo.commit(files, f"greeting {greeting}")
        return git("rev-parse", "HEAD", cwd=self.repo.work)

    def tick(self) -> dict:
        """A run of gitops-sync as its schedule starts it, once it has ended."""
        return self.run_deployment("gitops-sync/gitops-sync", {"repo": self.repo.block_name, "if_changed": True})

    def run_deployment(self, name: str, parameters: dict, wait: bool = True) -> dict:
        deployment = self.get(f"/deployments/name/{name}")
        run = self.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
        return self.wait(run["id"]) if wait else run

    def wait(self, run_id: str) -> dict:
        return wait_for_run(self.api, run_id)

    def children(self, run: dict) -> list[dict]:
        return self.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})

    def task_runs(self, run: dict) -> list[dict]:
        return self.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})

    def artifacts(self, run: dict) -> list[dict]:
        return self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})

    def get(self, path: str) -> dict:
        return api_get(self.api, path)

    def post(self, path: str, body: dict) -> dict | list:
        return api_post(self.api, path, body)


@pytest.fixture
def simulated(fleet, registered_clusters, tmp_path):
    simulated = Fleet(fleet, registered_clusters, tmp_path)
    yield simulated
    for name, kubeconfig in simulated.kubeconfigs.items():
        kubectl(kubeconfig, "delete", "namespace", simulated.namespace(name), "--wait=false", check=False)


def configmap_greeting(kubeconfig: Path, namespace: str) -> str:
    out = kubectl(kubeconfig, "get", "configmap", "settings", "-n", namespace, "-o", "yaml").stdout
    return yaml.safe_load(out)["data"]["greeting"]


def state(run: dict) -> tuple[str, str]:
    return run["state"]["type"], run["state"]["name"]


def test_a_tick_after_a_commit_runs_each_cluster_on_either_worker_and_an_idle_tick_stays_small(fleet, simulated):
    sha = simulated.commit("hello")
    tick = simulated.tick()
    assert state(tick) == ("COMPLETED", "Completed"), tick["state"]
    assert tick["name"] == f"sync {simulated.repo.block_name}@{sha[:7]}"
    cluster_runs = simulated.children(tick)
    assert sorted(r["name"] for r in cluster_runs) == sorted(
        f"sync {simulated.repo.block_name}@{sha[:7]} → {c}" for c in simulated.kubeconfigs)
    assert all(state(r) == ("COMPLETED", "Completed") for r in cluster_runs), [r["state"] for r in cluster_runs]
    cluster_deployment = simulated.get("/deployments/name/gitops-sync-cluster/gitops-sync-cluster")
    assert {r["deployment_id"] for r in cluster_runs} == {cluster_deployment["id"]}
    assert {r["parameters"]["revision"] for r in cluster_runs} == {sha}  # plain JSON: the commit, not a branch
    # Each cluster run nested its app's run, which applied the app and waited for it.
    for run in cluster_runs:
        [app_run] = simulated.children(run)
        assert state(app_run) == ("COMPLETED", "Completed"), app_run["state"]
        assert app_run["name"] == f"web-{run['parameters']['cluster']}@{run['parameters']['cluster']} {sha[:7]}"
    for name, kubeconfig in simulated.kubeconfigs.items():
        assert configmap_greeting(kubeconfig, simulated.namespace(name)) == "hello"
    # Both workers took runs: the fleet run and three cluster runs need both one's slots.
    taken = {w: fleet.worker_runs(w) for w in ("worker-1", "worker-2")}
    ours = {tick["id"], *(r["id"] for r in cluster_runs)}
    assert all(taken[w] & ours for w in taken), taken
    assert ours <= taken["worker-1"] | taken["worker-2"]
    # Prefect's server keeps them in PostgreSQL.
    assert fleet.postgres.sql(f"select count(*) from flow_run where id in ({', '.join(map(repr, ours))})") == "4"

    idle = simulated.tick()
    assert state(idle) == ("COMPLETED", "Completed"), idle["state"]
    assert idle["state"]["message"].startswith("up to date")
    assert simulated.children(idle) == []  # no run per cluster
    assert len(simulated.task_runs(idle)) <= 3, [t["name"] for t in simulated.task_runs(idle)]
    assert simulated.artifacts(idle) == []


def unreachable_kubeconfig(kubeconfig: Path, into: Path) -> Path:
    """A copy of kubeconfig whose server is a loopback port where nothing listens."""
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    into.write_text(yaml.safe_dump(config))
    return into


def test_a_cluster_that_is_down_fails_its_own_run_only(fleet, simulated, tmp_path):
    down = f"down-{simulated.suffix}"
    simulated.gitops("cluster", "add", down, "--kubeconfig",
                     str(unreachable_kubeconfig(simulated.kubeconfigs[f"c1-{simulated.suffix}"], tmp_path / "down")))
    sha = simulated.commit("hello", {**simulated.kubeconfigs, down: None})
    tick = simulated.tick()
    assert state(tick) == ("FAILED", "Failed"), tick["state"]
    runs = {r["parameters"]["cluster"]: r for r in simulated.children(tick)}
    assert sorted(runs) == sorted([*simulated.kubeconfigs, down])
    assert state(runs.pop(down)) == ("FAILED", "Failed")
    assert all(state(r) == ("COMPLETED", "Completed") for r in runs.values()), [r["state"] for r in runs.values()]
    assert tick["state"]["message"].startswith(f"{down}: ") and "unreachable" in tick["state"]["message"], \
        tick["state"]["message"]
    for name, kubeconfig in simulated.kubeconfigs.items():
        assert configmap_greeting(kubeconfig, simulated.namespace(name)) == "hello"
    assert sha


def test_two_runs_for_one_cluster_at_once_take_turns(fleet, simulated):
    """Each holds the cluster's slot for its whole run: the second's app run starts
    only after the first's ended (with the app's Lease alone they would overlap, one
    waiting inside its run). The app's health takes 8 s, far longer than the
    workers take to start the second run."""
    cluster = f"c1-{simulated.suffix}"
    sha = simulated.commit("hello", {cluster: simulated.kubeconfigs[cluster]}, ready_after_s=8)
    parameters = {"repo": simulated.repo.block_name, "revision": sha, "cluster": cluster}
    started = [simulated.run_deployment("gitops-sync-cluster/gitops-sync-cluster", parameters, wait=False)
               for _ in range(2)]
    runs = [simulated.wait(run["id"]) for run in started]
    assert all(state(r) == ("COMPLETED", "Completed") for r in runs), [r["state"] for r in runs]
    app_runs = sorted((app_run for run in runs for app_run in simulated.children(run)),
                      key=lambda r: r["start_time"])
    assert len(app_runs) == 2
    first_end, second_start = (datetime.fromisoformat(app_runs[0]["end_time"]),
                               datetime.fromisoformat(app_runs[1]["start_time"]))
    assert second_start >= first_end, (app_runs[0]["end_time"], app_runs[1]["start_time"])


def test_a_worker_killed_mid_sync_crashes_its_run_and_a_restarted_worker_converges(fleet, simulated):
    """SIGKILL of the worker alone (its flow run's process lives on): Prefect's
    process for the run sees its worker gone and ends the run Crashed, the app's
    run with it; the slot and the Lease are let go; the next tick finishes the
    sync on whichever worker takes it, the restarted one among them."""
    cluster = f"c1-{simulated.suffix}"
    kubeconfig = simulated.kubeconfigs[cluster]
    sha = simulated.commit("hello", {cluster: kubeconfig}, ready_after_s=15)
    run = simulated.run_deployment("gitops-sync-cluster/gitops-sync-cluster",
                                   {"repo": simulated.repo.block_name, "revision": sha, "cluster": cluster}, wait=False)
    wait_for_stage(simulated, run, "health")  # applied, waiting for the Deployment
    [name] = [w for w in ("worker-1", "worker-2") if run["id"] in fleet.worker_runs(w)]
    worker = fleet.worker(name)
    children = subprocess.run(["pgrep", "-P", str(worker.popen.pid)], capture_output=True, text=True).stdout.split()
    assert children  # the run's own process
    worker.kill()

    crashed = simulated.wait(run["id"])
    assert state(crashed) == ("CRASHED", "Crashed"), crashed["state"]
    assert [state(a) for a in simulated.children(run)] == [("CRASHED", "Crashed")]
    assert wait_gone(children), children
    slot = simulated.get(f"/v2/concurrency_limits/{slot_name(cluster)}")
    assert slot["active_slots"] == 0, slot

    fleet.start_worker(name)
    tick = simulated.tick()
    assert state(tick) == ("COMPLETED", "Completed"), tick["state"]
    [again] = simulated.children(tick)
    assert again["parameters"]["cluster"] == cluster and state(again) == ("COMPLETED", "Completed")
    with KubeClient.from_kubeconfig(kubeconfig) as kube:
        inventory = read_inventory(kube, f"web-{cluster}")
    assert inventory.revision == inventory.last_healthy_revision == sha
    assert {(m.kind, m.name) for m in inventory.members} == {("ConfigMap", "settings"), ("Deployment", "web")}


def wait_for_stage(simulated: Fleet, run: dict, stage: str) -> None:
    """Once the cluster run's app run is in `stage`."""
    deadline = time.monotonic() + RUN_LIMIT_S
    while time.monotonic() < deadline:
        tasks = [t for app_run in simulated.children(run) for t in simulated.task_runs(app_run)]
        if any(t["name"].startswith(stage) and t["state"]["type"] == "RUNNING" for t in tasks):
            return
        time.sleep(0.5)
    raise AssertionError(f"no {stage} stage within {RUN_LIMIT_S} s")


def wait_gone(pids: list[str], limit_s: float = 60) -> bool:
    deadline = time.monotonic() + limit_s
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
