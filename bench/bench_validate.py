"""Offline schema validation of 1,000 objects (Deployments and ConfigMaps): ours,
one cached validator per kind, against kubernetes_validate.validate() per object,
which rebuilds its registry and validator on every call.

    .venv/bin/python bench/bench_validate.py [--objects 1000] [--sample 100]

Both run in this process on the same objects and the same bundled schemas.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import kubernetes_validate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.objects import Manifest, Source  # noqa: E402
from engine.validate import Context, _schema_dir, schema_object  # noqa: E402
from engine.policy_settings import PolicySettings  # noqa: E402

KUBERNETES_VERSION = "1.37"
TARGET_SECONDS = 0.5
TARGET_SPEEDUP = 20


def deployment(i: int) -> dict:
    labels = {"app.kubernetes.io/name": f"web-{i}"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"web-{i}", "namespace": "bench", "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{
                    "name": "web", "image": "ghcr.io/acme/web:1.2.3",
                    "ports": [{"containerPort": 8080, "name": "http"}],
                    "env": [{"name": "MODE", "value": "prod"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                }]},
            },
        },
    }


def config_map(i: int) -> dict:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"config-{i}", "namespace": "bench"},
        "data": {"settings.yaml": f"replicas: {i}\n", "mode": "prod"},
    }


def objects(count: int) -> list[dict]:
    return [deployment(i) if i % 2 == 0 else config_map(i) for i in range(count)]


def ours(objs: list[dict]) -> tuple[float, int]:
    """Cold: includes loading the schemas once, as the first validation of a run does."""
    ctx = Context("bench", "bench", PolicySettings(), _schema_dir(KUBERNETES_VERSION)[0])
    start = time.perf_counter()
    problems = sum(len(list(schema_object(Manifest(o, Source("bench.yaml", i + 1)), ctx)))
                   for i, o in enumerate(objs))
    return time.perf_counter() - start, problems


def per_call(objs: list[dict]) -> float:
    start = time.perf_counter()
    for obj in objs:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=100,
                        help="per-call validations to time and scale up (0: all of them)")
    args = parser.parse_args()
    objs = objects(args.objects)

    ours_s, problems = ours(objs)  # cold: the one-time schema load counts
    assert problems == 0, f"the benchmark objects should be valid, got {problems} problem(s)"
    warm_s, _ = ours(objs)
    sample = objs[: args.sample] if args.sample else objs
    reference_s = per_call(sample) * len(objs) / len(sample)
    speedup = reference_s / ours_s

    scaled = f" (timed {len(sample)}, scaled)" if len(sample) < len(objs) else ""
    print(f"objects:                          {len(objs)} (Deployments and ConfigMaps)")
    print(f"kubernetes_validate.validate():   {reference_s:8.3f} s{scaled}")
    print(f"engine.validate (cached):          {ours_s:8.3f} s (first run, loading the schemas)")
    print(f"engine.validate (cached), again:   {warm_s:8.3f} s")
    print(f"speed-up:                         {speedup:8.1f}x")
    ok = ours_s < TARGET_SECONDS and speedup >= TARGET_SPEEDUP
    print(f"target (< {TARGET_SECONDS} s and >= {TARGET_SPEEDUP}x): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
