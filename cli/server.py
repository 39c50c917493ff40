"""`gitops server start|stop|status`: the local Prefect server kept in
$GITOPS_HOME/prefect-server (cli/local_server.py), which every command uses
when no PREFECT_API_URL (nor Prefect profile) names another."""

from __future__ import annotations

import os
import time

import typer

from prefect_gitops.cli.console import err, error, out
from prefect_gitops.cli.local_server import LocalPrefectServer, LocalServerError

server_app = typer.Typer(help="The local Prefect server kept in $GITOPS_HOME (when no PREFECT_API_URL is set).",
                         no_args_is_help=True)


@server_app.command("start")
def start() -> None:
    """Start the local Prefect server (its own SQLite database), detached; nothing if it runs already."""
    server = LocalPrefectServer()
    if not server.running():
        err.print(f"starting Prefect's server in {server.home}")
    try:
        record, started = server.start()
    except LocalServerError as failed:
        error(str(failed))
        raise typer.Exit(1)
    out.print(f"{'started' if started else 'already running'}: {record.ui_url} (pid {record.pid})")
    if os.environ.get("PREFECT_API_URL"):
        err.print(f"note: PREFECT_API_URL is set ({os.environ['PREFECT_API_URL']}) and wins over this server")


@server_app.command("stop")
def stop() -> None:
    """Stop the local Prefect server (its database is kept for the next start)."""
    record = LocalPrefectServer().stop()
    out.print(f"stopped {record.ui_url} (pid {record.pid})" if record else "not running")


@server_app.command("status")
def status() -> None:
    """Whether the local Prefect server runs, where, and its database. Exit 0 when it runs, 1 when not."""
    server = LocalPrefectServer()
    record = server.running()
    if not record:
        out.print(f"not running (database {server.database})")
        raise typer.Exit(1)
    up = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
    out.print(f"running: {record.ui_url} (API {record.api_url}, pid {record.pid}, since {up}, "
              f"database {server.database}, log {server.log_file})")
