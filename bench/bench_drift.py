"""Drift check of 3 clusters x 1,000 objects: ours (one labelled LIST per kind and
namespace, managedFields compared in memory), the three clusters concurrently,
against `kubectl diff --server-side -f DIR` on one of them (a GET and a dry-run
PATCH per object), in the same run on the same objects.

    .venv/bin/python bench/bench_drift.py [--objects 1000] [--clusters 3] [--keep]

Starts its own local clusters (bench-drift-a, -b, ...), applies the objects with
our apply code, drifts three of them per cluster (a Deployment scaled by kubectl,
a ConfigMap deleted, an object made by hand with the app's label), then checks.
The clusters are stopped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localcluster import LocalCluster  # noqa: E402
from engine.apply import apply_changes  # noqa: E402
from engine.changeset import Action, ChangeSet, ObjectChange  # noqa: E402
from engine.drift import DesiredObject, Drift, desired_objects, detect_drift  # noqa: E402
from engine.inventory import read_inventory, updated_inventory, write_inventory  # noqa: E402
from engine.kube import KubeClient  # noqa: E402
from engine.objects import Manifest, Source  # noqa: E402

APP = "bench"
NAMESPACES = 10
KUBECTL = str(Path(sys.executable).parent / "kubectl")


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


def kubectl(cluster: LocalCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, f"--kubeconfig={cluster.kubeconfig}", *args], capture_output=True, text=True,
                          timeout=900, check=check)


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


# ---- the two checks -----------------------------------------------------------------------

def ours(cluster: LocalCluster, objects: list[Manifest]) -> tuple[float, dict[str, int], list[Drift]]:
    """A fresh client, as a drift run has: discovery, the inventory and the LISTs all count."""
    start_s = time.perf_counter()
    with client(cluster) as kube:
        inventory = read_inventory(kube, APP)
        drifts = detect_drift(kube, APP, inventory, desired_objects(kube, APP, objects, "default"))
        requests = kube.requests
    return time.perf_counter() - start_s, requests, drifts


def kubectl_diff(cluster: LocalCluster, desired: list[DesiredObject]) -> tuple[float, int, int]:
    """`kubectl diff --server-side` of the same bodies, as the same field manager.
    Its discovery cache is warmed first, so only the diff is timed."""
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as directory:
        for i, d in enumerate(desired):
            Path(directory, f"{i:04d}.yaml").write_text(yaml.safe_dump(d.body))
        kubectl(cluster, "api-resources", "-o", "name")
        start_s = time.perf_counter()
        result = kubectl(cluster, "diff", "--server-side", "--field-manager=prefect-gitops", "--force-conflicts",
                         "-v=6", "-f", directory, check=False)
        elapsed = time.perf_counter() - start_s
    if result.returncode > 1:
        raise RuntimeError(f"kubectl diff failed ({result.returncode}): {result.stderr[-2000:]}")
    return elapsed, len(re.findall(r'"Response" verb=', result.stderr)), result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the clusters running")
    args = parser.parse_args()
    objects = manifests(args.objects - NAMESPACES)
    names = [f"bench-drift-{chr(ord('a') + i)}" for i in range(args.clusters)]
    start_s = time.perf_counter()
    clusters = start(names)
    try:
        print(f"clusters:        {len(clusters)} started in {time.perf_counter() - start_s:.1f} s")
        start_s = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
            desired = list(pool.map(lambda c: populate(c, objects), clusters))[0]
        print(f"objects:         {len(objects)} per cluster ({NAMESPACES} of them namespaces), applied in "
              f"{time.perf_counter() - start_s:.1f} s; 3 drifted per cluster")

        start_s = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
            checks = list(pool.map(lambda c: ours(c, objects), clusters))
        total_s = time.perf_counter() - start_s
        for cluster, (elapsed, requests, drifts) in zip(clusters, checks):
            found = ", ".join(f"{d.ref} {d.type.value}" for d in drifts)
            print(f"ours {cluster.name}: {elapsed:6.2f} s, {sum(requests.values()):4d} requests "
                  f"({requests['LIST']} LIST, {requests['GET']} GET); found: {found}")
        print(f"ours, all {len(clusters)} concurrently: {total_s:6.2f} s")

        diff_s, diff_requests, code = kubectl_diff(clusters[0], desired)
        ours_s, ours_requests, _ = checks[0]
        print(f"kubectl diff --server-side ({clusters[0].name}): {diff_s:6.2f} s, {diff_requests} requests"
              f" (exit {code})")
        print(f"ratio on {clusters[0].name}: {diff_s / ours_s:.1f}x faster, "
              f"{diff_requests / sum(ours_requests.values()):.1f}x fewer requests")
        return 0 if all(len(drifts) == 3 for _, _, drifts in checks) else 1
    finally:
        if not args.keep:
            for cluster in clusters:
                cluster.down()


if __name__ == "__main__":
    sys.exit(main())
