"""The `gitops` command line."""

import typer

from cli.blocks import cluster_app, repo_app
from cli.localcluster import localcluster_app
from cli.drift import drift_command
from cli.recover import recover_command
from cli.rollback import rollback_command
from cli.serve import serve_command
from cli.sync import diff_command, status_command, sync_command
from cli.validate import validate_command

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
    from cli.demo import run_demo

    run_demo(keep=keep)


if __name__ == "__main__":
    app()
