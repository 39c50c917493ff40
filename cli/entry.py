"""The `gitops` executable: the command line (cli.main), then the end of the
process as soon as Python's exit handlers have run.

Tearing the interpreter down after a command that imported Prefect takes about
0.7 s (its modules and objects freed one by one) and does nothing anyone sees:
Prefect drains its log and event queues, and logging flushes its handlers, in
exit handlers, and those all run before the one registered here, first and so
run last. It flushes stdout and stderr and ends the process with the command's
exit code."""

from __future__ import annotations

import atexit
import os
import sys
from typing import Callable

_exit_code = 1  # an uncaught exception (Python has printed its traceback)


def main() -> None:
    def app() -> None:
        from prefect_gitops.cli.main import app

        app()

    run(app)


def run(app: Callable[[], None]) -> None:
    global _exit_code
    atexit.register(_end_now)  # before `app` imports anything that registers its own
    try:
        app()
        _exit_code = 0
    except SystemExit as exit_:
        _exit_code = _code_of(exit_)
        raise
    except KeyboardInterrupt:
        _exit_code = 130  # as a shell reports SIGINT
        raise


def _code_of(exit_: SystemExit) -> int:
    if exit_.code is None:
        return 0
    return exit_.code if isinstance(exit_.code, int) else 1  # a message: Python prints it, exits 1


def _end_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(_exit_code)
