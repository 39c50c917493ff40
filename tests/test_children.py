"""A child started by the engine dies with the process that started it, even
when that process is SIGKILLed and runs no clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead: it only waits for its (new) parent to reap it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def command(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as comm:
        return comm.read().strip()


def test_a_child_dies_with_its_sigkilled_parent():
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import subprocess, sys
        from prefect_gitops.engine.source.children import dying_with_parent
        child = subprocess.Popen(dying_with_parent(["sleep", "300"]))
        print(child.pid, flush=True)
        child.wait()
    """)], stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    child = int(parent.stdout.readline())
    # The guarantee holds once setpriv has set the signal and run the command:
    # wait for the exec, so a busy machine does not kill the parent before it.
    deadline = time.monotonic() + 10
    while command(child) != "sleep" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert command(child) == "sleep"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
