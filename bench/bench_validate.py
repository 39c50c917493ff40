"""Offline schema validation of 1,000 objects (Deployments and ConfigMaps): ours,
one cached validator per kind, against kubernetes_validate.validate() per object,
which rebuilds its registry and validator on every call.

Both are Python libraries called in this one process on the same objects and the
same bundled schemas: like with like, neither pays a process start-up. Compared
by wall time and CPU (this process's user+sys), each ratio kubectl-validate's ÷
ours; the target (ours under 0.5 s and at least 20 times faster) is met only when
wall time and CPU both meet it. Both cold: each side's first calls in the
process, its schemas loaded by them; ours knows no object valid yet (a GITOPS_HOME
of the benchmark's own, bench/homes.py, empty). Ours again, every object then
known valid by digest (as a second command skips them), is printed, not compared.

    .venv/bin/python bench/bench_validate.py [--objects 1000] [--sample 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import kubernetes_validate

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from compare import Row, table  # noqa: E402
from homes import own_homes  # noqa: E402
from measure import Run  # noqa: E402

from prefect_gitops.engine.objects import Manifest, Source  # noqa: E402
from prefect_gitops.engine.spec.policy_settings import PolicySettings  # noqa: E402
from prefect_gitops.engine.validation.validate import Context, _schema_dir, schema_object  # noqa: E402

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


def timed(work) -> tuple[Run, object]:
    """Wall time and this process's CPU of `work`, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return Run(time.perf_counter() - wall, 0, 0, time.process_time() - cpu), result


def ours(objs: list[dict]) -> tuple[Run, int]:
    """Includes loading the schemas once, as the first validation of a run does."""
    ctx = Context("bench", "bench", PolicySettings(), _schema_dir(KUBERNETES_VERSION)[0])
    return timed(lambda: sum(len(list(schema_object(Manifest(o, Source("bench.yaml", i + 1)), ctx)))
                             for i, o in enumerate(objs)))


def per_call(objs: list[dict], total: int) -> Run:
    """kubernetes_validate.validate() of each object, scaled from len(objs) to `total`."""
    def validate_each() -> None:
        for obj in objs:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)

    run, _ = timed(validate_each)
    scale = total / len(objs)
    return Run(run.wall_s * scale, 0, 0, run.cpu_s * scale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=100,
                        help="per-call validations to time and scale up (0: all of them)")
    args = parser.parse_args()
    objs = objects(args.objects)
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp, own_homes(Path(tmp), local_clusters=False):
        first, problems = ours(objs)  # cold: the one-time schema load counts
        assert problems == 0, f"the benchmark objects should be valid, got {problems} problem(s)"
        again, _ = ours(objs)
        sample = objs[: args.sample] if args.sample else objs
        reference = per_call(sample, len(objs))

    scaled = f", timed {len(sample)} and scaled" if len(sample) < len(objs) else ""
    row = Row(f"validate {len(objs)} objects", first, reference, f"kubernetes_validate per object{scaled}",
              f"{TARGET_SPEEDUP}x")
    met = row.met() and first.wall_s < TARGET_SECONDS and first.cpu_s < TARGET_SECONDS
    print(f"{len(objs)} objects (Deployments and ConfigMaps); ours against kubernetes_validate.validate() per "
          "object, both in this process, both cold")
    print(table([row]))
    print(f"not compared: ours again, every object known valid: {again.wall_s:.3f} s, {again.cpu_s:.3f} s CPU")
    print(f"target (ours < {TARGET_SECONDS} s of wall time and of CPU, and >= {TARGET_SPEEDUP}x in both): "
          f"{'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
