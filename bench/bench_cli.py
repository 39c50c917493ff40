"""Benchmark: the `gitops` command as a person types it, whole processes against
kubectl on the same local cluster in one run, for 1,000 objects (ConfigMaps,
Services, Deployments in 4 namespaces, as bench_sync.py makes them) in a
plain-YAML app:

- start-up: `gitops --version`, and `gitops repo list` with a Prefect server in
  PREFECT_API_URL and without one (the second command of a session: the local
  server kept in GITOPS_HOME, or Prefect's temporary server before there was one)
- first `gitops sync` (applies, waits for health) vs `kubectl apply --server-side` (no wait)
- no-op `gitops sync` vs `kubectl diff --server-side`
- `gitops drift` (nothing drifted) vs `kubectl diff --server-side`
- the same two with `gitops serve` up: the command as a thin client of the
  served deployments (cli/served.py)

Every row but the first sync is the median of 3 processes, ours and kubectl's
alike. Ours get namespaces bench-a-*, kubectl bench-b-* (otherwise the same objects),
so both start from nothing. The table gives each figure, the ratio (kubectl /
ours: > 1 means ours is faster) and the target.

    .venv/bin/python bench/bench_cli.py [--root CHECKOUT] [--objects 1000] [--namespaces 4] [--profile DIR]

`--profile DIR` then runs one more no-op sync under cProfile (every thread; its
times inflated by profiling), and prints where the client's CPU goes and the
Prefect API requests the run made (by method and path).

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
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_sync import Run, run_measured, settle, write_manifests  # noqa: E402

from cli.local_server import LocalPrefectServer  # noqa: E402
from localcluster import LocalCluster  # noqa: E402

BIN = Path(sys.executable).parent
KUBECTL = str(BIN / "kubectl")
REPO, CLUSTER, APP = "bench-fleet", "bench", "bench"
RUNS = 3  # every row but the first sync: the median of this many processes, ours and kubectl's


@dataclass
class Row:
    step: str
    ours: Run
    theirs: Run | None = None
    theirs_label: str = ""
    target: str = ""  # "<1s" (ours' wall time) or "3x" (kubectl / ours)

    def ratio(self) -> float | None:
        return self.theirs.wall_s / self.ours.wall_s if self.theirs else None

    def met(self) -> bool | None:
        if self.target.startswith("<"):
            return self.ours.wall_s < float(self.target[1:].removesuffix("s"))
        if self.target.endswith("x"):
            return self.ratio() >= float(self.target[:-1])
        return None


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
    print(f"gitops of {root}; {args.objects} objects + {args.namespaces} Namespaces; "
          f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        theirs_dir = work / "kubectl"
        ours_ns = make_repository(work, args.objects, args.namespaces)
        write_manifests(theirs_dir, "bench-b", args.objects, args.namespaces)
        server = LocalPrefectServer(work / "prefect-server")
        record, _ = server.start()
        stack.callback(server.stop)
        cluster = LocalCluster("bench-cli")
        stack.callback(cluster.down)
        kubeconfig = cluster.up()
        gitops = Gitops(root, work, record.api_url)
        # the kept server that a command without PREFECT_API_URL starts, stopped at the end
        stack.callback(LocalPrefectServer(work / "home" / "prefect-server").stop)

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
        apply = kubectl(kubeconfig, "apply", "--server-side", "--field-manager=bench", "-f", str(theirs_dir))
        rows.append(Row("first sync (health incl.)", first, apply, "kubectl apply --server-side", "1.5x"))
        settle(kubeconfig, ["bench-a-", "bench-b-"], 2 * deployments)

        def against_diff(step: str, ours: Run, target: str) -> None:
            """A row of ours against `kubectl diff` run right after it (kubectl's own
            time varies by a factor of 2 between runs: the median of RUNS)."""
            diffs = sorted((kubectl(kubeconfig, "diff", "--server-side", "--field-manager=bench", "-f", str(theirs_dir))
                            for _ in range(RUNS)), key=lambda r: r.wall_s)
            rows.append(Row(step, ours, diffs[len(diffs) // 2], "kubectl diff --server-side", target))

        against_diff("no-op sync", gitops.median_sync_like("sync"), "3x")
        against_diff("drift (nothing drifted)", gitops.median_sync_like("drift"), "3x")
        with gitops.serving():
            against_diff("no-op sync, served", gitops.median_sync_like("sync"), "5x")
            against_diff("drift, served", gitops.median_sync_like("drift"), "5x")
        if args.profile:
            gitops.profiled_sync(args.profile)
    print_table(rows, ours_ns)
    if args.profile:
        print_costs(args.profile / "noop-sync.pstats")
        print_prefect_requests(args.profile / "noop-sync-requests.json")


# ---- set-up ------------------------------------------------------------------------------

def compile_bytecode(root: Path) -> None:
    """The measured checkout's modules compiled, as `make` (and pip, for an installed
    package) leaves them: else, where PYTHONDONTWRITEBYTECODE is set, every command
    would compile them from source again."""
    packages = sorted(str(d) for d in root.iterdir() if (d / "__init__.py").exists())
    subprocess.run([sys.executable, "-m", "compileall", "-q", *packages], check=True, stdout=subprocess.DEVNULL)


def make_repository(work: Path, objects: int, namespaces: int) -> list[str]:
    """A GitOps repository with one plain-YAML app of the objects, pushed to a bare remote."""
    tree = work / "fleet"
    names = write_manifests(tree / "manifests", "bench-a", objects, namespaces)
    spec = {"apps": [{"name": APP, "path": "manifests", "clusters": [CLUSTER], "namespace": names[0],
                      "policy": {"allowedNamespaces": names[1:], "resourceLimits": "off"}}]}
    (tree / "gitops.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(work / "fleet.git")], check=True)
    for step in (["init", "--quiet", "-b", "main"], ["add", "--all"], ["commit", "--quiet", "-m", "fleet"],
                 ["push", "--quiet", str(work / "fleet.git"), "main"]):
        subprocess.run([*git, *step], cwd=tree, check=True, capture_output=True)
    return names


class Gitops:
    """The `gitops` of a checkout, each command a process of its own, with a
    GITOPS_HOME and PREFECT_HOME of the benchmark's (no profile of the user's)."""

    def __init__(self, root: Path, work: Path, api_url: str):
        self.root, self.api_url = root, api_url
        self.env = {**os.environ, "GITOPS_HOME": str(work / "home"),
                    "PREFECT_HOME": str(work / "prefect-client"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "DO_NOT_TRACK": "1",
                    # an older checkout starts Prefect's temporary server: 20 s is too short on a busy machine
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
        self.env.pop("PREFECT_API_URL", None)
        # what bin/gitops runs: cli.entry.main, or cli.main's app in a checkout from before it
        start = "from cli.entry import main; main()" if (root / "cli" / "entry.py").exists() else \
            "from cli.main import app; app()"
        self.argv = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(root)!r}); sys.argv[0] = 'gitops'; "
                                           + start]

    def run(self, *args: str, api: bool = True) -> Run:
        env = {**self.env, "PREFECT_API_URL": self.api_url} if api else self.env
        return run_measured([*self.argv, *args], env=env)

    def check(self, *args: str, api: bool = True, ok: tuple[int, ...] = (0,)) -> Run:
        run = self.run(*args, api=api)
        if run.exit_code not in ok:
            raise SystemExit(f"gitops {' '.join(args)} exited {run.exit_code}:\n{run.stderr[-3000:]}")
        return run

    def median(self, *args: str, api: bool = True) -> Run:
        runs = sorted((self.check(*args, api=api) for _ in range(RUNS)), key=lambda r: r.wall_s)
        return runs[len(runs) // 2]

    def sync_like(self, command: str) -> Run:
        """`gitops sync|drift --json`; every app and cluster must have succeeded."""
        run = self.check(command, "--repo", REPO, "--json", ok=(0, 1))
        report = json.loads(run.stdout)
        failed = [r for r in report["results"] if r["status"] != "succeeded"]
        if run.exit_code or failed:
            raise SystemExit(f"gitops {command} exited {run.exit_code}: {failed}\n{run.stderr[-2000:]}")
        return run

    def median_sync_like(self, command: str) -> Run:
        runs = sorted((self.sync_like(command) for _ in range(RUNS)), key=lambda r: r.wall_s)
        return runs[len(runs) // 2]

    @contextlib.contextmanager
    def serving(self):
        """`gitops serve` of the repository (no scheduled run in the meantime),
        once the commands can reach it; stopped afterwards."""
        socket = Path(self.env["GITOPS_HOME"]) / "serve.sock"
        serve = subprocess.Popen([*self.argv, "serve", "--repo", REPO, "--sync-interval", "86400",
                                  "--drift-cron", "0 0 1 1 *"], env={**self.env, "PREFECT_API_URL": self.api_url},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while not (socket.exists() and self._deployed("gitops-drift")):
                if serve.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("gitops serve did not start")
                time.sleep(0.2)
            yield
        finally:
            serve.terminate()
            serve.wait(timeout=60)

    def _deployed(self, name: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/deployments/name/{name}/{name}", timeout=10):
                return True
        except urllib.error.HTTPError:
            return False

    def profiled_sync(self, directory: Path) -> None:
        """A no-op `gitops sync` under cProfile in every thread, counting the
        requests its Prefect client sends (httpx: the Kubernetes client is urllib3)."""
        directory.mkdir(parents=True, exist_ok=True)
        code = (f"import sys; sys.path[:0] = [{str(self.root)!r}, {str(HERE)!r}]; sys.argv[0] = 'gitops'\n"
                f"import bench_cli; bench_cli.profile_gitops({str(directory)!r})")
        run = run_measured([sys.executable, "-c", code, "sync", "--repo", REPO, "--json"],
                           env={**self.env, "PREFECT_API_URL": self.api_url})
        if run.exit_code != 0:
            raise SystemExit(f"profiled gitops sync exited {run.exit_code}:\n{run.stderr[-3000:]}")


def profile_gitops(directory: str) -> None:
    """In the profiled process: the CLI under cProfile, and its Prefect API requests counted."""
    import collections
    import re

    import httpx
    from bench_sync import _profiled

    requests: collections.Counter = collections.Counter()
    ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    def counting(send):
        def wrapper(client, request, *args, **kwargs):
            requests[f"{request.method} {ids.sub('{id}', request.url.path)}"] += 1
            return send(client, request, *args, **kwargs)
        return wrapper

    httpx.Client.send = counting(httpx.Client.send)
    httpx.AsyncClient.send = counting(httpx.AsyncClient.send)

    def cli() -> None:
        from cli.main import app

        try:
            app()
        except SystemExit as exit:
            if exit.code:
                raise

    try:
        _profiled(cli, f"{directory}/noop-sync.pstats")
    finally:
        Path(directory, "noop-sync-requests.json").write_text(json.dumps(requests))


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


def print_prefect_requests(path: Path) -> None:
    requests = json.loads(path.read_text())
    print(f"\nPrefect API requests of one no-op sync: {sum(requests.values())} (events go by websocket, not counted)")
    for request, count in sorted(requests.items(), key=lambda item: -item[1]):
        print(f"  {count:5d}  {request}")


def kubectl(kubeconfig: Path, *args: str) -> Run:
    with tempfile.TemporaryDirectory(prefix="kcache-") as cache:  # cold discovery, as ours
        run = run_measured([KUBECTL, f"--kubeconfig={kubeconfig}", "--cache-dir", cache, *args])
    if run.exit_code != 0:  # diff: 1 would mean a difference, which there must not be
        raise SystemExit(f"kubectl {' '.join(args[:2])} exited {run.exit_code}:\n{run.stderr[-2000:]}")
    return run


# ---- the report --------------------------------------------------------------------------

def print_table(rows: list[Row], namespaces: list[str]) -> None:
    print(f"\n{'step':<40}{'gitops s':>9}{'cpu s':>7}  {'kubectl':<28}{'s':>6}{'cpu s':>7}"
          f"{'ratio':>7}{'target':>8}  met")
    for row in rows:
        theirs = (f"  {row.theirs_label:<28}{row.theirs.wall_s:6.2f}{row.theirs.cpu_s:7.2f}{row.ratio():6.2f}x"
                  if row.theirs else f"  {'':<28}{'':>6}{'':>7}{'':>7}")
        met = {True: "yes", False: "NO", None: ""}[row.met()]
        target = f">={row.target}" if row.target.endswith("x") else row.target
        print(f"{row.step:<40}{row.ours.wall_s:9.2f}{row.ours.cpu_s:7.2f}{theirs}{target:>8}  {met}")
    print("(ratio = kubectl / gitops: > 1 means gitops is faster; cpu = the client process's own; "
          f"gitops synced {', '.join(namespaces)})")


if __name__ == "__main__":
    main()
