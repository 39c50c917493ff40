"""`gitops demo`: the README's main command, shown step by step.

For now: a local cluster, the sample app applied and rolled out, then cleaned
up. The sync, revert, drift and recovery steps join as those flows land."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from localcluster import LocalCluster

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
console = Console()


def run_demo(cluster_name: str = "demo", keep: bool = False) -> None:
    started = time.monotonic()
    cluster = LocalCluster(cluster_name)
    step(1, f"bring up local cluster {cluster_name!r} (a real kube-apiserver, etcd, controllers, scheduler)")
    if cluster.is_running():
        console.print(f"  already running; reusing it")
    else:
        with console.status("  starting") as status:
            cluster.up(on_progress=lambda m: status.update(f"  {m}"))
    console.print(f"  API {cluster.record().api_url}, kubeconfig {cluster.kubeconfig}")
    try:
        step(2, "apply the sample apps (platform, then web's staging overlay) with server-side apply")
        kubectl(cluster, "apply", "--server-side", "--field-manager=prefect-gitops",
                "-f", str(EXAMPLES / "apps" / "platform"))
        kubectl(cluster, "apply", "--server-side", "--field-manager=prefect-gitops",
                "-k", str(EXAMPLES / "apps" / "web" / "overlays" / "staging"))
        step(3, "wait for the rollout")
        kubectl(cluster, "rollout", "status", "-n", "web", "deployment/web", "--timeout=120s")
        kubectl(cluster, "get", "pods", "-n", "web", "-o", "wide")
    finally:
        if keep:
            console.print(f"\nkept cluster {cluster_name!r}; stop it with: gitops localcluster down {cluster_name}")
        else:
            step(4, "clean up")
            cluster.down()
    console.print(f"\n[green]demo finished in {time.monotonic() - started:.0f} s[/green]")


def step(number: int, text: str) -> None:
    console.rule(f"[bold]step {number}[/bold]: {text}", align="left")


def kubectl(cluster: LocalCluster, *args: str) -> None:
    console.print(f"  $ kubectl {' '.join(args)}", style="dim")
    output = subprocess.run([KUBECTL, f"--kubeconfig={cluster.kubeconfig}", *args],
                            capture_output=True, text=True, timeout=300)
    text = (output.stdout + output.stderr).rstrip()
    console.print("  " + text.replace("\n", "\n  "), highlight=False)
    if output.returncode != 0:
        raise SystemExit(f"kubectl {args[0]} failed (exit {output.returncode})")
