"""Drift check of 3 clusters x 1,000 objects: ours (one labelled LIST per kind and
namespace, managedFields compared in memory) against `kubectl diff --server-side
-f DIR` (a GET and a dry-run PATCH per object) on one of them, in the same run
on the same objects. Both sides are whole processes (ours: this script with
--phase check, Python's start-up and imports included), compared by wall time
and CPU (user+sys), each ratio kubectl ÷ ours. Both start cold: ours keeps no
discovery across processes, kubectl gets an empty --cache-dir. Ours on all the
clusters at once (one process, concurrently) is shown too, without a peer.
No target: the figures are for reading. kubectl's requests are counted from a
-v=6 run of its own, after the measured one (logging every request costs it time).

    .venv/bin/python bench/bench_drift.py [--objects 1000] [--clusters 3] [--keep]

Starts its own local clusters (bench-drift-a, -b, ...) in a GITOPS_HOME of its
own (bench/homes.py), applies the objects with our apply code, drifts three of
them per cluster (a Deployment scaled by kubectl, a ConfigMap deleted, an object
made by hand with the app's label), then checks. The clusters are stopped at the
end unless --keep (then the temporary GITOPS_HOME, and with it their state, is kept too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from compare import Row, table  # noqa: E402
from homes import KUBECTL, own_homes  # noqa: E402
from measure import run_measured  # noqa: E402

from prefect_gitops.engine.changes.apply import apply_changes  # noqa: E402
from prefect_gitops.engine.changes.changeset import Action, ChangeSet, ObjectChange  # noqa: E402
from prefect_gitops.engine.cluster.kube import KubeClient  # noqa: E402
from prefect_gitops.engine.objects import Manifest, Source  # noqa: E402
from prefect_gitops.engine.state.drift import DesiredObject, desired_objects, detect_drift  # noqa: E402
from prefect_gitops.engine.state.inventory import read_inventory, updated_inventory, write_inventory  # noqa: E402
from prefect_gitops.localcluster import LocalCluster  # noqa: E402

APP = "bench"
NAMESPACES = 10


# ---- the objects --------------------------------------------------------------------------

def config_map(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"config-{i}"},
            "data": {"settings.yaml": f"replicas: {i}\n", "mode": "prod"}}


def service(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"web-{i}"},
            "spec": {"selector": {"app": f"web-{i}"}, "ports": [{"port": 80, "targetPort": 8080}]}}


def deployment(i: int) -> dict:
    labels = {"app": f"web-{i}"}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"web-{i}", "labels": labels},
            "spec": {"replicas": 0,  # no pods: the benchmark is about the API, not the scheduler
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                         "name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 8080}],
                         "resources": {"requests": {"cpu": "0.1", "memory": "32Mi"}}}]}}}}


def manifests(count: int) -> list[Manifest]:
    """The namespaces, then 60% ConfigMaps, 20% Services, 20% Deployments spread over them."""
    makers = [config_map] * 3 + [service, deployment]
    found = [Manifest({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{i}"}})
             for i in range(NAMESPACES)]
    for i in range(count):
        obj = makers[i % len(makers)](i)
        obj["metadata"]["namespace"] = f"bench-{i // len(makers) % NAMESPACES}"  # every kind in each
        found.append(Manifest(obj, Source(f"bench/{i}.yaml", 1)))
    return found


# ---- the clusters -------------------------------------------------------------------------

def start(names: list[str]) -> list[LocalCluster]:
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        clusters = [LocalCluster(n) for n in names]
        list(pool.map(lambda c: c.up(), clusters))
    return clusters


def client(cluster: LocalCluster) -> KubeClient:
    return KubeClient.from_kubeconfig(cluster.kubeconfig)


def kubectl(cluster: LocalCluster, *args: str) -> None:
    """Set-up only (not measured)."""
    subprocess.run([KUBECTL, f"--kubeconfig={cluster.kubeconfig}", *args], capture_output=True, text=True,
                   timeout=900, check=True)


def populate(cluster: LocalCluster, objects: list[Manifest]) -> list[DesiredObject]:
    """Apply every object with our apply code (as a sync would), record the inventory,
    then drift three of them."""
    with client(cluster) as kube:
        desired = desired_objects(kube, APP, objects, "default")
        changes = ChangeSet([ObjectChange(d.api_version, d.kind, d.namespace, d.name, d.source, Action.CREATED,
                                          desired=d.body) for d in desired])
        apply_changes(kube, changes)
        changes.raise_for_errors()
        write_inventory(kube, updated_inventory(APP, changes, None, "bench", "applied", healthy=True))
    first = {d.kind: d for d in reversed(desired)}
    kubectl(cluster, "scale", "deployment", first["Deployment"].name, "-n", first["Deployment"].namespace,
            "--replicas=2")
    kubectl(cluster, "delete", "configmap", first["ConfigMap"].name, "-n", first["ConfigMap"].namespace)
    kubectl(cluster, "create", "configmap", "by-hand", "-n", "bench-1", "--from-literal=a=b")
    kubectl(cluster, "label", "configmap", "by-hand", "-n", "bench-1", f"gitops.prefect.io/app={APP}")
    return desired


# ---- the two checks, each a process of its own ---------------------------------------------

def check_phase(kubeconfigs: list[str], objects: int) -> None:
    """Ours, in this process: a fresh client per cluster, as a drift run has (discovery,
    the inventory and the LISTs all count), the clusters concurrently; prints JSON."""
    wanted = manifests(objects - NAMESPACES)

    def check(kubeconfig: str) -> dict:
        with KubeClient.from_kubeconfig(kubeconfig) as kube:
            inventory = read_inventory(kube, APP)
            drifts = detect_drift(kube, APP, inventory, desired_objects(kube, APP, wanted, "default"))
            return {"requests": kube.requests, "drifts": [f"{d.ref} {d.type.value}" for d in drifts]}

    with ThreadPoolExecutor(max_workers=len(kubeconfigs)) as pool:
        print(json.dumps(dict(zip(kubeconfigs, pool.map(check, kubeconfigs)))))


def ours(clusters: list[LocalCluster], objects: int):
    """Ours on `clusters` in one process: (the process, its result per kubeconfig)."""
    run = run_measured([sys.executable, str(Path(__file__).resolve()), "--phase", "check", "--objects", str(objects),
                        *(str(c.kubeconfig) for c in clusters)])
    if run.exit_code != 0:
        raise SystemExit(f"our drift check exited {run.exit_code}:\n{run.stderr[-3000:]}")
    return run, json.loads(run.stdout.strip().splitlines()[-1])


def kubectl_diff(cluster: LocalCluster, desired: list[DesiredObject], cache: Path):
    """`kubectl diff --server-side` of the same bodies, as the same field manager,
    with an empty cache dir (cold, as ours); then once more with -v=6, not
    measured, to count its requests. (the process, its request count)"""
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as directory:
        for i, d in enumerate(desired):
            Path(directory, f"{i:04d}.yaml").write_text(yaml.safe_dump(d.body))
        argv = [KUBECTL, f"--kubeconfig={cluster.kubeconfig}", "diff", "--server-side",
                "--field-manager=prefect-gitops", "--force-conflicts", "-f", directory]
        run = run_measured([*argv, "--cache-dir", str(cache / "measured")])
        counted = run_measured([*argv, "--cache-dir", str(cache / "counted"), "-v=6"])
    if run.exit_code > 1:
        raise RuntimeError(f"kubectl diff failed ({run.exit_code}): {run.stderr[-2000:]}")
    return run, len(re.findall(r'"Response" verb=', counted.stderr))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the clusters running")
    parser.add_argument("--phase", choices=("check",), help=argparse.SUPPRESS)
    parser.add_argument("kubeconfigs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        check_phase(args.kubeconfigs, args.objects)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    with own_homes(work) as homes:
        try:
            return measure(args, homes)
        finally:
            if args.keep:
                print(f"kept: the clusters' GITOPS_HOME {homes.gitops}")
            else:
                shutil.rmtree(work, ignore_errors=True)


def measure(args, homes) -> int:
    objects = manifests(args.objects - NAMESPACES)
    names = [f"bench-drift-{chr(ord('a') + i)}" for i in range(args.clusters)]
    start_s = time.perf_counter()
    clusters = start(names)
    with contextlib.ExitStack() as stack:
        if not args.keep:
            for cluster in clusters:
                stack.callback(cluster.down)
        print(f"clusters:        {len(clusters)} started in {time.perf_counter() - start_s:.1f} s")
        start_s = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
            desired = list(pool.map(lambda c: populate(c, objects), clusters))[0]
        print(f"objects:         {len(objects)} per cluster ({NAMESPACES} of them namespaces), applied in "
              f"{time.perf_counter() - start_s:.1f} s; 3 drifted per cluster")
        print("ours against kubectl diff, whole processes, wall time and CPU, both cold")

        one, found_one = ours(clusters[:1], args.objects)
        diff, diff_requests = kubectl_diff(clusters[0], desired, homes.kubectl_cache)
        every, found = ours(clusters, args.objects)
        for cluster in clusters:
            result = found[str(cluster.kubeconfig)]
            requests = result["requests"]
            print(f"ours {cluster.name}: {sum(requests.values()):4d} requests ({requests['LIST']} LIST, "
                  f"{requests['GET']} GET); found: {', '.join(result['drifts'])}")
        ours_requests = sum(found_one[str(clusters[0].kubeconfig)]["requests"].values())
        print(f"kubectl diff ({clusters[0].name}): {diff_requests} requests (exit {diff.exit_code}: differences)")
        print()
        print(table([Row(f"drift check, {clusters[0].name}", one, diff, "kubectl diff --server-side"),
                     Row(f"drift check, all {len(clusters)} clusters concurrently", every)]))
        print(f"requests on {clusters[0].name}: kubectl ÷ ours {diff_requests / ours_requests:.1f}x")
        return 0 if all(len(r["drifts"]) == 3 for r in found.values()) and diff.exit_code == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
