"""Benchmark: the whole pipeline as a person runs it, whole processes against a
Prefect server, for the sample repository (examples/: 3 apps) on 2 local
clusters, and what each run leaves in Prefect (task runs, artifacts, events):

- first `gitops sync` (applies, waits for health); no peer
- no-op `gitops sync`, against `kubectl diff --server-side` of the same objects
  (one kubectl process per app and cluster: 6, one after another as a person
  types them, their times added up); no target
- a scheduled tick with nothing changed (`gitops_sync(if_changed=True)` in a process
  of its own, as a deployment run does it); no peer

Each figure is wall time and CPU (user+sys of the process and the children it
waited for); the ratio is kubectl ÷ gitops, of both. Cache state: the no-op sync
is warm on both sides (ours: the Git clone, render cache and objects known
valid of the first sync; kubectl: its discovery cache filled first). The
benchmark has a GITOPS_HOME, PREFECT_HOME and kubectl cache of its own in a
temporary folder (bench/homes.py), never the user's.

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
sys.path[:0] = [str(HERE), str(HERE / "bench")]

from checkout import Checkout  # noqa: E402
from compare import Row, table  # noqa: E402
from homes import KUBECTL, own_homes, warm_kubectl_cache  # noqa: E402
from measure import Run, in_a_row, run_measured  # noqa: E402

CLUSTERS = ("staging", "production")
# What kubectl diff is given for each app: (how, path or template, namespace)
KUBECTL_APPS = (("-f", "apps/platform", ""), ("-k", "apps/web/overlays/{cluster}", "web"),
                ("-f", "apps/widgets", "widgets"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=HERE, help="the checkout to measure")
    args = parser.parse_args()
    root = Checkout.of(args.root.resolve())
    from prefect_gitops.localcluster import LocalCluster

    print("gitops against kubectl, whole processes, wall time and CPU; the no-op sync warm on both sides", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp, own_homes(Path(tmp)) as homes, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        api = stack.enter_context(prefect_server(work))
        clusters = {role: LocalCluster(f"bench-pipe-{role}") for role in CLUSTERS}
        for cluster in clusters.values():
            stack.callback(cluster.down)
            cluster.up()
        env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": root.path}
        bare = make_repository(work)
        register(root, env, bare, clusters)
        first, first_counts = measure(api, lambda: gitops(root, env, "sync", "--repo", "fleet"))
        noop, noop_counts = measure(api, lambda: gitops(root, env, "sync", "--repo", "fleet"))
        tick_run, tick_counts = measure(api, lambda: tick(root, env))
        for cluster in clusters.values():
            warm_kubectl_cache(cluster.kubeconfig, homes.kubectl_cache)
        diffs = in_a_row([run for role, cluster in clusters.items()
                          for run in kubectl_diff(work / "fleet", role, cluster.kubeconfig, homes.kubectl_cache)])
    print_table([Row("first gitops sync", first), Row("no-op gitops sync", noop, diffs, "kubectl diff (6 runs)"),
                 Row("scheduled tick, nothing changed", tick_run)],
                {"first gitops sync": first_counts, "no-op gitops sync": noop_counts,
                 "scheduled tick, nothing changed": tick_counts})


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


def register(root: Checkout, env: dict, bare: Path, clusters: dict) -> None:
    gitops(root, env, "repo", "add", "fleet", "--url", f"file://{bare}", "--branch", "main")
    for role, cluster in clusters.items():
        gitops(root, env, "cluster", "add", role, "--kubeconfig", str(cluster.kubeconfig), "--label", f"env={role}")


# ---- what is measured --------------------------------------------------------------------

def gitops(root: Checkout, env: dict, *args: str) -> Run:
    """The `gitops` command of `root` in a process of its own, as bin/gitops starts it."""
    run = run_measured([sys.executable, "-c", f"import sys; sys.argv[0] = 'gitops'; {root.entry()}", *args], env=env)
    if run.exit_code != 0:
        raise RuntimeError(f"gitops {' '.join(args)} exited {run.exit_code}:\n{run.stderr[-3000:]}")
    return run


def tick(root: Checkout, env: dict) -> Run:
    code = f"from {root.prefix}flows.sync import gitops_sync; gitops_sync(repo='fleet', if_changed=True)"
    run = run_measured([sys.executable, "-c", code], env=env)
    if run.exit_code != 0:
        raise RuntimeError(f"the tick exited {run.exit_code}:\n{run.stderr[-3000:]}")
    return run


def kubectl_diff(tree: Path, cluster: str, kubeconfig: Path, cache_dir: Path) -> list[Run]:
    """kubectl's view of the same objects, as prefect-gitops' field manager: no diff."""
    runs = []
    for how, path, namespace in KUBECTL_APPS:
        args = [KUBECTL, f"--kubeconfig={kubeconfig}", "--cache-dir", str(cache_dir), "diff", "--server-side",
                "--field-manager=prefect-gitops", "--force-conflicts", how, str(tree / path.format(cluster=cluster))]
        run = run_measured(args + (["-n", namespace] if namespace else []))
        if run.exit_code not in (0, 1):
            raise RuntimeError(f"kubectl diff failed: {run.stderr[-2000:]}")
        runs.append(run)
    return runs


def measure(api: str, step) -> tuple[Run, dict]:
    """The step's process, and what it left in Prefect."""
    since = datetime.now(timezone.utc)
    run = step()
    runs = _post(api, "/flow_runs/filter", {"flow_runs": {"start_time": {"after_": since.isoformat()}}, "limit": 200})
    ids = [r["id"] for r in runs]
    tasks = _post(api, "/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": ids}}, "limit": 200}) if ids else []
    nested = {r.get("parent_task_run_id") for r in runs}
    artifacts = _post(api, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": ids}}, "limit": 200}) if ids else []
    events = _post(api, "/events/filter", {"filter": {"occurred": {"since": since.isoformat()},
                                                      "event": {"prefix": ["gitops."]}}, "limit": 50})["events"]
    return run, {"flow runs": len(runs), "task runs": len([t for t in tasks if t["id"] not in nested]),
                 "artifacts": len(artifacts), "gitops events": len(events)}


def print_table(rows: list[Row], counts: dict[str, dict]) -> None:
    print(f"\n{'step':<34} {'flow runs':>9} {'task runs':>9} {'artifacts':>9} {'events':>6}")
    for step, found in counts.items():
        print(f"{step:<34} {found['flow runs']:9d} {found['task runs']:9d} {found['artifacts']:9d} "
              f"{found['gitops events']:6d}")
    print("\n" + table(rows, "gitops"))
    print(json.dumps({row.step: {"wall_s": row.ours.wall_s, "cpu_s": row.ours.cpu_s, **counts[row.step]}
                      for row in rows}))


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
