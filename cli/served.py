"""`gitops sync`, `diff` and `drift` as thin clients of `gitops serve`, the way
`argocd` talks to its server: when a serve process is up (for the same Prefect
API), the command asks it, over a Unix socket in $GITOPS_HOME, to run the work
as a flow run of the served deployment (gitops-sync or gitops-drift). The run
happens in that warm process (Prefect, the cluster clients and the engine are
imported already), shows in the UI as a run of the deployment, can be retried
there, and its report comes back to the command, which prints it as it would
its own. With nothing served the command runs the flow in-process.

The protocol is one JSON request line, then JSON lines back: `run` (the flow
run's id and UI address), `stage` (a stage's log line, for the live
progress), and last `report` (the report, and whether the run could not finish
checking) or `error` (as cli/errors.py describes it). `declined` (another
Prefect API) sends the command back to running in-process.

The client side is Prefect-free; the server side runs in `gitops serve`."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TextIO

from prefect_gitops.cli.deployments import DRIFT, SYNC

if TYPE_CHECKING:
    from prefect_gitops.engine.report import SyncReport

# The deployment of prefect.yaml each command runs as.
DEPLOYMENTS = {"sync": SYNC, "drift": DRIFT}
CONNECT_TIMEOUT_S = 2


def socket_path() -> Path:
    from prefect_gitops.engine.home import gitops_home

    return gitops_home() / "serve.sock"


# ---- the client: a `gitops` command ----------------------------------------------


def request(command: str, parameters: dict[str, Any], api_url: str,
            on_message: Callable[[dict], None]) -> dict | None:
    """Have the serve process run `command`; its last message (`report` or
    `error`), each earlier one given to `on_message`. None when nothing serves
    (no socket, nobody answers) or the serve process declined."""
    try:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(CONNECT_TIMEOUT_S)
        connection.connect(str(socket_path()))
        connection.settimeout(None)  # a sync may wait for health for minutes
    except OSError:
        return None
    with connection, connection.makefile("rw", encoding="utf-8") as stream:
        _send(stream, {"command": command, "parameters": parameters, "api": api_url})
        for line in stream:
            message = json.loads(line)
            if "declined" in message:
                return None
            if "report" in message or "error" in message:
                return message
            on_message(message)
    raise ConnectionError("it closed the connection (its log says why)")


def run_served(command: str, parameters: dict[str, Any], as_json: bool,
               document: dict) -> tuple[SyncReport, bool] | None:
    """The report of `command` run by the serve process, and whether the run
    could not finish checking; None when nothing serves it. An error is
    reported as the command reports its own (cli/errors.py) and ends it."""
    from prefect_gitops.cli.console import err, is_verbose
    from prefect_gitops.cli.errors import CommandError, exit_with
    from prefect_gitops.cli.prefect_api import chosen_api
    from prefect_gitops.cli.progress import stage_lines
    from prefect_gitops.engine.report import report_from_json
    from rich.markup import escape

    api = chosen_api()
    if api is None or not socket_path().exists():
        return None

    with stage_lines(err, shown=not is_verbose()) as show:
        def on_message(message: dict) -> None:
            if "stage" in message:
                show(*message["stage"])
            elif "run" in message and (is_verbose() or err.is_terminal):
                run = message["run"]
                err.print(escape(f"run by gitops serve: {run['ui'] or 'flow run ' + run['id']}"), style="dim")

        try:
            answer = request(command, parameters, api.url, on_message)
        except (OSError, ValueError) as lost:  # serve stopped or killed while it ran the command
            exit_with(CommandError("prefect", f"gitops serve stopped answering during the run: {lost}"),
                      as_json, document)
    if answer is None:
        return None
    if "error" in answer:
        error = answer["error"]
        exit_with(CommandError(error["kind"], error["message"], error.get("problems", []), error.get("lines", [])),
                  as_json, document)
    return report_from_json(answer["report"], drift=command == "drift"), answer["incomplete"]


def _send(stream: TextIO, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


# ---- the server: in `gitops serve` ----------------------------------------------


SEND_TIMEOUT_S = 10  # a command that stops reading (suspended, say) loses its lines, not the run its time


class _Client:
    """A command's connection, seen from the serve process: one whole line at a
    time, since a run's threads forward their stage lines at once."""

    def __init__(self, stream: TextIO):
        self.stream, self.lock = stream, threading.Lock()

    def send(self, message: dict) -> None:
        with contextlib.suppress(OSError, ValueError), self.lock:  # the command went away: the run goes on
            _send(self.stream, message)


_CLIENT: contextvars.ContextVar[_Client | None] = contextvars.ContextVar("served_client", default=None)


