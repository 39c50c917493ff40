"""One error surface: every expected failure of a `gitops` command, run as a
user runs it (a subprocess, in a pipe) against real Git remotes and a cluster
that does not answer, is one line on stderr without a traceback, exits with
the documented code, and with --json prints one document holding the error.
Secrets never reach either."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from git_remotes import Upstream, free_port, git_base, http_remote, upstream  # noqa: F401  (fixtures)

GITOPS = str(Path(sys.executable).parent / "gitops")
ERROR = 2
TOKEN = "wrong-token-5e1c"  # the credential that must never be shown
CLUSTER_TOKEN = "cluster-token-a91f"

APP = """apps:
  - name: hello
    path: app
    clusters: [{cluster}]
    namespace: hello
"""
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\ndata:\n  greeting: hi\n"


def gitops(prefect_api: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PREFECT_API_URL": prefect_api})


def assert_one_error_line(run: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Exactly one line on stderr, `error: ...` holding `words`, no traceback, no secret."""
    assert run.returncode == code, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr + run.stdout
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    for secret in (TOKEN, CLUSTER_TOKEN):
        assert secret not in run.stderr + run.stdout
    return lines[0]


def assert_error_document(run: subprocess.CompletedProcess, kind: str, line: str) -> dict:
    """stdout is one JSON document whose error is the line on stderr."""
    document = json.loads(run.stdout)
    assert document["error"] == {"kind": kind, "message": line.removeprefix("error: ")} | (
        {"problems": document["error"]["problems"]} if kind == "spec" else {})
    return document


def save_repo(url: str, token: str | None = None) -> str:
    from blocks import GitRepository

    name = f"errors-{secrets.token_hex(3)}"
    GitRepository(url=url, branch="main", token=SecretStr(token) if token else None).save(name, overwrite=True)
    return name


# ---- Git --------------------------------------------------------------------------------


def test_a_remote_that_refuses_connections(prefect_api):
    repo = save_repo(f"git://127.0.0.1:{free_port()}/gone.git")  # nothing listens there
    synced = gitops(prefect_api, "sync", "--repo", repo, "--json")
    line = assert_one_error_line(synced, ERROR, "git://127.0.0.1:", "cannot reach the repository",
                                 "Connection refused")
    assert assert_error_document(synced, "git", line)["results"] == []


def corrupt_a_loose_object(upstream: Upstream) -> str:
    """Overwrite the bare repository's loose object of app/config.yaml."""
    blob = upstream.git("rev-parse", "HEAD:app/config.yaml").strip()
    path = upstream.bare / "objects" / blob[:2] / blob[2:]
    assert path.exists(), "the push left the object loose"
    path.chmod(0o644)
    path.write_bytes(b"not a zlib stream")
    return blob


@pytest.mark.parametrize("command", ["sync", "diff", "drift", "validate", "status"])
def test_a_corrupt_object(prefect_api, upstream, command):
    blob = corrupt_a_loose_object(upstream)
    repo = save_repo(f"file://{upstream.bare}")
    run = gitops(prefect_api, command, "--repo", repo, "--json")
    line = assert_one_error_line(run, ERROR, f"file://{upstream.bare}", f"{blob} ", "is corrupt")
    assert_error_document(run, "git", line)


def test_wrong_credentials(prefect_api, upstream, http_remote):
    repo = save_repo(http_remote.url(upstream), token=TOKEN)
    run = gitops(prefect_api, "diff", "--repo", repo, "--json")
    line = assert_one_error_line(run, ERROR, http_remote.url(upstream), "authentication failed")
    assert assert_error_document(run, "git", line)["results"] == []


def test_an_unknown_revision(prefect_api, upstream):
    repo = save_repo(f"file://{upstream.bare}")
    run = gitops(prefect_api, "diff", "--repo", repo, "--revision", "no-such-branch", "--json")
    line = assert_one_error_line(run, ERROR, "'no-such-branch' not found")
    assert_error_document(run, "git", line)


def test_a_symlink_leaving_the_repository(prefect_api, upstream):
    (upstream.work / "app" / "passwd.yaml").symlink_to("/etc/passwd")
    upstream.commit({}, "a symlink out")
    repo = save_repo(f"file://{upstream.bare}")
    run = gitops(prefect_api, "validate", "--repo", repo, "--json")
    line = assert_one_error_line(run, ERROR, "symlink leaving the repository", "app/passwd.yaml")
    assert assert_error_document(run, "git", line)["problems"] == []  # validate's document, with the error


# ---- gitops.yaml, blocks -------------------------------------------------------------------


