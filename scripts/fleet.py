"""A local fleet to try the work pool on (localcluster/fleet.py's LocalFleet):
PostgreSQL in a temporary directory on a loopback port (or SQLite), Prefect's
server on it, the `gitops` process work pool with prefect.yaml's deployments
(their schedules off) and N process workers, each with a working directory and
GITOPS_HOME of its own, as separate machines would have.

    .venv/bin/python scripts/fleet.py up [--workers 2] [--limit 4] [--database postgresql|sqlite] [--root DIR]

`up` stays in the foreground: it prints the Prefect API and UI address, the
pool, the workers and their log files, and the commands that point the CLI at
the fleet, then waits. Ctrl-C or SIGTERM stops everything it started (workers,
server, PostgreSQL and its data; during start-up, once started), so there is no
`down`; so does a worker or the server exiting on its own (exit 1). Without
--root the fleet lives in a temporary directory removed on exit; with --root,
DIR keeps the logs, the SQLite database and the workers' directories for the
next start (their copy of flows/ is not refreshed: remove DIR/worker-* after
changing the flows)."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from prefect_gitops.localcluster.fleet import POOL, WORKER_LIMIT, FleetError, LocalFleet

# How often `up` checks that the server and the workers are still running.
CHECK_S = 1.0
# Lines of a log shown when its process exited on its own.
LOG_TAIL = 20


class Stop(Exception):
    """Ctrl-C or SIGTERM: stop the fleet."""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/fleet.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the fleet; Ctrl-C or SIGTERM stops all of it")
    up.add_argument("--workers", type=int, default=2, help="process workers (default 2)")
    up.add_argument("--limit", type=int, default=WORKER_LIMIT,
                    help=f"concurrent flow runs per worker (default {WORKER_LIMIT})")
    up.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql",
                    help="Prefect's database (default postgresql)")
    up.add_argument("--root", type=Path, help="the fleet's directory, kept (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.limit < 1:
        up.error("--workers and --limit must be at least 1")
    return args


class Signals:
    """SIGINT and SIGTERM. During start-up they are only noted, and the fleet
    stops once started: LocalFleet.down() does not yet know the server it is
    still waiting for. Afterwards they raise Stop."""

    def __init__(self) -> None:
        self.received: str | None = None
        self.armed = False

    def __call__(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.armed:
            raise Stop(name)
        if not self.received:
            print(f"fleet: {name}, stopping once started", flush=True)
        self.received = name

    def arm(self) -> None:
        self.armed = True
        if self.received:
            raise Stop(self.received)


def handle_signals(handler) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def guide(fleet: LocalFleet, seconds: float) -> str:
    """What runs where, and how to use it from another shell."""
    ui = fleet.api_url.removesuffix("/api")
    database = fleet.postgres.url if fleet.postgres else f"sqlite {fleet.root / 'prefect.db'}"
    lines = [f"fleet up in {seconds:.0f} s, in {fleet.root}",
             f"  Prefect API  {fleet.api_url}",
             f"  Prefect UI   {ui}",
             f"  database     {database}",
             f"  server log   {fleet.server.log}",
             f"  work pool    {POOL} (process): prefect.yaml's deployments, schedules off"]
    for worker in fleet.running:
        home = fleet.root / worker.name / "gitops-home"
        lines.append(f"  {worker.name:<12} pid {worker.popen.pid}, limit {fleet.worker_limit}, "
                     f"log {worker.log}, GITOPS_HOME {home}")
    lines += ["",
              "In another shell, with this project's venv active (source .venv/bin/activate):",
              f"  export PREFECT_API_URL={fleet.api_url}",
              '  gitops cluster add staging --kubeconfig "$(gitops localcluster up staging --exist-ok)"',
              "  gitops repo add fleet --url <a Git URL every worker can reach, e.g. file:///srv/fleet.git>",
              "  prefect deployment run gitops-sync/gitops-sync -p repo=fleet     # one tick",
              "  prefect deployment schedule resume --all                          # or the schedules' ticks",
              "",
              "Ctrl-C (or SIGTERM) stops the workers, the server and the database; then unset PREFECT_API_URL."]
    return "\n".join(lines)


def stopped(fleet: LocalFleet) -> str | None:
    """The first of the server and the workers that is no longer running, with
    the end of its log (a temporary root goes on exit)."""
    for process in [fleet.server, *fleet.running]:
        if process.popen.poll() is not None:
            tail = process.log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            return "\n".join([f"{process.name} exited ({process.popen.returncode}); the end of {process.log}:",
                              *tail])
    return None


def wait(fleet: LocalFleet) -> int:
    while True:
        gone = stopped(fleet)
        if gone:
            print(f"fleet: {gone}\nfleet: stopping the rest", file=sys.stderr, flush=True)
            return 1
        time.sleep(CHECK_S)


def up(args: argparse.Namespace) -> int:
    root = (args.root or Path(tempfile.mkdtemp(prefix="gitops-fleet-"))).resolve()
    fleet = LocalFleet(root, workers=args.workers, database=args.database, worker_limit=args.limit)
    signals = Signals()
    handle_signals(signals)
    print(f"fleet: starting {args.database}, Prefect's server and {args.workers} worker(s) in {root} ...",
          flush=True)
    started = time.monotonic()
    try:
        fleet.up()
        signals.arm()
        print(guide(fleet, time.monotonic() - started), flush=True)
        return wait(fleet)
    except Stop as stop:
        print(f"fleet: {stop}, stopping", flush=True)
        return 0
    except FleetError as error:
        if signals.received:  # Ctrl-C also reached a `prefect` command of the start-up
            return 0
        print(f"fleet: {error}", file=sys.stderr, flush=True)
        return 1
    finally:
        handle_signals(signal.SIG_IGN)
        fleet.down()
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
        print("fleet: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    return up(parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