class _StageForwarder(logging.Handler):
    """The task runs' log lines of a request's run, to its client (for the live
    stage lines): the run's threads carry the request's context."""

    def emit(self, record: logging.LogRecord) -> None:
        client = _CLIENT.get()
        name = getattr(record, "task_run_name", None)
        if client is not None and name:
            client.send({"stage": [str(name), record.getMessage()]})


@contextlib.contextmanager
def listening(api_url: str, path: Path | None = None) -> Iterator[Path | None]:
    """Serve requests on the socket while the block runs (in `gitops serve`);
    yields None, serving nothing, when another serve process already listens."""
    path = path or socket_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if _answers(path):
        yield None
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a serve process that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_mask = os.umask(0o177)  # the socket is the user's alone: it runs syncs with their credentials
    try:
        listener.bind(str(path))
    finally:
        os.umask(old_mask)
    listener.listen(16)
    forwarder = _StageForwarder()
    logging.getLogger("prefect.task_runs").addHandler(forwarder)
    threading.Thread(target=_accept, args=(listener, api_url), daemon=True, name="served-requests").start()
    try:
        yield path
    finally:
        logging.getLogger("prefect.task_runs").removeHandler(forwarder)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(CONNECT_TIMEOUT_S)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def _accept(listener: socket.socket, api_url: str) -> None:
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:  # closed: serve is ending
            return
        threading.Thread(target=_answer, args=(connection, api_url), daemon=True, name="served-run").start()


def _answer(connection: socket.socket, api_url: str) -> None:
    with connection, connection.makefile("rw", encoding="utf-8") as stream:
        line = stream.readline()
        if not line:  # a probe
            return
        connection.settimeout(SEND_TIMEOUT_S)
        client, asked = _Client(stream), json.loads(line)
        if not _same(asked.get("api"), api_url) or asked.get("command") not in DEPLOYMENTS:
            client.send({"declined": f"this process serves {api_url} and {sorted(DEPLOYMENTS)}"})
            return
        _CLIENT.set(client)
        client.send(run_deployment_here(asked["command"], asked["parameters"], client.send))


def _same(url: str | None, other: str) -> bool:
    return (url or "").rstrip("/") == other.rstrip("/")


def run_deployment_here(command: str, parameters: dict[str, Any], tell: Callable[[dict], None]) -> dict:
    """A flow run of the command's deployment, run in this process; the
    message that ends the request."""
    from prefect.context import SyncClientContext
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_engine import run_flow
    from prefect.settings import PREFECT_UI_URL
    from prefect.states import Pending

    from prefect_gitops.cli.deployments import definitions, load_flow
    from prefect_gitops.cli.errors import describe
    from prefect_gitops.flows.sync_app import without_heartbeat

    name = DEPLOYMENTS[command]
    [spec] = [d for d in definitions() if d["name"] == name]
    flow = load_flow(spec["entrypoint"])
    try:
        # One API client for the request, which the run's engine takes over too.
        with SyncClientContext.get_or_create() as context:
            try:
                deployment = context.client.read_deployment_by_name(f"{flow.name}/{name}")
            except ObjectNotFound:  # serve has not registered it yet
                return {"declined": f"{name} is not deployed yet"}
            # Pending, not Scheduled: this process runs it, no runner or worker picks it up.
            flow_run = context.client.create_flow_run_from_deployment(deployment.id, parameters=parameters,
                                                                      state=Pending())
            ui = PREFECT_UI_URL.value()
            tell({"run": {"id": str(flow_run.id), "ui": f"{ui}/runs/flow-run/{flow_run.id}" if ui else ""}})
            with without_heartbeat():  # the client waits for this run: it says if this process dies
                state = run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")
        outcome = state.result(raise_on_failure=False)
    except Exception as failure:  # the deployment gone, the API unreachable...
        return {"error": _error(describe(failure))}
    return _outcome_message(outcome, state)


def _outcome_message(outcome: Any, state: Any) -> dict:
    """A report (the sync's or drift's, also of a failed run) or the error that
    kept the run from making one."""
    from prefect_gitops.cli.errors import describe
    from prefect_gitops.engine.report import SyncReport
    from prefect_gitops.flows.drift import DriftCheckFailed

    report = getattr(outcome, "report", outcome)  # SyncFailed and DriftCheckFailed carry it
    if isinstance(report, SyncReport):
        return {"report": json.loads(report.to_json()), "incomplete": isinstance(outcome, DriftCheckFailed)}
    failure = outcome if isinstance(outcome, BaseException) else RuntimeError(state.message or "the run failed")
    return {"error": _error(describe(failure))}


def _error(described) -> dict:
    return {**described.to_json(), "lines": described.lines}
