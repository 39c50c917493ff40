"""`gitops demo`: the README's main command, shown step by step on real parts:
two local clusters, a Git repository made from examples/ with a bare remote,
Prefect's own server, and the gitops flows. It removes its clusters, runner and
files at the end, and leaves the Prefect server running with its runs: the
kept local server (`gitops server`), or the one in PREFECT_API_URL."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rich.console import Console

from prefect_gitops.cli.blocks import CLUSTER_SLUG
from prefect_gitops.cli.local_server import LocalPrefectServer, LocalServerError
from prefect_gitops.cli.prefect_api import PrefectApi, PrefectApiError
from prefect_gitops.localcluster import LocalCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent
CLUSTERS = {"staging": "demo-staging", "production": "demo-production"}
REPO_BLOCK = "demo-fleet"
RECOVER = "gitops-recover"
DEMO_LABEL = "gitops-demo=true"  # on its cluster blocks: a later demo may replace them, not someone else's
RUNNER_STOP_S = 90  # the runner lets a finished run's process end (cli/runner.py), then stops
console = Console(soft_wrap=True)  # an address or a command cut in two cannot be opened or copied


@dataclass
class DemoRepo:
    bare: Path
    work: Path

    def git(self, *args: str) -> str:
        result = subprocess.run(["git", *args], cwd=self.work, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "GIT_AUTHOR_NAME": "demo", "GIT_AUTHOR_EMAIL": "demo@example.com",
                                     "GIT_COMMITTER_NAME": "demo", "GIT_COMMITTER_EMAIL": "demo@example.com"})
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def commit(self, path: str, old: str, new: str, message: str) -> str:
        file = self.work / path
        file.write_text(file.read_text().replace(old, new))
        self.git("commit", "--quiet", "-am", message)
        self.git("push", "--quiet", "origin", "main")
        return self.git("rev-parse", "HEAD")


def run_demo(keep: bool = False) -> None:
    started = time.monotonic()
    api = prefect_for_the_demo()
    refuse_to_replace_what_is_not_the_demos(api)
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="gitops-demo-"))
        cleanup.callback(shutil.rmtree, workdir, True)
        clusters = start_clusters(cleanup, keep)
        repo = make_repository(workdir)
        register_blocks(repo, clusters)
        first_sync()
        failing_change(repo, clusters["staging"])
        drift_heals(clusters["production"])
        recover_through_the_api(cleanup, workdir, api.url, clusters)
    console.print(f"\n[green]demo finished in {time.monotonic() - started:.0f} s[/green]")
    for line in where_to_look(api):
        console.print(f"  {line}", highlight=False)


def where_to_look(api: PrefectApi) -> list[str]:
    """The demo's last lines: where its runs are, the page to open first, and
    how to stop the server when it is the kept local one."""
    ui = api.url.removesuffix("/api")
    if not kept_local_server(api):
        return [f"its runs, logs, diffs and events are at {ui} ({api.chosen_by})",
                f"open first: {ui}/runs"]
    return [f"its runs, logs, diffs and events are at {ui} (the kept local Prefect server, still running)",
            f"open first: {ui}/runs",
            "stop the server: gitops server stop"]


def kept_local_server(api: PrefectApi) -> bool:
    return api.chosen_by.endswith("local server")


def step(number: int, text: str) -> None:
    console.rule(f"[bold]step {number}[/bold]: {text}", align="left")


# -- set-up ----------------------------------------------------------------------------


def prefect_for_the_demo() -> PrefectApi:
    """The Prefect API every command would use (cli/prefect_api.py): the one in
    PREFECT_API_URL, else the local server kept in $GITOPS_HOME, started if needed
    and left running, so that its UI can be opened after the demo."""
    from prefect_gitops.cli.prefect_api import prefect_api

    step(0, "Prefect's server (the runs, logs, diffs and events of this demo land there)")
    try:
        with console.status("  starting Prefect's server"):
            api = prefect_api()
    except LocalServerError as failed:
        raise SystemExit(str(failed))
    os.environ["PREFECT_API_URL"] = api.url  # for the commands and the runner the demo starts
    console.print(f"  {api.describe()}" + (" (`gitops server stop` ends it)" if kept_local_server(api) else ""),
                  highlight=False)
    return api


def refuse_to_replace_what_is_not_the_demos(api: PrefectApi) -> None:
    """The demo saves the cluster blocks `staging` and `production` and serves the
    deployment gitops-recover: on a server that has them already, only a former
    demo's may be replaced."""
    label, _, value = DEMO_LABEL.partition("=")
    try:
        blocks, deployment = api.block_documents(CLUSTER_SLUG), recovery_deployment(api)
    except PrefectApiError as failed:
        raise SystemExit(str(failed))
    theirs = [f"the cluster block {d['name']}" for d in blocks
              if d["name"] in CLUSTERS and (d["data"].get("labels") or {}).get(label) != value]
    if deployment and deployment["parameters"].get("repo") != REPO_BLOCK:
        theirs.append(f"the deployment {RECOVER}")
    if theirs:
        raise SystemExit(f"the demo would replace {' and '.join(theirs)} on {api.url.removesuffix('/api')}; "
                         "run it with PREFECT_API_URL set to another Prefect server")


