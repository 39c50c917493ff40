"""The `gitops` command line.

Starting it imports no more than the commands' options need (typer, rich, a
few small modules): each command imports Prefect, the flows and the cluster
client when it runs, so `gitops --help` or `gitops repo list` answer in well
under a second. Commands that talk to Prefect first choose its API
(cli/prefect_api.py); the others (localcluster, server, demo) never do."""

from prefect_gitops.cli import logs

logs.quiet_by_default()  # before anything below imports prefect

import functools  # noqa: E402

import typer  # noqa: E402

from prefect_gitops.cli.blocks import cluster_app, repo_app  # noqa: E402
from prefect_gitops.cli.drift import drift_command  # noqa: E402
from prefect_gitops.cli.localcluster import localcluster_app  # noqa: E402
from prefect_gitops.cli.prefect_api import use_prefect_api  # noqa: E402
from prefect_gitops.cli.recover import recover_command  # noqa: E402
from prefect_gitops.cli.rollback import rollback_command  # noqa: E402
from prefect_gitops.cli.secret import secret_app, secret_key  # noqa: E402
from prefect_gitops.cli.serve import serve_command  # noqa: E402
from prefect_gitops.cli.server import server_app  # noqa: E402
from prefect_gitops.cli.suspend import resume_command, suspend_command  # noqa: E402
from prefect_gitops.cli.sync import diff_command, status_command, sync_command  # noqa: E402
from prefect_gitops.cli.validate import validate_command  # noqa: E402

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


def with_prefect(command):
    """The command, run once the Prefect API is chosen (a --help or a usage
    error never gets that far)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        use_prefect_api()
        return command(*args, **kwargs)

    return run


def _with_prefect_all(group: typer.Typer) -> typer.Typer:
    for info in group.registered_commands:
        info.callback = with_prefect(info.callback)
    return group


app.add_typer(localcluster_app, name="localcluster")
app.add_typer(server_app, name="server")
secret_app.command("key")(with_prefect(secret_key))  # encrypt needs no Prefect
app.add_typer(secret_app, name="secret")
app.add_typer(_with_prefect_all(repo_app), name="repo")
app.add_typer(_with_prefect_all(cluster_app), name="cluster")
app.command("validate")(with_prefect(validate_command))
app.command("sync")(with_prefect(sync_command))
app.command("diff")(with_prefect(diff_command))
app.command("status")(with_prefect(status_command))
app.command("drift")(with_prefect(drift_command))
app.command("recover")(with_prefect(recover_command))
app.command("rollback")(with_prefect(rollback_command))
app.command("suspend")(with_prefect(suspend_command))
app.command("resume")(with_prefect(resume_command))
app.command("serve")(with_prefect(serve_command))


@app.command()
def demo(
    keep: bool = typer.Option(False, "--keep", help="Leave the demo cluster running afterwards."),
) -> None:
    """Run the demo end to end on a local cluster (the README's main command)."""
    from prefect_gitops.cli.demo import run_demo

    run_demo(keep=keep)


if __name__ == "__main__":
    app()
