"""How much of Prefect's logging the terminal sees. Results go to stdout and the
CLI's own lines to stderr; Prefect's INFO lines (`Flow run ... Beginning flow
run`) would drown them, so unless `-v` is given its console handler shows
warnings and errors only, without tracebacks, and none of the runs' own lines
(the command prints their outcome: the report, or the error in one line). Runs
still send every line, tracebacks included, to the Prefect API: only the
console is quiet."""

from __future__ import annotations

import logging
import os
import sys

from prefect_gitops.cli import console

# Read by Prefect's logging set-up (when prefect is imported, and again when a
# temporary server starts): the `console` handler of its logging.yml.
CONSOLE_LEVEL = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
VERBOSE_FLAGS = ("-v", "--verbose")
# Long-running: its terminal is where runs are watched, as with `prefect worker start`.
LOUD_COMMANDS = ("serve",)


def quiet_by_default(argv: list[str] | None = None) -> None:
    """Before anything imports prefect: WARNING on the console unless `-v` comes
    before the command's name (or the command is loud), or the user chose a
    level themselves."""
    if wants_logs(sys.argv[1:] if argv is None else argv):
        os.environ[CONSOLE_LEVEL] = "NOTSET"
    else:
        os.environ.setdefault(CONSOLE_LEVEL, "WARNING")


def apply(verbose: bool | None = None) -> None:
    """Once the options are parsed: the console handler as chosen, tracebacks
    kept off it when quiet, and those of expected failures always. Called again (without argument) by commands that
    import prefect only when they run."""
    verbose = console.is_verbose() if verbose is None else verbose
    console.set_verbose(verbose)
    if verbose:
        os.environ[CONSOLE_LEVEL] = "NOTSET"
    # Prefect's log shipper writes "--- Error logging to API ---" to stderr when it cannot
    # reach its API, unless this is off; quiet, the command says that in its own line.
    logging.raiseExceptions = verbose
    wanted = _Verbose if verbose else _Quiet
    consoles = _console_handlers()
    for handler in [*consoles, logging.lastResort]:  # lastResort: before Prefect sets up logging
        if verbose and handler in consoles:
            handler.setLevel(logging.NOTSET)
        for chosen in [f for f in handler.filters if isinstance(f, (_Quiet, _Verbose))]:
            handler.removeFilter(chosen)
        handler.addFilter(wanted())


class _Quiet(logging.Filter):
    """The runs' lines and the exit notes of Prefect's background workers
    ("Still processing items") dropped; the others without their traceback. The
    console handler sits on the root logger, so it runs after the API's handler
    has sent the record whole."""

    RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
    WORKERS = ("EventsWorker", "APILogWorker")
    # Events that could not be sent, each dumped whole: an API that went away is the command's own line.
    DELIVERY = ("prefect.events.clients", "prefect._internal.concurrency")
    # A request retried: whether it then failed is the command's own line.
    RETRY_NOTES = ("prefect_gitops.engine.cluster.kube",)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.RUN_LOGGERS) or record.name in self.DELIVERY:
            return False
        if record.name in self.WORKERS + self.RETRY_NOTES and record.levelno < logging.ERROR:
            return False
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


class _Verbose(logging.Filter):
    """Every line, and the traceback of a bug; an expected failure (Git, a
    cluster unreachable, gitops.yaml invalid: cli/errors.py) keeps its line,
    which says it all, without Prefect's traceback of it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect_gitops.cli.errors import is_expected

        if record.exc_info and record.exc_info[1] is not None and is_expected(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


def _console_handlers() -> list[logging.Handler]:
    if "prefect.logging.handlers" not in sys.modules:
        return []  # nothing of Prefect's is set up yet: the environment decides
    from prefect.logging.handlers import PrefectConsoleHandler, _SafeStreamHandler

    internal = logging.getLogger("prefect._internal").handlers  # its own stderr handler: it does not propagate
    return ([h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
            + [h for h in internal if isinstance(h, _SafeStreamHandler)])


def wants_logs(args: list[str]) -> bool:
    """`-v` among the global options (before the first word that is not an
    option), or a loud command."""
    for arg in args:
        if not arg.startswith("-"):
            return arg in LOUD_COMMANDS
        if arg in VERBOSE_FLAGS:
            return True
    return False
