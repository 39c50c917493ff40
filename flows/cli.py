"""The `gitops` command line."""

import typer

from flows.blocks_cli import cluster_app, repo_app
from flows.localcluster_cli import localcluster_app
from flows.drift_cli import drift_command
from flows.recovery_cli import recover_command
from flows.rollback import rollback_command
from flows.serve import serve_command
from flows.sync_cli import diff_command, status_command, sync_command
from flows.validate_cli import validate_command

app = typer.Typer(
    name="gitops",
    help="prefect-gitops: Git as the source of truth for Kubernetes clusters, run as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(localcluster_app, name="localcluster")
app.add_typer(repo_app, name="repo")
app.add_typer(cluster_app, name="cluster")
app.command("validate")(validate_command)
app.command("sync")(sync_command)
app.command("diff")(diff_command)
app.command("status")(status_command)
app.command("drift")(drift_command)
app.command("recover")(recover_command)
app.command("rollback")(rollback_command)
app.command("serve")(serve_command)


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the demo cluster running afterwards."),
) -> None:
    """Run the demo end to end on a local cluster (the README's main command)."""
    from flows.demo import run_demo

    run_demo(keep=keep)


if __name__ == "__main__":
    app()
