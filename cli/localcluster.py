"""`gitops localcluster up|down|list`: real local Kubernetes control planes."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from localcluster import AlreadyRunningError, LocalCluster, LocalClusterError, list_clusters
from cli.tables import print_table
from localcluster.build import ensure_binary

localcluster_app = typer.Typer(help="Run real local Kubernetes control planes (no Docker needed).",
                               no_args_is_help=True)
# Progress and tables go to stderr; stdout carries only what scripts read.
err = Console(stderr=True, log_path=False)


@localcluster_app.command()
def up(
    name: str = typer.Argument(..., help="Cluster name (lowercase letters, digits, '-')."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Succeed if the cluster is already running."),
    register: bool = typer.Option(False, "--register", help="Also save it as a Prefect cluster block named NAME."),
    label: list[str] = typer.Option([], "--label", help="k=v label of the cluster block (with --register)."),
) -> None:
    """Build the binary if needed, start a cluster and print its kubeconfig path (last line)."""
    try:
        cluster = LocalCluster(name)
        with err.status(f"local cluster {name}: starting") as status:
            kubeconfig = cluster.up(on_progress=lambda m: _progress(status, f"local cluster {name}: {m}"))
    except AlreadyRunningError as exc:
        err.print(f"[yellow]{exc}[/yellow]")
        print(exc.cluster.kubeconfig)
        raise typer.Exit(0 if exist_ok else 1)
    except LocalClusterError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise typer.Exit(1)
    record = cluster.record()
    err.print(f"[green]local cluster {name} is up[/green] at {record.api_url}")
    if register:
        from cli.blocks import parse_labels, save_cluster

        save_cluster(name, kubeconfig, labels={"localcluster": "true", **parse_labels(label)})
        err.print(f"saved it as the Prefect cluster block [bold]{name}[/bold]")
    else:
        err.print(f"to sync to it: gitops cluster add {name} --kubeconfig {kubeconfig}  (or up --register)")
    print(kubeconfig)


@localcluster_app.command()
def build() -> None:
    """Build the local cluster binary if its Go sources changed; print its path."""
    try:
        with err.status("local cluster binary: checking") as status:
            binary = ensure_binary(on_progress=lambda m: _progress(status, m))
    except LocalClusterError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1)
    print(binary)


@localcluster_app.command()
def down(name: str = typer.Argument(..., help="Cluster name.")) -> None:
    """Stop every process of a cluster and remove its state."""
    try:
        cluster = LocalCluster(name)
        with err.status(f"local cluster {name}: stopping"):
            existed = cluster.down()
    except LocalClusterError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    err.print(f"local cluster {name} {'stopped and removed' if existed else 'was not there'}")


@localcluster_app.command("list")
def list_command() -> None:
    """Show local clusters with their API URLs, state and memory."""
    table = Table("name", "API", "state", "memory", "kubeconfig")
    for cluster in list_clusters():
        record = cluster.record()
        alive = cluster.running_pids()
        state = "running" if cluster.is_running() else f"broken ({len(alive)}/5 processes)"
        memory = f"{cluster.resident_memory_bytes() / 2**20:.0f} MiB"
        table.add_row(cluster.name, record.api_url, state, memory, str(cluster.kubeconfig))
    print_table(table)


def _progress(status, message: str) -> None:
    """Show progress live on a terminal, and as log lines in CI logs."""
    status.update(message)
    if not err.is_terminal:
        err.log(message)
