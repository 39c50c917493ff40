"""Benchmark: the `gitops` command at scale against kubectl, both as a person
types them, each size on a local cluster of its own: 1,000, 5,000 and 10,000
objects by default, a tenth of them Deployments of 1 replica and the rest two
ConfigMaps to one Service (as bench_sync.py makes them), in 4 namespaces, in a
plain-YAML app (healthTimeoutSeconds 1200). Both sides are whole processes; each
ratio is kubectl ÷ gitops, of wall time and of CPU (user+sys of the process and
the children it waited for), and a target is met only when both are:

- first `gitops sync` (applies, waits for health) vs `kubectl apply
  --server-side` then `kubectl wait --for=condition=Available deployment --all
  -n NS` for each namespace, one after another (target: 2x)
- no-op `gitops sync` vs `kubectl diff --server-side` (target: 10x)
- `gitops drift` (nothing drifted) vs `kubectl diff --server-side`

Every row also shows each side's peak memory (max RSS; target for ours: under
300 MiB) and the CPU each cluster component (etcd, apiserver, controller-manager,
scheduler, kubelet) spent while the command ran, so that whose work it was shows
(target: the API server's CPU during our first sync at most that during
kubectl's apply and wait); the components' idle CPU per second is printed
beside, as every row includes it. Ours' health wait is inside its process, not
separable: the first sync's CPU per wall second is printed instead, beside
kubectl's apply and wait's.

Cache state, as bench_cli.py: the first sync is cold on both sides (ours: a
fresh GITOPS_HOME; kubectl: an empty cache dir), the later rows warm on both
(kubectl's discovery cache filled first). Every row but the first sync is the
median of 3 processes, ours and kubectl's alike. Ours get namespaces bench-a-*,
kubectl bench-b-*, so both start from nothing. Each size has its own GITOPS_HOME,
PREFECT_HOME and kubectl cache (bench/homes.py), Prefect server and cluster
(`bench-scale`, a node of 2,000 pods: at most 10,000 objects), started and
stopped by the script. The first sync runs whatever `--rows` says: the other
rows need its objects.

    .venv/bin/python bench/bench_scale.py [--root CHECKOUT] [--sizes 1000,5000,10000] [--namespaces 4]
                                          [--rows first,noop,drift]

`--root` measures the `gitops` of another checkout (e.g. `git archive` of an
older commit), as bench_cli.py does."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from bench_cli import (APP, APPLY_AND_WAIT, CLUSTER, DIFF, REPO, RUNS, Gitops, Kubectl,  # noqa: E402
                       compile_bytecode, make_repository, server_and_cluster)
from bench_sync import settle, write_manifests  # noqa: E402
from compare import Row, table  # noqa: E402
from homes import own_homes, warm_kubectl_cache  # noqa: E402
from measure import Run, in_a_row  # noqa: E402

from prefect_gitops.localcluster import LocalCluster  # noqa: E402
from prefect_gitops.localcluster.components import COMPONENTS  # noqa: E402

ROWS = ("first", "noop", "drift")
HEALTH_TIMEOUT_S = 1200
COMMAND_TIMEOUT_S = HEALTH_TIMEOUT_S + 300  # a process is killed after this; the health timeout comes first
POD_CAPACITY = 2000  # of the local cluster's node (localcluster/fakekubelet), for both sides' pods
MEMORY_LIMIT_MIB = 300
IDLE_S = 10  # seconds of the cluster's idle CPU measured after the rows
SAMPLE_EVERY_S = 0.5  # the API server's CPU during our first sync, to tell its health wait apart
RECORD_S = 2.0  # the stages after the health wait (the inventory's record, the report), counted as the wait's
WAIT_CPU_SHARE = 0.05  # our CPU during the health wait, of its wall time: the target
STEPS = {"first": "first sync (health incl.)", "noop": "no-op sync", "drift": "drift (nothing drifted)"}


@dataclass
class Measured:
    """Processes run one after another as one step, and the CPU seconds each
    cluster component spent meanwhile."""

    parts: list[Run]
    cluster_cpu: dict[str, float]
    # (seconds before the last command ended, the API server's CPU seconds then), every SAMPLE_EVERY_S
    api_server_cpu: list[tuple[float, float]] = field(default_factory=list)

    @property
    def run(self) -> Run:
        return in_a_row(self.parts)

    def then(self, other: "Measured") -> "Measured":
        return Measured(self.parts + other.parts, {c: self.cluster_cpu[c] + other.cluster_cpu[c]
                                                   for c in self.cluster_cpu})

    def api_server_cpu_in_last(self, seconds: float) -> float:
        """The API server's CPU over the last `seconds` before the command ended."""
        end = self.api_server_cpu[-1][1]
        start = next((cpu for before_end, cpu in self.api_server_cpu if before_end <= seconds),
                     self.api_server_cpu[0][1])
        return end - start


