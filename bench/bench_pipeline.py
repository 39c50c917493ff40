"""Benchmark: the whole pipeline as a person runs it, whole processes against a
Prefect server, for the sample repository (examples/: 3 apps) on 2 local
clusters, and what each run leaves in Prefect (task runs, artifacts, events):

- first `gitops sync` (applies, waits for health)
- no-op `gitops sync`, against `kubectl diff --server-side` of the same objects
  (one kubectl process per app and cluster: 6, timed together)
- a scheduled tick with nothing changed (`gitops_sync(if_changed=True)` in a process
  of its own, as a deployment run does it)

    .venv/bin/python bench/bench_pipeline.py [--root CHECKOUT]

`--root` measures another checkout (e.g. a worktree of an older commit) with
this script, so before and after are measured the same way. The clusters
(`bench-pipe-*`), the Prefect server and the Git remote are started and
stopped by the script."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CLUSTERS = ("staging", "production")
# What kubectl diff is given for each app: (how, path or template, namespace)
KUBECTL_APPS = (("-f", "apps/platform", ""), ("-k", "apps/web/overlays/{cluster}", "web"),
                ("-f", "apps/widgets", "widgets"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE, help="the checkout to measure")
    args = parser.parse_args()
    root = args.root.resolve()
    sys.path.insert(0, str(root))
    from localcluster import LocalCluster

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        api = stack.enter_context(prefect_server(work))
        clusters = {role: LocalCluster(f"bench-pipe-{role}") for role in CLUSTERS}
        for cluster in clusters.values():
            stack.callback(cluster.down)
            cluster.up()
        env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(root)}
        bare = make_repository(work)
        register(root, env, bare, clusters)
        rows = [measure("first gitops sync", api, lambda: gitops(root, env, "sync", "--repo", "fleet")),
                measure("no-op gitops sync", api, lambda: gitops(root, env, "sync", "--repo", "fleet")),
                measure("scheduled tick, nothing changed", api, lambda: tick(root, env))]
        started = time.perf_counter()
        for role, cluster in clusters.items():
            kubectl_diff(work / "fleet", role, cluster.kubeconfig)
        kubectl_s = time.perf_counter() - started
    print_table(rows, kubectl_s)


# ---- set-up ------------------------------------------------------------------------------

@contextlib.contextmanager
def prefect_server(work: Path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1", "PREFECT_UI_API_URL": api}
    with open(work / "server.log", "wb") as log:
        server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{api}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the Prefect server did not start: {(work / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield api
    finally:
        server.terminate()
        server.wait(timeout=30)


def make_repository(work: Path) -> Path:
    bare, tree = work / "fleet.git", work / "fleet"
    shutil.copytree(HERE / "examples", tree)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(bare)], check=True)
    for args in (["init", "--quiet", "-b", "main"], ["add", "--all"], ["commit", "--quiet", "-m", "fleet"],
                 ["push", "--quiet", str(bare), "main"]):
        subprocess.run([*git, *args], cwd=tree, check=True, capture_output=True)
    return bare


def register(root: Path, env: dict, bare: Path, clusters: dict) -> None:
    gitops(root, env, "repo", "add", "fleet", "--url", f"file://{bare}", "--branch", "main")
    for role, cluster in clusters.items():
        gitops(root, env, "cluster", "add", role, "--kubeconfig", str(cluster.kubeconfig), "--label", f"env={role}")


# ---- what is measured --------------------------------------------------------------------

def gitops(root: Path, env: dict, *args: str) -> None:
    """The `gitops` command of `root` in a process of its own."""
    entry = "cli.main" if (root / "cli" / "main.py").exists() else "flows.cli"
    code = f"import sys; sys.argv[0] = 'gitops'; from {entry} import app; app()"
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gitops {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")


def tick(root: Path, env: dict) -> None:
    code = "from flows.sync import gitops_sync; gitops_sync(repo='fleet', if_changed=True)"
    subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True, capture_output=True)


def kubectl_diff(tree: Path, cluster: str, kubeconfig: Path) -> None:
    """kubectl's view of the same objects, as prefect-gitops' field manager: no diff."""
    for how, path, namespace in KUBECTL_APPS:
        args = [str(BIN / "kubectl"), f"--kubeconfig={kubeconfig}", "diff", "--server-side",
                "--field-manager=prefect-gitops", "--force-conflicts", how, str(tree / path.format(cluster=cluster))]
        done = subprocess.run(args + (["-n", namespace] if namespace else []), capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"kubectl diff failed: {done.stderr[-2000:]}")


def measure(label: str, api: str, step) -> dict:
    since = datetime.now(timezone.utc)
    started = time.perf_counter()
    step()
    seconds = time.perf_counter() - started
    runs = _post(api, "/flow_runs/filter", {"flow_runs": {"start_time": {"after_": since.isoformat()}}, "limit": 200})
    ids = [r["id"] for r in runs]
    tasks = _post(api, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": ids}}, "limit": 200}) if ids else []
    nested = {r.get("parent_task_run_id") for r in runs}
    artifacts = _post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": ids}}, "limit": 200}) if ids else []
    events = _post(api, "/events/filter", {"filter": {"occurred": {"since": since.isoformat()},
                                                      "event": {"prefix": ["gitops."]}}, "limit": 50})["events"]
    return {"step": label, "seconds": seconds, "flow runs": len(runs),
            "task runs": len([t for t in tasks if t["id"] not in nested]),
            "artifacts": len(artifacts), "gitops events": len(events)}


def print_table(rows: list[dict], kubectl_s: float) -> None:
    print(f"{'step':<34} {'wall s':>7} {'flow runs':>9} {'task runs':>9} {'artifacts':>9} {'events':>6}")
    for row in rows:
        print(f"{row['step']:<34} {row['seconds']:7.2f} {row['flow runs']:9d} {row['task runs']:9d} "
              f"{row['artifacts']:9d} {row['gitops events']:6d}")
    noop = rows[1]["seconds"]
    print(f"{'kubectl diff --server-side (6 runs)':<34} {kubectl_s:7.2f}")
    print(f"no-op sync vs kubectl diff: {kubectl_s / noop:.2f}x (>1: ours faster)")
    print(json.dumps(rows))


def _post(api: str, path: str, body: dict):
    request = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
