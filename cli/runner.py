"""The runner that serves our deployments in this process (`gitops serve`, the
demo's recovery): Prefect's Runner, asking for runs every POLL_S, whose stop never
rewrites a finished run."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

# How often the runner asks Prefect for runs to start (Prefect's default: 10 s): a run
# asked for through the REST API or the UI (a recovery, a Retry) starts within this.
# An ask is a request or two to the Prefect API.
POLL_S = 2
# When the runner stops, a run that has reported its final state but whose process
# is still ending (sending its last logs and events) gets this long to exit.
EXIT_GRACE_S = 30
STOPPED_MESSAGE = "The runner serving it stopped before the run finished."


def serve(*served: RunnerDeployment, limit: int | None) -> None:
    """prefect.serve, until SIGTERM or Ctrl-C, with a runner whose stop never
    rewrites a finished run (see _stop_runs)."""
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.settings import PREFECT_UI_URL
    from rich.markup import escape

    from prefect_gitops.cli.console import out

    runner = _runner_type()(limit=limit, query_seconds=POLL_S)
    for d in served:
        runner.add_deployment(d)
    ui = PREFECT_UI_URL.value()
    out.print(escape(f"serving {', '.join(d.name for d in served)}" + (f"; their runs: {ui}/runs" if ui else "")))
    try:
        asyncio.run(runner.start())
    except (KeyboardInterrupt, TerminationSignal):
        pass


@functools.cache
def _runner_type() -> type:
    """Prefect's Runner, but its stop (SIGTERM) cancels only the runs that have not
    finished. Prefect's cancels every run whose process is still there and sets
    Cancelled with force, over a Completed the run reported a moment before
    (its process still ending): the UI showed Completed, then Cancelled."""
    from prefect.runner import Runner
    from prefect.runner._state_proposer import StateProposer

    class FinalStateKeeper(StateProposer):
        async def propose_cancelled(self, flow_run, state_updates=None) -> bool:
            """Cancelled, unless the run's state, read now that its process is gone, is final."""
            if _final(await self._client.read_flow_run(flow_run.id)):
                return False  # Prefect's caller then reads the final state and leaves it
            return await super().propose_cancelled(flow_run, state_updates)

    class GitopsRunner(Runner):
        async def __aenter__(self):
            await super().__aenter__()
            # Prefect 3.9's cancellation sequence takes its state writer from here.
            self._cancellation_manager._state_proposer = FinalStateKeeper(client=self._client)
            return self

        async def cancel_all(self) -> None:  # what astop (on SIGTERM) calls
            await _stop_runs(self)

    return GitopsRunner


async def _stop_runs(runner) -> None:
    """Every run the runner started, at once: one whose state is final is left to
    exit (EXIT_GRACE_S, then its process is killed, its state untouched); any other
    is cancelled as Prefect cancels a run (its hooks, its process, its state)."""
    import anyio

    async with anyio.create_task_group() as group:
        for flow_run_id in runner._process_manager.flow_run_ids():
            group.start_soon(_stop_run, runner, flow_run_id)


async def _stop_run(runner, flow_run_id) -> None:
    try:
        flow_run = await runner._client.read_flow_run(flow_run_id)
        if not _final(flow_run):
            await runner._cancellation_manager.cancel(flow_run, state_msg=STOPPED_MESSAGE)
        elif not await _exited(runner._process_manager, flow_run_id, EXIT_GRACE_S):
            await runner._process_manager.kill(flow_run_id)
    except Exception:  # the API unreachable...: the runner's exit still kills the process
        runner._logger.exception("could not stop flow run %s", flow_run_id)


def _final(flow_run) -> bool:
    """Whether the run's state, as the API has it, is one it cannot leave (Completed, Failed, Cancelled, Crashed)."""
    return bool(flow_run.state and flow_run.state.is_final())


async def _exited(processes, flow_run_id, timeout_s: float) -> bool:
    """Whether the run's process ends within timeout_s (the runner forgets it once it has)."""
    import anyio

    with anyio.move_on_after(timeout_s):
        while processes.get(flow_run_id) is not None:
            await anyio.sleep(0.1)
        return True
    return False
