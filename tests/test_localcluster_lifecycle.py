"""Starting, stopping and failing: several clusters at once, nothing left
behind, and errors that say what went wrong."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import kubectl
from prefect_gitops.localcluster import AlreadyRunningError, LocalCluster, LocalClusterError
from prefect_gitops.localcluster.build import SOURCE_DIR, BuildError, ensure_binary, source_hash

GITOPS = str(Path(sys.executable).parent / "gitops")


def gitops(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.cluster
def test_the_same_object_can_go_down_and_up_again(cluster_pool):
    """The session's third cluster (started here unless it runs already) goes down
    and up again as the same object, and stays in the pool for the next test."""
    cluster = cluster_pool.get(3)[2]
    try:
        first = cluster.record().api_url
        cluster.down()
        cluster.up()
        assert cluster.is_running() and cluster.record().api_url != first
        assert kubectl(cluster.kubeconfig, "get", "--raw", "/readyz").stdout == "ok"
    finally:
        if not cluster.is_running():  # not left half-started for the next test of the pool
            cluster_pool.clusters.pop(cluster.name, None)
            cluster.down()


@pytest.mark.cluster
def test_three_clusters_run_at_once_and_down_leaves_nothing(cluster_pool):
    clusters = cluster_pool.get(3)
    assert len({c.record().api_url for c in clusters}) == 3
    kubectl(clusters[1].kubeconfig, "create", "namespace", "only-in-b")
    assert kubectl(clusters[2].kubeconfig, "get", "namespace", "only-in-b", check=False).returncode != 0
    for cluster in clusters:
        assert kubectl(cluster.kubeconfig, "get", "--raw", "/readyz").stdout == "ok"

    listed = gitops("localcluster", "list")
    assert listed.returncode == 0
    for cluster in clusters:
        assert cluster.name in listed.stdout

    victim = clusters[2]
    ports = list(victim.record().ports.values())
    state = victim.layout.root
    result = gitops("localcluster", "down", victim.name)
    assert result.returncode == 0, result.stderr
    cluster_pool.clusters.pop(victim.name)
    assert processes_mentioning(str(state)) == []
    assert [p for p in ports if listening(p)] == []
    assert not state.exists()
    # The others are untouched.
    assert kubectl(clusters[1].kubeconfig, "get", "namespace", "only-in-b").returncode == 0


@pytest.mark.cluster
def test_up_of_a_running_name_says_so_and_prints_its_kubeconfig(local_cluster):
    with pytest.raises(AlreadyRunningError, match="already running"):
        LocalCluster(local_cluster.name).up()
    result = gitops("localcluster", "up", local_cluster.name)
    assert result.returncode == 1
    assert "already running" in result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(local_cluster.kubeconfig)
    assert gitops("localcluster", "up", local_cluster.name, "--exist-ok").returncode == 0


@pytest.mark.cluster
def test_cli_up_prints_the_kubeconfig_last_and_down_removes_it():
    name = f"pytest{os.getpid()}-cli"
    result = gitops("localcluster", "up", name)
    try:
        assert result.returncode == 0, result.stderr
        kubeconfig = Path(result.stdout.strip().splitlines()[-1])
        assert kubeconfig.is_file()
        assert kubectl(kubeconfig, "get", "serviceaccount", "default").returncode == 0
    finally:
        down = gitops("localcluster", "down", name)
    assert down.returncode == 0
    assert not kubeconfig.exists()


@pytest.mark.cluster
def test_a_component_that_dies_at_start_is_reported_with_its_log():
    cluster = LocalCluster(f"pytest{os.getpid()}-dies")
    with pytest.raises(LocalClusterError) as failure:
        cluster.up(extra_args={"apiserver": ["--no-such-flag"]})
    message = str(failure.value)
    assert "apiserver" in message and "exited" in message
    assert "unknown flag: --no-such-flag" in message
    assert processes_mentioning(str(cluster.layout.root)) == []
    assert cluster.layout.log("apiserver").exists()  # kept for a post-mortem
    assert cluster.down() is True
    assert not cluster.layout.root.exists()


def _copy_sources(tmp_path: Path) -> Path:
    copy = tmp_path / "src"
    shutil.copytree(SOURCE_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return copy


def test_missing_go_is_a_clear_error(tmp_path):
    # A fresh GITOPS_HOME has no cached binary, and this PATH has no go.
    bin_dir = Path(sys.executable).parent
    result = gitops("localcluster", "build",
                    env={"PATH": f"{bin_dir}:/usr/bin:/bin", "GITOPS_HOME": str(tmp_path)})
    assert shutil.which("go", path="/usr/bin:/bin") is None, "this test needs go outside /usr/bin:/bin"
    assert result.returncode == 1
    assert "no `go` command was found" in result.stderr
    assert "install Go" in result.stderr


def test_build_failure_shows_the_compiler_output(tmp_path, monkeypatch):
    monkeypatch.setenv("GITOPS_HOME", str(tmp_path / "home"))
    sources = _copy_sources(tmp_path)
    (sources / "broken.go").write_text("package main\n\nfunc broken() { this is not go }\n")
    with pytest.raises(BuildError) as failure:
        ensure_binary(sources)
    assert "go build" in str(failure.value)
    assert "broken.go:3" in str(failure.value)


def test_source_hash_follows_the_go_sources_only(tmp_path):
    sources = _copy_sources(tmp_path)
    before = source_hash(sources)
    assert source_hash(sources) == before
    (sources / "notes.txt").write_text("not an input")
    (sources / "fakekubelet" / "extra_test.go").write_text("package fakekubelet\n")
    assert source_hash(sources) == before
    (sources / "fakekubelet" / "extra.go").write_text("package fakekubelet\n")
    assert source_hash(sources) != before


@pytest.mark.parametrize("name", ["Upper", "-dash", "under_score", "a" * 41, ""])
def test_invalid_cluster_names_are_refused(name):
    with pytest.raises(LocalClusterError, match="invalid cluster name"):
        LocalCluster(name)


def test_down_of_an_unknown_cluster_is_harmless(tmp_path, monkeypatch):
    monkeypatch.setenv("GITOPS_HOME", str(tmp_path))
    assert LocalCluster("never-started").down() is False
    result = gitops("localcluster", "down", "never-started", env={"GITOPS_HOME": str(tmp_path)})
    assert result.returncode == 0 and "was not there" in result.stderr


def test_list_shows_nothing_on_a_fresh_home(tmp_path):
    result = gitops("localcluster", "list", env={"GITOPS_HOME": str(tmp_path)})
    assert result.returncode == 0
    assert "kubeconfig" in result.stdout  # the table's header
    assert "pytest" not in result.stdout