@dataclass
class Step:
    key: str  # one of ROWS
    ours: Measured
    peer: Measured
    peer_label: str
    target: str = ""
    peer_wait: Measured | None = None  # the first sync's `kubectl wait`s alone

    def row(self) -> Row:
        return Row(STEPS[self.key], self.ours.run, self.peer.run, self.peer_label, self.target)


@dataclass
class Size:
    objects: int
    deployments: int
    steps: list[Step]
    idle_cpu_per_s: dict[str, float]

    def step(self, key: str) -> Step | None:
        return next((s for s in self.steps if s.key == key), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose gitops is measured")
    parser.add_argument("--sizes", default="1000,5000,10000", help="objects per run, comma-separated")
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"the rows to measure, of {','.join(ROWS)}")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    rows = args.rows.split(",")
    if unknown := set(rows) - set(ROWS):
        parser.error(f"unknown rows {', '.join(sorted(unknown))}: use {', '.join(ROWS)}")
    if too_many := [size for size in sizes if 2 * deployments_of(size) > POD_CAPACITY]:
        parser.error(f"sizes {too_many}: both sides' pods would not fit the node's {POD_CAPACITY}")
    root = args.root.resolve()
    compile_bytecode(root)
    print(f"gitops of {root} against kubectl, whole processes, wall time and CPU; sizes {args.sizes}, a tenth "
          f"Deployments, in {args.namespaces} namespaces; first sync cold on both sides, the other rows warm on "
          f"both; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}", flush=True)
    results = []
    for size in sizes:
        results.append(measure_size(root, size, args.namespaces, rows))
        print_size(results[-1])
    if len(results) > 1:
        print_summary(results)


def deployments_of(objects: int) -> int:
    return objects // 10


# ---- one size --------------------------------------------------------------------------

def measure_size(root: Path, objects: int, namespaces: int, rows: list[str]) -> Size:
    """The rows for one size, on a cluster, Prefect server and homes of its own."""
    deployments = deployments_of(objects)
    print(f"\n{objects} objects: setting up", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"bench-scale-{objects}-") as tmp, own_homes(Path(tmp)) as homes, \
            contextlib.ExitStack() as stack:
        work = Path(tmp)
        theirs_dir = work / "kubectl"
        make_repository(work, objects, namespaces, deployments, syncPolicy={"healthTimeoutSeconds": HEALTH_TIMEOUT_S})
        theirs_ns = write_manifests(theirs_dir, "bench-b", objects, namespaces, deployments)
        api_url, cluster, kubeconfig = server_and_cluster(work, stack, "bench-scale")
        gitops = Gitops(root, homes.gitops, api_url, timeout_s=COMMAND_TIMEOUT_S)
        kubectl = Kubectl(kubeconfig, homes.kubectl_cache, timeout_s=COMMAND_TIMEOUT_S)
        gitops.check("repo", "add", REPO, "--url", f"file://{work / 'fleet.git'}", "--branch", "main")
        gitops.check("cluster", "add", CLUSTER, "--kubeconfig", str(kubeconfig))

        print(f"{objects} objects: first sync", flush=True)
        ours = measured(cluster, partial(gitops.sync_like, "sync"), sampled=True)
        settle(kubeconfig, ["bench-a-"], deployments, timeout=HEALTH_TIMEOUT_S)
        waits = [partial(kubectl.run, "wait", "--for=condition=Available", "deployment", "--all", "-n", ns,
                         f"--timeout={HEALTH_TIMEOUT_S}s") for ns in theirs_ns]
        apply = measured(cluster, partial(kubectl.run, "apply", "--server-side", "--field-manager=bench",
                                          "-f", str(theirs_dir)))
        wait = measured(cluster, *waits)
        steps = [Step("first", ours, apply.then(wait), APPLY_AND_WAIT, "2x", wait)] if "first" in rows else []
        settle(kubeconfig, ["bench-a-", "bench-b-"], 2 * deployments, timeout=HEALTH_TIMEOUT_S)
        warm_kubectl_cache(kubeconfig, homes.kubectl_cache)

        diff = partial(kubectl.run, "diff", "--server-side", "--field-manager=bench", "-f", str(theirs_dir))
        for key, command, target in (("noop", "sync", "10x"), ("drift", "drift", "")):
            if key in rows:
                print(f"{objects} objects: {STEPS[key]}", flush=True)
                steps.append(against_diff(cluster, key, partial(gitops.sync_like, command), diff, target))
        idle = idle_cpu_per_s(cluster)
    return Size(objects, deployments, steps, idle)


