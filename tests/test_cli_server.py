"""`gitops server start|stop|status` and how commands find Prefect's API: a
real Prefect server process kept in GITOPS_HOME, found again by the next
command, and gone (its whole process group) after stop. And the start-up
contract: commands that do no cluster work import neither Prefect nor the
Kubernetes client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from prefect_gitops.blocks import GitRepository, KubernetesCluster
from prefect_gitops.cli.blocks import CLUSTER_SLUG, REPO_SLUG

GITOPS = str(Path(sys.executable).parent / "gitops")


@pytest.fixture
def user_env(tmp_path) -> dict[str, str]:
    """A user with no Prefect server configured: no PREFECT_API_URL, no profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "GITOPS_HOME": str(tmp_path / "home"), "PREFECT_HOME": str(tmp_path / "prefect-client"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def gitops(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GITOPS, *args], capture_output=True, text=True, timeout=300, env=env, cwd=env["GITOPS_HOME"])


def process_group(pgid: int) -> list[str]:
    """The command lines of the live processes in a process group (from the process table)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(cmdline)
    return found


def test_a_command_starts_the_kept_server_the_next_reuses_it_and_stop_ends_it(user_env, tmp_path):
    Path(user_env["GITOPS_HOME"]).mkdir()
    status = gitops(user_env, "server", "status")
    assert status.returncode == 1 and status.stdout.startswith("not running"), status

    listed = gitops(user_env, "cluster", "list")  # the first command that needs Prefect starts it
    assert listed.returncode == 0, listed.stderr
    assert "prefect: starting a local server in" in listed.stderr
    record = json.loads((tmp_path / "home" / "prefect-server" / "server.json").read_text())
    url = f"http://127.0.0.1:{record['port']}"
    assert f"prefect: started local server {url}" in listed.stderr
    assert (tmp_path / "home" / "prefect-server" / "prefect.db").is_file()  # its own database
    assert process_group(record["pid"]), "the server is not running"

    again = gitops(user_env, "server", "start")
    assert again.returncode == 0 and again.stdout.strip() == f"already running: {url} (pid {record['pid']})"
    status = gitops(user_env, "server", "status")
    assert status.returncode == 0 and status.stdout.startswith(f"running: {url} ")

    bare = tmp_path / "fleet.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    added = gitops(user_env, "repo", "add", "fleet", "--url", f"file://{bare}")
    assert added.returncode == 0, added.stderr
    assert f"prefect: kept local server {url} (`gitops server stop` ends it)" in added.stderr
    with urllib.request.urlopen(f"{url}/api/block_types/slug/{REPO_SLUG}/block_documents") as response:
        assert [d["name"] for d in json.loads(response.read())] == ["fleet"]  # saved in the kept server
    listed = gitops(user_env, "repo", "list")
    assert "fleet" in listed.stdout and f"file://{bare}" in listed.stdout

    elsewhere = gitops({**user_env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}, "-v", "repo", "list")
    assert "prefect: PREFECT_API_URL http://127.0.0.1:9" in elsewhere.stderr  # the variable wins
    assert elsewhere.returncode == 2 and "Traceback" not in elsewhere.stderr  # nothing answers there: one line
    assert "error: the Prefect API at http://127.0.0.1:9/api does not answer" in elsewhere.stderr

    stopped = gitops(user_env, "server", "stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"stopped {url} (pid {record['pid']})"
    assert process_group(record["pid"]) == []
    assert not (tmp_path / "home" / "prefect-server" / "server.json").exists()
    assert gitops(user_env, "server", "stop").stdout.strip() == "not running"
    assert gitops(user_env, "server", "status").returncode == 1


FORBIDDEN = ("prefect", "kubernetes", "prefect_gitops.engine.cluster.kube", "prefect_gitops.flows",
             "prefect_gitops.blocks")
STARTUP_PROBE = """
import json, sys
sys.argv = ["gitops", *sys.argv[1:]]
from prefect_gitops.cli.main import app
code = None
try:
    app()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "loaded": sorted(m for m in sys.modules
                                                 if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))}),
      file=sys.stderr)
"""


# pydantic is allowed: typer (0.29) itself reads every command's options, its own --help too, with it.
@pytest.mark.parametrize("args", [["--version"], ["--help"], ["sync", "--help"], ["server", "--help"],
                                  ["repo", "list"], ["cluster", "list"]])
def test_commands_without_cluster_work_import_neither_prefect_nor_kubernetes(prefect_api, args):
    if args == ["repo", "list"]:
        GitRepository(url="https://git.example.com/startup.git", branch="trunk").save("startup-probe", overwrite=True)
    if args == ["cluster", "list"]:
        KubernetesCluster(kubeconfig="{}", labels={"env": "probe"}).save("startup-probe", overwrite=True)
    code = f"FORBIDDEN = {FORBIDDEN!r}\n{STARTUP_PROBE}"
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PREFECT_API_URL": prefect_api})
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    assert probe["code"] in (0, None), done.stderr
    assert probe["loaded"] == [], f"gitops {' '.join(args)} imported {probe['loaded'][:10]}"
    if args[0] in ("repo", "cluster"):
        assert "startup-probe" in done.stdout
        assert ("trunk" if args[0] == "repo" else "env=probe") in done.stdout


def test_the_lists_read_the_block_types_of_blocks():
    assert (REPO_SLUG, CLUSTER_SLUG) == (GitRepository.get_block_type_slug(), KubernetesCluster.get_block_type_slug())


@pytest.mark.parametrize("module", ["prefect", "prefect_gitops.cli.local_server_main"])
def test_the_kept_server_waits_for_a_concurrent_sqlite_writer_instead_of_answering_503(module, tmp_path, monkeypatch):
    """Prefect's own server begins its SQLite transactions DEFERRED: one that has
    read before another connection commits cannot write any more and is answered
    503 (the client then waits 2 s). The kept server begins them IMMEDIATE."""
    import sqlite3
    import threading

    from prefect_gitops.cli import local_server

    monkeypatch.setattr(local_server, "SERVER_MODULE", module)
    server = local_server.LocalPrefectServer(tmp_path / "server")
    record, _ = server.start()
    try:
        def post(path: str, body: dict) -> tuple[int, dict]:
            request = urllib.request.Request(f"{record.api_url}{path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, {}

        def set_up(path: str, body: dict) -> dict:
            """A request that must succeed: a 503 is tried again, as Prefect's client does
            (Prefect's own server answers some while its services start, the race shown here)."""
            for _ in range(20):
                code, answer = post(path, body)
                if code != 503:
                    break
                time.sleep(0.5)
            assert code in (200, 201), (path, code)
            return answer

        flow = set_up("/flows/", {"name": "race"})
        flow_run = set_up("/flow_runs/", {"flow_id": flow["id"], "name": "race"})
        writer = sqlite3.connect(server.home / "prefect.db", isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE flow SET tags = tags")  # a write of another connection, committed below
        answer = {}
        creating = threading.Thread(target=lambda: answer.update(status=post(
            "/task_runs/", {"flow_run_id": flow_run["id"], "task_key": "t", "dynamic_key": "0", "name": "t"})[0]))
        creating.start()
        creating.join(3.0)  # time for the server to be inside the request, waiting for the write lock
        writer.execute("COMMIT")
        creating.join(60)
        writer.close()
    finally:
        server.stop()
    expected = 503 if module == "prefect" else 201
    assert answer == {"status": expected}
