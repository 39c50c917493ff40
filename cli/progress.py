"""While a command runs, a live line per app and cluster with its stage, on
stderr when it is a terminal (with -v, Prefect's own lines say the same). Read
from the runs' log records: each stage is a task run named `STAGE APP@CLUSTER`
(tasks/*.py), which logs `Finished in state ...` when it ends."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

STAGES = ("render", "validate", "diff", "apply", "prune", "health", "record", "revert", "drift")
RUN_LOGGER = "prefect.task_runs"


class StageLines(logging.Handler):
    """The latest stage of each app@cluster, as the task runs' records tell it."""

    def __init__(self, live: Live):
        super().__init__(logging.INFO)
        self.live = live
        self.stages: dict[str, str] = {}
        self._lock = threading.Lock()  # task runs log from several threads

    def emit(self, record: logging.LogRecord) -> None:
        self.show(str(getattr(record, "task_run_name", "")), record.getMessage())

    def show(self, task_run_name: str, message: str) -> None:
        """A task run's log line (here, or forwarded by the serve process that runs the command)."""
        stage, _, target = task_run_name.partition(" ")
        if stage not in STAGES or not target:
            return
        # `Finished in state Failed('...')`: the state's name; any other line: the stage is under way.
        state = message.removeprefix("Finished in state ").split("(")[0] if message.startswith("Finished") else "…"
        with self._lock:
            self.stages[target.split(" ")[0]] = f"{stage} {state}"
            self.live.update(self.table())

    def table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        for target, stage in sorted(self.stages.items()):
            table.add_row(target, stage)
        return table


@contextlib.contextmanager
def stage_lines(console: Console, shown: bool) -> Iterator[Callable[[str, str], None]]:
    """Live stage lines on `console` while the block runs, if `shown` and it is
    a terminal; they are cleared at the end, before the report is printed.
    Yields `show(task_run_name, message)` for lines of a run in another process."""
    if not (shown and console.is_terminal):
        yield lambda task_run_name, message: None
        return
    logger = logging.getLogger(RUN_LOGGER)
    with Live(console=console, transient=True, refresh_per_second=8) as live:
        handler = StageLines(live)
        logger.addHandler(handler)
        try:
            yield handler.show
        finally:
            logger.removeHandler(handler)
