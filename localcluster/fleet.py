"""A local fleet, as a platform team runs prefect-gitops at scale, on one
machine: PostgreSQL in a temporary data directory on a loopback port, Prefect's
server on it, the `gitops` process work pool with prefect.yaml deployed to it,
and N process workers, each in a working directory and GITOPS_HOME of its own
as separate machines would have. For the tests, the fleet benchmark and
`scripts/fleet.py`; everything stops with `down()`.

    with LocalFleet(root, workers=2) as fleet:
        fleet.run(["gitops", "cluster", "add", ...])   # any command, against the fleet's server
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POOL = "gitops"
WORKER_LIMIT = 4
START_LIMIT_S = 90
# Workers ask the pool for runs this often (Prefect's default is 10 s).
WORKER_QUERY_S = 2
SUBMITTED = re.compile(r"submitting flow run '([0-9a-f-]{36})'")
ABORTED = re.compile(r"Aborted submission of flow run '([0-9a-f-]{36})'")
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
         "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false"}


class FleetError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path:
    """Debian's PostgreSQL binaries (initdb, pg_ctl are not on PATH there)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise FleetError("PostgreSQL is not installed (Debian's postgresql package; `make test-deps` installs it)")


class Postgres:
    """A PostgreSQL server of its own, trust auth on 127.0.0.1 only, in a
    temporary directory removed when it stops. initdb refuses to run as root:
    as root it runs as the postgres user, which owns the directory (one of its
    own under /tmp: a test's directory is private to its user)."""

    def __init__(self):
        self.port, self.bin = free_port(), postgres_bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="gitops-postgres-"))
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start",
                 "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c max_connections=200")
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "prefect")

    def sql(self, query: str) -> str:
        """One query's result, unaligned (as psql -At prints it)."""
        done = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", "prefect", "-At", "-c", query], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise FleetError(f"psql failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout.strip()

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pg(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if check and done.returncode != 0:
            raise FleetError(f"{tool} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self, timeout_s: float = 20) -> None:
        stop_all([self], timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a machine that died: the process alone, not its children."""
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


def stop_all(processes: list[Process], timeout_s: float = 20) -> None:
    """SIGTERM to each process group at once, then SIGKILL to those still up after
    `timeout_s` in all."""
    running = [p for p in processes if p.popen.poll() is None]
    for process in running:
        os.killpg(process.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in running:
        try:
            process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.popen.pid, signal.SIGKILL)
            process.popen.wait()


@dataclass
class LocalFleet:
    root: Path
    workers: int = 2
    database: str = "postgresql"  # or "sqlite"
    worker_limit: int = WORKER_LIMIT
    extra_env: dict[str, str] = field(default_factory=dict)
    postgres: Postgres | None = None
    server: Process | None = None
    running: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"

    def env(self, **more: str) -> dict[str, str]:
        """The environment of a process that talks to this fleet's server."""
        env = {**os.environ, **QUIET, **self.extra_env, "PREFECT_API_URL": self.api_url}
        env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)  # the server's alone: it comes in `more`
        return {**env, **more}

    def __enter__(self) -> "LocalFleet":
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        database = f"sqlite+aiosqlite:///{self.root / 'prefect.db'}"
        if self.database == "postgresql":
            self.postgres = Postgres()
            self.postgres.start()
            database = self.postgres.url
        self.server = self._start_server(database)
        self.run([self._prefect(), "work-pool", "create", POOL, "--type", "process", "--overwrite"])
        self.deploy()
        for index in range(self.workers):
            self.start_worker(f"worker-{index + 1}")

    def down(self) -> None:
        stop_all(self.running)  # together: a worker takes its time to shut down, each would add it
        self.running.clear()
        if self.server:
            self.server.stop()
            self.server = None
        if self.postgres:
            self.postgres.stop()

    def run(self, command: list[str], cwd: Path | None = None, **env: str) -> str:
        done = subprocess.run(command, env=self.env(**env), cwd=cwd or self.root, capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise FleetError(f"{' '.join(command[:4])} failed ({done.returncode}): {done.stderr[-3000:]}")
        return done.stdout

    def deploy(self) -> None:
        """prefect.yaml's deployments, as `prefect deploy --all` makes them, with
        their schedules off: the caller starts the ticks it wants."""
        self.run([self._prefect(), "--no-prompt", "deploy", "--all"], cwd=PROJECT_ROOT)
        code = ("import sys\nfrom prefect.client.orchestration import get_client\n"
                "with get_client(sync_client=True) as c:\n"
                "    for d in c.read_deployments():\n"
                "        for s in d.schedules:\n"
                "            c.update_deployment_schedule(d.id, s.id, active=False)\n")
        self.run([sys.executable, "-c", code])

    def start_worker(self, name: str) -> Process:
        """A process worker in a directory of its own: its checkout of the flows
        (GITOPS_PROJECT_DIR, the pull step's directory) and its GITOPS_HOME."""
        home = self.root / name
        project = home / "project"
        if not project.exists():
            shutil.copytree(PROJECT_ROOT / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
        env = self.env(GITOPS_HOME=str(home / "gitops-home"), PREFECT_HOME=str(home / "prefect-home"),
                       GITOPS_PROJECT_DIR=str(project), PREFECT_WORKER_QUERY_SECONDS=str(WORKER_QUERY_S),
                       PREFECT_WORKER_PREFETCH_SECONDS=str(WORKER_QUERY_S))
        process = self._spawn(name, [self._prefect(), "worker", "start", "--pool", POOL, "--type", "process",
                                     "--name", name, "--limit", str(self.worker_limit)], env, cwd=home)
        self._wait_for(lambda: "started!" in process.log.read_text(errors="replace"), f"{name} to start", process)
        return process

    def worker(self, name: str) -> Process:
        return next(p for p in self.running if p.name == name)

    def worker_runs(self, name: str) -> set[str]:
        """The ids of the flow runs that worker `name` took, from its log: those it
        submitted, less those whose submission the server refused (another
        worker had taken them first)."""
        text = (self.root / f"{name}.log").read_text(errors="replace")
        return set(SUBMITTED.findall(text)) - set(ABORTED.findall(text))

    def _start_server(self, database: str) -> Process:
        env = self.env(PREFECT_HOME=str(self.root / "server-home"), PREFECT_API_DATABASE_CONNECTION_URL=database,
                       PREFECT_UI_API_URL=self.api_url, PREFECT_SERVER_API_HOST="127.0.0.1")
        env.pop("PREFECT_API_URL")
        self.server = self._spawn("server", [self._prefect(), "server", "start", "--host", "127.0.0.1",
                                             "--port", str(self.port)], env, cwd=self.root)
        self._wait_for(self._healthy, "Prefect's server to answer", self.server)
        return self.server

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def _spawn(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> Process:
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        with log.open("a") as out:  # a restarted worker's log goes on
            popen = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        process = Process(name, popen, log)
        if name != "server":
            self.running = [p for p in self.running if p.name != name] + [process]
        return process

    @staticmethod
    def _wait_for(condition, what: str, process: Process) -> None:
        deadline = time.monotonic() + START_LIMIT_S
        while time.monotonic() < deadline:
            if condition():
                return
            if process.popen.poll() is not None:
                raise FleetError(f"{process.name} exited ({process.popen.returncode}) before {what}: "
                                 f"{process.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        raise FleetError(f"no {what} within {START_LIMIT_S} s: {process.log.read_text(errors='replace')[-3000:]}")

    @staticmethod
    def _prefect() -> str:
        return str(Path(sys.executable).parent / "prefect")
