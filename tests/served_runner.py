"""A runner of cli/runner.py in a process of its own, as `gitops serve` and the
demo start it, for tests that serve deployments; and a flow run asked for through
the REST API as the UI's Run asks for one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def serving(code: str, prefect_api: str, log: Path, *args: str, stop_s: float = 90) -> Iterator[subprocess.Popen]:
    """`code` (Python that calls cli.runner.serve) running against `prefect_api`,
    its output in `log` (a file, not a pipe: a full pipe would block the runner).
    At the end SIGTERM, as `gitops serve` is stopped (unfinished runs cancelled);
    its process group killed if it has not ended within stop_s."""
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, start_new_session=True,
                                   env={**os.environ, "PREFECT_API_URL": prefect_api},
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=stop_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def create_flow_run(api: str, deployment_id: str, body: dict | None = None) -> str:
    """A run of a deployment, as the UI's Run asks for it; its id. A 503 (Prefect's
    SQLite busy) is tried again, as Prefect's own client does."""
    for _ in range(5):
        response = httpx.post(f"{api}/deployments/{deployment_id}/create_flow_run", json=body or {}, timeout=30)
        if response.status_code != 503:
            break
        time.sleep(1)
    assert response.status_code == 201, response.text
    return response.json()["id"]
