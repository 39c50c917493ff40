"""A Prefect server of the user's own, kept running between commands: started
detached in $GITOPS_HOME/prefect-server (its SQLite database, its log, and
server.json with its pid and port), found again by the next command and stopped
by `gitops server stop`. Without it, a command with no PREFECT_API_URL would
start Prefect's temporary server every time (about 10 s, left behind when the
command is killed).

Prefect-free: the CLI reads this before it decides to import Prefect at all."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

HOST = "127.0.0.1"
SERVER_MODULE = "prefect_gitops.cli.local_server_main"  # Prefect's server, SQLite transactions begun IMMEDIATE
START_TIMEOUT_S = 120  # a new database is migrated first: 10 s on an idle machine, much more on a busy one
STOP_TIMEOUT_S = 30


class LocalServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerRecord:
    """What server.json holds about the running server."""

    pid: int
    port: int
    started_at: float

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.port}"


class LocalPrefectServer:
    """`prefect server start` (cli.local_server_main) as a detached process whose state lives in `home`."""

    def __init__(self, home: Path | None = None):
        if home is None:
            from prefect_gitops.engine.home import gitops_home

            home = gitops_home() / "prefect-server"
        self.home = home
        self.record_file = self.home / "server.json"
        self.log_file = self.home / "server.log"
        self.database = self.home / "prefect.db"

    def running(self) -> ServerRecord | None:
        """The record of the server if its process is alive and answers."""
        record = self._read_record()
        if record and _is_server_process(record) and healthy(record.api_url):
            return record
        return None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> tuple[ServerRecord, bool]:
        """The running server, started first if needed: (record, whether it was started now).
        Two commands starting it at once get the same server; one still starting
        (its command was interrupted) is waited for."""
        with self._locked():
            record, process = self._read_record(), None
            if not (record and _is_server_process(record)):
                record, process = self._spawn()
            try:
                self._wait_until_healthy(record, process, timeout_s)
            except LocalServerError:
                self._terminate(record)
                self.record_file.unlink(missing_ok=True)
                raise
            return record, process is not None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> ServerRecord | None:
        """Stop the server (its whole process group); the record of what was stopped, None if nothing ran."""
        with self._locked():
            record = self._read_record()
            if record and _is_server_process(record):
                self._terminate(record, timeout_s)
            else:
                record = None
            self.record_file.unlink(missing_ok=True)
            return record

    # -- internals -----------------------------------------------------------------------

    def _spawn(self) -> tuple[ServerRecord, subprocess.Popen]:
        port = _free_port(preferred=self._previous_port())
        api_url = f"http://{HOST}:{port}/api"
        env = {**os.environ,
               "PREFECT_HOME": str(self.home),
               "PREFECT_API_URL": api_url,
               "PREFECT_UI_API_URL": api_url,  # else the UI in a browser asks port 4200
               "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.database}",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "DO_NOT_TRACK": "1",
               "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}
        env.pop("PREFECT_PROFILE", None)
        env.pop("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", None)  # the CLI's quiet console: not for the server's log
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", SERVER_MODULE, "server", "start", "--host", HOST, "--port", str(port)],
                env=env, cwd=self.home, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own process group: outlives this command, stopped as a whole
        record = ServerRecord(process.pid, port, time.time())
        self.record_file.write_text(json.dumps(asdict(record)))
        return record, process

    def _wait_until_healthy(self, record: ServerRecord, process: subprocess.Popen | None, timeout_s: float) -> None:
        """Until it answers; `process` when this command started it (its /proc
        entry shows this command's own argv until it execs), else the process table tells."""
        deadline = time.monotonic() + timeout_s
        while not healthy(record.api_url):
            if (process.poll() is not None) if process else not _is_server_process(record):
                raise LocalServerError(f"the Prefect server exited; its log: {self.log_file}\n{self._log_tail()}")
            if time.monotonic() > deadline:
                raise LocalServerError(f"the Prefect server did not answer within {timeout_s:.0f} s; "
                                       f"its log: {self.log_file}\n{self._log_tail()}")
            time.sleep(0.25)

    def _terminate(self, record: ServerRecord, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM to the server's process group, SIGKILL if it is still there after `timeout_s`."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _group_alive(record.pid) and time.monotonic() < deadline:
            _reap(record.pid)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
        _reap(record.pid)

    def _read_record(self) -> ServerRecord | None:
        try:
            return ServerRecord(**json.loads(self.record_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _previous_port(self) -> int | None:
        """The port of the last server, so the UI keeps its address across restarts."""
        record = self._read_record()
        return record.port if record else None

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def healthy(api_url: str, timeout_s: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def _is_server_process(record: ServerRecord) -> bool:
    """The recorded pid is still a Prefect server on the recorded port (not a
    process that got the pid after ours ended)."""
    try:
        arguments = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    started_as = {b"prefect", SERVER_MODULE.encode()}  # the first: by an older prefect-gitops
    return bool(started_as & set(arguments)) and b"server" in arguments and str(record.port).encode() in arguments


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _reap(pid: int) -> None:
    """Collect the exit status when the server is this process's child (a
    zombie would still count as alive)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _free_port(preferred: int | None = None) -> int:
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise LocalServerError("no free port on 127.0.0.1")
