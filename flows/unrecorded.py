"""Runs that Prefect could not record. When its API goes away while a command
runs flows in its own process (the server killed, the network cut), the work in
the clusters goes on: Prefect's client retries each request, then fails the run's
bookkeeping, not the sync. The command (cli/sync.py) then prints the report all
the same, says in one line that Prefect did not record it, and keeps the final
state of each run it started in $GITOPS_HOME/unrecorded-runs.json; the next
command that reaches Prefect writes those states (`record_late`), so the UI never
shows a run Running for good.

The flows tell this module what they are about to end with (`noted`); nothing
is kept unless a command asked for it (`collect`)."""

from __future__ import annotations

import contextlib
import contextvars
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from prefect_gitops.engine.home import gitops_home
from prefect_gitops.engine.report import SyncReport, TargetResult

JOURNAL = "unrecorded-runs.json"
LATE_NOTE = "recorded late: Prefect's API was unreachable when this run ended"


@dataclass
class Outcomes:
    """The runs a command started in this process, with the final state each
    reached (None: it ended without one), and the apps' results."""

    states: dict[str, dict | None] = field(default_factory=dict)  # run id -> {type, name, message}
    results: list[TargetResult] = field(default_factory=list)
    revision: str = ""
    lost: bool = False  # an app run's end could not be recorded: the API is gone

    def report(self) -> SyncReport | None:
        """What happened in the clusters, as far as the apps finished."""
        return SyncReport(self.revision, list(self.results)) if self.revision else None

    def keep(self, home: Path | None = None) -> None:
        """Add every run's final state (Crashed where none was reached) to the journal."""
        journal = (home or gitops_home()) / JOURNAL
        kept = _read(journal)
        for run_id, state in self.states.items():
            kept[run_id] = state or {"type": "CRASHED", "name": "Crashed",
                                     "message": "its process could not report how it ended"}
        journal.parent.mkdir(parents=True, exist_ok=True)
        journal.write_text(json.dumps(kept, indent=1))


# Requests to Prefect's API retried by a command that waits for its run: Prefect's
# default (5: 2+4+8+16+32 s a request) would keep it waiting minutes for an API that
# went away; twice (after 2 s, then 4 s) still rides out a moment of "database is
# locked" of Prefect's own server on SQLite (cli/local_server_main.py).
COMMAND_RETRIES = 2


@contextlib.contextmanager
def brief_retries() -> Iterator[None]:
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: COMMAND_RETRIES}):
        yield


_collecting: contextvars.ContextVar[Outcomes | None] = contextvars.ContextVar("gitops_outcomes", default=None)


@contextlib.contextmanager
def collect() -> Iterator[Outcomes]:
    """Keep the outcomes of the runs started in this block."""
    outcomes = Outcomes()
    token = _collecting.set(outcomes)
    try:
        yield outcomes
    finally:
        _collecting.reset(token)


def started(revision: str) -> None:
    """The current flow run began (a sync of `revision`)."""
    from prefect.context import FlowRunContext

    outcomes, context = _collecting.get(), FlowRunContext.get()
    if outcomes is not None and context and context.flow_run:
        outcomes.states.setdefault(str(context.flow_run.id), None)
        outcomes.revision = outcomes.revision or revision


def noted(state, result: TargetResult | None = None):
    """The current flow run ends with `state` (returned as is); `result` is an app's."""
    from prefect.context import FlowRunContext

    outcomes, context = _collecting.get(), FlowRunContext.get()
    if outcomes is not None and context and context.flow_run:
        outcomes.states[str(context.flow_run.id)] = {"type": state.type.value, "name": state.name,
                                                     "message": state.message or ""}
        if result is not None:
            outcomes.results.append(result)
    return state


def result_of_lost_run(app: str, cluster: str) -> TargetResult | None:
    """An app's result as its run noted it, for a run whose end Prefect could not
    record: from then on the API counts as lost (api_lost)."""
    outcomes = _collecting.get()
    if outcomes is None:
        return None
    outcomes.lost = True
    return next((r for r in outcomes.results if (r.app, r.cluster) == (app, cluster)), None)


def api_lost() -> bool:
    """Whether a run's end could not be recorded: what is left to send would wait
    for its retries to fail too."""
    outcomes = _collecting.get()
    return bool(outcomes and outcomes.lost)


def record_late(home: Path | None = None) -> int:
    """Write the journal's states to Prefect (forced: the runs show Running there);
    those written leave the journal. How many were written."""
    journal = (home or gitops_home()) / JOURNAL
    kept = _read(journal)
    if not kept:
        return 0
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State, StateType
    from prefect.exceptions import ObjectNotFound

    written = 0
    try:
        with get_client(sync_client=True) as client:
            for run_id, state in list(kept.items()):
                late = State(type=StateType(state["type"]), name=state["name"],
                             message=f"{state['message']} ({LATE_NOTE})".strip())
                with contextlib.suppress(ObjectNotFound):  # a run deleted meanwhile: nothing to record
                    client.set_flow_run_state(run_id, late, force=True)
                kept.pop(run_id)
                written += 1
    finally:  # what was written leaves the journal, even when the API goes away again
        journal.write_text(json.dumps(kept, indent=1)) if kept else journal.unlink(missing_ok=True)
    return written


def _read(journal: Path) -> dict[str, dict]:
    try:
        return json.loads(journal.read_text())
    except (OSError, ValueError):
        return {}
