"""The `gitops` command line."""

import typer

from flows.localcluster_cli import localcluster_app

app = typer.Typer(
    name="gitops",
    help="prefect-gitops: Git as the source of truth for Kubernetes clusters, run as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(localcluster_app, name="localcluster")


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the demo cluster running afterwards."),
) -> None:
    """Run the demo end to end on a local cluster (the README's main command)."""
    from flows.demo import run_demo

    run_demo(keep=keep)


if __name__ == "__main__":
    app()
