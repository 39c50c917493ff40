"""The `gitops` command line."""

from cli import logs

logs.quiet_by_default()  # before anything below imports prefect

import typer  # noqa: E402

from cli.blocks import cluster_app, repo_app  # noqa: E402
from cli.localcluster import localcluster_app  # noqa: E402
from cli.drift import drift_command  # noqa: E402
from cli.recover import recover_command  # noqa: E402
from cli.rollback import rollback_command  # noqa: E402
from cli.serve import serve_command  # noqa: E402
from cli.sync import diff_command, status_command, sync_command  # noqa: E402
from cli.validate import validate_command  # noqa: E402

app = typer.Typer(
    name="gitops",
    help="prefect-gitops: Git as the source of truth for Kubernetes clusters, run as Prefect flows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        print(f"gitops {version('prefect-gitops')}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show Prefect's logs (flow runs, INFO) on stderr."),
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit."),
) -> None:
    """prefect-gitops: Git as the source of truth for Kubernetes clusters, run as Prefect flows.

    Results go to stdout, progress and logs to stderr."""
    logs.apply(verbose or ctx.invoked_subcommand in logs.LOUD_COMMANDS)


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
