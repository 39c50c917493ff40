"""Benchmark: what an idle tick of the served sync deployment costs - the sample
repository (examples/, three apps) on two local clusters, synced once, then
runs of `gitops-sync` with its deployment's parameters (`if_changed`: the head
has not moved and nothing drifted), started through the REST API as the
schedule starts them and run by `gitops serve`'s runner.

Printed per tick: the run's own time (start to end, as Prefect records it),
the time from the request to Completed (the runner polls every POLL_S of
cli/runner.py, 2 s), the Prefect API requests it made (from the server's access log,
grouped by method and path; the runner's own polling shown apart), and what
reaches the UI: task runs, artifacts and events.

    .venv/bin/python bench/bench_idle_tick.py [--ticks 3]

No peer: the figures are for reading. The clusters, the Prefect server (its
access log on) and the Git remote are started and stopped by the script, with a
GITOPS_HOME and PREFECT_HOME of its own in a temporary folder (bench/homes.py),
never the user's."""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_pipeline import make_repository  # noqa: E402
from homes import own_homes  # noqa: E402
from prefect_gitops.cli.local_server import LocalPrefectServer  # noqa: E402
from prefect_gitops.localcluster import LocalCluster  # noqa: E402

GITOPS = [sys.executable, "-c", "import sys; sys.argv[0] = 'gitops'; from prefect_gitops.cli.entry import main; main()"]
REPO = "fleet"
ACCESS = re.compile(r'"(GET|POST|PATCH|PUT|DELETE) (/api/[^ ?"]*)')
IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# The runner's own polling and heartbeats, there whether a tick runs or not.
RUNNER = ("/api/deployments/get_scheduled_flow_runs", "/api/work_pools", "/api/csrf-token", "/api/health")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=3)
    args = parser.parse_args()
    print(f"idle ticks of the served sync deployment, warm (after a sync); no peer; "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp, own_homes(Path(tmp)), \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        # the server's access log, one line a request, written as it happens
        os.environ.update(PREFECT_SERVER_LOGGING_LEVEL="INFO", PYTHONUNBUFFERED="1")
        server = LocalPrefectServer(work / "prefect-server")
        record, _ = server.start()
        stack.callback(server.stop)
        api = record.api_url
        env = {**os.environ, "PREFECT_API_URL": api}
        clusters = {name: LocalCluster(f"idle-{name}") for name in ("staging", "production")}
        for cluster in clusters.values():
            stack.callback(cluster.down)
        kubeconfigs = {name: cluster.up() for name, cluster in clusters.items()}
        remote = make_repository(work)
        gitops(env, "repo", "add", REPO, "--url", f"file://{remote}", "--branch", "main")
        for name, kubeconfig in kubeconfigs.items():
            gitops(env, "cluster", "add", name, "--kubeconfig", str(kubeconfig))
        gitops(env, "sync", "--repo", REPO)
        serve = subprocess.Popen([*GITOPS, "serve", "--repo", REPO, "--sync-interval", "86400",
                                  "--drift-cron", "0 0 1 1 *"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(lambda: (serve.terminate(), serve.wait(timeout=60)))
        deployment = wait_for_deployment(api, "gitops-sync")
        wait_for_scheduled_runs(api, deployment)
        log = server.home / "server.log"
        print(f"\n{'tick':<6}{'run s':>7}{'request to Completed s':>24}{'API requests':>14}{'task runs':>11}"
              f"{'artifacts':>11}{'events':>8}")
        counts: collections.Counter = collections.Counter()
        for tick in range(1, args.ticks + 1):
            offset = log.stat().st_size
            SENT.clear()
            started = time.monotonic()
            run = request(api, f"deployments/{deployment}/create_flow_run", {})
            run = wait_for_run(api, run["id"])
            waited = time.monotonic() - started
            time.sleep(1)  # the run's last log lines and events reach the server
            own, polling = requests_since(log, offset)
            own = own - SENT  # the tick's alone (Counter subtraction keeps positive counts)
            counts = own
            print(f"{tick:<6}{seconds(run):7.2f}{waited:24.2f}{sum(own.values()):14d}{task_runs(api, run):11d}"
                  f"{artifacts(api, run):11d}{events(api, run):8d}   {run['state']['message'] or ''}")
        print(f"\nPrefect API requests of the last tick (the runner's polling meanwhile: {sum(polling.values())}):")
        for line, count in counts.most_common():
            print(f"  {count:4d}  {line}")


def gitops(env: dict, *args: str) -> None:
    done = subprocess.run([*GITOPS, *args], env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"gitops {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")


SENT: collections.Counter = collections.Counter()  # this script's own requests, left out of the counts


def request(api: str, path: str, body: dict | None = None) -> dict | list:
    data = json.dumps(body).encode() if body is not None else None
    SENT[f"{'POST' if data is not None else 'GET'} {IDS.sub('{id}', '/api/' + path)}"] += 1
    req = urllib.request.Request(f"{api}/{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.loads(response.read())


def wait_for_deployment(api: str, name: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            return request(api, f"deployments/name/{name}/{name}")["id"]
        time.sleep(0.5)
    raise SystemExit(f"the deployment {name} was not served within {timeout_s} s")


def wait_for_scheduled_runs(api: str, deployment: str, settle_s: float = 15) -> None:
    """Any run due over before the ticks are measured (none is expected: an interval
    schedule's first run comes one interval after serve starts, a day here)."""
    time.sleep(settle_s)
    while request(api, "flow_runs/filter", {"deployments": {"id": {"any_": [deployment]}}, "flow_runs": {
            "state": {"type": {"any_": ["PENDING", "RUNNING"]}}}, "limit": 10}):
        time.sleep(1)


def wait_for_run(api: str, run_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = request(api, f"flow_runs/{run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            if run["state"]["type"] != "COMPLETED":
                raise SystemExit(f"the tick ended {run['state']['type']}: {run['state']['message']}")
            return run
        time.sleep(0.1)
    raise SystemExit(f"the tick did not end within {timeout_s} s")


def requests_since(log: Path, offset: int) -> tuple[collections.Counter, collections.Counter]:
    """The requests logged since `offset`: the tick's, and the runner's polling."""
    own, polling = collections.Counter(), collections.Counter()
    with log.open() as lines:
        lines.seek(offset)
        for line in lines:
            found = ACCESS.search(line)
            if found:
                path = IDS.sub("{id}", found[2])
                (polling if path.startswith(RUNNER) else own)[f"{found[1]} {path}"] += 1
    return own, polling


def seconds(run: dict) -> float:
    start, end = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("start_time", "end_time"))
    return (end - start).total_seconds()


def task_runs(api: str, run: dict) -> int:
    return len(request(api, "task_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200}))


def artifacts(api: str, run: dict) -> int:
    return len(request(api, "artifacts/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200}))


def events(api: str, run: dict) -> int:
    """Events about the run's apps (gitops.*), besides Prefect's own of the run's states."""
    found = request(api, "events/filter", {"filter": {"occurred": {"since": run["start_time"]},
                                                       "event": {"prefix": ["gitops."]}}, "limit": 50})
    return len(found["events"])


if __name__ == "__main__":
    main()
