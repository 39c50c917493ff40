"""`gitops localcluster up|down|list`: real local Kubernetes control planes, and
`stop|pause|resume|start NAME COMPONENT` to inject faults into one of them."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from prefect_gitops.cli.tables import print_table

# The localcluster package (with cryptography) is imported by the commands that use it, not at start-up.

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
    from prefect_gitops.localcluster import AlreadyRunningError, LocalCluster, LocalClusterError

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
        from prefect_gitops.cli.blocks import parse_labels, save_cluster
        from prefect_gitops.cli.prefect_api import use_prefect_api

        use_prefect_api()
        save_cluster(name, kubeconfig, labels={"localcluster": "true", **parse_labels(label)})
        err.print(f"saved it as the Prefect cluster block [bold]{name}[/bold]")
    else:
        err.print(f"to sync to it: gitops cluster add {name} --kubeconfig {kubeconfig}  (or up --register)")
    print(kubeconfig)


@localcluster_app.command()
def build() -> None:
    """Build the local cluster binary if its Go sources changed; print its path."""
    from prefect_gitops.localcluster import LocalClusterError
    from prefect_gitops.localcluster.build import ensure_binary

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
    from prefect_gitops.localcluster import LocalCluster, LocalClusterError

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
    from prefect_gitops.localcluster import list_clusters

    table = Table("name", "API", "state", "memory", "kubeconfig")
    for cluster in list_clusters():
        record = cluster.record()
        state = _describe_state(cluster.component_states())
        memory = f"{cluster.resident_memory_bytes() / 2**20:.0f} MiB"
        table.add_row(cluster.name, record.api_url, state, memory, str(cluster.kubeconfig))
    print_table(table)


COMPONENT_HELP = "etcd, apiserver, controller-manager, scheduler or kubelet (or kube-apiserver, ...)."


@localcluster_app.command("stop")
def stop_component(name: str = typer.Argument(..., help="Cluster name."),
                   component: str = typer.Argument(..., help=COMPONENT_HELP),
                   kill: bool = typer.Option(False, "--kill", help="SIGKILL at once, as a crash.")) -> None:
    """Stop one component (SIGTERM, then SIGKILL after 5 s), keeping its state for `start`."""
    _fault(name, component, "killed" if kill else "stopped", lambda cluster: cluster.stop_component(component, kill))


@localcluster_app.command("pause")
def pause_component(name: str = typer.Argument(..., help="Cluster name."),
                    component: str = typer.Argument(..., help=COMPONENT_HELP)) -> None:
    """Freeze one component (SIGSTOP): connections are accepted, never answered."""
    _fault(name, component, "paused", lambda cluster: cluster.pause_component(component))


@localcluster_app.command("resume")
def resume_component(name: str = typer.Argument(..., help="Cluster name."),
                     component: str = typer.Argument(..., help=COMPONENT_HELP)) -> None:
    """Let a paused component run on (SIGCONT)."""
    _fault(name, component, "resumed", lambda cluster: cluster.resume_component(component))


@localcluster_app.command("start")
def start_component(name: str = typer.Argument(..., help="Cluster name."),
                    component: str = typer.Argument(..., help=COMPONENT_HELP)) -> None:
    """Start a stopped component again with the same flags, ports and state."""
    _fault(name, component, "started", lambda cluster: cluster.start_component(component))


def _fault(name: str, component: str, done: str, act) -> None:
    from prefect_gitops.localcluster import LocalCluster, LocalClusterError

    try:
        cluster = LocalCluster(name)
        if cluster.record() is None:
            raise LocalClusterError(f"there is no local cluster {name!r}")
        with err.status(f"local cluster {name}: {component}"):
            act(cluster)
    except LocalClusterError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1)
    err.print(f"local cluster {name}: {component} {done}")


def _describe_state(states: dict[str, str]) -> str:
    """"running", or which components are not, e.g. "apiserver paused"."""
    odd = [f"{component} {state}" for component, state in states.items() if state != "running"]
    return ", ".join(odd) if odd else "running"


def _progress(status, message: str) -> None:
    """Show progress live on a terminal, and as log lines in CI logs."""
    status.update(message)
    if not err.is_terminal:
        err.log(message)
