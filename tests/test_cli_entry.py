"""The `gitops` executable ends its process right after Python's exit handlers
(cli/entry.py): what the command printed arrives whole through a pipe, handlers
registered by what it imported still run, its exit code is kept, and the
interpreter's teardown is skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

COMMAND = """
import sys
from prefect_gitops.cli import entry  # imports nothing that registers an exit handler, as in bin/gitops

class Noisy:
    def __del__(self):
        sys.stderr.write("torn down\\n")

def app():
    global kept
    import atexit, logging, logging.handlers  # logging registers its exit handler here, after entry's
    kept = Noisy()  # a module global: freed only by the interpreter's teardown
    log = logging.getLogger("late")
    log.addHandler(logging.handlers.MemoryHandler(1000, target=logging.FileHandler(sys.argv[2])))
    log.warning("flushed by logging's own exit handler")  # held in memory until then
    atexit.register(lambda: sys.stdout.write("exit handler ran\\n"))
    sys.stdout.write("x" * 200_000 + "\\n")
    {ending}

entry.run(app)
"""


def command(tmp_path: Path, ending: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", COMMAND.format(ending=ending), "gitops", str(tmp_path / "log")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize("ending, code", [("pass", 0), ("sys.exit(1)", 1), ("sys.exit(2)", 2),
                                          ("sys.exit('error: no such repository')", 1),
                                          ("raise RuntimeError('a bug')", 1)])
def test_the_process_ends_after_the_exit_handlers_with_the_commands_code(tmp_path, ending, code):
    ended = command(tmp_path, ending)
    assert ended.returncode == code, ended.stderr
    assert ended.stdout == "x" * 200_000 + "\nexit handler ran\n"
    assert (tmp_path / "log").read_text() == "flushed by logging's own exit handler\n"
    assert "torn down" not in ended.stderr
    if code == 1 and "error:" in ending:
        assert ended.stderr == "error: no such repository\n"
    if "RuntimeError" in ending:
        assert "Traceback" in ended.stderr and "RuntimeError: a bug" in ended.stderr