def measured(cluster: LocalCluster, *commands: Callable[[], Run], sampled: bool = False) -> Measured:
    """The commands run one after another, the cluster's CPU meanwhile, and with
    `sampled` the API server's CPU every SAMPLE_EVERY_S (to tell a phase of a
    command apart afterwards)."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while True:
            samples.append((time.monotonic(), cluster.component_cpu_s()["apiserver"]))
            if done.wait(SAMPLE_EVERY_S):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    before = cluster.component_cpu_s()
    if sampled:
        sampler.start()
    parts = [command() for command in commands]
    after = cluster.component_cpu_s()
    ended = time.monotonic()
    done.set()
    if sampled:
        sampler.join()
        samples.append((ended, after["apiserver"]))
    return Measured(parts, {c: after[c] - before[c] for c in before}, [(ended - t, cpu) for t, cpu in samples])


def against_diff(cluster: LocalCluster, key: str, ours: Callable[[], Run], diff: Callable[[], Run],
                 target: str) -> Step:
    """RUNS of ours, then RUNS of `kubectl diff` right after: the median of each
    by wall time (kubectl's own time varies by a factor of 2 between runs)."""
    ours_runs = [measured(cluster, ours) for _ in range(RUNS)]
    diffs = [measured(cluster, diff) for _ in range(RUNS)]
    return Step(key, median(ours_runs), median(diffs), DIFF, target)


def median(runs: list[Measured]) -> Measured:
    return sorted(runs, key=lambda m: m.run.wall_s)[len(runs) // 2]


def idle_cpu_per_s(cluster: LocalCluster) -> dict[str, float]:
    """The CPU each component spends per second with no command running and every
    object in place: the share of any row's figure that is no command's work."""
    before = cluster.component_cpu_s()
    time.sleep(IDLE_S)
    after = cluster.component_cpu_s()
    return {c: (after[c] - before[c]) / IDLE_S for c in before}


# ---- the report ------------------------------------------------------------------------

def mib(run: Run) -> float:
    return run.maxrss_kib / 1024


def print_size(size: Size) -> None:
    objects, deployments = size.objects, size.deployments
    services = (objects - deployments) // 3
    print(f"\n== {objects} objects: {deployments} Deployments, {objects - deployments - services} ConfigMaps, "
          f"{services} Services (app {APP}: bench-a-*, kubectl: bench-b-*) ==")
    print(table([step.row() for step in size.steps], "gitops"))
    print_cluster_cpu(size)
    first = size.step("first")
    if first:
        print_health_waits(first)
    print_targets(size)


def print_health_waits(first: Step) -> None:
    wait = first.peer_wait.run
    print(f"first sync, the health wait: kubectl wait {wait.wall_s:.1f} s wall, {wait.cpu_s:.2f} s CPU "
          f"({per_wall_s(wait)} s a second), API server {first.peer_wait.cluster_cpu['apiserver']:.2f} s "
          f"(apply + wait {first.peer.cluster_cpu['apiserver']:.2f} s)")
    ours = health_wait(first.ours.run)
    if ours is None:
        print("  gitops: its report does not tell its health wait's cost (an older checkout)")
        return
    print(f"  gitops {ours.wall_s:.1f} s wall, {ours.cpu_s:.2f} s CPU ({per_wall_s(ours)} s a second; its report), "
          f"API server {api_server_cpu_of_wait(first):.2f} s in the sync's last {ours.wall_s + RECORD_S:.0f} s "
          f"(whole sync {first.ours.cluster_cpu['apiserver']:.2f} s)")


def health_wait(run: Run) -> Run | None:
    """The health wait of a first sync as its report tells it ("N objects Current
    after W s (C s of CPU)": the process's CPU during the wait, every thread)."""
    found = re.search(r"Current after ([\d.]+) s \(([\d.]+) s of CPU\)", run.stdout)
    return Run(float(found[1]), 0, 0, float(found[2])) if found else None


def api_server_cpu_of_wait(first: Step) -> float:
    """The API server's CPU in the last part of our first sync that its health
    wait took, with RECORD_S more for the stages after it (counted against us)."""
    return first.ours.api_server_cpu_in_last(health_wait(first.ours.run).wall_s + RECORD_S)


def per_wall_s(run: Run) -> str:
    return f"{run.cpu_s / run.wall_s:.2f}" if run.wall_s else "-"


def print_cluster_cpu(size: Size) -> None:
    """Per side of each row: its wall time, each component's CPU meanwhile, and
    the side's own peak RSS."""
    step_w = max(len(STEPS[s.key]) for s in size.steps) + 2 if size.steps else 6
    side_w = max([len("gitops"), *(len(s.peer_label) for s in size.steps)]) + 2
    widths = {c: max(len(c) + 2, 8) for c in COMPONENTS}
    print(f"\ncluster CPU s while each command ran, by component; the command's own peak RSS\n"
          f"{'step':<{step_w}}{'side':<{side_w}}{'wall s':>8}" + "".join(f"{c:>{w}}" for c, w in widths.items())
          + f"{'total':>8}{'max RSS MiB':>13}")

    def line(step: str, side: str, wall: str, cpu: dict[str, float], rss: str, digits: int = 2) -> None:
        print(f"{step:<{step_w}}{side:<{side_w}}{wall:>8}"
              + "".join(f"{cpu.get(c, 0):{w}.{digits}f}" for c, w in widths.items())
              + f"{sum(cpu.values()):8.{digits}f}{rss:>13}")

    for step in size.steps:
        for name, side, label in ((STEPS[step.key], step.ours, "gitops"), ("", step.peer, step.peer_label)):
            line(name, label, f"{side.run.wall_s:.2f}", side.cluster_cpu, f"{mib(side.run):.0f}")
    line("idle, per second", "", "", size.idle_cpu_per_s, "", 3)


def print_targets(size: Size) -> None:
    """The targets of issue 21, each with its figures; "-" where its row was not run."""
    first, noop = size.step("first"), size.step("noop")
    print("targets:")
    for step, what in ((first, "first sync >= 2x kubectl apply + wait"), (noop, "no-op sync >= 10x kubectl diff")):
        if step:
            ratios = step.row().ratios()
            print(f"  {what} (wall and CPU): {ratios[0]:.2f}x / {ratios[1]:.2f}x  {met(step.row().met())}")
    peak = max((mib(s.ours.run) for s in size.steps), default=0.0)
    print(f"  gitops peak memory < {MEMORY_LIMIT_MIB} MiB: {peak:.0f} MiB (max over its rows)  "
          f"{met(peak < MEMORY_LIMIT_MIB)}")
    if first and (wait := health_wait(first.ours.run)) is not None:
        share = wait.cpu_s / wait.wall_s if wait.wall_s else 0.0
        print(f"  our CPU during the health wait < {WAIT_CPU_SHARE:.0%} of its wall time: {share:.1%}  "
              f"{met(share < WAIT_CPU_SHARE)}")
        ours, theirs = api_server_cpu_of_wait(first), first.peer_wait.cluster_cpu["apiserver"]
        print(f"  API server CPU during our health wait <= during kubectl wait: {ours:.2f} s vs {theirs:.2f} s  "
              f"{met(ours <= theirs)}")


def met(ok: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[ok]


def print_summary(sizes: list[Size]) -> None:
    """Sizes side by side, a figure a line: wall / CPU seconds, ratios peer ÷ ours."""
    lines: list[tuple[str, list[str]]] = [("objects (Deployments)", [f"{s.objects} ({s.deployments})" for s in sizes])]
    for key in ROWS:
        steps = [s.step(key) for s in sizes]
        if not any(steps):
            continue
        peer = next(s for s in steps if s).peer_label
        lines += [(f"{STEPS[key]}: gitops", [wall_cpu(s.ours.run) if s else "-" for s in steps]),
                  (f"{STEPS[key]}: {peer}", [wall_cpu(s.peer.run) if s else "-" for s in steps]),
                  (f"{STEPS[key]}: ratio", ["{:.2f}x / {:.2f}x".format(*s.row().ratios()) if s else "-"
                                            for s in steps]),
                  (f"{STEPS[key]}: API server CPU s, gitops / kubectl",
                   [f"{s.ours.cluster_cpu['apiserver']:.2f} / {s.peer.cluster_cpu['apiserver']:.2f}" if s else "-"
                    for s in steps])]
    lines.append(("gitops peak RSS MiB (max over its rows)",
                  [f"{max((mib(step.ours.run) for step in s.steps), default=0):.0f}" for s in sizes]))
    label_w = max(len(label) for label, _ in lines) + 2
    cell_w = max(len(cell) for _, cells in lines for cell in cells) + 3
    print("\n== summary: wall / CPU s; ratio = peer ÷ ours ==")
    for label, cells in lines:
        print(f"{label:<{label_w}}" + "".join(f"{cell:>{cell_w}}" for cell in cells))


def wall_cpu(run: Run) -> str:
    return f"{run.wall_s:.2f} / {run.cpu_s:.2f}"


if __name__ == "__main__":
    main()
