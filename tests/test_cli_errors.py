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
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr

from git_remotes import Upstream, free_port, git_base, http_remote, run, upstream  # noqa: F401  (fixtures)

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


def gitops_at_once(prefect_api: str, *commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Several independent `gitops` commands run concurrently (each is seconds of
    start-up and waiting on Prefect's server); their results in the same order."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: gitops(prefect_api, *args), commands))


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
    from prefect_gitops.blocks import GitRepository

    name = f"errors-{secrets.token_hex(3)}"
    GitRepository(url=url, branch="main", token=SecretStr(token) if token else None).save(name, overwrite=True)
    return name


# ---- Git --------------------------------------------------------------------------------


# test_a_remote_that_refuses_connections is the module's last test: its sync runs
# from the module's start on (the `refused_sync` fixture).


def corrupt_a_loose_object(upstream: Upstream) -> str:
    """Overwrite the bare repository's loose object of app/config.yaml."""
    blob = upstream.git("rev-parse", "HEAD:app/config.yaml").strip()
    path = upstream.bare / "objects" / blob[:2] / blob[2:]
    assert path.exists(), "the push left the object loose"
    path.chmod(0o644)
    path.write_bytes(b"not a zlib stream")
    return blob


CORRUPT_COMMANDS = ["sync", "diff", "drift", "validate", "status"]


def new_upstream(git_base: Path, work: Path) -> Upstream:
    """A repository as the `upstream` fixture makes it (one commit on main: README.md
    and app/config.yaml), for module fixtures."""
    bare = git_base / f"errors-{secrets.token_hex(4)}.git"
    run("git", "init", "--quiet", "--bare", "-b", "main", bare)
    run("git", "init", "--quiet", "-b", "main", work)
    repo = Upstream(bare, work)
    repo.git("remote", "add", "origin", bare)
    repo.commit({"README.md": "hello\n", "app/config.yaml": "replicas: 1\n"}, "initial")
    return repo


@pytest.fixture(scope="module")
def corrupt_runs(prefect_api, git_base, tmp_path_factory) -> dict[str, tuple]:
    """Each command of CORRUPT_COMMANDS against a repository of its own with a
    corrupt loose object, the five run at once: command -> (upstream, the corrupt
    blob, the run)."""
    cases = {}
    for command in CORRUPT_COMMANDS:
        upstream = new_upstream(git_base, tmp_path_factory.mktemp(f"corrupt-{command}") / "work")
        cases[command] = (upstream, corrupt_a_loose_object(upstream), save_repo(f"file://{upstream.bare}"))
    runs = gitops_at_once(prefect_api, *([command, "--repo", repo, "--json"]
                                         for command, (_, _, repo) in cases.items()))
    return {command: (upstream, blob, run) for (command, (upstream, blob, _)), run in zip(cases.items(), runs)}


@pytest.mark.parametrize("command", CORRUPT_COMMANDS)
def test_a_corrupt_object(corrupt_runs, command):
    upstream, blob, run = corrupt_runs[command]
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
    run, validated = gitops_at_once(prefect_api, ["sync", "--repo", repo, "--json"], ["validate", "--repo", repo])
    line = assert_one_error_line(run, ERROR, "gitops.yaml:2", "Not_A_Label")
    [problem] = assert_error_document(run, "spec", line)["error"]["problems"]
    assert problem["source"].startswith("gitops.yaml:2") and problem["rule"] in line

    # validate's own report: the problem on stdout
    assert validated.returncode == 1 and "gitops.yaml:2" in validated.stdout and "Traceback" not in validated.stderr


def test_a_missing_block(prefect_api):
    run, plain, verbose = gitops_at_once(prefect_api, ["drift", "--repo", "no-such-block", "--json"],
                                         ["validate", "--repo", "no-such-block"],
                                         ["-v", "validate", "--repo", "no-such-block"])
    line = assert_one_error_line(run, ERROR, "no Git repository block named 'no-such-block'")
    assert_error_document(run, "block", line)
    assert assert_one_error_line(plain, ERROR) == line and plain.stdout == ""  # without --json: stdout stays empty
    # -v shows Prefect's lines, the flow run's failure among them, but not its traceback
    assert verbose.returncode == ERROR and "| INFO" in verbose.stderr and "| ERROR" in verbose.stderr
    assert "Traceback" not in verbose.stderr, verbose.stderr
    assert line in verbose.stderr.splitlines()


def test_a_kubeconfig_that_cannot_give_access_is_refused_and_not_saved(prefect_api, tmp_path):
    kubeconfig = tmp_path / "broken.yaml"
    kubeconfig.write_text(json.dumps({
        "current-context": "lab", "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "admin"}}],
        "clusters": [{"name": "lab", "cluster": {"server": "https://127.0.0.1:1",
                                                  "certificate-authority-data": "not base64!"}}],
        "users": [{"name": "admin", "user": {"token": CLUSTER_TOKEN}}]}))
    missing_ca = tmp_path / "missing-ca.yaml"
    missing_ca.write_text(kubeconfig.read_text().replace('"certificate-authority-data": "not base64!"',
                                                         '"certificate-authority": "ca.crt"'))
    name = f"broken-{secrets.token_hex(3)}"
    wrong_ca, wrong_context, no_ca_file = gitops_at_once(
        prefect_api, ["cluster", "add", name, "--kubeconfig", str(kubeconfig)],
        ["cluster", "add", name, "--kubeconfig", str(kubeconfig), "--context", "prod"],
        ["cluster", "add", name, "--kubeconfig", str(missing_ca)])
    assert_one_error_line(wrong_ca, ERROR, str(kubeconfig), "cluster 'lab'", "certificate-authority-data",
                          "not valid base64")
    assert_one_error_line(wrong_context, ERROR, str(kubeconfig), "context 'prod' is not in the kubeconfig")
    assert_one_error_line(no_ca_file, ERROR, str(missing_ca), f"{tmp_path / 'ca.crt'} does not exist")
    assert name not in gitops(prefect_api, "cluster", "list").stdout


# ---- a cluster that does not answer ----------------------------------------------------------


def save_unreachable_cluster(folder: Path) -> tuple[str, str]:
    """A cluster block whose API server address refuses connections: (name, URL)."""
    from prefect_gitops.blocks import KubernetesCluster

    name, server = f"gone-{secrets.token_hex(3)}", f"https://127.0.0.1:{free_port()}"
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "gone", "user": {"token": CLUSTER_TOKEN}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}],
    }))
    KubernetesCluster.from_kubeconfig_file(kubeconfig).save(name, overwrite=True)
    return name, server


