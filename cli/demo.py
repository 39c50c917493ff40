"""`gitops demo`: the README's main command, shown step by step on real parts:
two local clusters, a Git repository made from examples/ with a bare remote,
Prefect's own server, and the gitops flows. It cleans up after itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
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

from cli.local_server import LocalPrefectServer, LocalServerError
from localcluster import LocalCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
BIN = Path(sys.executable).parent
CLUSTERS = {"staging": "demo-staging", "production": "demo-production"}
REPO_BLOCK = "demo-fleet"
console = Console()


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
    with contextlib.ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="gitops-demo-"))
        cleanup.callback(shutil.rmtree, workdir, True)
        api_url = cleanup.enter_context(prefect_server(workdir))
        clusters = start_clusters(cleanup, keep)
        repo = make_repository(workdir)
        register_blocks(repo, clusters)
        first_sync()
        failing_change(repo, clusters["staging"])
        drift_heals(clusters["production"])
        recover_through_the_api(cleanup, workdir, api_url, clusters)
        console.print(f"\n[green]demo finished in {time.monotonic() - started:.0f} s[/green]; its runs, logs, "
                      f"diffs and events were at {api_url.removesuffix('/api')} (set PREFECT_API_URL to a server "
                      "of your own to keep them)")


def step(number: int, text: str) -> None:
    console.rule(f"[bold]step {number}[/bold]: {text}", align="left")


# -- set-up ----------------------------------------------------------------------------


@contextlib.contextmanager
def prefect_server(workdir: Path) -> Iterator[str]:
    """Prefect's own server: the one in PREFECT_API_URL if set, else a fresh one
    in the demo's folder (started and stopped as `gitops server` does it)."""
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
        gitops("cluster", "add", role, "--kubeconfig", str(cluster.kubeconfig), "--label", f"env={role}")


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
    gitops("cluster", "add", "production", "--kubeconfig", str(production.kubeconfig), "--label", "env=production")
    runner = start_recovery_runner(workdir)
    cleanup.callback(stop, runner)
    deployment = _http_json(f"{api_url}/deployments/name/gitops-recover/gitops-recover", wait_s=60)
    run = _http_json(f"{api_url}/deployments/{deployment['id']}/create_flow_run",
                     {"parameters": {"repo": REPO_BLOCK, "cluster": "production"}})
    console.print(f"  POST /api/deployments/{deployment['id'][:8]}…/create_flow_run -> flow run {run['name']}")
    state = wait_for_run(api_url, run["id"])
    pods = kubectl(production, "get", "pods", "-n", "web", "--no-headers")
    console.print(f"  flow run {run['name']}: {state}; web pods on the new cluster:")
    console.print("\n".join(f"    {line}" for line in pods.splitlines()), highlight=False)
    stop(runner)


# -- helpers ---------------------------------------------------------------------------


def start_recovery_runner(workdir: Path) -> subprocess.Popen:
    """The recovery deployment served by a process of its own, as `gitops serve` does."""
    code = ("import prefect; from cli.serve import deployment; "
            f"prefect.serve(deployment('gitops-recover', repo={REPO_BLOCK!r}), limit=1)")
    log = open(workdir / "runner.log", "wb")
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
                            cwd=Path(__file__).resolve().parent.parent, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


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