def test_an_invalid_gitops_yaml(prefect_api, upstream):
    upstream.commit({"gitops.yaml": "apps:\n  - name: Not_A_Label\n    path: app\n"}, "a bad app name")
    repo = save_repo(f"file://{upstream.bare}")
    run = gitops(prefect_api, "sync", "--repo", repo, "--json")
    line = assert_one_error_line(run, ERROR, "gitops.yaml:2", "Not_A_Label")
    [problem] = assert_error_document(run, "spec", line)["error"]["problems"]
    assert problem["source"].startswith("gitops.yaml:2") and problem["rule"] in line

    validated = gitops(prefect_api, "validate", "--repo", repo)  # validate's own report: the problem on stdout
    assert validated.returncode == 1 and "gitops.yaml:2" in validated.stdout and "Traceback" not in validated.stderr


def test_a_missing_block(prefect_api):
    run = gitops(prefect_api, "drift", "--repo", "no-such-block", "--json")
    line = assert_one_error_line(run, ERROR, "no Git repository block named 'no-such-block'")
    assert_error_document(run, "block", line)
    plain = gitops(prefect_api, "validate", "--repo", "no-such-block")  # without --json: stdout stays empty
    assert assert_one_error_line(plain, ERROR) == line and plain.stdout == ""
    # -v shows Prefect's lines, the flow run's failure among them, but not its traceback
    verbose = gitops(prefect_api, "-v", "validate", "--repo", "no-such-block")
    assert verbose.returncode == ERROR and "| INFO" in verbose.stderr and "| ERROR" in verbose.stderr
    assert "Traceback" not in verbose.stderr, verbose.stderr
    assert line in verbose.stderr.splitlines()


# ---- a cluster that does not answer ----------------------------------------------------------


@pytest.fixture
def unreachable_cluster(prefect_api, tmp_path) -> tuple[str, str]:
    """A cluster block whose API server address refuses connections: (name, URL)."""
    from blocks import KubernetesCluster

    name, server = f"gone-{secrets.token_hex(3)}", f"https://127.0.0.1:{free_port()}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "gone", "user": {"token": CLUSTER_TOKEN}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
    }))
    KubernetesCluster.from_kubeconfig_file(kubeconfig).save(name, overwrite=True)
    return name, server


@pytest.mark.parametrize("command", ["validate", "status"])
def test_an_unreachable_cluster_is_named_with_its_url(prefect_api, upstream, unreachable_cluster, command):
    cluster, server = unreachable_cluster
    upstream.commit({"gitops.yaml": APP.format(cluster=cluster), "app/configmap.yaml": CONFIGMAP}, "an app")
    run = gitops(prefect_api, command, "--repo", save_repo(f"file://{upstream.bare}"), "--json")
    line = assert_one_error_line(run, ERROR, f"cluster {cluster} ({server}) is unreachable: connection refused")
    assert_error_document(run, "cluster", line)


def test_an_unreachable_cluster_fails_the_sync_of_its_apps(prefect_api, upstream, unreachable_cluster):
    """sync runs, and its report says which app failed where: exit 1, not an error of the command."""
    cluster, server = unreachable_cluster
    upstream.commit({"gitops.yaml": APP.format(cluster=cluster), "app/configmap.yaml": CONFIGMAP}, "an app")
    run = gitops(prefect_api, "sync", "--repo", save_repo(f"file://{upstream.bare}"), "--json")
    assert run.returncode == 1 and "Traceback" not in run.stderr and run.stderr == "", run.stderr
    [result] = json.loads(run.stdout)["results"]
    assert result["status"] == "failed"
    assert result["message"] == f"cluster {cluster} ({server}) is unreachable: connection refused"
    assert CLUSTER_TOKEN not in run.stdout


# ---- the console's filter: expected failures lose their traceback, bugs keep it ----------------


def test_verbose_console_keeps_the_traceback_of_a_bug_only():
    from cli import logs
    from cli.errors import describe
    from engine.git import GitError

    def record(error: Exception) -> logging.LogRecord:
        try:
            raise error
        except Exception:
            return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())

    expected, bug = record(GitError("git://h/x.git: git fetch: cannot reach the repository")), record(KeyError("x"))
    verbose = logs._Verbose()
    assert verbose.filter(expected) and expected.exc_info is None
    assert verbose.filter(bug) and bug.exc_info is not None
    assert describe(KeyError("x")).kind == "internal" and "gitops -v" in describe(KeyError("x")).message
    assert describe(RuntimeError("waited 120 s")).kind == "internal"
    wrapped = RuntimeError("cluster c: not reachable after 120 s")
    wrapped.__cause__ = GitError("x")
    assert describe(wrapped).kind == "git" and describe(wrapped).message == "cluster c: not reachable after 120 s"
    try:
        try:
            raise GitError("x")
        except GitError:
            raise KeyError("a bug while handling it")
    except KeyError as bug_in_handler:
        assert describe(bug_in_handler).kind == "internal"
