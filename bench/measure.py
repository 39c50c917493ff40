"""A measured process: its wall time, and its CPU (user + sys) with that of the
children it waited for, from wait4; the sum of processes run one after another,
as a person types them; and the CPU a running process (a server) has used."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One measured process (or several in a row): wall time, peak RSS and CPU time."""

    wall_s: float
    exit_code: int
    maxrss_kib: int
    cpu_s: float
    stdout: str = ""
    stderr: str = ""


def run_measured(cmd: list[str], env: dict | None = None, timeout: float = 900) -> Run:
    """Run a command in a fresh process; its rusage (peak RSS, CPU) is that
    process's own and its waited-for children's, from wait4, not the max over
    every child of this script."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen never waits on it again
        out.seek(0)
        err.seek(0)
        return Run(wall, proc.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def in_a_row(runs: list[Run]) -> Run:
    """Processes run one after another as one step: their times added up, the
    largest peak RSS, the first failure's exit code."""
    failed = next((r for r in runs if r.exit_code), runs[-1])
    return Run(sum(r.wall_s for r in runs), failed.exit_code, max(r.maxrss_kib for r in runs),
               sum(r.cpu_s for r in runs), "".join(r.stdout for r in runs), "".join(r.stderr for r in runs))


def process_cpu_s(pid: int, children: bool = True) -> float:
    """CPU seconds (user + sys) a running process has used so far, with the
    children it has waited for when `children`; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS
