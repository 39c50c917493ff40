"""Benchmark: the `gitops` command as a person types it, against kubectl as a
person types it, on the same local cluster in one run, for 1,000 objects
(ConfigMaps, Services, Deployments in 4 namespaces, as bench_sync.py makes them)
in a plain-YAML app. Both sides are whole processes; each figure is wall time
and CPU (user+sys of the process and the children it waited for); each ratio is
kubectl ÷ gitops, of wall time and of CPU, and a target is met only when both are.

- start-up: `gitops --version`, and `gitops repo list` with a Prefect server in
  PREFECT_API_URL and without one (the second command of a session: the local
  server kept in GITOPS_HOME, or Prefect's temporary server before there was one)
- first `gitops sync` (applies, waits for health) against (a) `kubectl apply
  --server-side` alone, which waits for nothing, and (b) that apply then `kubectl
  wait --for=condition=Available deployment --all -n NS` for each namespace, one
  after another: what a person runs to know the change is up (target: b)
- no-op `gitops sync` vs `kubectl diff --server-side`
- `gitops drift` (nothing drifted) vs `kubectl diff --server-side`
- the same two with `gitops serve` up: the command as a thin client of the
  served deployments (cli/served.py); ours' CPU is then the command's and the
  serve process's during it (the run happens there)

Cache state, the same for both sides: the first sync is cold on both (ours: a
fresh GITOPS_HOME, no Git clone, render cache or objects known valid; kubectl:
an empty cache dir, no discovery cache); every later row is warm on both (ours:
the clone, render cache and objects known valid of the syncs before; kubectl:
its discovery cache filled first). Neither side keeps discovery across
processes in memory: ours asks for the group-versions it uses in every run.
The Prefect server's and the cluster's own CPU are counted on neither side.

Every row but the first sync is the median of 3 processes, ours and kubectl's
alike. Ours get namespaces bench-a-*, kubectl bench-b-* (otherwise the same
objects), so both start from nothing. The benchmark has a GITOPS_HOME, PREFECT_HOME
and kubectl cache of its own in a temporary folder (bench/homes.py), never the
user's.

    .venv/bin/python bench/bench_cli.py [--root CHECKOUT] [--objects 1000] [--namespaces 4] [--profile DIR]

`--profile DIR` then runs one more no-op sync under cProfile (every thread; its
times inflated by profiling), and prints where the client's CPU goes, its
Kubernetes requests by verb (as KubeClient counts them) and its Prefect API
requests (by method and path).

The measured checkout's modules are compiled to bytecode first, as `make` leaves
them. `--root` measures the `gitops` of another checkout (e.g. `git archive` of an
older commit) with this script, so before and after are measured the same way.
The cluster (`bench-cli`), the Prefect server and the Git remote are started
and stopped by the script."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_sync import settle, write_manifests  # noqa: E402
from checkout import Checkout  # noqa: E402
from compare import Row, table  # noqa: E402
from homes import KUBECTL, own_homes, warm_kubectl_cache  # noqa: E402
from measure import Run, in_a_row, process_cpu_s, run_measured  # noqa: E402

from prefect_gitops.cli.local_server import LocalPrefectServer  # noqa: E402
from prefect_gitops.localcluster import LocalCluster  # noqa: E402

REPO, CLUSTER, APP = "bench-fleet", "bench", "bench"
RUNS = 3  # every row but the first sync: the median of this many processes, ours and kubectl's
APPLY, APPLY_AND_WAIT = "kubectl apply --server-side", "kubectl apply --server-side + wait Available"
DIFF = "kubectl diff --server-side"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose gitops is measured")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="profile one more no-op sync into DIR")
    args = parser.parse_args()
    root = args.root.resolve()
    compile_bytecode(root)
    deployments = args.objects - args.objects // 2 - args.objects // 4
    print(f"gitops of {root} against kubectl, whole processes, wall time and CPU; "
          f"{args.objects} objects + {args.namespaces} Namespaces; first sync cold on both sides, the other "
          f"rows warm on both; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp, own_homes(Path(tmp)) as homes, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        theirs_dir = work / "kubectl"
        ours_ns = make_repository(work, args.objects, args.namespaces)
        theirs_ns = write_manifests(theirs_dir, "bench-b", args.objects, args.namespaces)
        api_url, _, kubeconfig = server_and_cluster(work, stack, "bench-cli")
        gitops = Gitops(root, homes.gitops, api_url)
        kubectl = Kubectl(kubeconfig, homes.kubectl_cache)
        # the kept server that a command without PREFECT_API_URL starts, stopped at the end
        stack.callback(LocalPrefectServer(homes.gitops / "prefect-server").stop)

        gitops.check("repo", "add", REPO, "--url", f"file://{work / 'fleet.git'}", "--branch", "main")
        gitops.check("cluster", "add", CLUSTER, "--kubeconfig", str(kubeconfig))
        rows = [Row("gitops --version", gitops.median("--version")),
                Row("gitops repo list (PREFECT_API_URL)", gitops.median("repo", "list"), target="<1s")]
        # the first command without a server configured starts the kept one (and registers the
        # block type in its database, or in the temporary server's of an older checkout)
        gitops.check("repo", "add", REPO, "--url", f"file://{work / 'fleet.git'}", "--branch", "main", api=False)
        rows.append(Row("gitops repo list (no PREFECT_API_URL)", gitops.median("repo", "list", api=False),
                        target="<1s"))

        first = gitops.sync_like("sync")
        settle(kubeconfig, ["bench-a-"], deployments)
        apply = kubectl.run("apply", "--server-side", "--field-manager=bench", "-f", str(theirs_dir))
        waits = [kubectl.run("wait", "--for=condition=Available", "deployment", "--all", "-n", ns, "--timeout=600s")
                 for ns in theirs_ns]
        rows += [Row("first sync (health incl.)", first, apply, APPLY),
                 Row("first sync (health incl.)", first, in_a_row([apply, *waits]), APPLY_AND_WAIT, "3x")]
        settle(kubeconfig, ["bench-a-", "bench-b-"], 2 * deployments)
        warm_kubectl_cache(kubeconfig, homes.kubectl_cache)

        def against_diff(step: str, ours: Run, target: str) -> None:
            """A row of ours against `kubectl diff` run right after it (kubectl's own
            time varies by a factor of 2 between runs: the median of RUNS)."""
            diffs = [kubectl.run("diff", "--server-side", "--field-manager=bench", "-f", str(theirs_dir))
                     for _ in range(RUNS)]
            rows.append(Row(step, ours, median(diffs), DIFF, target))

        noop = gitops.median_sync_like("sync")
        against_diff("no-op sync", noop, "3x")
        against_diff("drift (nothing drifted)", gitops.median_sync_like("drift"), "3x")
        with gitops.serving():
            against_diff("no-op sync, served", gitops.median_sync_like("sync"), "5x")
            against_diff("drift, served", gitops.median_sync_like("drift"), "5x")
        if args.profile:
            gitops.profiled_sync(args.profile)
    print_table(rows, ours_ns, noop)
    if args.profile:
        print_costs(args.profile / "noop-sync.pstats")
        print_requests(args.profile / "noop-sync-requests.json")


def server_and_cluster(work: Path, stack: contextlib.ExitStack, name: str) -> tuple[str, LocalCluster, Path]:
    """A Prefect server and a local cluster `name` of the benchmark's own, both
    stopped with `stack`: the server's API URL, the cluster, its kubeconfig."""
    server = LocalPrefectServer(work / "prefect-server")
    record, _ = server.start()
    stack.callback(server.stop)
    cluster = LocalCluster(name)
    stack.callback(cluster.down)
    return record.api_url, cluster, cluster.up()


