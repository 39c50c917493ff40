"""Stopping a served runner, as `gitops serve` and the demo's recovery runner
start it (cli/runner.py), never rewrites a finished run: a run that has reported
Completed, its process still ending, stays Completed (Prefect's own runner set
it Cancelled, "Runner is shutting down."), and so does one that completes as it
is being cancelled; a run still running ends Cancelled, not left Running. Read
through Prefect's REST API."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from prefect_gitops.cli.runner import STOPPED_MESSAGE
from served_runner import create_flow_run, serving

TESTS = Path(__file__).resolve().parent
SERVE = ("import sys; sys.path.insert(0, sys.argv[1]); from prefect_gitops.cli.runner import serve; "
         "import served_flows as f; serve(f.finishes.to_deployment('finishes'), "
         "f.keeps_running.to_deployment('keeps-running'), "
         "f.finishes_when_stopped.to_deployment('finishes-when-stopped'), limit=2)")
WAIT_S = 120


def runner(prefect_api: str, log: Path):
    """The runner of cli/runner.py serving the flows of served_flows.py, in a process of its own."""
    return serving(SERVE, prefect_api, log, str(TESTS), stop_s=WAIT_S)


def start_run(prefect_api: str, flow: str, process: subprocess.Popen, log: Path) -> str:
    deployment = until(lambda: _get(prefect_api, f"/deployments/name/{flow}/{flow}"), process, log)
    return create_flow_run(prefect_api, deployment["id"])


def wait_for_state(prefect_api: str, flow_run_id: str, state_type: str, process: subprocess.Popen,
                   log: Path) -> None:
    until(lambda: _get(prefect_api, f"/flow_runs/{flow_run_id}")["state"]["type"] == state_type, process, log,
          poll_s=0.05)


def stop(process: subprocess.Popen, log: Path) -> None:
    """SIGTERM, as `gitops serve` is stopped; the runner ends by itself."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=WAIT_S) == 0, log.read_text()[-3000:]


def run_and_states(prefect_api: str, flow_run_id: str) -> tuple[dict, list[str]]:
    """The run as the API has it, and the types of its states in order."""
    history = httpx.get(f"{prefect_api}/flow_run_states/", params={"flow_run_id": flow_run_id}, timeout=30).json()
    return _get(prefect_api, f"/flow_runs/{flow_run_id}"), [s["type"] for s in history]


def run_logs(prefect_api: str, flow_run_id: str) -> list[str]:
    response = httpx.post(f"{prefect_api}/logs/filter", timeout=30,
                          json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200})
    return [entry["message"] for entry in response.json()]


def until(found, process: subprocess.Popen, log: Path, poll_s: float = 0.5):
    deadline = time.monotonic() + WAIT_S
    while not (value := found()):
        assert process.poll() is None, f"the runner exited ({process.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(poll_s)
    return value


def _get(prefect_api: str, path: str) -> dict | None:
    response = httpx.get(f"{prefect_api}{path}", timeout=30)
    return response.json() if response.status_code == 200 else None


def test_a_run_that_completed_stays_completed_when_the_runner_stops_right_after(prefect_api, tmp_path):
    log = tmp_path / "runner.log"
    with runner(prefect_api, log) as process:
        flow_run_id = start_run(prefect_api, "finishes", process, log)
        wait_for_state(prefect_api, flow_run_id, "COMPLETED", process, log)
        stop(process, log)  # its process is still ending (served_flows.ENDING_S)

    run, states = run_and_states(prefect_api, flow_run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert states[-1] == "COMPLETED" and not {"CANCELLING", "CANCELLED"} & set(states), states
    # Its process was left to end, not killed: what it did after Completed is done and logged.
    assert "Hook '_ends_slowly' finished running successfully" in run_logs(prefect_api, flow_run_id)


def test_a_run_still_running_when_the_runner_stops_ends_cancelled(prefect_api, tmp_path):
    log = tmp_path / "runner.log"
    with runner(prefect_api, log) as process:
        flow_run_id = start_run(prefect_api, "keeps-running", process, log)
        wait_for_state(prefect_api, flow_run_id, "RUNNING", process, log)
        stop(process, log)

    run, states = run_and_states(prefect_api, flow_run_id)
    assert run["state"]["type"] == "CANCELLED", run["state"]
    assert run["state"]["message"] == STOPPED_MESSAGE
    assert "RUNNING" in states and states[-1] == "CANCELLED" and "CRASHED" not in states, states


def test_a_run_that_completes_as_it_is_being_cancelled_stays_completed(prefect_api, tmp_path):
    log = tmp_path / "runner.log"
    with runner(prefect_api, log) as process:
        flow_run_id = start_run(prefect_api, "finishes-when-stopped", process, log)
        wait_for_state(prefect_api, flow_run_id, "RUNNING", process, log)
        stop(process, log)  # read Running, then cancelled: the run completes on the signal

    run, states = run_and_states(prefect_api, flow_run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert states[-1] == "COMPLETED" and "CANCELLED" not in states, states
