"""Flows served by the runner in test_serve_stop.py: one that reports Completed
and whose process then takes a while to end (an on_completion hook runs after
the state is in the API, as Prefect's own end of a run does), one that keeps
running until it is stopped, and one that completes when it is stopped."""

from __future__ import annotations

import time

from prefect import flow
from prefect.exceptions import TerminationSignal

ENDING_S = 5  # how long the finished run's process goes on after reporting Completed


def _ends_slowly(flow, flow_run, state) -> None:
    time.sleep(ENDING_S)


@flow(name="finishes", on_completion=[_ends_slowly], persist_result=False)
def finishes() -> None:
    pass


@flow(name="keeps-running", persist_result=False)
def keeps_running(seconds: float = 600) -> None:
    time.sleep(seconds)


@flow(name="finishes-when-stopped", persist_result=False)
def finishes_when_stopped(seconds: float = 600) -> None:
    try:
        time.sleep(seconds)
    except TerminationSignal:  # the runner's SIGTERM: it finishes instead, as a run may just as it is cancelled
        pass