def median(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.wall_s)[len(runs) // 2]


# ---- set-up ------------------------------------------------------------------------------

def compile_bytecode(root: Path) -> None:
    """The measured checkout's modules compiled, as `make` (and pip, for an installed
    package) leaves them: else, where PYTHONDONTWRITEBYTECODE is set, every command
    would compile them from source again."""
    packages = sorted(str(d) for d in root.iterdir() if (d / "__init__.py").exists())
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True, stdout=subprocess.DEVNULL)


def make_repository(work: Path, objects: int, namespaces: int, deployments: int | None = None,
                    **app: object) -> list[str]:
    """A GitOps repository with one plain-YAML app of the objects (bench_sync's
    write_manifests) and the `app` fields given (e.g. syncPolicy), pushed to a bare remote."""
    tree = work / "fleet"
    names = write_manifests(tree / "manifests", "bench-a", objects, namespaces, deployments)
    spec = {"apps": [{"name": APP, "path": "manifests", "clusters": [CLUSTER], "namespace": names[0],
                      "policy": {"allowedNamespaces": names[1:], "resourceLimits": "off"}, **app}]}
    (tree / "gitops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(work / "fleet.git")], check=True)
    for step in (["init", "--quiet", "-b", "main"], ["add", "--all"], ["commit", "--quiet", "-m", "fleet"],
                 ["push", "--quiet", str(work / "fleet.git"), "main"]):
        subprocess.run([*git, *step], cwd=tree, check=True, capture_output=True)
    return names


class Gitops:
    """The `gitops` of a checkout, each command a process of its own, in the
    benchmark's GITOPS_HOME and PREFECT_HOME (bench/homes.py: no profile, cache or
    server of the user's)."""

    def __init__(self, root: Path, home: Path, api_url: str, timeout_s: float = 900):
        self.checkout, self.home, self.api_url, self.timeout_s = Checkout.of(root), home, api_url, timeout_s
        self.env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                    # an older checkout starts Prefect's temporary server: 20 s is too short on a busy machine
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
        self.env.pop("PREFECT_API_URL", None)
        self.argv = [sys.executable, "-c", f"import sys; sys.path.insert(0, {self.checkout.path!r}); "
                                           f"sys.argv[0] = 'gitops'; {self.checkout.entry()}"]
        self.serve_pid: int | None = None  # while `gitops serve` is up: its work is the commands' too

    def run(self, *args: str, api: bool = True) -> Run:
        """One command; with `gitops serve` up, the CPU the serve process used
        meanwhile is added to the command's (the run happens there)."""
        env = {**self.env, "PREFECT_API_URL": self.api_url} if api else self.env
        served_before = process_cpu_s(self.serve_pid) if self.serve_pid else 0.0
        run = run_measured([*self.argv, *args], env=env, timeout=self.timeout_s)
        if self.serve_pid:
            run.cpu_s += process_cpu_s(self.serve_pid) - served_before
        return run

    def check(self, *args: str, api: bool = True, ok: tuple[int, ...] = (0,)) -> Run:
        run = self.run(*args, api=api)
        if run.exit_code not in ok:
            raise SystemExit(f"gitops {' '.join(args)} exited {run.exit_code}:\n{run.stderr[-3000:]}")
        return run

    def median(self, *args: str, api: bool = True) -> Run:
        return median([self.check(*args, api=api) for _ in range(RUNS)])

    def sync_like(self, command: str) -> Run:
        """`gitops sync|drift --json`; every app and cluster must have succeeded."""
        run = self.check(command, "--repo", REPO, "--json", ok=(0, 1))
        report = json.loads(run.stdout)
        failed = [f"{r['app']}@{r['cluster']} {r['status']}: {r['message']}" for r in report["results"]
                  if r["status"] != "succeeded"]  # not its objects: thousands in bench_scale.py
        if run.exit_code or failed:
            raise SystemExit(f"gitops {command} exited {run.exit_code}: {failed}\n{run.stderr[-2000:]}")
        return run

    def median_sync_like(self, command: str) -> Run:
        return median([self.sync_like(command) for _ in range(RUNS)])

    @contextlib.contextmanager
    def serving(self):
        """`gitops serve` of the repository, once the commands can reach it and no
        flow run is due (its schedules' first runs are a day and a year away: none
        should be); stopped afterwards."""
        socket = self.home / "serve.sock"
        serve = subprocess.Popen([*self.argv, "serve", "--repo", REPO, "--sync-interval", "86400",
                                  "--drift-cron", "0 0 1 1 *"], env={**self.env, "PREFECT_API_URL": self.api_url},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not (socket.exists() and self._deployed("gitops-drift")):
                if serve.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("gitops serve did not start")
                time.sleep(0.2)
            waited = self._wait_for_due_runs()
            print(f"gitops serve up; {waited:.1f} s waiting for due flow runs", flush=True)
            self.serve_pid = serve.pid
            yield
        finally:
            self.serve_pid = None
            serve.terminate()
            serve.wait(timeout=60)

    def _wait_for_due_runs(self, timeout_s: float = 300) -> float:
        """Until no flow run is due, pending or running: a scheduled sync running
        beside a measured command would load the machine and hold the app's lock.
        Returns the seconds waited."""
        started = time.monotonic()
        while self._due_runs():
            if time.monotonic() - started > timeout_s:
                raise SystemExit(f"flow runs still due or running after {timeout_s:.0f} s")
            time.sleep(1)
        return time.monotonic() - started

    def _due_runs(self) -> list:
        now = datetime.now(timezone.utc).isoformat()
        query = {"flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING"]}},
                               "expected_start_time": {"before_": now}}, "limit": 10}
        request = urllib.request.Request(f"{self.api_url}/flow_runs/filter", data=json.dumps(query).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def _deployed(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/deployments/name/{name}/{name}", timeout=10):
                return True
        except urllib.error.HTTPError:
            return False

    def profiled_sync(self, directory: Path) -> None:
        """A no-op `gitops sync` under cProfile in every thread, counting the
        requests its Prefect client (httpx) and its Kubernetes clients send."""
        directory.mkdir(parents=True, exist_ok=True)
        code = (f"import sys; sys.path[:0] = [{self.checkout.path!r}, {str(HERE)!r}]; sys.argv[0] = 'gitops'\n"
                f"import bench_cli; bench_cli.profile_gitops({str(directory)!r})")
        run = run_measured([sys.executable, "-c", code, "sync", "--repo", REPO, "--json"],
                           env={**self.env, "PREFECT_API_URL": self.api_url})
        if run.exit_code != 0:
            raise SystemExit(f"profiled gitops sync exited {run.exit_code}:\n{run.stderr[-3000:]}")


def profile_gitops(directory: str) -> None:
    """In the profiled process: the CLI under cProfile, and its Prefect API
    requests and Kubernetes requests (by verb, as each KubeClient counts them,
    and by verb and path) counted."""
    import collections
    import re
    from urllib.parse import urlsplit

    import httpx
    from bench_sync import _profiled
    from prefect_gitops.engine.cluster import kube as kube_module
    from prefect_gitops.engine.cluster.kube import KubeClient

    requests: collections.Counter = collections.Counter()
    clients: list[KubeClient] = []
    make_client = KubeClient.__init__

    def made(client, *args, **kwargs):
        make_client(client, *args, **kwargs)
        clients.append(client)

    KubeClient.__init__ = made
    paths: collections.Counter = collections.Counter()
    verb_of = kube_module.request_verb

    def recorded(method, url, query=None):  # called once for every request a KubeClient sends
        verb = verb_of(method, url, query)
        paths[f"{verb} {urlsplit(url).path}"] += 1
        return verb

    kube_module.request_verb = recorded
    ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def counting(send):
        def wrapper(client, request, *args, **kwargs):
            requests[f"{request.method} {ids.sub('{id}', request.url.path)}"] += 1
            return send(client, request, *args, **kwargs)
        return wrapper

    httpx.Client.send = counting(httpx.Client.send)
    httpx.AsyncClient.send = counting(httpx.AsyncClient.send)

    def cli() -> None:
        from prefect_gitops.cli.main import app

        try:
            app()
        except SystemExit as exit:
            if exit.code:
                raise

    try:
        _profiled(cli, f"{directory}/noop-sync.pstats")
    finally:
        kube = collections.Counter()
        for client in clients:
            kube.update(client.requests)
        Path(directory, "noop-sync-requests.json").write_text(
            json.dumps({"prefect": requests, "kubernetes": kube, "kubernetes_paths": paths}))


# Waits, not work: threads blocked on a lock, a queue, a socket or a sleep.
IDLE = ("acquire' of '_thread.lock", "poll' of 'select", "time.sleep", "get' of '_queue", "recv_into",
        "read' of '_ssl", "recv' of '_socket", "do_handshake")


def print_costs(path: Path, top: int = 12) -> None:
    """The client's own CPU by package (cProfile's own times, waits left out),
    and the functions that cost most with what they call."""
    import collections
    import pstats

    stats = pstats.Stats(str(path))
    by_package: collections.Counter = collections.Counter()
    for (file, _, name), (_, _, own, _, _) in stats.stats.items():
        if file == "~" and any(idle in name for idle in IDLE):
            continue
        by_package[_package(file, name)] += own
    busy = sum(by_package.values())
    print(f"\nclient CPU of a no-op sync by package (cProfile, inflated by profiling): {busy:.1f} s")
    for package, seconds in by_package.most_common(top):
        print(f"  {seconds:6.2f} s {100 * seconds / busy:4.0f}%  {package}")
    print("functions by cumulative time (waits included):")
    rows = [(cum, calls, f"{file.split('site-packages/')[-1].removeprefix(str(ROOT) + '/')}:{line} {name}")
            for (file, line, name), (_, calls, _, cum, _) in stats.stats.items()
            if file != "~" and ("site-packages/prefect/" in file or str(ROOT) in file) and "bench_cli" not in file]
    for cum, calls, label in sorted(rows, reverse=True)[:3 * top]:
        print(f"  {cum:7.2f} s {calls:8d}  {label}")


def _package(file: str, name: str) -> str:
    if file == "~":
        return f"builtin {name}"
    if "site-packages/" in file:
        return file.split("site-packages/")[1].split("/")[0]
    if file.startswith(str(ROOT)):
        return file.removeprefix(str(ROOT) + "/")
    return "python: " + Path(file).name


def print_requests(path: Path) -> None:
    counted = json.loads(path.read_text())
    kube, prefect = counted["kubernetes"], counted["prefect"]
    print(f"\nKubernetes requests of one no-op sync: {sum(kube.values())} "
          f"({', '.join(f'{verb} {n}' for verb, n in kube.items() if n)})")
    for request, count in sorted(counted["kubernetes_paths"].items()):
        print(f"  {count:5d}  {request}")
    print(f"Prefect API requests of one no-op sync: {sum(prefect.values())} (events go by websocket, not counted)")
    for request, count in sorted(prefect.items(), key=lambda item: -item[1]):
        print(f"  {count:5d}  {request}")


class Kubectl:
    """kubectl as a person types it, each command a process of its own, with the
    benchmark's cache dir: empty at first (cold, as ours' first sync), filled by
    its first commands and warm_kubectl_cache() (warm, as ours' later rows)."""

    def __init__(self, kubeconfig: Path, cache_dir: Path, timeout_s: float = 900):
        self.argv = [KUBECTL, f"--kubeconfig={kubeconfig}", "--cache-dir", str(cache_dir)]
        self.timeout_s = timeout_s

    def run(self, *args: str) -> Run:
        run = run_measured([*self.argv, *args], timeout=self.timeout_s)
        if run.exit_code != 0:  # diff: 1 would mean a difference, which there must not be
            raise SystemExit(f"kubectl {' '.join(args[:2])} exited {run.exit_code}:\n{run.stderr[-2000:]}")
        return run


# ---- the report --------------------------------------------------------------------------

def print_table(rows: list[Row], namespaces: list[str], noop: Run) -> None:
    print("\n" + table(rows, "gitops"))
    print(f"(peer = kubectl; gitops synced {', '.join(namespaces)}; first sync cold on both sides, the other rows "
          "warm on both; served rows: the command's CPU and the serve process's meanwhile)")
    requests: dict[str, int] = {}
    for result in json.loads(noop.stdout)["results"]:
        for verb, count in result["requests"].items():
            requests[verb] = requests.get(verb, 0) + count
    print(f"Kubernetes requests of the no-op sync's app runs (its report): {sum(requests.values())} "
          f"({', '.join(f'{verb} {n}' for verb, n in requests.items() if n)})")


if __name__ == "__main__":
    main()