@pytest.fixture(scope="module")
def unreachable_runs(prefect_api, git_base, tmp_path_factory) -> dict[str, tuple]:
    """validate, status and sync, each of a repository of its own whose app targets a
    cluster of its own that refuses connections, the three run at once:
    command -> (cluster block, its URL, the run)."""
    cases = {}
    for command in ("validate", "status", "sync"):
        folder = tmp_path_factory.mktemp(f"unreachable-{command}")
        upstream = new_upstream(git_base, folder / "work")
        cluster, server = save_unreachable_cluster(folder)
        upstream.commit({"gitops.yaml": APP.format(cluster=cluster), "app/configmap.yaml": CONFIGMAP}, "an app")
        cases[command] = (cluster, server, save_repo(f"file://{upstream.bare}"))
    runs = gitops_at_once(prefect_api, *([command, "--repo", repo, "--json"]
                                         for command, (_, _, repo) in cases.items()))
    return {command: (cluster, server, run) for (command, (cluster, server, _)), run in zip(cases.items(), runs)}


@pytest.mark.parametrize("command", ["validate", "status"])
def test_an_unreachable_cluster_is_named_with_its_url(unreachable_runs, command):
    cluster, server, run = unreachable_runs[command]
    line = assert_one_error_line(run, ERROR, f"cluster {cluster} ({server}) is unreachable: connection refused")
    assert_error_document(run, "cluster", line)


def test_an_unreachable_cluster_fails_the_sync_of_its_apps(unreachable_runs):
    """sync runs, and its report says which app failed where: exit 1, not an error of the command."""
    cluster, server, run = unreachable_runs["sync"]
    assert run.returncode == 1 and "Traceback" not in run.stderr and run.stderr == "", run.stderr
    [result] = json.loads(run.stdout)["results"]
    assert result["status"] == "failed"
    assert result["message"] == f"cluster {cluster} ({server}) is unreachable: connection refused"
    assert CLUSTER_TOKEN not in run.stdout


# ---- the console's filter: expected failures lose their traceback, bugs keep it ----------------


def test_verbose_console_keeps_the_traceback_of_a_bug_only():
    from prefect_gitops.cli import logs
    from prefect_gitops.cli.errors import describe
    from prefect_gitops.engine.source.git import GitError

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


# ---- last: a remote that refuses connections, whose sync ran beside the tests above ------------

REFUSED_TEST = "test_a_remote_that_refuses_connections"


@pytest.fixture(scope="module", autouse=True)
def refused_sync(request):
    """`gitops sync` of a remote where nothing listens, started when the module
    starts: a refused connection is transient, so the fetch task is retried
    (2 + 6 + 15 s, tasks/retry.py) before the command fails, and those seconds
    of waiting pass while the tests above run. Only when its test is selected."""
    if not any(getattr(item, "originalname", None) == REFUSED_TEST and item.module is request.module
               for item in request.session.items):
        yield None
        return
    prefect_api = request.getfixturevalue("prefect_api")
    repo = save_repo(f"git://127.0.0.1:{free_port()}/gone.git")  # nothing listens there
    process = subprocess.Popen([GITOPS, "sync", "--repo", repo, "--json"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**os.environ, "PREFECT_API_URL": prefect_api})
    try:
        yield process
    finally:
        if process.poll() is None:  # its test was not reached
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def test_a_remote_that_refuses_connections(refused_sync):
    out, err = refused_sync.communicate(timeout=600)
    synced = subprocess.CompletedProcess(refused_sync.args, refused_sync.returncode, out, err)
    line = assert_one_error_line(synced, ERROR, "git://127.0.0.1:", "cannot reach the repository",
                                 "Connection refused")
    assert assert_error_document(synced, "git", line)["results"] == []