def recovery_deployment(api: PrefectApi) -> dict | None:
    try:
        return api.get_json(f"deployments/name/{RECOVER}/{RECOVER}")
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise PrefectApiError(f"the Prefect API at {api.url} answered {error.code} {error.reason}") from None


@contextlib.contextmanager
def prefect_server(workdir: Path) -> Iterator[str]:
    """A Prefect server of its own for scripts/screenshots.py: the one in
    PREFECT_API_URL if set, else a fresh one in `workdir`, stopped at the end."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if os.environ.get("PREFECT_API_URL"):
        yield os.environ["PREFECT_API_URL"]
        return
    step(0, "start Prefect's server (the runs, logs, diffs and events of this demo land there)")
    server = LocalPrefectServer(workdir / "prefect-server")
    try:
        with console.status("  starting Prefect's server"):
            record, _ = server.start()
    except LocalServerError as failed:
        raise SystemExit(str(failed))
    console.print(f"  Prefect UI: {record.ui_url}")
    os.environ["PREFECT_API_URL"] = record.api_url  # for the CLI commands the demo runs
    try:
        with temporary_settings(updates={PREFECT_API_URL: record.api_url}):
            yield record.api_url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def start_clusters(cleanup: contextlib.ExitStack, keep: bool) -> dict[str, LocalCluster]:
    step(1, "bring up two local clusters: real kube-apiservers, etcd, controllers, schedulers")
    clusters = {}
    for role, name in CLUSTERS.items():
        cluster = LocalCluster(name)
        if not keep:
            cleanup.callback(cluster.down)
        if cluster.is_running():
            cluster.down()  # a leftover of an interrupted demo
        with console.status(f"  {name}: starting") as status:
            cluster.up(on_progress=lambda m, n=name: status.update(f"  {n}: {m}"))
        console.print(f"  {name} ({role}): {cluster.record().api_url}")
        clusters[role] = cluster
    return clusters


def make_repository(workdir: Path) -> DemoRepo:
    step(2, "make a Git repository from examples/ with a bare remote")
    repo = DemoRepo(workdir / "fleet.git", workdir / "fleet")
    shutil.copytree(EXAMPLES, repo.work)
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(repo.bare)], check=True, timeout=60)
    repo.git("init", "--quiet", "-b", "main")
    repo.git("remote", "add", "origin", str(repo.bare))
    repo.git("add", "--all")
    repo.git("commit", "--quiet", "-m", "the fleet: platform, web and widgets for staging and production")
    repo.git("push", "--quiet", "origin", "main")
    console.print(f"  remote file://{repo.bare}, head {repo.git('rev-parse', '--short', 'HEAD')}")
    return repo


def register_blocks(repo: DemoRepo, clusters: dict[str, LocalCluster]) -> None:
    step(3, "register the repository and the clusters as Prefect blocks")
    gitops("repo", "add", REPO_BLOCK, "--url", f"file://{repo.bare}", "--branch", "main")
    for role, cluster in clusters.items():
        add_cluster(role, cluster)


def add_cluster(role: str, cluster: LocalCluster) -> None:
    gitops("cluster", "add", role, "--kubeconfig", str(cluster.kubeconfig), "--label", f"env={role}",
           "--label", DEMO_LABEL)


# -- the story -----------------------------------------------------------------------


def first_sync() -> None:
    step(4, "sync: every app to both clusters, in dependsOn order, until healthy")
    gitops("sync", "--repo", REPO_BLOCK)


def failing_change(repo: DemoRepo, staging: LocalCluster) -> None:
    step(5, "push a commit with an image nobody can pull: the sync fails on health and reverts")
    bad = repo.commit("apps/web/base/deployment.yaml", "image: nginx:1.27", "image: unreachable.invalid/nginx:1.27",
                      "web: a broken image")
    console.print(f"  pushed {bad[:12]}")
    gitops("sync", "--repo", REPO_BLOCK, "--app", "web", expect_failure=True)
    image = kubectl(staging, "get", "deployment", "web", "-n", "web",
                    "-o", "jsonpath={.spec.template.spec.containers[0].image}")
    console.print(f"  web on staging runs {image} again")
    repo.git("pull", "--quiet", "origin", "main")
    console.print(f"  Git: {repo.git('log', '-1', '--format=%h %s')}")


def drift_heals(production: LocalCluster) -> None:
    step(6, "change a Deployment by hand with kubectl: the drift check finds it and heals it")
    kubectl(production, "scale", "deployment", "web", "-n", "web", "--replicas=5")
    console.print("  $ kubectl scale deployment web -n web --replicas=5", style="dim")
    gitops("drift", "--repo", REPO_BLOCK, expect_failure=True)
    gitops("drift", "--repo", REPO_BLOCK, "--heal")
    replicas = kubectl(production, "get", "deployment", "web", "-n", "web", "-o", "jsonpath={.spec.replicas}")
    console.print(f"  web on production has {replicas} replicas again, as in Git")


def recover_through_the_api(cleanup: contextlib.ExitStack, workdir: Path, api_url: str,
                            clusters: dict[str, LocalCluster]) -> None:
    step(7, "lose the production cluster, make a new empty one, recover it through Prefect's REST API")
    production = clusters["production"]
    production.down()
    with console.status("  demo-production: starting an empty cluster"):
        production.up()
    add_cluster("production", production)
    runner = start_recovery_runner(workdir)
    cleanup.callback(stop, runner)
    deployment = _http_json(f"{api_url}/deployments/name/{RECOVER}/{RECOVER}", wait_s=60)
    run = create_recovery_run(api_url, deployment["id"], "production")
    console.print(f"  POST /api/deployments/{deployment['id'][:8]}…/create_flow_run -> flow run {run['name']}")
    state = wait_for_run(api_url, run["id"])
    pods = kubectl(production, "get", "pods", "-n", "web", "--no-headers")
    console.print(f"  flow run {run['name']}: {state}; web pods on the new cluster:")
    console.print("\n".join(f"    {line}" for line in pods.splitlines()), highlight=False)
    stop(runner)


# -- helpers ---------------------------------------------------------------------------


def create_recovery_run(api_url: str, deployment_id: str, cluster: str) -> dict:
    """A run of the recovery deployment, asked for through the REST API with the
    name the flow gives its runs (else it has a random one until it starts)."""
    from prefect_gitops.flows.recovery import run_name

    return _http_json(f"{api_url}/deployments/{deployment_id}/create_flow_run",
                      {"name": run_name(cluster), "parameters": {"repo": REPO_BLOCK, "cluster": cluster}})


def start_recovery_runner(workdir: Path) -> subprocess.Popen:
    """The recovery deployment served by a process of its own, as `gitops serve` serves it."""
    code = ("from prefect_gitops.cli.deployments import deployment; from prefect_gitops.cli.runner import serve; "
            f"serve(deployment({RECOVER!r}, repo={REPO_BLOCK!r}), limit=1)")
    with open(workdir / "runner.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parent.parent, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, as `gitops serve` is stopped: it cancels the runs that have not
    finished; its whole process group is killed if it has not ended in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=RUNNER_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_run(api_url: str, run_id: str, timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    with console.status("  waiting for the recovery run"):
        while time.monotonic() < deadline:
            state = _http_json(f"{api_url}/flow_runs/{run_id}")["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                if state["type"] != "COMPLETED":
                    raise SystemExit(f"the recovery run ended {state['name']}: {state.get('message')}")
                return state["name"]
            time.sleep(1)
    raise SystemExit(f"the recovery run did not finish within {timeout_s:.0f} s")


def _http_json(url: str, body: dict | None = None, wait_s: float = 0) -> dict:
    """GET (or POST `body`) as JSON; retried for `wait_s` while it is not there yet."""
    deadline = time.monotonic() + wait_s
    while True:
        request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            if error.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(1)


def gitops(*args: str, expect_failure: bool = False) -> dict | None:
    """Run the CLI as a person would; sync-like commands speak JSON, shown as lines."""
    console.print(f"  $ gitops {' '.join(args)}", style="dim")
    speaks_json = args[0] in ("sync", "diff", "drift")
    command = [str(BIN / "gitops"), *args, *(["--json"] if speaks_json else [])]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if (result.returncode != 0) != expect_failure:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"gitops {args[0]} exited {result.returncode}, which the demo did not expect:\n{tail}")
    if not speaks_json:
        return None
    report = json.loads(result.stdout)
    for r in report["results"]:
        colour = {"succeeded": "green", "skipped": "yellow"}.get(r["status"], "red")
        console.print(f"    [{colour}]{r['status']:<9}[/{colour}] {r['app']} on {r['cluster']}: "
                      f"{_short(r['message'])}", highlight=False)
    return report


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def kubectl(cluster: LocalCluster, *args: str) -> str:
    result = subprocess.run([str(BIN / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()
